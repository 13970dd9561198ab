//! Takes a lock, does some "work" while holding it, releases it.
//!
//! ```text
//! vfslockd &                                   # in another terminal, or as a service
//! cargo run -p vfslock --example with_lock -- mem:///inbox/data.csv
//! ```

use std::time::Duration;

use vfslock::{Client, LockOptions, WithLockError};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let target = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "mem:///inbox/data.csv".to_owned());
    let client = Client::connect_default().await?;
    println!(
        "connected to vfslockd {} on {}",
        client.daemon().daemon_version,
        client.daemon().hostname
    );
    let options = LockOptions::default()
        .owner_id("with_lock example")
        .wait_timeout(Duration::from_secs(10))
        .on_queue_position(|position| println!("waiting: position {position} in the queue"));
    let outcome = client
        .with_lock(&target, options, async |lock| {
            let meta = lock.held_metadata().expect("held inside with_lock");
            println!("holding {target} as pid {} ({:?})", meta.pid, meta.lock_id);
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok::<_, std::io::Error>("done")
        })
        .await;
    match outcome {
        Ok(result) => println!("{result}; released"),
        Err(WithLockError::Lock(e)) => eprintln!("could not lock {target}: {e}"),
        Err(WithLockError::Closure(e)) => eprintln!("the work failed: {e}"),
    }
    Ok(())
}

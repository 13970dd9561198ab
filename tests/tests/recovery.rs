//! Crash recovery: a daemon killed with SIGKILL while holding many locks removes, when it
//! starts again, every lock file it had written (checked by lock id), so nobody waits for
//! their TTLs, and the temporary copies of its own that a cut-short write left beside them;
//! detached leases, which belong to their uid, are kept. These daemons keep no holding for its
//! session to resume (`resume-window = "0s"`, as with clients older than protocol 5); what a
//! resume window changes is in `resume.rs`.

use std::time::Duration;

use vfslock::LockOptions;
use vfslock_tests::{without_resume, Daemon, Store, TEST_CONFIG};

/// How many locks the killed daemon holds.
const HELD: usize = 100;

async fn kill_9_with_locks_held_leaves_no_orphans(store: Store) {
    let config = format!("{}\n{}", without_resume(TEST_CONFIG), store.config());
    let mut daemon = Daemon::start_with(&config);
    let client = daemon.client().await;
    let targets: Vec<_> = (0..HELD).map(|_| store.target("recovery")).collect();
    let mut locks = Vec::new();
    for target in &targets {
        let mut lock = client.new_lock(
            target.url.clone(),
            // An hour-long lease: without recovery these would block everyone for an hour.
            LockOptions::default().ttl(Duration::from_secs(3600)),
        );
        lock.acquire().await.expect("acquire");
        locks.push(lock);
    }
    let detached = store.target("recovery-detached");
    let lease = client
        .acquire_detached(detached.url.clone(), Duration::from_secs(3600), None, None)
        .await
        .expect("detached lease");
    for target in &targets {
        assert!(client.metadata(&target.url).await.unwrap().is_some());
    }

    // What a daemon killed between writing a lock file's temporary copy and moving it into
    // place leaves beside it (`file://` only: the other stores write in one request): a copy
    // of ours, to be removed, and another writer's copy in flight, to be left alone.
    let copies = match store {
        Store::File => {
            let lock_file = std::path::PathBuf::from(targets[0].key());
            let ours = client.metadata(&targets[0].url).await.unwrap().unwrap();
            let ours = ours.lock_id.expect("our lock id");
            let copy = |nonce: &str| {
                let name = lock_file.file_name().unwrap().to_string_lossy();
                lock_file.with_file_name(format!(".{name}.{nonce}.tmp"))
            };
            let (mine, theirs) = (copy("0123456789abcdef"), copy("fedcba9876543210"));
            std::fs::write(&mine, format!("{{\"lockId\": \"{ours}\", \"vfslock\": 1}}")).unwrap();
            std::fs::write(&theirs, "{\"lockId\": \"someone-else\", \"vfslock\": 1}").unwrap();
            Some((mine, theirs))
        }
        _ => None,
    };

    daemon.kill();
    drop(locks);
    drop(client);
    daemon.restart();
    if let Some((mine, theirs)) = &copies {
        assert!(!mine.exists(), "our temporary copy outlived the restart");
        assert!(
            theirs.exists(),
            "another writer's temporary copy was removed"
        );
    }
    assert!(
        daemon
            .log()
            .contains("cleaned up the lock files of the previous run"),
        "{}",
        daemon.log()
    );
    let client = daemon.client().await;
    let mut orphans = 0;
    for target in &targets {
        if client.metadata(&target.url).await.unwrap().is_some() {
            orphans += 1;
        }
    }
    assert_eq!(orphans, 0, "{store:?}: lock files left after the restart");
    let kept = client.metadata(&detached.url).await.unwrap().expect("kept");
    assert_eq!(kept.lock_id.as_deref(), Some(lease.lock_id.as_str()));
    assert!(client
        .release_detached(&detached.url, &lease.lock_id)
        .await
        .unwrap());
    // Every target is free at once.
    let mut lock = client.new_lock(targets[0].url.clone(), LockOptions::default());
    lock.acquire().await.expect("free after recovery");
    lock.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn file_store() {
    kill_9_with_locks_held_leaves_no_orphans(Store::File).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_store() {
    kill_9_with_locks_held_leaves_no_orphans(Store::S3).await;
}

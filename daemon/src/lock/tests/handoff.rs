use vfslock_proto::{Event, WaitMode};

use crate::lock::tests::{event, granted, released, Daemon};

const TARGET: &str = "mem:///handoff";

#[tokio::test]
async fn releases_hand_the_lock_to_local_waiters_in_the_order_they_came() {
    let daemon = Daemon::start().await;
    let (holder, mut holder_frames) = daemon.session(1, 0);
    daemon.acquire(&holder, 1, TARGET, WaitMode::Try).await;
    let mut held = granted(&mut holder_frames).await;
    let mut waiters = Vec::new();
    for id in 2..=4u64 {
        let (waiter, mut frames) = daemon.session(id, 0);
        daemon
            .acquire(&waiter, 1, TARGET, WaitMode::Wait { timeout: None })
            .await;
        assert_eq!(
            event(&mut frames).await,
            Event::QueuePosition {
                position: id as u32 - 1
            }
        );
        waiters.push((waiter, frames));
    }
    let (mut owner, mut owner_frames) = (holder, holder_frames);
    for (waiter, mut frames) in waiters {
        daemon.release(&owner, 99, TARGET, &held.lock_id).await;
        released(&mut owner_frames).await;
        let next = granted(&mut frames).await;
        assert!(next.token > held.token);
        // A handoff never leaves the file absent: it is the next holder's at once.
        let file = daemon
            .lock_file(TARGET)
            .await
            .expect("handed over, not deleted");
        assert!(String::from_utf8_lossy(&file.bytes).contains(&next.lock_id));
        (owner, owner_frames, held) = (waiter, frames, next);
    }
}

#[tokio::test]
async fn a_private_store_allows_handoffs_without_a_cap() {
    let daemon = Daemon::with(|s| {
        s.locks.handoff_max_count = 1;
    })
    .await;
    let (holder, mut holder_frames) = daemon.session(1, 0);
    let (waiter, mut waiter_frames) = daemon.session(2, 0);
    daemon.acquire(&holder, 1, TARGET, WaitMode::Try).await;
    let mut held = granted(&mut holder_frames).await;
    // Two sessions pass the lock back and forth more often than the cap allows elsewhere.
    let sessions = [
        (holder.clone(), &mut holder_frames),
        (waiter.clone(), &mut waiter_frames),
    ];
    let [(a, a_frames), (b, b_frames)] = sessions;
    for round in 0..3u64 {
        daemon
            .acquire(&b, 10 + round, TARGET, WaitMode::Wait { timeout: None })
            .await;
        daemon.release(&a, 20 + round, TARGET, &held.lock_id).await;
        released(a_frames).await;
        held = granted(b_frames).await;
        daemon
            .acquire(&a, 30 + round, TARGET, WaitMode::Wait { timeout: None })
            .await;
        daemon.release(&b, 40 + round, TARGET, &held.lock_id).await;
        released(b_frames).await;
        held = granted(a_frames).await;
    }
    let file = daemon.lock_file(TARGET).await.expect("always handed over");
    assert!(String::from_utf8_lossy(&file.bytes).contains(&held.lock_id));
}

use std::time::Duration;

use vfslock_proto::{ErrorKind, Event, WaitMode};

use crate::lock::tests::{event, granted, refused, Daemon};
use crate::lock::LockMessage;

const TARGET: &str = "mem:///cleanup";

#[tokio::test]
async fn a_closed_connection_releases_its_holding_and_its_waits_end() {
    let daemon = Daemon::start().await;
    // The leaving connection holds TARGET and waits for another target the staying one holds.
    let [(_leaving, _leaving_frames), (staying, mut staying_frames)] =
        daemon.holding_and_waiting(TARGET, 0, 0).await;
    daemon
        .acquire(&staying, 2, TARGET, WaitMode::Wait { timeout: None })
        .await;
    for target in [TARGET, "mem:///other"] {
        let closed = LockMessage::SessionClosed { session_id: 1 };
        daemon.send(target, closed).await;
    }
    let next = granted(&mut staying_frames).await;
    assert_eq!(
        next.target, TARGET,
        "the staying waiter got the released lock"
    );
    assert_eq!(crate::context::Stats::get(&daemon.ctx.stats.waiting), 0);
}

#[tokio::test]
async fn at_shutdown_waiters_are_refused_and_the_holder_is_told_before_its_file_goes() {
    let daemon = Daemon::start().await;
    let (holder, mut holder_frames) = daemon.session(1, 0);
    let (waiter, mut waiter_frames) = daemon.session(2, 0);
    daemon.acquire(&holder, 1, TARGET, WaitMode::Try).await;
    granted(&mut holder_frames).await;
    daemon
        .acquire(&waiter, 1, TARGET, WaitMode::Wait { timeout: None })
        .await;
    for actor in daemon.registry.drain() {
        actor.call(LockMessage::Shutdown, None).await.unwrap();
    }
    assert!(matches!(
        event(&mut holder_frames).await,
        Event::Releasing { .. }
    ));
    assert_eq!(
        refused(&mut waiter_frames).await.kind,
        ErrorKind::ShuttingDown
    );
    assert!(daemon.lock_file(TARGET).await.is_none());
    assert_eq!(crate::context::Stats::get(&daemon.ctx.stats.held), 0);
    assert_eq!(crate::context::Stats::get(&daemon.ctx.stats.targets), 0);
}

#[tokio::test]
async fn an_idle_actor_retires_and_the_next_request_starts_a_fresh_one() {
    let daemon = Daemon::with(|s| s.locks.idle_actor_timeout = Duration::from_millis(20)).await;
    let (session, mut frames) = daemon.session(1, 0);
    daemon.acquire(&session, 1, TARGET, WaitMode::Try).await;
    let first = granted(&mut frames).await;
    daemon.release(&session, 2, TARGET, &first.lock_id).await;
    crate::lock::tests::released(&mut frames).await;
    let first_actor = daemon.registry.actors()[0].get_id();
    // Idleness is measured on the real monotonic clock: poll, with a deadline.
    for _ in 0..500 {
        if daemon.registry.actors().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(daemon.registry.actors().is_empty(), "the idle actor stayed");
    assert_eq!(crate::context::Stats::get(&daemon.ctx.stats.targets), 0);
    daemon.acquire(&session, 3, TARGET, WaitMode::Try).await;
    granted(&mut frames).await;
    assert_ne!(daemon.registry.actors()[0].get_id(), first_actor);
}

#[cfg(feature = "faults")]
#[tokio::test]
async fn after_an_actor_fails_its_successor_tells_holders_answers_waiters_and_frees_the_lock() {
    use crate::lock::tests::request;
    let daemon = Daemon::with(|s| s.faults.panic_owner = Some("panic please".into())).await;
    let (holder, mut holder_frames) = daemon.session(1, 0);
    let (waiter, mut waiter_frames) = daemon.session(2, 0);
    let (trigger, mut trigger_frames) = daemon.session(3, 0);
    daemon.acquire(&holder, 1, TARGET, WaitMode::Try).await;
    granted(&mut holder_frames).await;
    daemon
        .acquire(&waiter, 1, TARGET, WaitMode::Wait { timeout: None })
        .await;
    assert!(matches!(
        event(&mut waiter_frames).await,
        Event::QueuePosition { position: 1 }
    ));
    let failed = daemon.registry.actors()[0].get_id();
    let mut panic_please = request(TARGET, WaitMode::Try);
    panic_please.owner_id = Some("panic please".into());
    daemon.acquire_with(&trigger, 1, panic_please).await;
    match event(&mut holder_frames).await {
        Event::LeaseEnded { kind, reason } => {
            assert_eq!(kind, vfslock_proto::ErrorKind::Internal);
            assert!(reason.contains("vfslockd failed"), "{reason}");
        }
        other => panic!("expected a loss, got {other:?}"),
    }
    let error = refused(&mut waiter_frames).await;
    assert_eq!(error.kind, ErrorKind::Internal);
    assert_eq!(refused(&mut trigger_frames).await.kind, ErrorKind::Internal);
    for session in [&holder, &waiter, &trigger] {
        assert_eq!(
            session.open_acquires(),
            0,
            "session {} still counts",
            session.id
        );
    }
    // The successor serves the target, and the failed actor's lock file is gone.
    daemon.acquire(&waiter, 2, TARGET, WaitMode::Try).await;
    let grant = granted(&mut waiter_frames).await;
    assert!(
        grant.stole.is_none(),
        "the old file was deleted, not stolen"
    );
    assert_ne!(daemon.registry.actors()[0].get_id(), failed);
    let stats = &daemon.ctx.stats;
    assert_eq!(crate::context::Stats::get(&stats.held), 1);
    assert_eq!(crate::context::Stats::get(&stats.waiting), 0);
    assert_eq!(crate::context::Stats::get(&stats.targets), 1);
}

/// A detached lease belongs to its uid, not to the actor that granted it: a failure of the
/// actor keeps it, as a restart of the daemon does.
#[cfg(feature = "faults")]
#[tokio::test]
async fn a_detached_lease_outlives_the_failure_of_its_targets_actor() {
    use crate::lock::tests::request;
    let daemon = Daemon::with(|s| s.faults.panic_owner = Some("panic please".into())).await;
    let (owner, mut owner_frames) = daemon.session(1, 1000);
    let mut detached = request(TARGET, WaitMode::Try);
    detached.detached = true;
    daemon.acquire_with(&owner, 1, detached).await;
    let lease = granted(&mut owner_frames).await;
    let (trigger, mut trigger_frames) = daemon.session(2, 0);
    let mut panic_please = request(TARGET, WaitMode::Try);
    panic_please.owner_id = Some("panic please".into());
    daemon.acquire_with(&trigger, 1, panic_please).await;
    assert_eq!(refused(&mut trigger_frames).await.kind, ErrorKind::Internal);
    // The successor handles this only after its whole cleanup: the lease still refuses
    // others, and its file is still the lease's.
    daemon.acquire(&trigger, 2, TARGET, WaitMode::Try).await;
    assert_eq!(
        refused(&mut trigger_frames).await.kind,
        ErrorKind::AlreadyHeld
    );
    let file = daemon
        .lock_file(TARGET)
        .await
        .expect("the detached lease stays");
    assert!(String::from_utf8_lossy(&file.bytes).contains(&lease.lock_id));
}

/// Every pending message of every actor handled (a call queues behind them).
async fn settled(daemon: &Daemon) {
    for actor in daemon.registry.actors() {
        actor.call(LockMessage::Snapshot, None).await.unwrap();
    }
}

#[tokio::test]
async fn a_closed_connection_gives_its_uid_back_what_it_held_and_awaited() {
    let daemon = Daemon::start().await;
    let [(leaving, _leaving_frames), (_staying, _staying_frames)] =
        daemon.holding_and_waiting(TARGET, 1000, 1001).await;
    settled(&daemon).await;
    assert_eq!(
        daemon.ctx.uids.usage(1000).locks,
        2,
        "one held, one awaited"
    );
    for target in [TARGET, "mem:///other"] {
        let closed = LockMessage::SessionClosed { session_id: 1 };
        daemon.send(target, closed).await;
    }
    settled(&daemon).await;
    // The session lets go of its link last, as the server's does when it closes.
    drop(leaving);
    assert_eq!(daemon.ctx.uids.usage(1000).locks, 0);
    assert_eq!(
        daemon.ctx.uids.usage(1001).locks,
        1,
        "another uid's lock is its own"
    );
}

#[cfg(feature = "faults")]
#[tokio::test]
async fn after_an_actor_fails_its_cleanup_gives_the_uids_locks_back() {
    use crate::lock::tests::request;
    let daemon = Daemon::with(|s| s.faults.panic_owner = Some("panic please".into())).await;
    let (holder, mut holder_frames) = daemon.session(1, 1000);
    let (waiter, mut waiter_frames) = daemon.session(2, 1000);
    daemon.acquire(&holder, 1, TARGET, WaitMode::Try).await;
    granted(&mut holder_frames).await;
    daemon
        .acquire(&waiter, 1, TARGET, WaitMode::Wait { timeout: None })
        .await;
    assert!(matches!(
        event(&mut waiter_frames).await,
        Event::QueuePosition { position: 1 }
    ));
    assert_eq!(daemon.ctx.uids.usage(1000).locks, 2);
    let (trigger, mut trigger_frames) = daemon.session(3, 0);
    let mut panic_please = request(TARGET, WaitMode::Try);
    panic_please.owner_id = Some("panic please".into());
    daemon.acquire_with(&trigger, 1, panic_please).await;
    assert!(matches!(
        event(&mut holder_frames).await,
        Event::LeaseEnded { .. }
    ));
    assert_eq!(refused(&mut waiter_frames).await.kind, ErrorKind::Internal);
    refused(&mut trigger_frames).await;
    // Both connections are still open: the cleanup itself gave the places back.
    assert_eq!(daemon.ctx.uids.usage(1000).locks, 0);
}

use std::time::Duration;

use vfslock_proto::{ErrorKind, Event, LockFileFormat, Response, WaitMode};

use crate::lock::tests::{event, foreign_record, granted, refused, released, request, Daemon};
use crate::lock::LockMessage;

const TARGET: &str = "mem:///acquire";

#[tokio::test]
async fn a_try_on_a_free_lock_is_granted_and_a_second_try_is_told_who_holds_it() {
    let daemon = Daemon::start().await;
    let (first, mut first_frames) = daemon.session(1, 1000);
    let (second, mut second_frames) = daemon.session(2, 1001);
    daemon.acquire(&first, 1, TARGET, WaitMode::Try).await;
    let grant = granted(&mut first_frames).await;
    assert_eq!(grant.target, TARGET);
    assert_eq!(grant.metadata.pid, first.caller.pid);
    daemon.acquire(&second, 1, TARGET, WaitMode::Try).await;
    let error = refused(&mut second_frames).await;
    assert_eq!(error.kind, ErrorKind::AlreadyHeld);
    assert_eq!(error.holder.as_ref().map(|h| h.pid), Some(first.caller.pid));
    assert!(
        error.message.contains("vfslockctl show mem:///acquire"),
        "{}",
        error.message
    );
    assert_eq!(second.open_acquires(), 0, "a refused try still counts");
}

#[tokio::test]
async fn a_waiter_hears_its_place_and_is_granted_when_the_holder_releases() {
    let daemon = Daemon::start().await;
    let (holder, mut holder_frames) = daemon.session(1, 1000);
    let (waiter, mut waiter_frames) = daemon.session(2, 1000);
    daemon.acquire(&holder, 1, TARGET, WaitMode::Try).await;
    let held = granted(&mut holder_frames).await;
    let patient = WaitMode::Wait { timeout: None };
    daemon.acquire(&waiter, 7, TARGET, patient).await;
    assert_eq!(
        event(&mut waiter_frames).await,
        Event::QueuePosition { position: 1 }
    );
    daemon.release(&holder, 2, TARGET, &held.lock_id).await;
    released(&mut holder_frames).await;
    let next = granted(&mut waiter_frames).await;
    assert_ne!(next.lock_id, held.lock_id);
    assert!(next.token > held.token, "fencing tokens must increase");
}

#[tokio::test(start_paused = true)]
async fn a_wait_that_times_out_is_told_how_long_and_who_holds_the_lock() {
    let daemon = Daemon::start().await;
    let (holder, mut holder_frames) = daemon.session(1, 1000);
    let (waiter, mut waiter_frames) = daemon.session(2, 1000);
    daemon.acquire(&holder, 1, TARGET, WaitMode::Try).await;
    granted(&mut holder_frames).await;
    let timeout = Duration::from_millis(250);
    let wait = WaitMode::Wait {
        timeout: Some(timeout),
    };
    daemon.acquire(&waiter, 1, TARGET, wait).await;
    let error = refused(&mut waiter_frames).await;
    assert_eq!(error.kind, ErrorKind::Timeout);
    assert!(
        error
            .message
            .starts_with("timed out after 250ms waiting for mem:///acquire"),
        "{}",
        error.message
    );
    assert_eq!(error.holder.map(|h| h.pid), Some(holder.caller.pid));
}

#[tokio::test]
async fn waits_beyond_the_queue_limit_are_refused() {
    let daemon = Daemon::with(|s| s.limits.max_waiters_per_target = 1).await;
    let (holder, mut holder_frames) = daemon.session(1, 1000);
    let (waiter, mut waiter_frames) = daemon.session(2, 1000);
    daemon.acquire(&holder, 1, TARGET, WaitMode::Try).await;
    granted(&mut holder_frames).await;
    let wait = WaitMode::Wait { timeout: None };
    daemon.acquire(&waiter, 1, TARGET, wait).await;
    daemon.acquire(&waiter, 2, TARGET, wait).await;
    let error = refused(&mut waiter_frames).await;
    assert_eq!(error.kind, ErrorKind::LimitExceeded);
    assert!(error.message.contains("max-waiters-per-target"));
}

#[tokio::test]
async fn a_cancelled_wait_is_answered_cancelled_and_leaves_the_queue() {
    let daemon = Daemon::start().await;
    let (holder, mut holder_frames) = daemon.session(1, 1000);
    let (waiter, mut waiter_frames) = daemon.session(2, 1000);
    daemon.acquire(&holder, 1, TARGET, WaitMode::Try).await;
    let held = granted(&mut holder_frames).await;
    daemon
        .acquire(&waiter, 5, TARGET, WaitMode::Wait { timeout: None })
        .await;
    let cancel = LockMessage::Cancel {
        session: waiter.clone(),
        id: 6,
        acquire_id: 5,
    };
    daemon.send(TARGET, cancel).await;
    assert_eq!(refused(&mut waiter_frames).await.kind, ErrorKind::Cancelled);
    assert!(matches!(
        crate::lock::tests::answer(&mut waiter_frames).await,
        Ok(Response::Cancelled)
    ));
    assert_eq!(waiter.open_acquires(), 0);
    // Nobody waits now: the release deletes the file instead of handing it over.
    daemon.release(&holder, 2, TARGET, &held.lock_id).await;
    released(&mut holder_frames).await;
    assert!(daemon.lock_file(TARGET).await.is_none());
}

#[tokio::test]
async fn a_stale_lock_file_of_another_host_is_taken_over_and_the_grant_says_whose_it_was() {
    let daemon = Daemon::start().await;
    daemon
        .plant(
            TARGET,
            foreign_record(Duration::from_secs(600), Duration::from_secs(5)),
        )
        .await;
    let (session, mut frames) = daemon.session(1, 1000);
    daemon.acquire(&session, 1, TARGET, WaitMode::Try).await;
    let grant = granted(&mut frames).await;
    let stolen = grant.stole.expect("the grant names the stale holder");
    assert_eq!((stolen.pid, stolen.hostname.as_str()), (4242, "elsewhere"));
    let file = daemon.lock_file(TARGET).await.unwrap();
    let text = String::from_utf8(file.bytes).unwrap();
    assert!(
        text.contains(&grant.lock_id),
        "the file is ours now: {text}"
    );
}

#[tokio::test]
async fn a_fresh_lock_file_of_another_host_is_left_alone() {
    let daemon = Daemon::start().await;
    daemon
        .plant(
            TARGET,
            foreign_record(Duration::ZERO, Duration::from_secs(600)),
        )
        .await;
    let (session, mut frames) = daemon.session(1, 1000);
    daemon.acquire(&session, 1, TARGET, WaitMode::Try).await;
    let error = refused(&mut frames).await;
    assert_eq!(error.kind, ErrorKind::AlreadyHeld);
    assert!(error
        .message
        .contains("held by pid 4242 on elsewhere, owner nightly-job"));
}

#[tokio::test]
async fn an_acquirer_that_asks_about_stale_locks_is_asked_and_its_veto_is_kept() {
    let daemon = Daemon::start().await;
    daemon
        .plant(
            TARGET,
            foreign_record(Duration::from_secs(600), Duration::from_secs(5)),
        )
        .await;
    let (session, mut frames) = daemon.session(1, 1000);
    let mut asking = request(TARGET, WaitMode::Try);
    asking.ask_on_stale = true;
    daemon.acquire_with(&session, 1, asking).await;
    match event(&mut frames).await {
        Event::StaleQuestion { holder } => assert_eq!(holder.pid, 4242),
        other => panic!("expected a stale question, got {other:?}"),
    }
    let verdict = LockMessage::StaleVerdict {
        session_id: session.id,
        acquire_id: 1,
        allow: false,
        reason: "the job may still run".into(),
    };
    daemon.send(TARGET, verdict).await;
    let error = refused(&mut frames).await;
    assert_eq!(error.kind, ErrorKind::StaleVetoed);
    assert!(error.message.ends_with("the job may still run"));
    let file = daemon.lock_file(TARGET).await.unwrap();
    assert!(String::from_utf8_lossy(&file.bytes).contains("another-daemon"));
}

/// A wait granted in time must stop its timeout timer: left asleep, each would live for the
/// whole timeout, and a busy lock piled up as many tasks as it had waits.
#[tokio::test]
async fn a_granted_wait_stops_its_timeout_timer() {
    use crate::lock::tests::{alive_tasks, tasks_left_over};
    let daemon = Daemon::start().await;
    let (first, mut first_frames) = daemon.session(1, 0);
    let (second, mut second_frames) = daemon.session(2, 0);
    // The actor exists before counting.
    daemon.acquire(&first, 1, TARGET, WaitMode::Try).await;
    let lock_id = granted(&mut first_frames).await.lock_id;
    daemon.release(&first, 2, TARGET, &lock_id).await;
    released(&mut first_frames).await;
    let before = alive_tasks();
    const CYCLES: u64 = 20;
    let patient = WaitMode::Wait {
        timeout: Some(Duration::from_secs(60)),
    };
    for cycle in 1..=CYCLES {
        let id = cycle * 2 + 1;
        daemon.acquire(&first, id, TARGET, WaitMode::Try).await;
        let first_lock = granted(&mut first_frames).await.lock_id;
        // Queued behind the holder, with a timeout timer of its own.
        daemon.acquire(&second, id, TARGET, patient).await;
        daemon.release(&first, id + 1, TARGET, &first_lock).await;
        released(&mut first_frames).await;
        let second_lock = granted(&mut second_frames).await.lock_id;
        daemon.release(&second, id + 1, TARGET, &second_lock).await;
        released(&mut second_frames).await;
    }
    let left = tasks_left_over(before).await;
    assert!(
        left <= 2,
        "{left} tasks outlive {CYCLES} granted waits: their timeout timers were left asleep"
    );
}

#[tokio::test]
async fn a_young_empty_lock_file_is_held_by_an_unknown_holder_and_says_so() {
    let daemon = Daemon::start().await;
    daemon.plant_with(TARGET, Box::new(|_| Vec::new())).await;
    let (session, mut frames) = daemon.session(1, 1000);
    daemon.acquire(&session, 1, TARGET, WaitMode::Try).await;
    let error = refused(&mut frames).await;
    assert_eq!(error.kind, ErrorKind::AlreadyHeld);
    assert!(
        error.message.contains("the lock file is empty"),
        "{}",
        error.message
    );
    assert!(!error.message.contains("pid 0 on"), "{}", error.message);
}

#[tokio::test]
async fn an_empty_lock_file_stops_blocking_after_empty_grace_not_corrupt_grace() {
    // Grace and store timeout short, so that the test waits for the rule, not for defaults.
    let daemon = Daemon::with(|s| {
        s.locks.store_timeout = Duration::from_millis(200);
        s.locks.empty_grace = Duration::from_millis(300);
        s.locks.skew_allowance = Duration::ZERO;
        s.locks.recheck_min = Duration::from_millis(20);
        s.locks.recheck_max = Duration::from_millis(100);
    })
    .await;
    // On `file://`, whose files have a modification time to judge by (`mem://` files are this
    // daemon's own and never empty).
    let dir = tempfile::tempdir().unwrap();
    let target = format!("file://{}/empty.csv", dir.path().display());
    daemon.plant_with(&target, Box::new(|_| Vec::new())).await;
    let (session, mut frames) = daemon.session(1, 1000);
    daemon
        .acquire(&session, 1, &target, WaitMode::Wait { timeout: None })
        .await;
    // Corrupt-grace (60 s) would keep this waiting past the test's deadline.
    let grant = tokio::time::timeout(Duration::from_secs(30), granted(&mut frames))
        .await
        .expect("granted after empty-grace");
    let stolen = grant.stole.expect("the empty file was taken over");
    assert_eq!(stolen.format, LockFileFormat::Corrupt);
    let file = daemon.lock_file(&target).await.unwrap();
    assert!(String::from_utf8_lossy(&file.bytes).contains(&grant.lock_id));
}

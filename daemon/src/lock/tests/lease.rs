use std::sync::Arc;
use std::time::Duration;

use vfslock_proto::{Event, WaitMode};

use crate::lock::tests::{alive_tasks, event, granted, released, request, tasks_left_over, Daemon};
use crate::store::Token;

const TARGET: &str = "mem:///lease";

/// A lock taken and released many times a second must not leave a renewal timer asleep
/// behind each holding: with a 30 s TTL each would live for up to 10 s, and a busy lock
/// piled up tens of thousands of them (memory, and a fuller timer wheel on every cycle).
#[tokio::test]
async fn a_release_stops_the_renewal_timer_of_its_holding() {
    let daemon = Daemon::start().await;
    let (session, mut frames) = daemon.session(1, 0);
    // The actor exists before counting.
    daemon.acquire(&session, 1, TARGET, WaitMode::Try).await;
    let first = granted(&mut frames).await;
    daemon.release(&session, 2, TARGET, &first.lock_id).await;
    released(&mut frames).await;
    let before = alive_tasks();
    const CYCLES: u64 = 50;
    for cycle in 1..=CYCLES {
        let id = cycle * 2 + 1;
        daemon.acquire(&session, id, TARGET, WaitMode::Try).await;
        let lock_id = granted(&mut frames).await.lock_id;
        daemon.release(&session, id + 1, TARGET, &lock_id).await;
        released(&mut frames).await;
    }
    let left = tasks_left_over(before).await;
    assert!(
        left <= 2,
        "{left} tasks outlive {CYCLES} released holdings: renewal timers were left asleep"
    );
}

#[tokio::test]
async fn a_grant_is_valid_for_less_than_its_ttl_by_the_safety_margin() {
    let daemon = Daemon::start().await;
    let (session, mut frames) = daemon.session(1, 0);
    daemon.acquire(&session, 1, TARGET, WaitMode::Try).await;
    let grant = granted(&mut frames).await;
    let valid_for = grant.valid_for.expect("a 30 s lease expires");
    // The margin is the larger of a tenth of the TTL and `lease-margin`, at most half.
    assert!(valid_for <= Duration::from_secs(27), "{valid_for:?}");
    assert!(valid_for >= Duration::from_secs(15), "{valid_for:?}");
}

#[tokio::test(start_paused = true)]
async fn a_held_lease_is_renewed_and_the_holder_told_until_when() {
    let daemon = Daemon::start().await;
    let (session, mut frames) = daemon.session(1, 0);
    daemon.acquire(&session, 1, TARGET, WaitMode::Try).await;
    let grant = granted(&mut frames).await;
    let before = daemon.lock_file(TARGET).await.unwrap();
    match event(&mut frames).await {
        Event::LeaseRenewed { valid_for, .. } => {
            assert!(valid_for > Duration::from_secs(20), "{valid_for:?}")
        }
        other => panic!("expected a renewal, got {other:?}"),
    }
    let after = daemon.lock_file(TARGET).await.unwrap();
    assert_ne!(before.bytes, after.bytes, "the renewal rewrote the file");
    assert!(String::from_utf8_lossy(&after.bytes).contains(&grant.lock_id));
}

#[tokio::test(start_paused = true)]
async fn a_lock_file_replaced_by_someone_else_is_a_lost_lease_and_is_left_alone() {
    let daemon = Daemon::start().await;
    let (session, mut frames) = daemon.session(1, 0);
    daemon
        .acquire_with(&session, 1, request(TARGET, WaitMode::Try))
        .await;
    granted(&mut frames).await;
    // Another writer replaces the file under the holder.
    let address = crate::address::Address::parse(TARGET).unwrap();
    let store = daemon.ctx.stores.for_address(&address).unwrap();
    let path = crate::store::lock_path(&address);
    let current = daemon.lock_file(TARGET).await.unwrap();
    let intruder = Arc::new(crate::lock::tests::foreign_record(
        Duration::ZERO,
        Duration::from_secs(600),
    ));
    store
        .replace(
            &path,
            &current.version(),
            Token::Keep,
            Box::new(move |token| intruder.to_json_with_token(token)),
        )
        .await
        .unwrap();
    match event(&mut frames).await {
        Event::LeaseEnded { kind, reason } => {
            assert_eq!(kind, vfslock_proto::ErrorKind::LeaseLost);
            assert!(
                reason.contains("replaced or removed by someone else"),
                "{reason}"
            )
        }
        other => panic!("expected a loss, got {other:?}"),
    }
    let file = daemon.lock_file(TARGET).await.unwrap();
    assert!(String::from_utf8_lossy(&file.bytes).contains("another-daemon"));
    assert_eq!(session.open_acquires(), 0);
}

/// `[locks] peer-ttl-factor` lengthens only what the file says: the lease this daemon renews
/// and promises its holder stays the asked TTL.
#[tokio::test]
async fn a_peer_ttl_factor_writes_a_longer_ttl_but_keeps_the_lease() {
    let daemon = Daemon::with(|s| s.locks.peer_ttl_factor = 3).await;
    let (session, mut frames) = daemon.session(1, 0);
    daemon.acquire(&session, 1, TARGET, WaitMode::Try).await;
    let grant = granted(&mut frames).await;
    assert_eq!(grant.metadata.ttl(), Some(Duration::from_secs(90)));
    let file = daemon.lock_file(TARGET).await.unwrap();
    let written = crate::lockfile::parse(&file.bytes);
    assert_eq!(written.ttl(), Some(Duration::from_secs(90)));
    let valid_for = grant.valid_for.expect("a lease expires");
    assert!(valid_for <= Duration::from_secs(27), "{valid_for:?}");
    // A detached lease's file is its whole state: it says its own ttl.
    let mut detached = request("mem:///lease-detached", WaitMode::Try);
    detached.detached = true;
    daemon.acquire_with(&session, 2, detached).await;
    assert_eq!(
        granted(&mut frames).await.metadata.ttl(),
        Some(Duration::from_secs(30))
    );
}

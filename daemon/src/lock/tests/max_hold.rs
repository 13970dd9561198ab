use std::time::Duration;

use vfslock_proto::{ErrorKind, Event, LockMode, ServerFrame, WaitMode};

use crate::lock::tests::{granted, next, released, request, Daemon, Frames};

const TARGET: &str = "mem:///max-hold";

/// The next lease-ended event, renewals skipped.
async fn lease_ended(frames: &mut Frames) -> (ErrorKind, String) {
    loop {
        match next(frames).await {
            ServerFrame::Event {
                event: Event::LeaseEnded { kind, reason },
                ..
            } => return (kind, reason),
            ServerFrame::Event {
                event: Event::LeaseRenewed { .. },
                ..
            } => {}
            other => panic!("expected the lease to end, got {other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_holding_ends_at_its_max_hold_and_the_next_waiter_gets_the_lock() {
    let daemon = Daemon::start().await;
    let (holder, mut holder_frames) = daemon.session(1, 0);
    let (waiter, mut waiter_frames) = daemon.session(2, 0);
    daemon
        .acquire_bounded(
            &holder,
            1,
            request(TARGET, WaitMode::Try),
            LockMode::Exclusive,
            Some(Duration::from_secs(45)),
        )
        .await;
    let first = granted(&mut holder_frames).await;
    daemon
        .acquire(&waiter, 1, TARGET, WaitMode::Wait { timeout: None })
        .await;
    let (kind, reason) = lease_ended(&mut holder_frames).await;
    assert_eq!(kind, ErrorKind::MaxHoldReached);
    assert!(reason.contains("max-hold of 45s"), "{reason}");
    let second = loop {
        match next(&mut waiter_frames).await {
            ServerFrame::Response { result, .. } => match result {
                Ok(vfslock_proto::Response::Granted(grant)) => break grant,
                other => panic!("expected a grant, got {other:?}"),
            },
            ServerFrame::Event { .. } => {}
        }
    };
    assert_ne!(first.lock_id, second.lock_id);
    // The first holder's release afterwards finds nothing of its own.
    daemon.release(&holder, 2, TARGET, &first.lock_id).await;
    match crate::lock::tests::answer(&mut holder_frames).await {
        Ok(vfslock_proto::Response::Released { held: false }) => {}
        other => panic!("expected held: false, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_holding_released_before_its_max_hold_is_not_ended_again() {
    let daemon = Daemon::start().await;
    let (holder, mut frames) = daemon.session(1, 0);
    daemon
        .acquire_bounded(
            &holder,
            1,
            request(TARGET, WaitMode::Try),
            LockMode::Exclusive,
            Some(Duration::from_secs(5)),
        )
        .await;
    let first = granted(&mut frames).await;
    daemon.release(&holder, 2, TARGET, &first.lock_id).await;
    released(&mut frames).await;
    // A second holding by the same session under the same acquire id is not ended by the
    // first one's timer (it was stopped with the first holding).
    daemon
        .acquire_bounded(
            &holder,
            1,
            request(TARGET, WaitMode::Try),
            LockMode::Exclusive,
            None,
        )
        .await;
    granted(&mut frames).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(daemon.lock_file(TARGET).await.is_some(), "still held");
    while let Ok(frame) = frames.try_recv() {
        if let crate::link::Outgoing::Frame(ServerFrame::Event {
            event: Event::LeaseEnded { kind, reason },
            ..
        }) = frame
        {
            panic!("the holding without a max-hold ended: {kind:?} {reason}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_shared_holder_leaves_at_its_max_hold_and_the_others_keep_the_lock() {
    let daemon = Daemon::start().await;
    let (bounded, mut bounded_frames) = daemon.session(1, 0);
    let (other, mut other_frames) = daemon.session(2, 0);
    daemon
        .acquire_bounded(
            &bounded,
            1,
            request(TARGET, WaitMode::Try),
            LockMode::Slots(2),
            Some(Duration::from_secs(20)),
        )
        .await;
    granted(&mut bounded_frames).await;
    daemon
        .acquire_in(
            &other,
            1,
            request(TARGET, WaitMode::Try),
            LockMode::Slots(2),
        )
        .await;
    granted(&mut other_frames).await;
    let (kind, _) = lease_ended(&mut bounded_frames).await;
    assert_eq!(kind, ErrorKind::MaxHoldReached);
    // One slot is free again, the other still taken.
    let (third, mut third_frames) = daemon.session(3, 0);
    daemon
        .acquire_in(
            &third,
            1,
            request(TARGET, WaitMode::Try),
            LockMode::Slots(2),
        )
        .await;
    granted(&mut third_frames).await;
    let (fourth, mut fourth_frames) = daemon.session(4, 0);
    daemon
        .acquire_in(
            &fourth,
            1,
            request(TARGET, WaitMode::Try),
            LockMode::Slots(2),
        )
        .await;
    let refused = crate::lock::tests::refused(&mut fourth_frames).await;
    assert_eq!(refused.kind, ErrorKind::AlreadyHeld, "{}", refused.message);
}

use vfslock_proto::{ErrorKind, Event, Response, WaitMode};

use crate::lock::tests::{answer, event, granted, refused, request, Daemon};
use crate::lock::LockMessage;

const TARGET: &str = "mem:///detached";

#[tokio::test]
async fn a_detached_lease_outlives_its_connection_and_only_its_uid_may_release_it() {
    let daemon = Daemon::start().await;
    let (owner, mut owner_frames) = daemon.session(1, 1000);
    let mut detached = request(TARGET, WaitMode::Try);
    detached.detached = true;
    daemon.acquire_with(&owner, 1, detached).await;
    let grant = granted(&mut owner_frames).await;
    assert_eq!(
        owner.open_acquires(),
        0,
        "a detached lease is not the connection's"
    );
    daemon
        .send(TARGET, LockMessage::SessionClosed { session_id: 1 })
        .await;
    // Still held: a try of another connection is refused by the lock file itself.
    let (other, mut other_frames) = daemon.session(2, 1001);
    daemon.acquire(&other, 1, TARGET, WaitMode::Try).await;
    assert_eq!(
        refused(&mut other_frames).await.kind,
        ErrorKind::AlreadyHeld
    );
    let release = |session: &std::sync::Arc<crate::link::SessionLink>, id| LockMessage::Release {
        session: session.clone(),
        id,
        lock_id: grant.lock_id.clone(),
    };
    daemon.send(TARGET, release(&other, 2)).await;
    let error = refused(&mut other_frames).await;
    assert_eq!(error.kind, ErrorKind::PermissionDenied);
    assert!(
        error.message.contains("belongs to uid 1000"),
        "{}",
        error.message
    );
    let (same_uid, mut same_uid_frames) = daemon.session(3, 1000);
    daemon.send(TARGET, release(&same_uid, 1)).await;
    assert!(matches!(
        answer(&mut same_uid_frames).await,
        Ok(Response::Released { held: true })
    ));
    assert!(daemon.lock_file(TARGET).await.is_none());
}

#[tokio::test]
async fn a_detached_lease_needs_a_ttl() {
    let daemon = Daemon::start().await;
    let (owner, mut frames) = daemon.session(1, 1000);
    let mut detached = request(TARGET, WaitMode::Try);
    detached.detached = true;
    detached.ttl = Some(std::time::Duration::ZERO);
    daemon.acquire_with(&owner, 1, detached).await;
    let error = refused(&mut frames).await;
    assert_eq!(error.kind, ErrorKind::InvalidTarget);
    assert!(daemon.lock_file(TARGET).await.is_none());
}

#[tokio::test]
async fn an_admins_break_tells_the_holder_first_and_removes_the_lock_file() {
    let daemon = Daemon::start().await;
    let (holder, mut holder_frames) = daemon.session(1, 1000);
    let (admin, mut admin_frames) = daemon.session(2, 0);
    daemon.acquire(&holder, 1, TARGET, WaitMode::Try).await;
    granted(&mut holder_frames).await;
    let message = LockMessage::Break {
        session: admin.clone(),
        id: 1,
        reason: "stuck job".into(),
    };
    daemon.send(TARGET, message).await;
    match event(&mut holder_frames).await {
        Event::LeaseEnded { kind, reason } => {
            assert_eq!(kind, vfslock_proto::ErrorKind::LeaseLost);
            assert!(reason.contains("was broken by uid 0"), "{reason}");
            assert!(reason.ends_with("stuck job"), "{reason}");
        }
        other => panic!("expected a loss, got {other:?}"),
    }
    match answer(&mut admin_frames).await {
        Ok(Response::Broken(Some(broken))) => assert_eq!(broken.pid, holder.caller.pid),
        other => panic!("expected a break, got {other:?}"),
    }
    assert!(daemon.lock_file(TARGET).await.is_none());
    assert_eq!(holder.open_acquires(), 0);
}

//! Shared locks and semaphores kept across a restart: a real actor adopts a joint entry the
//! previous run journaled, keeps one share per journaled member behind a fence, hands each back
//! only to its own session, and lets the unresumed ones go when the window closes.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use vfslock_proto::{ErrorKind, LockMode, RequestId, WaitMode};

use super::{Kept, NOBODY};
use crate::journal::{JointMember, Owner};
use crate::link::{SessionLink, SessionSecret};
use crate::lock::tests::{answer, granted, request, some_entry, Daemon, Frames};
use crate::lock::LockMessage;
use crate::lockfile::joint::{HolderEntry, Joint, JointMode};

const TARGET: &str = "mem:///kept";
const OURS: &str = "00000000000000000000000000000e01";

/// Our entry as the previous run left it: `count` slots, token 7.
fn our_entry(count: u32) -> HolderEntry {
    HolderEntry {
        lock_id: OURS.into(),
        daemon_id: "previous-run".into(),
        hostname: "host".into(),
        count,
        token: Some(7),
        ..some_entry()
    }
}

async fn plant(daemon: &Daemon, joint: Joint) {
    let now = SystemTime::now();
    daemon
        .plant_with(
            TARGET,
            Box::new(move |_| joint.to_json("file-id", "previous-run", now)),
        )
        .await;
}

async fn holders(daemon: &Daemon) -> Option<Joint> {
    let observed = daemon.lock_file(TARGET).await?;
    Some(Joint::parse(&observed.bytes).expect("a joint lock file"))
}

/// A session of the previous run: its secret, and the owner the journal kept.
fn previous_session(id: u64) -> (SessionSecret, Owner) {
    let secret = SessionSecret::issue("previous-run", id);
    let owner = Owner {
        session: secret.session.clone(),
        secret_sha256: secret.hash.clone(),
        uid: Some(1000),
    };
    (secret, owner)
}

async fn adopt(daemon: &Daemon, members: Vec<JointMember>, window: Duration) {
    let kept = Kept {
        lock_id: OURS.into(),
        owner: None,
        members,
        until: Instant::now() + window,
    };
    daemon
        .send(TARGET, LockMessage::Adopt(Box::new(kept)))
        .await;
    // Answered after the adoption: the actor handles its messages in order.
    let (asker, mut frames) = daemon.session(99, 0);
    daemon
        .send(
            TARGET,
            LockMessage::Metadata {
                session: asker,
                id: 1,
            },
        )
        .await;
    let _ = answer(&mut frames).await;
}

async fn resume(
    session: &Arc<SessionLink>,
    daemon: &Daemon,
    id: RequestId,
    lock_id: &str,
    secret: &SessionSecret,
) {
    assert!(session.acquire_started(id, 1000).is_ok());
    let message = LockMessage::Resume {
        session: session.clone(),
        id,
        lock_id: lock_id.into(),
        claimed: secret.session.clone(),
        secret: secret.ticket(Duration::ZERO).secret,
    };
    daemon.send(TARGET, message).await;
}

async fn refused(frames: &mut Frames) -> vfslock_proto::WireError {
    match answer(frames).await {
        Err(error) => error,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_semaphore_keeps_each_journaled_share_for_its_own_session() {
    let daemon = Daemon::start().await;
    // Ours took 3 of 4 slots, for three local holders; two of them may resume. Another
    // daemon holds the fourth.
    let other = some_entry();
    plant(
        &daemon,
        Joint {
            mode: JointMode::Slots(4),
            holders: vec![other.clone(), our_entry(3)],
        },
    )
    .await;
    let (first, first_owner) = previous_session(1);
    let (second, second_owner) = previous_session(2);
    let members = vec![
        JointMember {
            lock_id: OURS.into(),
            owner: first_owner,
        },
        JointMember {
            lock_id: "member-2".into(),
            owner: second_owner,
        },
    ];
    adopt(&daemon, members, Duration::from_millis(800)).await;

    // Renewed in place: our entry keeps its id and token, takes one slot per kept share, and
    // the other daemon's entry is left as it was.
    let joint = holders(&daemon).await.expect("kept");
    let entry = joint.entry(OURS).expect("our entry");
    assert_eq!((entry.count, entry.token), (2, Some(7)));
    assert_eq!(entry.daemon_id, daemon.ctx.instance_id);
    assert_eq!(joint.entry(&other.lock_id), Some(&other));

    // A slot is free in the file, but nothing is granted while a share may be believed in.
    let (newcomer, mut newcomer_frames) = daemon.session(10, 1000);
    daemon
        .acquire_in(
            &newcomer,
            1,
            request(TARGET, WaitMode::Try),
            LockMode::Slots(4),
        )
        .await;
    assert_eq!(
        refused(&mut newcomer_frames).await.kind,
        ErrorKind::AlreadyHeld
    );
    let (writer, mut writer_frames) = daemon.session(11, 1000);
    daemon.acquire(&writer, 1, TARGET, WaitMode::Try).await;
    let error = refused(&mut writer_frames).await;
    assert!(
        matches!(error.kind, ErrorKind::AlreadyHeld | ErrorKind::ModeConflict),
        "{error:?}"
    );

    // Only its own session gets a share back, by the lock id its grant named.
    let (resumer, mut frames) = daemon.session(20, 1000);
    resume(&resumer, &daemon, 1, "member-2", &first).await;
    assert_eq!(refused(&mut frames).await.kind, ErrorKind::PermissionDenied);
    resume(&resumer, &daemon, 2, "member-2", &second).await;
    let grant = granted(&mut frames).await;
    assert_eq!(grant.lock_id, "member-2");
    assert_eq!(grant.token, Some(7), "the same token");
    resume(&resumer, &daemon, 3, "member-2", &second).await;
    assert_eq!(refused(&mut frames).await.kind, ErrorKind::LeaseLost);

    // The first share is never resumed: when the window closes it goes, and its slot with it.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let joint = holders(&daemon).await.expect("still held");
    assert_eq!(joint.entry(OURS).map(|e| e.count), Some(1));
    daemon
        .acquire_in(
            &newcomer,
            2,
            request(TARGET, WaitMode::Try),
            LockMode::Slots(4),
        )
        .await;
    granted(&mut newcomer_frames).await;
    let _ = NOBODY;
}

#[tokio::test]
async fn a_shared_entry_nobody_resumes_leaves_the_file_when_the_window_closes() {
    let daemon = Daemon::start().await;
    plant(
        &daemon,
        Joint {
            mode: JointMode::Shared,
            holders: vec![our_entry(1)],
        },
    )
    .await;
    let (first, first_owner) = previous_session(1);
    let (_, second_owner) = previous_session(2);
    let members = vec![
        JointMember {
            lock_id: OURS.into(),
            owner: first_owner,
        },
        JointMember {
            lock_id: "member-2".into(),
            owner: second_owner,
        },
    ];
    adopt(&daemon, members, Duration::from_millis(800)).await;
    assert!(holders(&daemon).await.is_some());

    // A writer waits behind the kept shares.
    let (writer, mut writer_frames) = daemon.session(11, 1000);
    daemon
        .acquire(&writer, 1, TARGET, WaitMode::Wait { timeout: None })
        .await;
    // One share comes back, and its holder lets go.
    let (resumer, mut frames) = daemon.session(20, 1000);
    resume(&resumer, &daemon, 1, OURS, &first).await;
    let grant = granted(&mut frames).await;
    assert_eq!(grant.lock_id, OURS);
    daemon.release(&resumer, 2, TARGET, OURS).await;
    let _ = answer(&mut frames).await;
    assert!(
        holders(&daemon).await.is_some(),
        "the other share is still kept"
    );
    // The other is never resumed: the window closes, the entry and the file go, and the
    // writer gets the lock.
    let grant = granted(&mut writer_frames).await;
    assert!(grant.token > Some(7));
}

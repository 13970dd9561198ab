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

/// Each local holder of a shared lock whose session may resume is journaled under the daemon's
/// entry, before it hears of its grant, with its own lock id; one that lets go is not; a holder
/// whose session cannot resume is not journaled at all.
#[tokio::test]
async fn each_resumable_share_is_journaled_under_the_entry() {
    let state = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let socket = std::path::Path::new("/run/test.sock");
    let settings = crate::config::Settings::defaults();
    let stores = crate::store::Stores::new(&settings).await.unwrap();
    let mut ctx = crate::context::Context::new(settings, stores, "host".into());
    let (journal, _) = crate::journal::Journal::open(state.path(), "host", socket).unwrap();
    let path = journal
        .memory_path()
        .with_extension("")
        .with_extension("jsonl");
    ctx.journal = Some(journal);
    let ctx = Arc::new(ctx);
    let registry = crate::lock::Registry::start(ctx.clone()).await.unwrap();
    let daemon = Daemon { ctx, registry };
    let target = format!("file://{}/shared.csv", data.path().display());
    let session = |id: u64, resumable: bool| {
        let (out, frames) = crate::link::Outbound::queued();
        let caller = crate::link::Caller {
            pid: 100,
            uid: Some(1000),
            groups: vec![],
            admin: false,
        };
        let mut link = SessionLink::new(id, out, caller);
        if resumable {
            link = link.resumable(SessionSecret::issue("run", id), Duration::from_secs(60));
        }
        (Arc::new(link), frames)
    };
    let mut grants = Vec::new();
    for (id, resumable) in [(1, true), (2, true), (3, false)] {
        let (link, mut frames) = session(id, resumable);
        daemon
            .acquire_in(&link, 1, request(&target, WaitMode::Try), LockMode::Shared)
            .await;
        let grant = match answer(&mut frames).await {
            Ok(vfslock_proto::Response::Granted(grant)) => grant,
            Ok(vfslock_proto::Response::GrantedResumable { grant, .. }) => grant,
            other => panic!("expected a grant, got {other:?}"),
        };
        grants.push((link, grant, frames));
    }
    let entry = grants[0].1.lock_id.clone();
    let (leaving, grant, mut frames) = grants.remove(1);
    daemon.release(&leaving, 2, &target, &grant.lock_id).await;
    let _ = answer(&mut frames).await;

    // What a restart would read: the journal as a crash leaves it.
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(&path, copy.path().join(path.file_name().unwrap())).unwrap();
    let (_, left) = crate::journal::Journal::open(copy.path(), "host", socket).unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].lock_id, entry);
    let members: Vec<&str> = left[0].members.iter().map(|m| m.lock_id.as_str()).collect();
    assert_eq!(members, [entry.as_str()], "the first holder only: {left:?}");
    assert_eq!(left[0].members[0].owner.session, "run-1");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains(&format!("\"left\":\"{}\"", grant.lock_id)),
        "{text}"
    );
    assert_eq!(text.matches("\"member\"").count(), 2, "{text}");
}

/// What a restart owes a target reaches its actor before any request, whether the request
/// starts the actor or the background start does: a newcomer's try meets the fence of the
/// previous run's waiter instead of a free lock.
#[tokio::test]
async fn owed_startup_messages_reach_the_actor_before_any_request() {
    let daemon = Daemon::start().await;
    let until = Instant::now() + Duration::from_secs(60);
    let owe = |target: &str, ordinal: u64| {
        let (_, owner) = previous_session(ordinal);
        let address = Arc::new(crate::address::Address::parse(target).unwrap());
        let waits = vec![(ordinal, owner)];
        daemon
            .registry
            .owe(address, LockMessage::AdoptWaits { waits, until });
    };
    owe("mem:///owed/asked-first", 1);
    owe("mem:///owed/started-in-background", 2);
    let (session, mut frames) = daemon.session(1, 1000);
    daemon
        .acquire(&session, 1, "mem:///owed/asked-first", WaitMode::Try)
        .await;
    assert_eq!(refused(&mut frames).await.kind, ErrorKind::AlreadyHeld);

    assert_eq!(daemon.registry.deliver_owed().await, 1, "the other target");
    assert_eq!(daemon.registry.deliver_owed().await, 0, "nothing left owed");
    daemon
        .acquire(
            &session,
            2,
            "mem:///owed/started-in-background",
            WaitMode::Try,
        )
        .await;
    assert_eq!(refused(&mut frames).await.kind, ErrorKind::AlreadyHeld);
    // A target owed nothing is free.
    daemon
        .acquire(&session, 3, "mem:///owed/never", WaitMode::Try)
        .await;
    granted(&mut frames).await;
}

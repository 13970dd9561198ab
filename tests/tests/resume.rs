//! Holdings that outlive the daemon (issue 17): after `kill -9` and a restart, the restarted
//! daemon keeps each journaled holding for the resume window W, grants its target to nobody
//! meanwhile, and hands it back, with its lock id and token, only to the session that proves
//! it held it. What nobody resumes is released when the window closes.
//!
//! The first tests speak the wire by hand, to show the daemon's side alone; the others use the
//! client library, which reconnects and resumes by itself.

use std::time::Duration;

use tokio::net::UnixStream;
use vfslock::{ErrorKind, LockOptions};
use vfslock_proto::{
    AcquireRequest, Request, RequestId, Response, Resumable, Secret, ServerFrame, WaitMode,
};
use vfslock_tests::{within, Daemon, TEST_CONFIG};

#[path = "support/wire.rs"]
mod wire;
use wire::{ask_as, handshaken};

/// A daemon whose resume window is `window`.
fn daemon_with_window(window: &str) -> Daemon {
    Daemon::start_with(&TEST_CONFIG.replace(
        "[locks]\n",
        &format!("[locks]\nresume-window = \"{window}\"\n"),
    ))
}

/// A holding as its holder knows it.
struct Held {
    target: String,
    lock_id: String,
    token: Option<u64>,
    resume: Resumable,
}

async fn acquire(stream: &mut UnixStream, id: RequestId, target: &str) -> Held {
    let request = Request::Acquire(AcquireRequest {
        target: target.to_owned(),
        ttl: Some(Duration::from_secs(30)),
        owner_id: Some("resume-test".into()),
        wait: WaitMode::Try,
        ask_on_stale: false,
        detached: false,
    });
    match ask_as(stream, id, request).await {
        ServerFrame::Response {
            result: Ok(Response::GrantedResumable { grant, resume }),
            ..
        } => Held {
            target: grant.target,
            lock_id: grant.lock_id,
            token: grant.token,
            resume,
        },
        other => panic!("expected a resumable grant of {target}, got {other:?}"),
    }
}

fn resume_request(held: &Held, session: &str, secret: &Secret) -> Request {
    Request::Resume {
        target: held.target.clone(),
        lock_id: held.lock_id.clone(),
        session: session.to_owned(),
        secret: secret.clone(),
    }
}

/// The lock file's `lockId` and `token`, read from the store (`None` when there is none).
fn lock_file(target: &str) -> Option<(String, Option<u64>)> {
    let path = format!("{}.lock", target.trim_start_matches("file://"));
    let bytes = std::fs::read(path).ok()?;
    let json: serde_json::Value = serde_json::from_slice(&bytes).expect("a JSON lock file");
    Some((
        json["lockId"].as_str().expect("a lock id").to_owned(),
        json["token"].as_u64(),
    ))
}

fn refused(answer: &ServerFrame) -> vfslock_proto::ErrorKind {
    match answer {
        ServerFrame::Response { result: Err(e), .. } => e.kind,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_holding_is_resumed_after_a_crash_only_by_its_session() {
    // A window no test run reaches: the holdings stay kept for the whole test.
    let mut daemon = daemon_with_window("5m");
    let mut holder = handshaken(daemon.socket()).await;
    let held = acquire(&mut holder, 1, &daemon.file_target("kept.csv")).await;
    let other = acquire(&mut holder, 2, &daemon.file_target("other.csv")).await;
    assert_eq!(held.resume.window, Duration::from_secs(300));
    let before = lock_file(&held.target).expect("the lock file");

    daemon.kill();
    daemon.restart();

    // Kept for its session: the file is unchanged in identity, and nobody else gets it.
    assert_eq!(lock_file(&held.target), Some(before.clone()));
    let client = daemon.client().await;
    let mut taker = client.new_lock(&held.target, LockOptions::default());
    let error = within("a try while the holding is kept", taker.acquire())
        .await
        .expect_err("the kept holding is not granted to anyone else");
    assert_eq!(error.kind(), ErrorKind::AlreadyHeld, "{error}");

    // Only the session that held it, with its secret, gets it back.
    let mut resumer = handshaken(daemon.socket()).await;
    let wrong = Secret("0".repeat(64));
    let answer = ask_as(
        &mut resumer,
        10,
        resume_request(&held, &held.resume.session, &wrong),
    )
    .await;
    assert_eq!(refused(&answer), vfslock_proto::ErrorKind::PermissionDenied);
    let answer = ask_as(
        &mut resumer,
        11,
        resume_request(&held, "another-session", &held.resume.secret),
    )
    .await;
    assert_eq!(refused(&answer), vfslock_proto::ErrorKind::PermissionDenied);
    let answer = ask_as(
        &mut resumer,
        12,
        resume_request(&held, &held.resume.session, &held.resume.secret),
    )
    .await;
    let (grant, resume) = match answer {
        ServerFrame::Response {
            id: 12,
            result: Ok(Response::GrantedResumable { grant, resume }),
        } => (grant, resume),
        other => panic!("expected the holding back, got {other:?}"),
    };
    assert_eq!(grant.lock_id, held.lock_id, "the same holding");
    assert_eq!(grant.token, held.token, "the same token");
    assert!(grant.valid_for.is_some_and(|v| !v.is_zero()));
    assert_ne!(
        resume.session, held.resume.session,
        "the new connection's session"
    );
    assert_eq!(lock_file(&held.target).map(|(id, _)| id), Some(before.0));
    assert_eq!(lock_file(&held.target).and_then(|(_, t)| t), before.1);

    // Once resumed it is no longer kept: a second resume finds nothing.
    let answer = ask_as(
        &mut resumer,
        13,
        resume_request(&held, &held.resume.session, &held.resume.secret),
    )
    .await;
    assert_eq!(refused(&answer), vfslock_proto::ErrorKind::LeaseLost);

    // It is an ordinary holding of the new connection: released by it, then free.
    let answer = ask_as(
        &mut resumer,
        14,
        Request::Release {
            target: held.target.clone(),
            lock_id: held.lock_id.clone(),
        },
    )
    .await;
    assert!(
        matches!(
            answer,
            ServerFrame::Response {
                result: Ok(Response::Released { held: true }),
                ..
            }
        ),
        "{answer:?}"
    );
    assert_eq!(lock_file(&held.target), None, "released: no lock file");
    within("the lock after the release", taker.acquire())
        .await
        .expect("free after its holder released it");

    // The other holding is still kept for its session.
    assert!(lock_file(&other.target).is_some());
    let mut late = client.new_lock(&other.target, LockOptions::default());
    let error = within("a try on the other kept holding", late.acquire())
        .await
        .expect_err("still kept");
    assert_eq!(error.kind(), ErrorKind::AlreadyHeld, "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn what_nobody_resumes_is_released_when_the_window_closes() {
    let mut daemon = daemon_with_window("2s");
    let mut holder = handshaken(daemon.socket()).await;
    let held = acquire(&mut holder, 1, &daemon.file_target("unclaimed.csv")).await;

    daemon.kill();
    daemon.restart();

    // A waiter is queued behind the kept holding, and served only once the window closed and
    // the file nobody claimed was removed.
    let client = daemon.client().await;
    let mut waiter = client.new_lock(&held.target, LockOptions::default());
    assert!(lock_file(&held.target).is_some_and(|(id, _)| id == held.lock_id));
    within(
        "the waiter",
        waiter.acquire_timeout(Duration::from_secs(60)),
    )
    .await
    .expect("granted once the window closed");
    let (lock_id, _) = lock_file(&held.target).expect("the waiter's lock file");
    assert_ne!(lock_id, held.lock_id, "a new holding");
    assert_eq!(waiter.lock_id(), Some(lock_id.as_str()));

    // The old session comes too late.
    let mut late = handshaken(daemon.socket()).await;
    let answer = ask_as(
        &mut late,
        5,
        resume_request(&held, &held.resume.session, &held.resume.secret),
    )
    .await;
    assert_eq!(refused(&answer), vfslock_proto::ErrorKind::LeaseLost);
    assert!(daemon.log().contains("nobody resumed"), "{}", daemon.log());
}

/// The client library resumes by itself: locks held through a daemon killed with SIGKILL and
/// started again within the window stay held (async and blocking), keep their lock id and
/// token, are kept from everyone else meanwhile, and are released as usual afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn library_locks_are_resumed_after_a_crash() {
    let mut daemon = daemon_with_window("5m");
    let client = daemon.client().await;
    let target = daemon.file_target("library.csv");
    let mut lock = client.new_lock(&target, LockOptions::default());
    within("acquire", lock.acquire()).await.expect("acquire");
    let socket = daemon.socket().to_owned();
    let blocking_target = daemon.file_target("blocking.csv");
    let (blocking_tx, blocking_rx) = std::sync::mpsc::channel::<()>();
    let (held_tx, held_rx) = tokio::sync::oneshot::channel();
    let blocking = std::thread::spawn(move || {
        let client = vfslock::blocking::Client::connect(&socket).expect("connect");
        let mut lock = client.new_lock(&blocking_target, LockOptions::default());
        lock.acquire().expect("blocking acquire");
        held_tx.send(lock.token()).expect("tell the test");
        // Held until the test says the daemon is back and the lock resumed.
        blocking_rx.recv().expect("the test's word");
        let still = lock.is_held();
        let released = lock.release();
        (still, released)
    });
    let blocking_token = within("the blocking lock", held_rx).await.expect("held");
    let before = [
        lock_file(&target).expect("lock file"),
        lock_file(&daemon.file_target("blocking.csv")).expect("lock file"),
    ];

    daemon.kill();
    daemon.restart();
    vfslock_tests::eventually("both locks resumed", || {
        daemon.log().matches("holding resumed").count() == 2
    })
    .await;

    assert!(lock.is_held(), "resumed, never lost");
    assert_eq!(lock.token(), before[0].1);
    assert_eq!(blocking_token, before[1].1);
    assert_eq!(lock_file(&target), Some(before[0].clone()));
    assert_eq!(
        lock_file(&daemon.file_target("blocking.csv")),
        Some(before[1].clone())
    );
    let other = daemon.client().await;
    let mut taker = other.new_lock(&target, LockOptions::default());
    let error = within("a try on the resumed lock", taker.acquire())
        .await
        .expect_err("held by its resumed holder");
    assert_eq!(error.kind(), ErrorKind::AlreadyHeld, "{error}");

    within("release", lock.release())
        .await
        .expect("a resumed lock releases as usual");
    assert_eq!(lock_file(&target), None);
    blocking_tx.send(()).expect("tell the blocking holder");
    let (still, released) = blocking.join().expect("the blocking holder");
    assert!(still, "the blocking lock was resumed too");
    released.expect("the blocking lock releases as usual");
    assert_eq!(lock_file(&daemon.file_target("blocking.csv")), None);
    within("the lock after the release", taker.acquire())
        .await
        .expect("free");
}

/// A holder whose daemon does not come back within W of the last frame it heard counts its
/// lock as lost (the safety rule), before the restarted daemon gives the target to anyone; and
/// `mem://` locks, which live in the daemon's memory, are lost at a crash.
#[tokio::test(flavor = "multi_thread")]
async fn a_lock_not_resumed_in_time_is_lost_before_anyone_else_gets_it() {
    let mut daemon = daemon_with_window("1s");
    let client = daemon.client().await;
    let target = daemon.file_target("late.csv");
    let mut lock = client.new_lock(&target, LockOptions::default());
    within("acquire", lock.acquire()).await.expect("acquire");
    let old_lock_id = lock.lock_id().expect("held").to_owned();
    // A lease that never expires follows the same rule: W after the last frame.
    let forever_target = daemon.file_target("forever.csv");
    let mut forever = client.new_lock(&forever_target, LockOptions::default().ttl(Duration::ZERO));
    within("acquire", forever.acquire()).await.expect("acquire");

    daemon.kill();
    // Told before the daemon is even back, so before anyone else can be given the lock.
    let reason = within("the loss", lock.lost()).await;
    assert!(reason.contains("not resumed"), "{reason}");
    assert!(!lock.is_held());
    let reason = within("the ttl-0 loss", forever.lost()).await;
    assert!(reason.contains("not resumed"), "{reason}");
    assert!(!forever.is_held());

    daemon.restart();
    let other = daemon.client().await;
    let mut taker = other.new_lock(&target, LockOptions::default());
    within(
        "the next holder",
        taker.acquire_timeout(Duration::from_secs(30)),
    )
    .await
    .expect("granted once the window closed");
    assert_ne!(taker.lock_id(), Some(old_lock_id.as_str()));
    let released = within("release the lost lock", lock.release()).await;
    assert!(released.is_err_and(|e| e.is_lease_lost()));
    assert!(
        taker.is_held(),
        "the old holder's release left the new holding alone"
    );
    let mut next = other.new_lock(&forever_target, LockOptions::default());
    within(
        "the ttl-0 lock's next holder",
        next.acquire_timeout(Duration::from_secs(30)),
    )
    .await
    .expect("granted once the window closed");
    assert!(
        !daemon.log().contains("holding resumed"),
        "{}",
        daemon.log()
    );
}

/// `mem://` locks live in the daemon's memory: a crash ends them, and their holders hear so
/// as soon as the restarted daemon says it kept nothing.
#[tokio::test(flavor = "multi_thread")]
async fn mem_locks_do_not_survive_a_crash() {
    let mut daemon = daemon_with_window("5m");
    let client = daemon.client().await;
    let mut memory = client.new_lock("mem:///resume/memory", LockOptions::default());
    within("acquire", memory.acquire()).await.expect("acquire");
    daemon.kill();
    daemon.restart();
    let reason = within("the loss", memory.lost()).await;
    assert!(reason.contains("not kept"), "{reason}");
    let mut again = client.new_lock("mem:///resume/memory", LockOptions::default());
    within("acquire again", again.acquire())
        .await
        .expect("free in the new daemon");
}

/// The planned restart (`systemctl reload vfslockd`: SIGUSR2), after the binary was replaced by
/// a new copy as an upgrade does: the same process re-executes the new binary, and every lock
/// held through it (a library client's, a `vfslockctl run` command's) stays held with its lock
/// id and token, nobody hears of a loss, the command runs on and finishes normally, and the
/// new daemon serves new requests.
#[tokio::test(flavor = "multi_thread")]
async fn a_planned_restart_keeps_every_lock_across_an_upgrade() {
    use tokio::process::Command;
    let daemon =
        Daemon::start_copy(&TEST_CONFIG.replace("[locks]\n", "[locks]\nresume-window = \"5m\"\n"));
    let client = daemon.client().await;
    let first = client.status().await.expect("status").instance_id;
    let target = daemon.file_target("planned.csv");
    let mut lock = client.new_lock(&target, LockOptions::default());
    within("acquire", lock.acquire()).await.expect("acquire");

    // A command under `vfslockctl run` that waits for the test's word, then exits 0.
    let run_target = daemon.file_target("run.csv");
    let go = daemon.data_dir().join("go");
    let mut run = Command::new(vfslock_tests::bin("vfslockctl"))
        .arg("--socket")
        .arg(daemon.socket())
        .args(["run", &run_target, "--", "sh", "-c"])
        .arg(format!(
            "while [ ! -e '{}' ]; do sleep 0.05; done",
            go.display()
        ))
        .kill_on_drop(true)
        .spawn()
        .expect("start vfslockctl run");
    vfslock_tests::eventually("the command's lock", || lock_file(&run_target).is_some()).await;
    let before = [
        lock_file(&target).expect("lock file"),
        lock_file(&run_target).expect("lock file"),
    ];

    daemon.replace_binary();
    let pid = daemon.pid();
    daemon.signal(libc::SIGUSR2);
    vfslock_tests::eventually("both locks resumed by the new daemon", || {
        daemon.log().matches("holding resumed").count() == 2
    })
    .await;
    let status = within("status from the new daemon", client.status())
        .await
        .expect("status");
    assert_ne!(status.instance_id, first, "a new daemon answers");
    assert_eq!(daemon.pid(), pid, "the same process");
    assert!(lock.is_held(), "never lost");
    assert_eq!(lock_file(&target), Some(before[0].clone()));
    assert_eq!(lock_file(&run_target), Some(before[1].clone()));

    std::fs::write(&go, "").expect("tell the command to finish");
    let exit = within("the command", run.wait()).await.expect("wait");
    assert!(
        exit.success(),
        "the command ran on and finished normally: {exit:?}"
    );
    assert_eq!(lock_file(&run_target), None, "released when it finished");
    within("release", lock.release())
        .await
        .expect("released as usual");
    assert_eq!(lock_file(&target), None);
    let mut again = client.new_lock(&target, LockOptions::default());
    within("a new lock", again.acquire())
        .await
        .expect("the new daemon grants");
}

/// A restart does not lengthen a max-hold: a lock held with one (exclusive, and a share of a
/// shared lock) and resumed after `kill -9` is still ended at its max-hold, counted from the
/// first grant, and then free for others.
#[tokio::test(flavor = "multi_thread")]
async fn a_max_hold_survives_a_crash() {
    let mut daemon = daemon_with_window("5m");
    let client = daemon.client().await;
    let target = daemon.file_target("capped.csv");
    let options = LockOptions::default().max_hold(Duration::from_secs(3));
    let mut lock = client.new_lock(&target, options.clone());
    within("acquire", lock.acquire()).await.expect("acquire");
    // A share of a shared lock keeps its own.
    let shared_target = daemon.file_target("capped-shared.csv");
    let mut share = client.new_lock(&shared_target, options.shared());
    within("acquire a share", share.acquire())
        .await
        .expect("acquire");

    daemon.kill();
    daemon.restart();
    vfslock_tests::eventually("both resumed", || {
        daemon.log().matches("holding resumed").count() == 2
    })
    .await;
    assert!(lock.is_held() && share.is_held(), "resumed, not lost");
    let reason = within("the max-hold's end", lock.lost()).await;
    assert!(reason.contains("max-hold"), "{reason}");
    let reason = within("the share's max-hold's end", share.lost()).await;
    assert!(reason.contains("max-hold"), "{reason}");
    let other = daemon.client().await;
    let mut next = other.new_lock(&target, LockOptions::default());
    within(
        "the next holder",
        next.acquire_timeout(Duration::from_secs(30)),
    )
    .await
    .expect("free after the max-hold");
}

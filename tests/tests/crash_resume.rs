//! The crash checks of issue 17 ("leases that outlive the daemon"), at the size of a real
//! user: many locks of several client-library connections through a daemon killed with
//! SIGKILL. Restarted within the resume window W, every holding comes back with its lock id
//! and fencing token and no holder hears of a loss; restarted after W, every holder hears of
//! its loss before the restarted daemon gives any of the targets to someone else, and nothing
//! is resumed. A resume is refused to a wrong secret (`resume.rs`) and to another uid (here).
//!
//! Only `file://` targets: `mem://` locks live in the daemon's memory and end with it
//! (`resume.rs`, `mem_locks_do_not_survive_a_crash`).

use std::time::{Duration, Instant};

use tokio::net::UnixStream;
use vfslock::{Lock, LockOptions};
use vfslock_proto::{AcquireRequest, Request, Response, Resumable, ServerFrame, WaitMode};
use vfslock_tests::{eventually, open_to_everyone, within, Daemon, NOBODY, TEST_CONFIG};

#[path = "support/wire.rs"]
mod wire;
use wire::{ask_as, handshaken};

/// Locks held at the crash, over [`CLIENTS`] connections.
const LOCKS: usize = 50;
/// Client-library connections holding them.
const CLIENTS: usize = 5;

/// A daemon whose resume window is `window`.
fn daemon_with_window(window: &str) -> Daemon {
    Daemon::start_with(&TEST_CONFIG.replace(
        "[locks]\n",
        &format!("[locks]\nresume-window = \"{window}\"\n"),
    ))
}

/// The lock file's `lockId` and `token` (`None` when there is none).
fn lock_file(target: &str) -> Option<(String, Option<u64>)> {
    let bytes = std::fs::read(format!("{target}.lock")).ok()?;
    let json: serde_json::Value = serde_json::from_slice(&bytes).expect("a JSON lock file");
    Some((
        json["lockId"].as_str().expect("a lock id").to_owned(),
        json["token"].as_u64(),
    ))
}

/// [`LOCKS`] locks of `file://` targets in the daemon's data directory, taken by the client
/// library over [`CLIENTS`] connections (returned too: they must live as long as the locks).
async fn hold_many(daemon: &Daemon, name: &str) -> (Vec<vfslock::Client>, Vec<Lock>) {
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(daemon.client().await);
    }
    let mut locks = Vec::new();
    for n in 0..LOCKS {
        let target = daemon.file_target(&format!("{name}-{n}.csv"));
        let mut lock = clients[n % CLIENTS].new_lock(target, LockOptions::default());
        within("acquire", lock.acquire()).await.expect("acquire");
        assert!(
            lock.resume_window().is_some(),
            "a resumable holding: {}",
            lock.target()
        );
        locks.push(lock);
    }
    (clients, locks)
}

/// Whether `lock` has heard of a loss by now (without waiting).
async fn heard_lost(lock: &Lock) -> bool {
    tokio::select! {
        biased;
        _ = lock.lost() => true,
        () = std::future::ready(()) => false,
    }
}

/// (a) 50 locks held by the library over 5 connections, `kill -9`, restart within the window:
/// every holding is resumed by its client by itself, nobody hears of a loss, and every lock
/// file keeps its lock id and fencing token; the locks are the clients' as before (nobody else
/// gets them, their release removes the files).
#[tokio::test(flavor = "multi_thread")]
async fn fifty_locks_are_all_resumed_after_a_crash_within_the_window() {
    // A window no test run reaches: nothing may be lost however slow the machine is.
    let mut daemon = daemon_with_window("5m");
    let (_clients, mut locks) = hold_many(&daemon, "within").await;
    let before: Vec<(String, Option<u64>)> = locks
        .iter()
        .map(|lock| lock_file(lock.target()).expect("a lock file"))
        .collect();
    for (lock, (lock_id, token)) in locks.iter().zip(&before) {
        assert_eq!(lock.lock_id(), Some(lock_id.as_str()));
        assert_eq!(lock.token(), *token);
        assert!(token.is_some(), "file:// grants tokens");
    }

    daemon.kill();
    daemon.restart();
    eventually("every holding resumed", || {
        daemon.log().matches("holding resumed").count() >= LOCKS
    })
    .await;
    assert_eq!(
        daemon.log().matches("holding resumed").count(),
        LOCKS,
        "each holding resumed once"
    );

    for (lock, (lock_id, token)) in locks.iter().zip(&before) {
        assert!(lock.is_held(), "{} is still held", lock.target());
        assert!(!heard_lost(lock).await, "no loss on {}", lock.target());
        assert_eq!(lock.lock_id(), Some(lock_id.as_str()));
        assert_eq!(lock.token(), *token);
        assert_eq!(
            lock_file(lock.target()),
            Some((lock_id.clone(), *token)),
            "the same lock file for {}",
            lock.target()
        );
    }
    // Still theirs: another client is refused every one of them.
    let other = daemon.client().await;
    for lock in &locks {
        let mut taker = other.new_lock(lock.target(), LockOptions::default());
        let error = within("a try on a resumed lock", taker.acquire())
            .await
            .expect_err("held by its resumed holder");
        assert!(error.is_already_held(), "{}: {error}", lock.target());
    }
    for lock in &mut locks {
        within("release", lock.release())
            .await
            .expect("a resumed lock releases as usual");
        assert_eq!(lock_file(lock.target()), None);
    }
}

/// (b) 50 locks, `kill -9`, and the daemon started again only after every holder has gone
/// more than W without a word from it: every holder hears of its loss, and every one of those
/// losses comes before the restarted daemon grants any of the targets to the clients that
/// wait for them; nothing is resumed; the targets are refused to everyone and the lock files
/// kept until the window closes, then removed, and the waiters get the targets with higher
/// tokens.
#[tokio::test(flavor = "multi_thread")]
async fn after_the_window_every_holder_hears_of_its_loss_before_anyone_else_gets_a_lock() {
    // Long enough that the files can be seen kept right after the restart on a slow machine,
    // short enough for a test.
    let mut daemon = daemon_with_window("3s");
    let (_clients, locks) = hold_many(&daemon, "after").await;
    let before: Vec<(String, Option<u64>)> = locks
        .iter()
        .map(|lock| lock_file(lock.target()).expect("a lock file"))
        .collect();

    daemon.kill();
    // Each holder's loss, and its instant. The restart waits for all of them: by then every
    // holder has gone more than W since its last frame, so the restart comes after the window.
    let mut lost_at = Vec::new();
    for lock in &locks {
        let reason = within("the loss", lock.lost()).await;
        lost_at.push(Instant::now());
        assert!(
            reason.contains("not resumed"),
            "{}: {reason}",
            lock.target()
        );
        assert!(!lock.is_held());
    }
    daemon.restart();

    // Kept, for nobody, until the window closes.
    for (lock, kept) in locks.iter().zip(&before) {
        assert_eq!(
            lock_file(lock.target()).as_ref(),
            Some(kept),
            "{} kept during the window",
            lock.target()
        );
    }
    // Another client is refused every target while the window is open (given to nobody), then
    // waits on every target and records when it got it.
    let other = daemon.client().await;
    for lock in &locks {
        let mut early = other.new_lock(lock.target(), LockOptions::default());
        let error = within("a try during the window", early.acquire())
            .await
            .expect_err("kept for nobody until the window closes");
        assert!(error.is_already_held(), "{}: {error}", lock.target());
    }
    let waits = locks.iter().map(|lock| {
        let mut waiter = other.new_lock(lock.target(), LockOptions::default());
        async move {
            within("a waiter", waiter.acquire_timeout(Duration::from_secs(60)))
                .await
                .expect("granted once the window closed");
            (Instant::now(), waiter)
        }
    });
    let granted: Vec<(Instant, Lock)> = futures_join_all(waits).await;

    let last_loss = lost_at.iter().max().expect("losses");
    for ((at, waiter), (old_id, old_token)) in granted.iter().zip(&before) {
        assert!(
            at > last_loss,
            "{} granted before every holder heard of its loss",
            waiter.target()
        );
        let (lock_id, token) = lock_file(waiter.target()).expect("the waiter's lock file");
        assert_ne!(&lock_id, old_id, "a new holding of {}", waiter.target());
        assert_eq!(waiter.lock_id(), Some(lock_id.as_str()));
        assert!(
            token.is_some() && token > *old_token,
            "{}: token {token:?} after {old_token:?}",
            waiter.target()
        );
    }
    let log = daemon.log();
    assert!(!log.contains("holding resumed"), "{log}");
    assert!(log.contains("nobody resumed"), "{log}");
}

/// Awaits every future of `futures` concurrently, in order (a small `join_all` on tokio).
async fn futures_join_all<T: Send + 'static>(
    futures: impl Iterator<Item = impl std::future::Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.expect("a waiter task"));
    }
    out
}

/// A resumable holding taken over the wire: its target, lock id and resume ticket.
async fn acquire_resumable(stream: &mut UnixStream, target: &str) -> (String, Resumable) {
    let request = Request::Acquire(AcquireRequest {
        target: target.to_owned(),
        ttl: Some(Duration::from_secs(60)),
        owner_id: Some("crash-resume".into()),
        wait: WaitMode::Try,
        ask_on_stale: false,
        detached: false,
    });
    match ask_as(stream, 1, request).await {
        ServerFrame::Response {
            result: Ok(Response::GrantedResumable { grant, resume }),
            ..
        } => (grant.lock_id, resume),
        other => panic!("expected a resumable grant of {target}, got {other:?}"),
    }
}

fn resume(target: &str, lock_id: &str, ticket: &Resumable) -> Request {
    Request::Resume {
        target: target.to_owned(),
        lock_id: lock_id.to_owned(),
        session: ticket.session.clone(),
        secret: ticket.secret.clone(),
    }
}

/// (c) The right session and secret from another uid are refused: the holding is bound to
/// the uid that took it, not only to what its holder knows (a wrong secret from the same uid:
/// `resume.rs`). The refusal leaves the holding kept, and its own uid then resumes it. Needs
/// root, to speak as `nobody`.
#[tokio::test(flavor = "multi_thread")]
async fn a_resume_from_another_uid_is_refused_even_with_the_right_secret() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: speaking as another uid needs root");
        return;
    }
    let mut daemon = daemon_with_window("5m");
    // The holding's file where `nobody` could create files too, so that only its uid differs.
    let data = daemon.data_dir();
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("open the data directory");
    let target = daemon.file_target("uid.csv");
    let mut holder = handshaken(daemon.socket()).await;
    let (lock_id, ticket) = acquire_resumable(&mut holder, &target).await;
    let before = lock_file(&target).expect("a lock file");

    daemon.kill();
    daemon.restart();
    open_to_everyone(&daemon);

    // A thread of this process that is `nobody` on its own: Linux keeps credentials per
    // thread, and the raw system calls (unlike libc's wrappers) change only the caller's. Its
    // connection carries uid 65534 (SO_PEERCRED is taken at connect).
    let socket = daemon.socket().to_owned();
    let request = resume(&target, &lock_id, &ticket);
    let answer = std::thread::spawn(move || {
        // SAFETY: plain system calls on this thread's own credentials.
        let changed = unsafe {
            libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) == 0
                && libc::syscall(libc::SYS_setresgid, NOBODY, NOBODY, NOBODY) == 0
                && libc::syscall(libc::SYS_setresuid, NOBODY, NOBODY, NOBODY) == 0
        };
        assert!(
            changed,
            "become nobody: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: geteuid has no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, NOBODY, "this thread is nobody");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(async move {
                let mut stream = handshaken(&socket).await;
                ask_as(&mut stream, 7, request).await
            })
    })
    .join()
    .expect("the nobody thread");
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the rest of the test is root"
    );
    match answer {
        ServerFrame::Response { result: Err(e), .. } => {
            assert_eq!(e.kind, vfslock_proto::ErrorKind::PermissionDenied, "{e:?}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    eventually("the refusal logged", || {
        daemon.log().contains("resume refused")
    })
    .await;
    let log = daemon.log();
    assert!(log.contains("another uid"), "refused for its uid: {log}");
    assert!(!log.contains("holding resumed"), "{log}");
    assert_eq!(lock_file(&target), Some(before.clone()), "still kept");

    // Its own uid, with the same ticket, gets it back.
    let mut resumer = handshaken(daemon.socket()).await;
    match ask_as(&mut resumer, 8, resume(&target, &lock_id, &ticket)).await {
        ServerFrame::Response {
            result: Ok(Response::GrantedResumable { grant, .. }),
            ..
        } => {
            assert_eq!(grant.lock_id, lock_id);
            assert_eq!(grant.token, before.1);
        }
        other => panic!("expected the holding back, got {other:?}"),
    }
    assert_eq!(lock_file(&target), Some(before));
}

//! Holdings that outlive the daemon (issue 17): after `kill -9` and a restart, the restarted
//! daemon keeps each journaled holding for the resume window W, grants its target to nobody
//! meanwhile, and hands it back, with its lock id and token, only to the session that proves
//! it held it. What nobody resumes is released when the window closes.
//!
//! The client library does not resume by itself yet: these tests speak the wire by hand.

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

//! The restart figures (issue 17, "visible"): how often the daemon restarted, and what its
//! latest restart kept, resumed and lost, as `Request::Restarts`, `vfslockctl status` (text and
//! `--json`) and the log report them, from the real daemon over its real socket.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::net::UnixStream;
use vfslock::{LastRestart, LockOptions, RestartInfo};
use vfslock_proto::{AcquireRequest, Request, Response, Resumable, ServerFrame, WaitMode};
use vfslock_tests::{within, Daemon, DEADLINE, TEST_CONFIG};

#[path = "support/wire.rs"]
mod wire;
use wire::{ask_as, handshaken};

/// [`TEST_CONFIG`] with a resume window of `window`.
fn with_window(window: &str) -> String {
    TEST_CONFIG.replace(
        "[locks]\n",
        &format!("[locks]\nresume-window = \"{window}\"\n"),
    )
}

/// Asks for the figures until `done` holds of them, failing after [`DEADLINE`]. A request that
/// fails (the daemon is still restarting) counts as not yet.
async fn figures_once(
    client: &vfslock::Client,
    what: &str,
    done: impl Fn(&RestartInfo) -> bool,
) -> RestartInfo {
    let start = Instant::now();
    let mut seen = None;
    loop {
        if let Ok(Ok(info)) = tokio::time::timeout(DEADLINE, client.restarts()).await {
            if done(&info) {
                return info;
            }
            seen = Some(info);
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}; last figures: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `vfslockctl status`'s `key: value` lines (continuation lines skipped), and its text.
fn status_text(daemon: &Daemon) -> (BTreeMap<String, String>, String) {
    let out = vfslock_tests::vfslockctl(daemon, None, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fields = text
        .lines()
        .filter(|line| !line.starts_with(' '))
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.to_owned(), value.trim().to_owned()))
        .collect();
    (fields, text)
}

/// `vfslockctl status --json`.
fn status_json(daemon: &Daemon) -> serde_json::Value {
    let out = vfslock_tests::vfslockctl(daemon, None, &["status", "--json"]);
    assert!(
        out.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status prints JSON")
}

/// A holding taken over a hand-made connection, whose holder never comes back after a crash.
async fn hold_by_hand(stream: &mut UnixStream, target: &str) -> Resumable {
    let request = Request::Acquire(AcquireRequest {
        target: target.to_owned(),
        ttl: Some(Duration::from_secs(30)),
        owner_id: Some("restarts-test".into()),
        wait: WaitMode::Try,
        ask_on_stale: false,
        detached: false,
    });
    match ask_as(stream, 1, request).await {
        ServerFrame::Response {
            result: Ok(Response::GrantedResumable { resume, .. }),
            ..
        } => resume,
        other => panic!("expected a resumable grant of {target}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fresh_daemon_has_not_restarted() {
    let daemon = Daemon::start_with(&with_window("5m"));
    let client = daemon.client().await;
    let info = within("the figures", client.restarts())
        .await
        .expect("figures");
    assert_eq!(
        info,
        RestartInfo {
            restarts: 0,
            last: None
        }
    );
    // The wire answer, as another client sees it.
    let mut stream = handshaken(daemon.socket()).await;
    match ask_as(&mut stream, 1, Request::Restarts).await {
        ServerFrame::Response {
            result: Ok(Response::Restarts(wire)),
            ..
        } => assert_eq!(wire, info),
        other => panic!("expected the restart figures, got {other:?}"),
    }

    let (fields, text) = status_text(&daemon);
    assert_eq!(fields["restarts"], "0", "{text}");
    for key in [
        "last restart",
        "resumed",
        "lost",
        "requeued",
        "resume window",
    ] {
        assert!(
            !fields.contains_key(key),
            "{key} shown without a restart:\n{text}"
        );
    }
    let json = status_json(&daemon);
    assert_eq!(json["restarts"], 0, "{json}");
    assert!(json["last_restart"].is_null(), "{json}");
    assert!(
        !daemon.log().contains("restarted"),
        "a first start is no restart:\n{}",
        daemon.log()
    );
}

/// Three locks held through the library survive `kill -9`: the restarted daemon keeps all three,
/// the library resumes them, and every report says so while the window is still open.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_reports_what_was_kept_and_resumed() {
    let mut daemon = Daemon::start_with(&with_window("5m"));
    let client = daemon.client().await;
    let mut locks = Vec::new();
    for name in ["a.csv", "b.csv", "c.csv"] {
        let mut lock = client.new_lock(daemon.file_target(name), LockOptions::default());
        within("acquire", lock.acquire()).await.expect("acquire");
        locks.push(lock);
    }

    daemon.kill();
    daemon.restart();
    let observer = daemon.client().await;
    let info = figures_once(&observer, "three holdings resumed", |info| {
        info.last.as_ref().is_some_and(|last| last.resumed == 3)
    })
    .await;
    let last = info.last.clone().expect("a restart");
    assert_eq!(info.restarts, 1, "{info:?}");
    assert_eq!(
        LastRestart {
            window_open_for: None,
            ..last.clone()
        },
        LastRestart {
            planned: false,
            kept: 3,
            resumed: 3,
            lost: 0,
            requeued: 0,
            window_open_for: None,
        }
    );
    let open_for = last.window_open_for.expect("the window is still open");
    assert!(open_for <= Duration::from_secs(300), "{open_for:?}");
    assert!(locks.iter().all(|lock| lock.is_held()), "all three resumed");

    let (fields, text) = status_text(&daemon);
    assert_eq!(fields["restarts"], "1", "{text}");
    assert_eq!(fields["last restart"], "after a crash", "{text}");
    assert_eq!(fields["resumed"], "3 of 3 kept", "{text}");
    assert_eq!(fields["lost"], "0", "{text}");
    assert_eq!(fields["requeued"], "0", "{text}");
    assert!(fields["resume window"].starts_with("open for "), "{text}");
    let json = status_json(&daemon);
    assert_eq!(json["restarts"], 1, "{json}");
    let last = &json["last_restart"];
    assert_eq!(last["planned"], false, "{json}");
    assert_eq!(last["kept"], 3, "{json}");
    assert_eq!(last["resumed"], 3, "{json}");
    assert_eq!(last["lost"], 0, "{json}");
    assert_eq!(last["requeued"], 0, "{json}");
    assert!(
        last["window_open_seconds"]
            .as_f64()
            .is_some_and(|s| s > 0.0),
        "{json}"
    );
    let log = daemon.log();
    assert!(
        log.contains("restarted after a crash (restart 1): keeping 3 holdings"),
        "{log}"
    );
    assert!(!log.contains("resume window closed"), "still open:\n{log}");
}

/// A holder that never comes back after the crash: once the window closed, the holding counts
/// as lost, the window as closed, and the log says it once, without any session's secret.
#[tokio::test(flavor = "multi_thread")]
async fn a_holding_nobody_resumed_counts_as_lost_once_the_window_closed() {
    let mut daemon = Daemon::start_with(&with_window("3s"));
    let client = daemon.client().await;
    let mut resumed = client.new_lock(daemon.file_target("resumed.csv"), LockOptions::default());
    within("acquire", resumed.acquire()).await.expect("acquire");
    let mut gone = handshaken(daemon.socket()).await;
    let secret = hold_by_hand(&mut gone, &daemon.file_target("gone.csv"))
        .await
        .secret;

    daemon.kill();
    daemon.restart();
    let observer = daemon.client().await;
    let open = figures_once(&observer, "the library's lock resumed", |info| {
        info.last.as_ref().is_some_and(|last| last.resumed == 1)
    })
    .await;
    let open = open.last.expect("a restart");
    assert_eq!((open.kept, open.lost), (2, 0), "{open:?}");
    assert!(open.window_open_for.is_some(), "{open:?}");

    let closed = figures_once(&observer, "the window to close", |info| {
        info.last
            .as_ref()
            .is_some_and(|last| last.window_open_for.is_none() && last.lost == 1)
    })
    .await;
    assert_eq!(closed.restarts, 1);
    let last = closed.last.expect("a restart");
    assert_eq!((last.kept, last.resumed, last.lost), (2, 1, 1), "{last:?}");
    assert!(
        resumed.is_held(),
        "the resumed lock is not touched by the close"
    );

    let (fields, text) = status_text(&daemon);
    assert_eq!(fields["resumed"], "1 of 2 kept", "{text}");
    assert_eq!(fields["lost"], "1", "{text}");
    assert_eq!(fields["resume window"], "closed", "{text}");
    let json = status_json(&daemon);
    assert!(
        json["last_restart"]["window_open_seconds"].is_null(),
        "{json}"
    );
    assert_eq!(json["last_restart"]["lost"], 1, "{json}");

    vfslock_tests::eventually("the log line of the close", || {
        daemon
            .log()
            .contains("resume window closed: 1 resumed, 1 lost")
    })
    .await;
    let log = daemon.log();
    assert_eq!(log.matches("resume window closed").count(), 1, "{log}");
    assert!(
        !log.contains(&secret.0),
        "a session's secret was logged:\n{log}"
    );
}

/// A planned restart (SIGUSR2, as `systemctl reload` sends it) counts as one and says it was
/// planned; a crash after it counts again and says it was not.
#[tokio::test(flavor = "multi_thread")]
async fn a_planned_restart_is_counted_as_planned() {
    let mut daemon = Daemon::start_copy(&with_window("5m"));
    let client = daemon.client().await;
    // `start_copy` stops the first daemon in an orderly way: no restart.
    let info = within("the figures", client.restarts())
        .await
        .expect("figures");
    assert_eq!(info.restarts, 0, "{info:?}");
    let first = client.status().await.expect("status").instance_id;
    let mut lock = client.new_lock(daemon.file_target("planned.csv"), LockOptions::default());
    within("acquire", lock.acquire()).await.expect("acquire");

    // Connected before the restart: a connection made during the exec may be cut, while a
    // client's next request after it reconnects by itself.
    let observer = daemon.client().await;
    daemon.replace_binary();
    daemon.signal(libc::SIGUSR2);
    let info = figures_once(&observer, "the planned restart's lock resumed", |info| {
        info.last.as_ref().is_some_and(|last| last.resumed == 1)
    })
    .await;
    let status = within("status", observer.status()).await.expect("status");
    assert_ne!(status.instance_id, first, "a new daemon answers");
    assert_eq!(info.restarts, 1, "{info:?}");
    let last = info.last.expect("a restart");
    assert!(last.planned, "{last:?}");
    assert_eq!((last.kept, last.resumed, last.lost), (1, 1, 0), "{last:?}");
    let (fields, text) = status_text(&daemon);
    assert_eq!(fields["restarts"], "1", "{text}");
    assert_eq!(fields["last restart"], "planned", "{text}");
    assert_eq!(fields["resumed"], "1 of 1 kept", "{text}");
    assert!(
        daemon.log().contains("restarted as planned (restart 1)"),
        "{}",
        daemon.log()
    );
    assert!(lock.is_held());

    daemon.kill();
    daemon.restart();
    let info = figures_once(&observer, "the crash after it", |info| info.restarts == 2).await;
    let last = info.last.expect("a restart");
    assert!(!last.planned, "a crash is no planned restart: {last:?}");
}

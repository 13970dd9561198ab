//! Waiting for a release without taking the lock (`Client::wait_released`, `vfslockctl
//! wait`), against the real daemon: woken by its own holder's release, by a holder elsewhere
//! going away, at once for a free or stale target, and never by a lock handed on.

use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use vfslock::{ErrorKind, LockOptions};
use vfslock_proto::{codec, ClientFrame, Request, Response, ServerFrame};
use vfslock_tests::{bin, fixture, within, Daemon, DEADLINE};

#[path = "support/wire.rs"]
mod wire;
use wire::{handshaken, read_frame};

/// `vfslockctl` with `args`, run from `dir`, to completion.
async fn ctl(daemon: &Daemon, dir: &std::path::Path, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(bin("vfslockctl"));
    command
        .arg("--socket")
        .arg(daemon.socket())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    within("vfslockctl", command.output()).await.unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_returns_when_the_holder_here_releases_and_not_before() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let target = daemon.file_target("report.csv");
    let mut holder = client.new_lock(target.as_str(), LockOptions::default());
    holder.acquire().await.unwrap();

    // Held: a short wait runs out, naming the holder.
    let error = client
        .wait_released(&target, Some(Duration::from_millis(200)))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Timeout, "{error}");
    assert!(error.message().contains("still held"), "{error}");
    assert_eq!(
        error.holder().map(|h| h.pid),
        Some(i64::from(std::process::id()))
    );

    let released = Arc::new(AtomicBool::new(false));
    let waiting = tokio::spawn({
        let (client, target, released) = (client.clone(), target.clone(), released.clone());
        async move {
            client.wait_released(&target, None).await?;
            Ok::<bool, vfslock::Error>(released.load(Ordering::SeqCst))
        }
    });
    released.store(true, Ordering::SeqCst);
    holder.release().await.unwrap();
    let after_release = within("the wait's end", waiting).await.unwrap().unwrap();
    assert!(after_release, "the wait ended before the release");
    assert!(
        !std::path::Path::new(&format!("{target}.lock")).exists(),
        "a wait takes nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_handed_to_a_waiter_is_still_held_for_a_wait() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let target = "mem:///wait/handed";
    let mut first = client.new_lock(target, LockOptions::default().owner_id("first"));
    first.acquire().await.unwrap();
    let (queued_tx, mut queued) = tokio::sync::mpsc::unbounded_channel();
    let mut second = client.new_lock(
        target,
        LockOptions::default()
            .owner_id("second")
            .on_queue_position(move |p| {
                let _ = queued_tx.send(p);
            }),
    );
    let second_wait =
        tokio::spawn(async move { second.acquire_timeout(DEADLINE).await.map(|()| second) });
    within("the second's place", queued.recv()).await;

    let done = Arc::new(AtomicBool::new(false));
    let waiting = tokio::spawn({
        let (client, done) = (client.clone(), done.clone());
        async move {
            client.wait_released(target, None).await?;
            Ok::<bool, vfslock::Error>(done.load(Ordering::SeqCst))
        }
    });
    first.release().await.unwrap();
    let mut second = within("the second's grant", second_wait)
        .await
        .unwrap()
        .unwrap();
    // Still held (by the second): a short wait from another caller runs out.
    let error = client
        .wait_released(target, Some(Duration::from_millis(200)))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Timeout);
    assert_eq!(
        error.holder().and_then(|h| h.owner_id.as_deref()),
        Some("second")
    );
    done.store(true, Ordering::SeqCst);
    second.release().await.unwrap();
    let after_last = within("the wait's end", waiting).await.unwrap().unwrap();
    assert!(after_last, "the wait ended while the lock was still held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_elsewhere_is_waited_for_and_a_stale_one_holds_nobody() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    // A stale Go lock file: free for a wait, at once, and left where it is.
    let stale = daemon.stale_go_target("stale.csv");
    within("a wait on a stale lock", client.wait_released(&stale, None))
        .await
        .unwrap();
    assert!(std::path::Path::new(&format!("{stale}.lock")).exists());

    // A Go peer's lock file that never expires: held until the peer removes it.
    let target = daemon.file_target("peer.csv");
    let lock_file = format!("{target}.lock");
    std::fs::write(&lock_file, fixture("go-lockfile-no-ttl.lock")).unwrap();
    let error = client
        .wait_released(&target, Some(Duration::from_millis(200)))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Timeout);
    let waiting = tokio::spawn({
        let (client, target) = (client.clone(), target.clone());
        async move { client.wait_released(&target, None).await }
    });
    std::fs::remove_file(&lock_file).unwrap();
    within("the wait's end after the peer's release", waiting)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vfslockctl_wait_exits_0_when_free_and_1_or_its_code_on_timeout() {
    let daemon = Daemon::start();
    let data = daemon.data_dir().canonicalize().unwrap();
    let free = ctl(&daemon, &data, &["wait", "--json", "free.csv"]).await;
    assert_eq!(free.status.code(), Some(0), "{}", stderr(&free));
    let doc: serde_json::Value = serde_json::from_slice(&free.stdout).unwrap();
    assert_eq!(doc["released"], true);
    assert_eq!(doc["target"], data.join("free.csv").to_str().unwrap());

    let client = daemon.client().await;
    let target = data.join("held.csv");
    let mut holder = client.new_lock(
        target.to_str().unwrap(),
        LockOptions::default().owner_id("nightly"),
    );
    holder.acquire().await.unwrap();
    let timed_out = ctl(&daemon, &data, &["wait", "-w", "0.2", "held.csv"]).await;
    assert_eq!(timed_out.status.code(), Some(1));
    let text = stderr(&timed_out);
    assert!(
        text.starts_with("vfslockctl: ") && text.contains("still held"),
        "{text}"
    );
    assert!(text.contains("nightly"), "the holder is named: {text}");
    let coded = ctl(
        &daemon,
        &data,
        &["wait", "-w", "0.2", "-E", "75", "held.csv"],
    )
    .await;
    assert_eq!(coded.status.code(), Some(75));

    // Waiting with no timeout: it returns once the holder lets go.
    let mut waiting = tokio::process::Command::new(bin("vfslockctl"));
    waiting
        .arg("--socket")
        .arg(daemon.socket())
        .args(["wait", "held.csv"])
        .current_dir(&data)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let waiting = waiting.spawn().unwrap();
    holder.release().await.unwrap();
    let waited = within("vfslockctl wait", waiting.wait_with_output())
        .await
        .unwrap();
    assert_eq!(waited.status.code(), Some(0), "{}", stderr(&waited));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_ends_a_wait_and_a_dropped_wait_leaves_the_connection_working() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let target = "mem:///wait/dropped";
    let mut holder = client.new_lock(target, LockOptions::default());
    holder.acquire().await.unwrap();

    // On the wire: a cancel naming the wait's id ends it, and both are answered.
    let mut raw = handshaken(daemon.socket()).await;
    let wait = ClientFrame::Request {
        id: 5,
        request: Request::WaitReleased {
            target: target.into(),
            timeout: None,
        },
    };
    let cancel = ClientFrame::Request {
        id: 6,
        request: Request::Cancel {
            target: target.into(),
            acquire_id: 5,
        },
    };
    for frame in [wait, cancel] {
        raw.write_all(&codec::encode_frame(&frame).unwrap())
            .await
            .unwrap();
    }
    let mut answers = Vec::new();
    for _ in 0..2 {
        match read_frame::<ServerFrame>(&mut raw, "an answer").await {
            ServerFrame::Response { id, result } => answers.push((id, result)),
            other => panic!("{other:?}"),
        }
    }
    answers.sort_by_key(|(id, _)| *id);
    assert!(
        matches!(&answers[0], (5, Err(e)) if e.kind == ErrorKind::Cancelled),
        "{answers:?}"
    );
    assert!(
        matches!(answers[1], (6, Ok(Response::Cancelled))),
        "{answers:?}"
    );

    // Through the library: a wait given up (its future dropped) tells the daemon, and the
    // connection goes on answering what is asked next.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(100),
        client.wait_released(target, None),
    )
    .await;
    assert!(gave_up.is_err(), "held: the wait cannot have ended");
    holder.release().await.unwrap();
    within(
        "a wait on the freed target",
        client.wait_released(target, None),
    )
    .await
    .unwrap();
    client.ping().await.unwrap();
}

//! A `Client` outlives its daemon (issue 17, first step): after the daemon was killed and
//! started again on the same socket, the locks held through the old connection are reported
//! lost, and the same `Client` (async and blocking) serves new requests over a new connection;
//! while no daemon answers, a request fails naming the socket, and a later one connects. These
//! daemons keep no holding across the restart (`resume-window = "0s"`); `resume.rs` has the
//! ones that do.

use vfslock::{ErrorKind, LockOptions};
use vfslock_tests::{within, without_resume, Daemon, TEST_CONFIG};

#[tokio::test(flavor = "multi_thread")]
async fn a_client_reconnects_for_new_requests_after_its_daemon_restarted() {
    let mut daemon = Daemon::start_with(&without_resume(TEST_CONFIG));
    let client = daemon.client().await;
    let target = daemon.file_target("reconnect.csv");
    let mut held = client.new_lock(&target, LockOptions::default());
    within("acquire", held.acquire()).await.expect("acquire");
    let first_daemon = client.status().await.expect("status").instance_id;

    daemon.kill();
    // The lock held through the dead connection is lost, as before.
    let reason = within("the loss", held.lost()).await;
    assert!(reason.contains("connection"), "{reason}");
    assert!(!held.is_held());

    // No daemon: a request fails, naming the socket, and the client stays usable.
    let error = within("a request without a daemon", client.ping())
        .await
        .expect_err("no daemon answers");
    assert_eq!(error.kind(), ErrorKind::DaemonUnavailable, "{error}");
    assert!(
        error
            .message()
            .contains(&daemon.socket().display().to_string()),
        "{error}"
    );

    daemon.restart();
    // Requests of every kind go to the new daemon over a new connection, several at once.
    let (status, pinged) = within("requests after the restart", async {
        tokio::join!(client.status(), client.ping())
    })
    .await;
    let status = status.expect("status after the restart");
    pinged.expect("ping after the restart");
    assert_ne!(status.instance_id, first_daemon, "a new daemon answered");
    assert_eq!(
        status.sessions, 1,
        "the concurrent requests opened one connection"
    );
    assert_eq!(client.daemon().instance_id, status.instance_id);

    // A new lock on the same target is granted, and released as usual.
    let mut again = client.new_lock(&target, LockOptions::default());
    within("acquire again", again.acquire())
        .await
        .expect("acquire after the restart");
    assert!(again.is_held());
    // The old lock's release reports its loss and touches nothing of the new holding.
    let released = within("release the lost lock", held.release()).await;
    assert!(
        released.as_ref().is_err_and(|e| e.is_lease_lost()),
        "{released:?}"
    );
    let metadata = client.metadata(&target).await.expect("metadata");
    assert_eq!(
        metadata.and_then(|m| m.lock_id),
        again.lock_id().map(str::to_owned),
        "the new holding is untouched"
    );
    within("release", again.release())
        .await
        .expect("release after the restart");
    assert_eq!(client.metadata(&target).await.expect("metadata"), None);
}

#[test]
fn a_blocking_client_reconnects_too() {
    let mut daemon = Daemon::start_with(&without_resume(TEST_CONFIG));
    let client = vfslock::blocking::Client::connect(daemon.socket()).expect("connect");
    let target = daemon.file_target("blocking-reconnect.csv");
    let mut held = client.new_lock(&target, LockOptions::default());
    held.acquire().expect("a lock before the restart");
    daemon.kill();
    // Returns once the client has seen the connection end.
    let reason = held.lost();
    assert!(reason.contains("connection"), "{reason}");
    daemon.restart();
    let status = client.status().expect("status after the restart");
    assert_eq!(status.sessions, 1);
    client
        .with_lock(&target, LockOptions::default(), |_| Ok::<_, String>(()))
        .expect("a lock after the restart");
}

/// Each grant tells the holder its resume window W (the daemon's `locks.resume-window`), in the
/// async and the blocking API; a daemon whose window is zero grants holdings that end with it.
#[tokio::test(flavor = "multi_thread")]
async fn a_holder_learns_its_resume_window_with_the_grant() {
    use std::time::Duration;
    let daemon = Daemon::start_with(
        &vfslock_tests::TEST_CONFIG.replace("[locks]\n", "[locks]\nresume-window = \"7s\"\n"),
    );
    let client = daemon.client().await;
    let mut held = client.new_lock(daemon.file_target("w.csv"), LockOptions::default());
    assert_eq!(held.resume_window(), None, "nothing held yet");
    within("acquire", held.acquire()).await.expect("acquire");
    assert_eq!(held.resume_window(), Some(Duration::from_secs(7)));
    within("release", held.release()).await.expect("release");
    assert_eq!(held.resume_window(), None, "nothing held any more");

    let socket = daemon.socket().to_owned();
    let target = daemon.file_target("b.csv");
    let window = tokio::task::spawn_blocking(move || {
        let client = vfslock::blocking::Client::connect(&socket).expect("connect");
        let mut lock = client.new_lock(target, LockOptions::default());
        lock.acquire().expect("blocking acquire");
        lock.resume_window()
    })
    .await
    .expect("the blocking client");
    assert_eq!(window, Some(Duration::from_secs(7)));

    let off = Daemon::start_with(
        &vfslock_tests::TEST_CONFIG.replace("[locks]\n", "[locks]\nresume-window = \"0s\"\n"),
    );
    let client = off.client().await;
    let mut held = client.new_lock(off.file_target("w.csv"), LockOptions::default());
    within("acquire", held.acquire()).await.expect("acquire");
    assert!(held.is_held());
    assert_eq!(
        held.resume_window(),
        None,
        "W = 0: the holding ends with the daemon"
    );
}

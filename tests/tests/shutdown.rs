//! SIGTERM with locks held and a waiter queued: holders are told the lock is released because
//! the daemon shuts down, the waiter gets an error, the daemon exits 0 and leaves no lock file.

use vfslock::{ErrorKind, LockOptions};
use vfslock_tests::{next_position, targets, watch_queue, within, Daemon};

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_tells_holders_fails_waiters_and_removes_lock_files() {
    let mut daemon = Daemon::start();
    let client = daemon.client().await;
    let [(file_target, Some(lock_file)), (mem_target, None)] = targets(&daemon, "term.csv") else {
        unreachable!("a file target and a mem target")
    };
    let mut lost = Vec::new();
    for target in [&file_target, &mem_target] {
        let mut lock = client.new_lock(target, LockOptions::default());
        lock.acquire().await.expect("acquire");
        lost.push(tokio::spawn(async move {
            let reason = lock.lost().await;
            (lock, reason)
        }));
    }
    assert!(lock_file.exists());

    let waiter_client = daemon.client().await;
    let (options, mut positions) = watch_queue(LockOptions::default());
    let mut waiter = waiter_client.new_lock(&file_target, options);
    let waiting = tokio::spawn(async move { waiter.acquire_wait().await });
    assert_eq!(next_position(&mut positions).await, 1);

    let status = tokio::task::block_in_place(|| daemon.terminate());
    assert!(
        status.success(),
        "vfslockd exited with {status}:\n{}",
        daemon.log()
    );

    for task in lost {
        let (lock, reason) = within("a holder to hear of the shutdown", task)
            .await
            .expect("holder task");
        assert!(
            reason.contains("shutting down"),
            "{}: the reason does not mention the shutdown: {reason:?}",
            lock.target()
        );
        assert!(!lock.is_held(), "{}", lock.target());
    }
    let err = within("the waiter to fail", waiting)
        .await
        .expect("waiter task")
        .expect_err("no grant during shutdown");
    assert!(
        matches!(
            err.kind(),
            ErrorKind::ShuttingDown | ErrorKind::ConnectionLost
        ),
        "{err:?}"
    );
    assert!(!lock_file.exists(), "the lock file outlived the daemon");
    // Only the fence companions (the OS lock and token counter of each lock) persist.
    let left: Vec<String> = std::fs::read_dir(daemon.data_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.ends_with(".lock.fence"))
        .collect();
    assert!(
        left.is_empty(),
        "files left in the data directory: {left:?}"
    );
    assert!(
        !daemon.socket().exists(),
        "the socket file outlived the daemon"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_nothing_held_exits_cleanly_and_clients_see_the_connection_go() {
    let mut daemon = Daemon::start();
    let client = daemon.client().await;
    client.ping().await.expect("ping");
    let status = tokio::task::block_in_place(|| daemon.terminate());
    assert!(
        status.success(),
        "vfslockd exited with {status}:\n{}",
        daemon.log()
    );
    // The connection is gone: a request on it fails with ConnectionLost, unless the client
    // had already seen it close, when the new connection the request tries finds nobody. By
    // the time that first request failed, the client has seen it close: the next request
    // tries a new connection and finds nobody listening, naming the socket.
    let err = within("the request to fail", client.ping())
        .await
        .expect_err("no daemon");
    assert!(
        matches!(
            err.kind(),
            ErrorKind::ConnectionLost | ErrorKind::DaemonUnavailable
        ),
        "{err:?}"
    );
    let err = within("the next request to fail", client.ping())
        .await
        .expect_err("no daemon");
    assert_eq!(err.kind(), ErrorKind::DaemonUnavailable, "{err:?}");
    assert!(
        err.message()
            .contains(&daemon.socket().display().to_string()),
        "{err:?}"
    );
    let err = vfslock::Client::connect(daemon.socket())
        .await
        .expect_err("nobody listens");
    assert_eq!(err.kind(), ErrorKind::DaemonUnavailable, "{err:?}");
}

//! Limits: each one, when reached, gives the client a clear error of kind `LimitExceeded`
//! while the daemon keeps serving everyone else, and frees up again when the load goes.

use std::time::Duration;

use vfslock::{ErrorKind, LockOptions};
use vfslock_tests::{next_position, watch_queue, within, Daemon, DEADLINE, TEST_CONFIG};

fn with_limits(limits: &str) -> String {
    format!("{TEST_CONFIG}\n[limits]\n{limits}\n")
}

#[tokio::test]
async fn connections_beyond_the_limit_are_told_why_and_others_keep_working() {
    let daemon = Daemon::start_with(&with_limits("max-connections = 3"));
    let first = daemon.client().await;
    let _second = daemon.client().await;
    let third = daemon.client().await;
    let err = vfslock::Client::connect(daemon.socket()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LimitExceeded, "{err}");
    assert!(err.message().contains("max-connections"), "{err}");
    first
        .ping()
        .await
        .expect("the connections already open are served");

    // One goes: a new connection is accepted again (the daemon notices the close by itself).
    drop(third);
    let start = std::time::Instant::now();
    loop {
        match vfslock::Client::connect(daemon.socket()).await {
            Ok(client) => {
                client.ping().await.unwrap();
                break;
            }
            Err(e) if e.kind() == ErrorKind::LimitExceeded && start.elapsed() < DEADLINE => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("no room after a client left: {e}"),
        }
    }
}

#[tokio::test]
async fn a_connection_holds_or_waits_for_at_most_its_limit_of_locks() {
    let daemon = Daemon::start_with(&with_limits("max-locks-per-session = 3"));
    let client = daemon.client().await;
    let mut held = Vec::new();
    for i in 0..3 {
        let mut lock = client.new_lock(format!("mem:///limit/{i}"), LockOptions::default());
        lock.acquire().await.expect("under the limit");
        held.push(lock);
    }
    let mut fourth = client.new_lock("mem:///limit/3", LockOptions::default());
    let err = fourth.acquire().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LimitExceeded, "{err}");
    assert!(err.message().contains("max-locks-per-session"), "{err}");
    // Another connection is not affected.
    let other = daemon.client().await;
    let mut theirs = other.new_lock("mem:///limit/3", LockOptions::default());
    theirs
        .acquire()
        .await
        .expect("another connection has its own limit");
    theirs.release().await.unwrap();
    // A refused acquire does not count; a released lock frees its place.
    held.pop().unwrap().release().await.unwrap();
    fourth.acquire().await.expect("a place was freed");

    // Waiting counts too.
    fourth.release().await.unwrap();
    let holder = daemon.client().await;
    let mut busy = holder.new_lock("mem:///limit/busy", LockOptions::default());
    busy.acquire().await.unwrap();
    let (options, mut positions) = watch_queue(LockOptions::default());
    let mut waiting = client.new_lock("mem:///limit/busy", options);
    let wait = tokio::spawn(async move {
        let result = waiting.acquire_wait().await;
        (waiting, result)
    });
    assert_eq!(next_position(&mut positions).await, 1);
    let mut over = client.new_lock("mem:///limit/4", LockOptions::default());
    let err = over.acquire().await.unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::LimitExceeded,
        "a waiting acquire counts: {err}"
    );
    busy.release().await.unwrap();
    let (mut waited, result) = within("the waiter", wait).await.unwrap();
    result.expect("granted");
    waited.release().await.unwrap();
}

#[tokio::test]
async fn a_target_queues_at_most_its_limit_of_waiters() {
    let daemon = Daemon::start_with(&with_limits("max-waiters-per-target = 2"));
    let holder = daemon.client().await;
    let mut lock = holder.new_lock("mem:///queue/full", LockOptions::default());
    lock.acquire().await.unwrap();
    let mut waits = Vec::new();
    for expected in 1..=2 {
        let client = daemon.client().await;
        let (options, mut positions) = watch_queue(LockOptions::default());
        let mut waiter = client.new_lock("mem:///queue/full", options);
        waits.push(tokio::spawn(async move {
            let result = waiter.acquire_timeout(DEADLINE).await;
            (client, waiter, result)
        }));
        assert_eq!(next_position(&mut positions).await, expected);
    }
    let client = daemon.client().await;
    let mut third = client.new_lock("mem:///queue/full", LockOptions::default());
    let err = third.acquire_timeout(DEADLINE).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LimitExceeded, "{err}");
    assert!(err.message().contains("max-waiters-per-target"), "{err}");
    // A try-acquire is not a waiter: it is still told who holds the lock.
    let err = third.acquire().await.unwrap_err();
    assert!(err.is_already_held(), "{err}");
    lock.release().await.unwrap();
    for wait in waits {
        let (_client, mut waiter, result) = within("a waiter", wait).await.unwrap();
        result.expect("served in turn");
        waiter.release().await.unwrap();
    }
}

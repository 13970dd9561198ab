//! Waiting in line: waiters are served in arrival order, a cancelled wait leaves no lock behind,
//! and locks taken through one connection by several tasks exclude each other.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use vfslock::{ErrorKind, LockOptions};
use vfslock_tests::{next_position, targets, watch_queue, within, Daemon};

const WAITERS: u32 = 5;

async fn waiters_are_served_in_arrival_order(daemon: &Daemon, target: &str) {
    let holder_client = daemon.client().await;
    let mut holder = holder_client.new_lock(target, LockOptions::default());
    holder.acquire().await.expect("acquire");

    let order: Arc<Mutex<Vec<u32>>> = Arc::default();
    let mut tasks = Vec::new();
    for index in 1..=WAITERS {
        let client = daemon.client().await;
        let (options, mut positions) =
            watch_queue(LockOptions::default().owner_id(format!("waiter-{index}")));
        let mut lock = client.new_lock(target, options);
        let order = order.clone();
        tasks.push(tokio::spawn(async move {
            lock.acquire_wait().await.expect("acquire_wait");
            assert!(lock.is_held());
            order.lock().unwrap().push(index);
            lock.release().await.expect("release");
            drop(client);
        }));
        // The next waiter starts only once this one is in line.
        assert_eq!(next_position(&mut positions).await, index, "waiter {index}");
    }
    assert!(order.lock().unwrap().is_empty(), "granted while held");

    holder.release().await.expect("release");
    for task in tasks {
        within("a waiter to finish", task)
            .await
            .expect("waiter task");
    }
    assert_eq!(*order.lock().unwrap(), (1..=WAITERS).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn five_waiters_are_served_in_arrival_order() {
    let daemon = Daemon::start();
    for (target, _) in targets(&daemon, "fifo.csv") {
        waiters_are_served_in_arrival_order(&daemon, &target).await;
    }
}

async fn cancelled_wait_leaves_no_lock(daemon: &Daemon, target: &str, lock_file: Option<&Path>) {
    let holder_client = daemon.client().await;
    let mut holder = holder_client.new_lock(target, LockOptions::default());
    holder.acquire().await.expect("acquire");

    let waiter_client = daemon.client().await;
    let (options, mut positions) = watch_queue(LockOptions::default().owner_id("impatient"));
    let mut waiter = waiter_client.new_lock(target, options);
    {
        // Wait in line until queued, then give up: the acquire future is dropped.
        let acquire = waiter.acquire_wait();
        tokio::pin!(acquire);
        tokio::select! {
            result = &mut acquire => panic!("granted while held: {result:?}"),
            position = next_position(&mut positions) => assert_eq!(position, 1),
        }
    }
    assert!(!waiter.is_held());
    // A round trip on the waiter's connection to the same target: its cancel, sent before,
    // has been handled by the time this answers.
    assert!(waiter_client
        .metadata(target)
        .await
        .expect("metadata")
        .is_some());

    holder.release().await.expect("release");
    if let Some(path) = lock_file {
        assert!(
            !path.exists(),
            "a lock file appeared for the cancelled waiter"
        );
    }
    assert_eq!(
        holder_client.metadata(target).await.expect("metadata"),
        None,
        "the cancelled waiter was granted the lock"
    );

    let other = daemon.client().await;
    let mut lock = other.new_lock(target, LockOptions::default().owner_id("other"));
    lock.acquire()
        .await
        .expect("try-acquire after the cancelled wait");
    assert_eq!(
        lock.metadata().await.expect("metadata").owner_id.as_deref(),
        Some("other")
    );
    lock.release().await.expect("release");

    // The waiter's `Lock` is still usable after its wait was cancelled.
    waiter.acquire().await.expect("acquire after cancel");
    waiter.release().await.expect("release");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_wait_leaves_no_lock_behind() {
    let daemon = Daemon::start();
    for (target, lock_file) in targets(&daemon, "cancel.csv") {
        cancelled_wait_leaves_no_lock(&daemon, &target, lock_file.as_deref()).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wait_cancelled_by_timeout_leaves_no_lock_behind() {
    let daemon = Daemon::start();
    for (target, lock_file) in targets(&daemon, "timeout-cancel.csv") {
        let holder_client = daemon.client().await;
        let mut holder = holder_client.new_lock(&target, LockOptions::default());
        holder.acquire().await.expect("acquire");

        let waiter_client = daemon.client().await;
        let mut waiter = waiter_client.new_lock(&target, LockOptions::default());
        // Whatever point the wait reached, dropping it must not leave a lock behind.
        let outcome =
            tokio::time::timeout(std::time::Duration::from_millis(100), waiter.acquire_wait())
                .await;
        assert!(outcome.is_err(), "granted while held: {outcome:?}");
        waiter_client.ping().await.expect("ping");

        holder.release().await.expect("release");
        let other = daemon.client().await;
        let mut lock = other.new_lock(&target, LockOptions::default());
        // The cancel may still be on its way: wait in line rather than try once.
        lock.acquire_timeout(vfslock_tests::DEADLINE)
            .await
            .expect("acquire after the cancelled wait");
        assert_eq!(
            lock.metadata().await.expect("metadata").lock_id.as_deref(),
            lock.lock_id()
        );
        lock.release().await.expect("release");
        if let Some(path) = &lock_file {
            assert!(!path.exists());
        }
        assert!(!waiter.is_held());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_locks_on_one_connection_exclude_each_other() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    for (target, _) in targets(&daemon, "shared-connection.csv") {
        let mut first = client.new_lock(&target, LockOptions::default());
        first.acquire().await.expect("acquire");
        let mut second = client.new_lock(&target, LockOptions::default());
        let err = second.acquire().await.expect_err("held by the first");
        assert!(err.is_already_held(), "{err:?}");

        let (options, mut positions) = watch_queue(LockOptions::default());
        let mut second = client.new_lock(&target, options);
        let task = tokio::spawn(async move {
            let result = second.acquire_wait().await;
            (second, result)
        });
        assert_eq!(next_position(&mut positions).await, 1);
        assert!(first.is_held());
        first.release().await.expect("release");
        let (mut second, result) = within("the second lock", task).await.expect("task");
        result.expect("granted after the first released");
        let err = first.acquire().await.expect_err("held by the second");
        assert_eq!(err.kind(), ErrorKind::AlreadyHeld, "{err:?}");
        second.release().await.expect("release");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tasks_sharing_a_client_never_hold_one_lock_together() {
    const TASKS: usize = 4;
    const ROUNDS: usize = 5;
    let daemon = Daemon::start();
    let client = daemon.client().await;
    for (target, _) in targets(&daemon, "critical.csv") {
        let inside = Arc::new(AtomicUsize::new(0));
        let entered = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..TASKS {
            let client = client.clone();
            let target = target.clone();
            let (inside, entered) = (inside.clone(), entered.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..ROUNDS {
                    let mut lock = client.new_lock(&target, LockOptions::default());
                    lock.acquire_wait().await.expect("acquire_wait");
                    assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                    entered.fetch_add(1, Ordering::SeqCst);
                    for _ in 0..10 {
                        tokio::task::yield_now().await;
                    }
                    inside.fetch_sub(1, Ordering::SeqCst);
                    lock.release().await.expect("release");
                }
            }));
        }
        for task in tasks {
            within("the tasks", task).await.expect("task");
        }
        assert_eq!(entered.load(Ordering::SeqCst), TASKS * ROUNDS);
    }
}

/// The handoff streak cap (and its cooldown) exists for waiters on other hosts; with none
/// marked waiting, a busy local queue is never held back by it.
#[tokio::test(flavor = "multi_thread")]
async fn a_local_queue_is_not_held_back_by_the_handoff_cap_when_no_other_host_waits() {
    let daemon = Daemon::start_with(&format!(
        "{}\nhandoff-max-count = 2\nhandoff-cooldown = \"1h\"\n",
        vfslock_tests::TEST_CONFIG
    ));
    let target = daemon.file_target("busy.csv");
    const CLIENTS: usize = 3;
    const ROUNDS: usize = 10;
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let client = daemon.client().await;
        let (target, done) = (target.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..ROUNDS {
                // A cooldown of an hour would fail this wait.
                let mut lock = client.new_lock(
                    &target,
                    LockOptions::default().wait_timeout(vfslock_tests::DEADLINE),
                );
                lock.acquire_wait().await.expect("acquire_wait");
                done.fetch_add(1, Ordering::Relaxed);
                lock.release().await.expect("release");
            }
        }));
    }
    for task in tasks {
        within("a client's rounds", task).await.expect("join");
    }
    assert_eq!(done.load(Ordering::Relaxed), CLIENTS * ROUNDS);
    assert!(
        !Path::new(&format!("{target}.lock.waiting")).exists(),
        "no other host waited, so no daemon marked itself waiting"
    );
}

//! Locks end with their holder: a holder process killed with SIGKILL, a dropped `Client`, and a
//! dropped `Lock` all free the lock at once for a waiter, long before any TTL runs out.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use vfslock::{Client, LockOptions};
use vfslock_tests::{next_position, targets, watch_queue, within, Daemon};

const SOCKET_VAR: &str = "VFSLOCK_HOLDER_SOCKET";
const TARGET_VAR: &str = "VFSLOCK_HOLDER_TARGET";
const HOUR: Duration = Duration::from_secs(3600);

/// Not a test: the holder process of `a_waiter_gets_the_lock_of_a_holder_killed_with_sigkill`,
/// run as `<this test binary> --exact holder_child --ignored --nocapture` with the socket and
/// target in the environment. Takes the lock with a 1-hour TTL, prints `held`, and holds it
/// until it is killed (or its daemon goes away).
#[test]
#[ignore = "helper process started by a_waiter_gets_the_lock_of_a_holder_killed_with_sigkill"]
fn holder_child() {
    let (Some(socket), Some(target)) =
        (std::env::var_os(SOCKET_VAR), std::env::var(TARGET_VAR).ok())
    else {
        eprintln!("holder_child only runs as the child of a crash test");
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = Client::connect(&socket).await.expect("child: connect");
        let mut lock = client.new_lock(
            target,
            LockOptions::default().ttl(HOUR).owner_id("doomed-child"),
        );
        lock.acquire().await.expect("child: acquire");
        println!("held");
        // Hold until killed; a daemon that goes away ends the child too.
        let reason = lock.lost().await;
        eprintln!("child: lock lost: {reason}");
    });
}

/// Starts this test binary as [`holder_child`] holding `target`, and waits until it says so.
async fn spawn_holder(daemon: &Daemon, target: &str) -> tokio::process::Child {
    let mut child = tokio::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "holder_child", "--ignored", "--nocapture"])
        .env(SOCKET_VAR, daemon.socket())
        .env(TARGET_VAR, target)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the holder child");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    within("the child to print `held`", async {
        loop {
            match lines.next_line().await.expect("read the child's stdout") {
                Some(line) if line.trim() == "held" => return,
                Some(_) => {}
                None => panic!("the holder child exited before it held the lock"),
            }
        }
    })
    .await;
    // Keep draining its output so that it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child
}

#[tokio::test(flavor = "multi_thread")]
async fn a_waiter_gets_the_lock_of_a_holder_killed_with_sigkill() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    for (target, lock_file) in targets(&daemon, "crash.csv") {
        let mut child = spawn_holder(&daemon, &target).await;
        let child_pid = child.id().expect("child running");

        let holder = client
            .metadata(&target)
            .await
            .expect("metadata")
            .expect("the child holds the lock");
        assert_eq!(holder.pid, i64::from(child_pid));
        assert_eq!(holder.owner_id.as_deref(), Some("doomed-child"));
        assert_eq!(holder.ttl(), Some(HOUR));

        let (options, mut positions) = watch_queue(LockOptions::default().owner_id("survivor"));
        let mut waiter = client.new_lock(&target, options);
        let started = Instant::now();
        let waiting = tokio::spawn(async move {
            let result = waiter.acquire_timeout(vfslock_tests::DEADLINE).await;
            (waiter, result)
        });
        assert_eq!(next_position(&mut positions).await, 1);

        child.start_kill().expect("SIGKILL the child");
        let status = within("the killed child to exit", child.wait())
            .await
            .expect("reap the child");
        assert!(!status.success(), "{status}");

        let (mut waiter, result) = within("the waiter", waiting).await.expect("waiter task");
        result.expect("the waiter gets the lock of the killed holder");
        assert!(
            started.elapsed() < HOUR / 2,
            "granted only after {:?}",
            started.elapsed()
        );
        let meta = waiter.held_metadata().expect("held").clone();
        assert_eq!(meta.pid, i64::from(std::process::id()));
        assert_eq!(meta.owner_id.as_deref(), Some("survivor"));
        if let Some(path) = &lock_file {
            let written = std::fs::read_to_string(path).expect("lock file");
            assert!(written.contains("survivor"), "{written}");
        }
        waiter.release().await.expect("release");
    }
}

/// Takes `target` through a fresh client, starts a waiter on another client and waits until
/// it is queued; returns the holder's client and lock, and the waiter's task.
async fn held_with_a_waiter(
    daemon: &Daemon,
    target: &str,
) -> (
    Client,
    vfslock::Lock,
    tokio::task::JoinHandle<(vfslock::Lock, Result<(), vfslock::Error>)>,
) {
    let holder_client = daemon.client().await;
    let mut holder = holder_client.new_lock(target, LockOptions::default().owner_id("leaver"));
    holder.acquire().await.expect("acquire");

    let waiter_client = daemon.client().await;
    let (options, mut positions) = watch_queue(LockOptions::default().owner_id("heir"));
    let mut waiter = waiter_client.new_lock(target, options);
    let task = tokio::spawn(async move {
        let result = waiter.acquire_timeout(vfslock_tests::DEADLINE).await;
        (waiter, result)
    });
    assert_eq!(next_position(&mut positions).await, 1);
    (holder_client, holder, task)
}

async fn assert_heir_holds(
    task: tokio::task::JoinHandle<(vfslock::Lock, Result<(), vfslock::Error>)>,
    lock_file: Option<&std::path::Path>,
) {
    let (mut waiter, result) = within("the waiter", task).await.expect("waiter task");
    result.expect("the waiter gets the released lock");
    assert!(waiter.is_held());
    let current = waiter.metadata().await.expect("metadata");
    assert_eq!(current.owner_id.as_deref(), Some("heir"));
    assert_eq!(current.lock_id.as_deref(), waiter.lock_id());
    waiter.release().await.expect("release");
    if let Some(path) = lock_file {
        assert!(!path.exists());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_the_client_and_its_locks_releases_them() {
    let daemon = Daemon::start();
    for (target, lock_file) in targets(&daemon, "dropped-client.csv") {
        let (holder_client, holder, task) = held_with_a_waiter(&daemon, &target).await;
        drop(holder);
        drop(holder_client);
        assert_heir_holds(task, lock_file.as_deref()).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_a_held_lock_without_release_frees_it() {
    let daemon = Daemon::start();
    for (target, lock_file) in targets(&daemon, "dropped-lock.csv") {
        let (holder_client, holder, task) = held_with_a_waiter(&daemon, &target).await;
        drop(holder);
        assert_heir_holds(task, lock_file.as_deref()).await;
        // The client that dropped its lock is still usable, and can take the lock again.
        let mut again = holder_client.new_lock(&target, LockOptions::default());
        again.acquire().await.expect("acquire again");
        again.release().await.expect("release");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_client_frees_its_lock_for_a_try_acquire() {
    let daemon = Daemon::start();
    let [(target, Some(lock_file)), _] = targets(&daemon, "vanishing.csv") else {
        unreachable!("the first target is a file")
    };
    let client = daemon.client().await;
    let mut lock = client.new_lock(&target, LockOptions::default());
    lock.acquire().await.expect("acquire");
    assert!(lock_file.exists());
    drop(lock);
    drop(client);
    vfslock_tests::eventually("the lock file to vanish", || !lock_file.exists()).await;
    let other = daemon.client().await;
    let mut lock = other.new_lock(&target, LockOptions::default());
    lock.acquire()
        .await
        .expect("try-acquire after the holder left");
    lock.release().await.expect("release");
}

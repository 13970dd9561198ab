//! The behaviours the Go library's README promises, against the real daemon, on `file://` and
//! `mem://` targets: acquire and release, already-held with the holder's metadata, metadata and
//! age, stale locks taken or vetoed by the on-stale callback, `with_lock` on every path, and the
//! blocking API.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use vfslock::{Client, ErrorKind, LockFileFormat, LockMetadata, LockOptions, WithLockError};
use vfslock_tests::{fixture, targets, within, Daemon, DEADLINE};

/// Whether the target has a lock file: on disk for file targets (cross-checked with the
/// daemon's view), as the daemon reads it for mem targets.
async fn lock_exists(client: &Client, target: &str, lock_file: Option<&Path>) -> bool {
    let seen = client
        .metadata(target)
        .await
        .expect("metadata request")
        .is_some();
    if let Some(path) = lock_file {
        assert_eq!(
            path.exists(),
            seen,
            "the daemon and the disk disagree about {}",
            path.display()
        );
    }
    seen
}

fn assert_fresh(time: Option<SystemTime>, what: &str) {
    let time = time.unwrap_or_else(|| panic!("{what} is missing"));
    let now = SystemTime::now();
    let distance = now
        .duration_since(time)
        .or_else(|e| Ok::<_, ()>(e.duration()))
        .unwrap();
    assert!(
        distance < DEADLINE,
        "{what} {time:?} is not within {DEADLINE:?} of now {now:?}"
    );
}

async fn acquire_release_and_already_held(daemon: &Daemon, target: &str, lock_file: Option<&Path>) {
    let client = daemon.client().await;
    let other = daemon.client().await;
    assert!(!lock_exists(&client, target, lock_file).await);

    let mut lock = client.new_lock(target, LockOptions::default().owner_id("first"));
    lock.acquire().await.expect("acquire a free lock");
    assert!(lock.is_held());
    assert!(
        lock_exists(&client, target, lock_file).await,
        "lock file after acquire"
    );
    let lock_id = lock.lock_id().expect("a held lock has an id").to_owned();

    // Another `Lock` on the same connection, and one on another connection: both refused.
    for (who, c) in [("same client", &client), ("other client", &other)] {
        let mut second = c.new_lock(target, LockOptions::default().owner_id("second"));
        let err = second.acquire().await.expect_err(who);
        assert!(err.is_already_held(), "{who}: {err:?}");
        assert_eq!(err.kind(), ErrorKind::AlreadyHeld, "{who}");
        let holder = err.holder().unwrap_or_else(|| panic!("{who}: no holder"));
        assert_eq!(holder.lock_id.as_deref(), Some(lock_id.as_str()), "{who}");
        assert_eq!(holder.owner_id.as_deref(), Some("first"), "{who}");
        assert_eq!(holder.pid, i64::from(std::process::id()), "{who}");
        assert_eq!(holder.hostname, client.daemon().hostname, "{who}");
        assert!(!second.is_held(), "{who}");
    }

    lock.release().await.expect("release");
    assert!(!lock.is_held());
    assert!(
        !lock_exists(&client, target, lock_file).await,
        "lock file after release"
    );

    let mut second = other.new_lock(target, LockOptions::default());
    second.acquire().await.expect("acquire after release");
    assert!(lock_exists(&client, target, lock_file).await);
    second.release().await.expect("release");
    assert!(!lock_exists(&client, target, lock_file).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn acquire_release_and_a_second_acquire_is_already_held() {
    let daemon = Daemon::start();
    for (target, lock_file) in targets(&daemon, "data.csv") {
        acquire_release_and_already_held(&daemon, &target, lock_file.as_deref()).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_carries_owner_ttl_host_pid_and_a_fresh_creation_time() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    for (target, lock_file) in targets(&daemon, "meta.csv") {
        let ttl = Duration::from_secs(90);
        let mut lock = client.new_lock(
            &target,
            LockOptions::default().ttl(ttl).owner_id("seed-owner"),
        );
        lock.acquire().await.expect("acquire");

        let held = lock.held_metadata().expect("held metadata").clone();
        let read = lock.metadata().await.expect("metadata of a held lock");
        for (what, meta) in [("held_metadata", &held), ("metadata", &read)] {
            assert_eq!(meta.owner_id.as_deref(), Some("seed-owner"), "{what}");
            assert_eq!(meta.ttl(), Some(ttl), "{what}");
            assert_eq!(meta.ttl_ns, 90_000_000_000, "{what}");
            assert_eq!(meta.hostname, client.daemon().hostname, "{what}");
            assert!(!meta.hostname.is_empty(), "{what}");
            assert_eq!(meta.pid, i64::from(std::process::id()), "{what}");
            assert_eq!(meta.lock_id.as_deref(), lock.lock_id(), "{what}");
            assert_eq!(meta.format, LockFileFormat::Vfslock(1), "{what}");
            assert!(!meta.stale, "{what}");
            assert_fresh(meta.created_at(), &format!("{what} createdAt"));
        }
        let age = lock.age().await.expect("age");
        assert!(age < DEADLINE, "age {age:?}");

        if let Some(path) = &lock_file {
            let json: serde_json::Value =
                serde_json::from_slice(&std::fs::read(path).expect("lock file")).unwrap();
            assert_eq!(json["ownerId"], "seed-owner");
            assert_eq!(json["ttl"], 90_000_000_000i64);
            assert_eq!(json["pid"], std::process::id());
            assert_eq!(json["hostname"], client.daemon().hostname.as_str());
        }
        lock.release().await.expect("release");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_without_a_lock_is_not_found_and_release_without_acquire_is_fine() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    for (target, _) in targets(&daemon, "nothing.csv") {
        let mut lock = client.new_lock(&target, LockOptions::default());
        let err = lock.metadata().await.expect_err("no lock file");
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err:?}");
        assert!(lock.age().await.is_err());
        assert_eq!(client.metadata(&target).await.expect("metadata"), None);

        lock.release().await.expect("release without acquire");
        assert!(!lock.is_held());
        assert_eq!(lock.held_metadata(), None);

        // Released twice: the second one is a no-op too.
        lock.acquire().await.expect("acquire");
        lock.release().await.expect("release");
        lock.release().await.expect("second release");
        let err = lock.metadata().await.expect_err("released");
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err:?}");
    }
}

fn write_fixture(lock_file: &Path, name: &str) -> Vec<u8> {
    let bytes = fixture(name);
    std::fs::write(lock_file, &bytes).expect("write fixture");
    bytes
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_lock_is_taken_after_the_on_stale_callback_allows_it() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let target = daemon.file_target("stale.csv");
    let lock_file = PathBuf::from(format!("{target}.lock"));
    write_fixture(&lock_file, "go-lockfile-expired-ttl.lock");

    let seen: Arc<Mutex<Vec<LockMetadata>>> = Arc::default();
    let record = seen.clone();
    let options = LockOptions::default().on_stale(move |meta| {
        record.lock().unwrap().push(meta.clone());
        Ok::<(), String>(())
    });
    let mut lock = client.new_lock(&target, options);
    lock.acquire().await.expect("a stale lock is taken");

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "the callback runs once: {seen:?}");
    assert_eq!(seen[0].hostname, "ingest-7");
    assert_eq!(seen[0].pid, 4242);
    assert_eq!(seen[0].format, LockFileFormat::Go);
    assert!(seen[0].stale);

    let written = std::fs::read_to_string(&lock_file).expect("lock file");
    assert!(!written.contains("ingest-7"), "{written}");
    let lock_id = lock.lock_id().expect("held").to_owned();
    assert!(written.contains(&lock_id), "{written}");
    lock.release().await.expect("release");
    assert!(!lock_file.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_on_stale_error_vetoes_the_steal_and_leaves_the_file_alone() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let target = daemon.file_target("vetoed.csv");
    let lock_file = PathBuf::from(format!("{target}.lock"));
    let original = write_fixture(&lock_file, "go-lockfile-expired-ttl.lock");

    let asked = Arc::new(AtomicBool::new(false));
    let flag = asked.clone();
    let options = LockOptions::default().on_stale(move |meta| {
        flag.store(true, Ordering::SeqCst);
        Err(format!("{} may still be running", meta.hostname))
    });
    let mut lock = client.new_lock(&target, options);
    let err = lock.acquire().await.expect_err("vetoed");
    assert_eq!(err.kind(), ErrorKind::StaleVetoed, "{err:?}");
    assert!(
        err.message().contains("ingest-7 may still be running"),
        "{err}"
    );
    assert_eq!(err.holder().map(|h| h.hostname.as_str()), Some("ingest-7"));
    assert!(asked.load(Ordering::SeqCst));
    assert!(!lock.is_held());
    assert_eq!(std::fs::read(&lock_file).expect("lock file"), original);

    // The daemon is not left waiting on the veto: a callback that allows takes it now.
    let mut lock = client.new_lock(&target, LockOptions::default());
    lock.acquire().await.expect("steal without a callback");
    assert_ne!(std::fs::read(&lock_file).expect("lock file"), original);
    lock.release().await.expect("release");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_lock_runs_the_closure_and_releases_on_every_path() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let checker = daemon.client().await;
    for (target, lock_file) in targets(&daemon, "with.csv") {
        // Success: the closure runs while the lock is held; its value comes back.
        let value = client
            .with_lock(
                &target,
                LockOptions::default().owner_id("closure"),
                async |lock| {
                    assert!(lock.is_held());
                    let mut other = checker.new_lock(lock.target(), LockOptions::default());
                    let err = other.acquire().await.expect_err("held during the closure");
                    assert!(err.is_already_held(), "{err:?}");
                    Ok::<_, String>(42)
                },
            )
            .await
            .expect("with_lock");
        assert_eq!(value, 42);
        assert!(!lock_exists(&checker, &target, lock_file.as_deref()).await);

        // The closure's error comes back as `Closure`, and the lock is released.
        let err = client
            .with_lock(&target, LockOptions::default(), async |_| {
                Err::<(), _>("closure failed".to_owned())
            })
            .await
            .expect_err("closure error");
        assert!(!err.is_already_held());
        match err {
            WithLockError::Closure(message) => assert_eq!(message, "closure failed"),
            WithLockError::Lock(e) => panic!("expected the closure's error, got {e:?}"),
        }
        assert!(!lock_exists(&checker, &target, lock_file.as_deref()).await);

        // Held by someone else: already-held, and the closure does not run.
        let mut holder = checker.new_lock(&target, LockOptions::default().owner_id("other"));
        holder.acquire().await.expect("acquire");
        let ran = AtomicBool::new(false);
        let err = client
            .with_lock(&target, LockOptions::default(), async |_| {
                ran.store(true, Ordering::SeqCst);
                Ok::<_, String>(())
            })
            .await
            .expect_err("already held");
        assert!(err.is_already_held(), "{err:?}");
        assert_eq!(
            err.lock_error()
                .and_then(|e| e.holder())
                .and_then(|h| h.owner_id.as_deref()),
            Some("other")
        );
        assert!(!ran.load(Ordering::SeqCst));
        holder.release().await.expect("release");

        // A panicking closure: the panic reaches the caller and the lock is released.
        let panicking = client.clone();
        let panic_target = target.clone();
        let joined = tokio::spawn(async move {
            panicking
                .with_lock(&panic_target, LockOptions::default(), async |lock| {
                    if lock.is_held() {
                        panic!("the closure panics");
                    }
                    Ok::<_, String>(())
                })
                .await
        })
        .await;
        let join_error = joined.expect_err("the task panicked");
        assert!(join_error.is_panic(), "{join_error:?}");
        // The release from `Drop` went out on `client`'s connection before this acquire.
        let mut after = client.new_lock(&target, LockOptions::default());
        after
            .acquire()
            .await
            .expect("free after the closure panicked");
        after.release().await.expect("release");
        assert!(!lock_exists(&checker, &target, lock_file.as_deref()).await);
    }
}

#[test]
fn the_blocking_api_acquires_reports_already_held_and_releases() {
    let daemon = Daemon::start();
    let client = vfslock::blocking::Client::connect(daemon.socket()).expect("connect");
    let target = daemon.file_target("blocking.csv");
    let lock_file = PathBuf::from(format!("{target}.lock"));

    let mut lock = client.new_lock(&target, LockOptions::default().owner_id("blocking"));
    lock.acquire().expect("acquire");
    assert!(lock.is_held());
    assert!(lock_file.exists());
    assert_eq!(
        lock.metadata().expect("metadata").owner_id.as_deref(),
        Some("blocking")
    );

    let mut second = client.new_lock(&target, LockOptions::default());
    let err = second.acquire().expect_err("already held");
    assert!(err.is_already_held(), "{err:?}");
    assert_eq!(
        err.holder().and_then(|h| h.owner_id.as_deref()),
        Some("blocking")
    );

    lock.release().expect("release");
    assert!(!lock_file.exists());
    second.acquire().expect("acquire after release");
    second.release().expect("release");
    assert!(!lock_file.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_blocking_api_works_from_spawn_blocking_too() {
    let daemon = Daemon::start();
    let socket = daemon.socket().to_owned();
    let target = format!("mem:///{}", "blocking.csv");
    let outcome = within(
        "the blocking client",
        tokio::task::spawn_blocking(move || {
            let client = vfslock::blocking::Client::connect(&socket).expect("connect");
            let mut lock = client.new_lock(&target, LockOptions::default());
            lock.acquire().expect("acquire");
            let mut second = client.new_lock(&target, LockOptions::default());
            let held = second.acquire().expect_err("already held");
            lock.release().expect("release");
            second.acquire().expect("acquire after release");
            second.release().expect("release");
            held
        }),
    )
    .await
    .expect("the blocking task");
    assert!(outcome.is_already_held(), "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_lock_stops_the_closure_when_the_lease_is_lost() {
    let mut daemon = Daemon::start();
    let client = daemon.client().await;
    let target = daemon.file_target("job.csv");
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let finished = Arc::new(AtomicBool::new(false));
    let finished_in_closure = finished.clone();
    let job = tokio::spawn(async move {
        client
            .with_lock(&target, LockOptions::default(), async move |_lock| {
                let _ = started_tx.send(());
                // Work that would never end by itself.
                std::future::pending::<()>().await;
                finished_in_closure.store(true, Ordering::SeqCst);
                Ok::<_, std::io::Error>(())
            })
            .await
    });
    within("the closure to start", started_rx)
        .await
        .expect("closure started");
    // Stopping the daemon ends the lease (it tells the holder, then the connection closes).
    assert!(daemon.terminate().success());
    let outcome = within("with_lock to return", job).await.expect("task");
    match outcome {
        Err(WithLockError::Lock(e)) => assert_eq!(e.kind(), ErrorKind::LeaseLost, "{e}"),
        other => panic!("expected a lease-lost lock error, got {other:?}"),
    }
    assert!(
        !finished.load(Ordering::SeqCst),
        "the closure was stopped, not finished"
    );
}

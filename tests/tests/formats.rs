//! Lock files written by others: the Go library's files in both spellings are read and honoured
//! (never-expiring ones kept, expired ones taken), another tool's JSON lock is never taken, and
//! corrupt files neither crash the daemon nor get overwritten until they are old.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vfslock::{Client, ErrorKind, LockFileFormat, LockOptions};
use vfslock_tests::{fixture, Daemon, TEST_CONFIG};

/// What a Go fixture says about its holder.
struct GoFixture {
    file: &'static str,
    hostname: &'static str,
    pid: i64,
    owner: Option<&'static str>,
    ttl: Option<Duration>,
    created_unix_ns: u64,
    stale: bool,
}

const GO_FIXTURES: [GoFixture; 5] = [
    GoFixture {
        file: "go-lockfile-expired-ttl.lock",
        hostname: "ingest-7",
        pid: 4242,
        owner: Some("ingestion-service-1"),
        ttl: Some(Duration::from_secs(300)),
        created_unix_ns: 1_754_299_812_345_678_901,
        stale: true,
    },
    GoFixture {
        file: "go-lockfile-short-ttl.lock",
        hostname: "web-2",
        pid: 31337,
        owner: Some("test-owner"),
        ttl: Some(Duration::from_millis(100)),
        created_unix_ns: 1_754_299_812_500_000_000,
        stale: true,
    },
    GoFixture {
        file: "go-lockfile-no-ttl.lock",
        hostname: "batch-host",
        pid: 77,
        owner: None,
        ttl: None,
        created_unix_ns: 1_754_299_812_000_000_000,
        stale: false,
    },
    GoFixture {
        file: "go-v1.0-lockfile-expired-ttl.lock",
        hostname: "etl-3",
        pid: 9001,
        owner: Some("nightly-import"),
        ttl: Some(Duration::from_secs(300)),
        created_unix_ns: 1_754_299_812_345_678_901,
        stale: true,
    },
    GoFixture {
        file: "go-v1.0-lockfile-no-ttl.lock",
        hostname: "etl-4",
        pid: 9002,
        owner: None,
        ttl: None,
        created_unix_ns: 1_754_299_812_000_000_000,
        stale: false,
    },
];

/// A target in the daemon's data directory, named after `name` without its `.lock`, whose lock
/// file holds `content`.
fn target_with_lock_file(daemon: &Daemon, name: &str, content: &[u8]) -> (String, PathBuf) {
    let target = daemon.file_target(name.trim_end_matches(".lock"));
    let lock_file = PathBuf::from(format!("{target}.lock"));
    std::fs::write(&lock_file, content).expect("write the lock file");
    (target, lock_file)
}

/// The daemon still serves: a ping, and a lock on an unrelated target.
async fn assert_still_serving(daemon: &Daemon, client: &Client) {
    client.ping().await.expect("ping");
    let mut lock = client.new_lock("mem:///unrelated", LockOptions::default());
    lock.acquire().await.expect("an unrelated lock");
    lock.release().await.expect("release");
    daemon.client().await.ping().await.expect("a new client");
}

#[tokio::test(flavor = "multi_thread")]
async fn go_lock_files_of_both_spellings_are_read() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    for fx in &GO_FIXTURES {
        let (target, _) = target_with_lock_file(&daemon, fx.file, &fixture(fx.file));
        let meta = client
            .metadata(&target)
            .await
            .expect("metadata")
            .unwrap_or_else(|| panic!("{}: no metadata", fx.file));
        assert_eq!(meta.format, LockFileFormat::Go, "{}", fx.file);
        assert_eq!(meta.hostname, fx.hostname, "{}", fx.file);
        assert_eq!(meta.pid, fx.pid, "{}", fx.file);
        assert_eq!(meta.owner_id.as_deref(), fx.owner, "{}", fx.file);
        assert_eq!(meta.ttl(), fx.ttl, "{}", fx.file);
        assert_eq!(
            meta.ttl_ns,
            fx.ttl.map_or(0, |t| t.as_nanos() as i64),
            "{}",
            fx.file
        );
        assert_eq!(
            meta.created_at(),
            Some(UNIX_EPOCH + Duration::from_nanos(fx.created_unix_ns)),
            "{}",
            fx.file
        );
        assert_eq!(meta.stale, fx.stale, "{}", fx.file);
        assert_eq!(meta.lock_id, None, "{}", fx.file);
        assert!(meta.modified().is_some(), "{}", fx.file);
        // `Lock::metadata` and `is_stale` say the same.
        let lock = client.new_lock(&target, LockOptions::default());
        assert_eq!(lock.metadata().await.expect("metadata"), meta);
        assert_eq!(lock.is_stale().await.expect("is_stale"), fx.stale);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_go_lock_without_ttl_is_never_stolen() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    for fx in GO_FIXTURES.iter().filter(|fx| fx.ttl.is_none()) {
        let original = fixture(fx.file);
        let (target, lock_file) = target_with_lock_file(&daemon, fx.file, &original);
        let mut lock = client.new_lock(&target, LockOptions::default());
        let err = lock.acquire().await.expect_err("a ttl-0 lock is held");
        assert!(err.is_already_held(), "{}: {err:?}", fx.file);
        let holder = err.holder().expect("holder");
        assert_eq!(holder.hostname, fx.hostname, "{}", fx.file);
        assert_eq!(holder.pid, fx.pid, "{}", fx.file);
        assert!(!holder.stale, "{}", fx.file);

        // Waiting does not steal it either.
        let err = lock
            .acquire_timeout(Duration::from_millis(300))
            .await
            .expect_err("a ttl-0 lock stays held");
        assert!(err.is_timeout(), "{}: {err:?}", fx.file);
        assert_eq!(
            err.holder().map(|h| h.hostname.as_str()),
            Some(fx.hostname),
            "{}",
            fx.file
        );
        assert!(!lock.is_held());
        assert_eq!(
            std::fs::read(&lock_file).expect("lock file"),
            original,
            "{}",
            fx.file
        );
    }
    assert_still_serving(&daemon, &client).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_go_lock_is_stolen() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    for fx in GO_FIXTURES.iter().filter(|fx| fx.stale) {
        let (target, lock_file) = target_with_lock_file(&daemon, fx.file, &fixture(fx.file));
        let mut lock = client.new_lock(&target, LockOptions::default().owner_id("new-owner"));
        lock.acquire()
            .await
            .unwrap_or_else(|e| panic!("{}: an expired lock is taken: {e:?}", fx.file));
        let written = std::fs::read_to_string(&lock_file).expect("lock file");
        assert!(!written.contains(fx.hostname), "{}: {written}", fx.file);
        assert!(written.contains("new-owner"), "{}: {written}", fx.file);
        let meta = lock.metadata().await.expect("metadata");
        assert_eq!(meta.format, LockFileFormat::Vfslock(1), "{}", fx.file);
        assert_eq!(meta.pid, i64::from(std::process::id()), "{}", fx.file);
        assert!(!meta.stale, "{}", fx.file);
        lock.release().await.expect("release");
        assert!(!lock_file.exists(), "{}", fx.file);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn another_tools_json_lock_is_never_stolen() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let original = br#"{"ID":"x","Operation":"OperationTypePlan","Who":"me@host"}"#;
    let (target, lock_file) = target_with_lock_file(&daemon, "terraform.tfstate", original);
    // Even very old: a foreign lock has no lease we understand.
    std::fs::File::options()
        .write(true)
        .open(&lock_file)
        .expect("open")
        .set_modified(SystemTime::now() - Duration::from_secs(400 * 86_400))
        .expect("set mtime");

    let meta = client
        .metadata(&target)
        .await
        .expect("metadata")
        .expect("a lock file");
    assert_eq!(meta.format, LockFileFormat::Foreign);
    assert!(!meta.stale);

    let mut lock = client.new_lock(
        &target,
        LockOptions::default().on_stale(|_| Ok::<_, String>(())),
    );
    let err = lock.acquire().await.expect_err("a foreign lock is held");
    assert!(err.is_already_held(), "{err:?}");
    assert_eq!(
        err.holder().map(|h| h.format),
        Some(LockFileFormat::Foreign)
    );
    let err = lock
        .acquire_timeout(Duration::from_millis(300))
        .await
        .expect_err("a foreign lock stays held");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err:?}");
    assert_eq!(std::fs::read(&lock_file).expect("lock file"), original);
    assert_still_serving(&daemon, &client).await;
}

const CORRUPT: [&str; 3] = [
    "corrupt-empty.lock",
    "corrupt-truncated.lock",
    "corrupt-binary.lock",
];

/// Corrupt files are held for ten minutes after their last write, long enough that a freshly
/// written one stays young for the whole test.
fn corrupt_grace_config() -> String {
    let config = TEST_CONFIG.replace("[locks]\n", "[locks]\ncorrupt-grace = \"10m\"\n");
    assert_ne!(config, TEST_CONFIG, "TEST_CONFIG has a [locks] table");
    config
}

#[tokio::test(flavor = "multi_thread")]
async fn a_young_corrupt_lock_file_blocks_and_the_daemon_keeps_serving() {
    let daemon = Daemon::start_with(&corrupt_grace_config());
    let client = daemon.client().await;
    for name in CORRUPT {
        let original = fixture(name);
        let (target, lock_file) = target_with_lock_file(&daemon, name, &original);
        let meta = client
            .metadata(&target)
            .await
            .expect("metadata of a corrupt file")
            .expect("a lock file");
        assert_eq!(meta.format, LockFileFormat::Corrupt, "{name}");
        assert!(!meta.stale, "{name}");

        let mut lock = client.new_lock(&target, LockOptions::default());
        let err = lock
            .acquire()
            .await
            .expect_err("a young corrupt lock is held");
        assert!(err.is_already_held(), "{name}: {err:?}");
        assert_eq!(
            err.holder().map(|h| h.format),
            Some(LockFileFormat::Corrupt),
            "{name}"
        );
        assert_eq!(
            std::fs::read(&lock_file).expect("lock file"),
            original,
            "{name}"
        );
        assert_still_serving(&daemon, &client).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_old_corrupt_lock_file_is_stale_and_taken() {
    let daemon = Daemon::start_with(&corrupt_grace_config());
    let client = daemon.client().await;
    for name in CORRUPT {
        let (target, lock_file) = target_with_lock_file(&daemon, name, &fixture(name));
        std::fs::File::options()
            .write(true)
            .open(&lock_file)
            .expect("open")
            .set_modified(SystemTime::now() - Duration::from_secs(3600))
            .expect("set mtime");
        let meta = client
            .metadata(&target)
            .await
            .expect("metadata")
            .expect("a lock file");
        assert_eq!(meta.format, LockFileFormat::Corrupt, "{name}");
        assert!(meta.stale, "{name}");

        let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = asked.clone();
        let options = LockOptions::default().on_stale(move |meta| {
            record.lock().unwrap().push(meta.format);
            Ok::<_, String>(())
        });
        let mut lock = client.new_lock(&target, options);
        lock.acquire()
            .await
            .unwrap_or_else(|e| panic!("{name}: an old corrupt lock is taken: {e:?}"));
        assert_eq!(*asked.lock().unwrap(), [LockFileFormat::Corrupt], "{name}");
        let written = std::fs::read(&lock_file).expect("lock file");
        let json: serde_json::Value = serde_json::from_slice(&written).expect("valid JSON now");
        assert_eq!(json["lockId"].as_str(), lock.lock_id(), "{name}");
        lock.release().await.expect("release");
        assert!(!lock_file.exists(), "{name}");
    }
    assert_still_serving(&daemon, &client).await;
}

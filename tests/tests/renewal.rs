//! Lease renewal: a lock with a 3 s TTL held for 10 s stays held, and its lock file's
//! `createdAt` is rewritten while it is held (file and mem targets). Each test takes ~10 s.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use vfslock::{Client, LockOptions};
use vfslock_tests::{targets, Daemon};

const TTL: Duration = Duration::from_secs(3);
const HOLD: Duration = Duration::from_secs(10);

/// The lock file's `createdAt` as written: read from disk for file targets, through the
/// daemon for mem targets.
async fn created_at(client: &Client, target: &str, lock_file: Option<&Path>) -> String {
    match lock_file {
        Some(path) => {
            let bytes = std::fs::read(path).expect("the lock file exists while held");
            let json: serde_json::Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("a renewal left a torn lock file ({e}): {bytes:?}"));
            json["createdAt"]
                .as_str()
                .expect("createdAt is a string")
                .to_owned()
        }
        None => {
            let meta = client
                .metadata(target)
                .await
                .expect("metadata")
                .expect("the lock file exists while held");
            format!("{:?}", meta.created_at().expect("createdAt"))
        }
    }
}

async fn held_beyond_its_ttl(name: &str, pick_file: bool) {
    let daemon = Daemon::start();
    let [file, mem] = targets(&daemon, name);
    let (target, lock_file) = if pick_file { file } else { mem };
    let client = daemon.client().await;
    let mut lock = client.new_lock(&target, LockOptions::default().ttl(TTL));
    lock.acquire().await.expect("acquire");

    // Polling is the only way to watch a file being rewritten; the 10 s hold is the subject.
    let mut seen = BTreeSet::new();
    let start = Instant::now();
    while start.elapsed() < HOLD {
        seen.insert(created_at(&client, &target, lock_file.as_deref()).await);
        assert!(lock.is_held(), "lease lost after {:?}", start.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        seen.len() >= 3,
        "createdAt was rewritten fewer than twice in {HOLD:?}: {seen:?}"
    );

    let other = daemon.client().await;
    let mut thief = other.new_lock(&target, LockOptions::default());
    let err = thief
        .acquire()
        .await
        .expect_err("still held after 10 s with a 3 s TTL");
    assert!(err.is_already_held(), "{err:?}");
    assert_eq!(
        err.holder().and_then(|h| h.lock_id.as_deref()),
        lock.lock_id()
    );
    assert!(lock.is_held());
    assert!(!lock.is_stale().await.expect("is_stale"));
    // Renewals refresh `createdAt` but keep the holding: same lock id, same `acquiredAt`.
    let now = lock.metadata().await.expect("metadata");
    let first = lock.held_metadata().expect("held").clone();
    assert_eq!(now.lock_id, first.lock_id);
    assert_eq!(now.acquired_at(), first.acquired_at());
    assert!(
        now.created_at() > first.created_at(),
        "{now:?} vs {first:?}"
    );
    assert!(lock.age().await.expect("age") < HOLD);
    lock.release().await.expect("release");
    if let Some(path) = &lock_file {
        assert!(!path.exists());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_lock_with_a_3s_ttl_held_for_10s_stays_held_and_is_renewed() {
    held_beyond_its_ttl("renewed.csv", true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mem_lock_with_a_3s_ttl_held_for_10s_stays_held_and_is_renewed() {
    held_beyond_its_ttl("renewed.csv", false).await;
}

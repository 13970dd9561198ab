//! The first end-to-end check: a real daemon, a real client, one lock.

use vfslock::LockOptions;
use vfslock_tests::Daemon;

#[tokio::test]
async fn acquire_then_release_creates_and_removes_the_lock_file() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let target = daemon.file_target("data.csv");
    let lock_file = format!("{target}.lock");
    let mut lock = client.new_lock(&target, LockOptions::default().owner_id("smoke"));
    lock.acquire().await.expect("acquire");
    let written = std::fs::read_to_string(&lock_file).expect("lock file exists");
    assert!(written.contains("\"ownerId\": \"smoke\""), "{written}");
    lock.release().await.expect("release");
    assert!(!std::path::Path::new(&lock_file).exists());
}

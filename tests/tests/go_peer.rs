//! Living with real Go peers (issue 13): the Go library (c2fo/vfs `contrib/lockfile` v1.2.0,
//! OS backend) next to vfslockd on one `file://` lock.
//!
//! A Go program that keeps one `Lock` value and retries `Acquire` on it judges our lock by the
//! `createdAt` it read first: once that file's `ttl` has passed it steals the lock, however
//! often the daemon renewed it, and our holder is told its lease is lost. A new `Lock` per
//! attempt reads the file afresh and never steals a renewed lock. `[locks] peer-ttl-factor`
//! writes a longer `ttl` than the lease the daemon renews, which holds a reusing Go program off
//! for that long (a bound, not a cure: it still steals once that `ttl` has passed since its
//! first read).

use std::process::Output;
use std::time::Duration;

use vfslock::LockOptions;
use vfslock_tests::gopeer::GoPeer;
use vfslock_tests::{within, Daemon, TEST_CONFIG};

/// The lease our holder takes: renewed every ~0.7 s, so that a loaded machine still renews
/// well inside it.
const LEASE: Duration = Duration::from_secs(2);

/// Runs the Go peer in `mode` (`reuse` or `fresh`) against `target` with a 2 s ttl of its own,
/// retrying every 500 ms up to `tries` times, and releasing at once if it wins.
async fn go_acquire(peer: &GoPeer, mode: &str, target: &str, tries: u32) -> Output {
    let mut command = peer.command();
    command.args([mode, target, "2s", &tries.to_string(), "500ms", "0s"]);
    tokio::task::spawn_blocking(move || command.output().expect("run the Go peer"))
        .await
        .expect("the Go peer's task")
}

fn says(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_go_program_reusing_one_lock_value_steals_a_renewed_lock_and_our_holder_hears() {
    let Some(peer) = GoPeer::get() else { return };
    let daemon = Daemon::start();
    let target = daemon.file_target("reused.csv");
    let client = daemon.client().await;
    let mut holder = client.new_lock(&target, LockOptions::default().ttl(LEASE));
    holder.acquire().await.expect("acquire");
    // 12 tries over 6 s: the cached createdAt is more than 2 s old after the fifth.
    let output = go_acquire(&peer, "reuse", &target, 12).await;
    assert_eq!(output.status.code(), Some(0), "{}", says(&output));
    assert!(
        says(&output).starts_with("acquired after"),
        "{}",
        says(&output)
    );
    let lost = within("our holder to hear of the steal", holder.lost()).await;
    assert!(
        lost.contains("replaced or removed by someone else"),
        "{lost}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_go_program_with_a_new_lock_per_attempt_never_steals_a_renewed_lock() {
    let Some(peer) = GoPeer::get() else { return };
    let daemon = Daemon::start();
    let target = daemon.file_target("fresh.csv");
    let client = daemon.client().await;
    let mut holder = client.new_lock(&target, LockOptions::default().ttl(LEASE));
    holder.acquire().await.expect("acquire");
    // 10 tries over 5 s, more than two leases: each reads the renewed createdAt.
    let output = go_acquire(&peer, "fresh", &target, 10).await;
    assert_eq!(output.status.code(), Some(1), "{}", says(&output));
    assert!(
        says(&output).starts_with("held after 10"),
        "{}",
        says(&output)
    );
    assert!(holder.is_held(), "the lease was lost");
    holder.release().await.expect("still ours at release");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_longer_ttl_shown_to_peers_holds_a_reusing_go_program_off_for_that_long() {
    let Some(peer) = GoPeer::get() else { return };
    // The file says 10 s; the daemon still renews a 2 s lease.
    let config = TEST_CONFIG.replace("[locks]\n", "[locks]\npeer-ttl-factor = 5\n");
    let daemon = Daemon::start_with(&config);
    let target = daemon.file_target("shown.csv");
    let client = daemon.client().await;
    let mut holder = client.new_lock(&target, LockOptions::default().ttl(LEASE));
    holder.acquire().await.expect("acquire");
    let file = std::fs::read_to_string(format!("{target}.lock")).expect("the lock file");
    assert!(file.contains("\"ttl\": 10000000000"), "{file}");
    let grant_ttl = holder.held_metadata().expect("held").ttl();
    assert_eq!(grant_ttl, Some(Duration::from_secs(10)));
    // The same 12 tries over 6 s that steal with the factor at 1.
    let output = go_acquire(&peer, "reuse", &target, 12).await;
    assert_eq!(output.status.code(), Some(1), "{}", says(&output));
    assert!(holder.is_held(), "the lease was lost");
    holder.release().await.expect("still ours at release");
}

/// A Go peer that only reads a lock's metadata can leave an empty lock file: its OS backend
/// checks that the file exists, then opens it with create enabled, so a read that races our
/// delete re-creates the file, empty. Such a file stops blocking after `empty-grace` (here
/// 1 s, the least the 1 s store timeout allows), not `corrupt-grace` (here 1 h, far past the
/// harness's deadline for each cycle): vfslock keeps cycling the lock while the Go peer polls.
#[tokio::test(flavor = "multi_thread")]
async fn a_go_reader_racing_our_deletes_never_blocks_us_for_long() {
    let Some(peer) = GoPeer::get() else { return };
    let config = TEST_CONFIG.replace(
        "[locks]\n",
        "[locks]\nstore-timeout = \"1s\"\nempty-grace = \"1s\"\ncorrupt-grace = \"1h\"\n",
    );
    let daemon = Daemon::start_with(&config);
    let target = daemon.file_target("polled.csv");
    let mut poll = peer.command();
    poll.args(["poll", &target, "4s"]);
    let poller = tokio::task::spawn_blocking(move || poll.output().expect("run the Go peer"));
    let client = daemon.client().await;
    let mut cycles = 0;
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        let mut lock = client.new_lock(&target, LockOptions::default());
        within("a cycle while the Go peer polls", lock.acquire_wait())
            .await
            .expect("acquire");
        lock.release().await.expect("release");
        cycles += 1;
    }
    let output = poller.await.expect("the Go peer's task");
    assert!(output.status.success(), "{}", says(&output));
    let taken = daemon
        .log()
        .lines()
        .filter(|l| l.contains("took over a stale lock") && l.contains("stale_pid=0 "))
        .count();
    eprintln!(
        "{cycles} cycles while the Go peer {}; {taken} empty lock files taken over",
        says(&output).trim()
    );
    // Each cycle finished within the harness's deadline (`within`): an empty file held for
    // `corrupt-grace` (1 h) would not have.
    assert!(cycles >= 1);
    // Whatever the race left, the lock is free for anyone within the grace.
    let mut last = client.new_lock(&target, LockOptions::default());
    within("the lock after the Go peer stopped", last.acquire_wait())
        .await
        .expect("acquire");
}

/// A lock file with a holder list (shared locks and semaphores, `vfslockd::lockfile::joint`)
/// keeps the Go library's top-level fields: the Go library finds it held while a listed holder
/// lives, and so does a daemon that reads only those fields, as every release before lock
/// modes does (this build's acquire path, which does not read the holder list, stands in for
/// it); once every holder has expired, the file is stale for both.
#[tokio::test(flavor = "multi_thread")]
async fn a_lock_file_with_a_holder_list_is_held_for_go_and_for_daemons_without_modes() {
    use std::time::SystemTime;
    use vfslockd::lockfile::joint::{HolderEntry, Joint, JointMode};

    let Some(peer) = GoPeer::get() else { return };
    let daemon = Daemon::start();
    let target = daemon.file_target("shared.csv");
    let now = SystemTime::now();
    let holder = |id: &str, host: &str, ttl: Duration| HolderEntry {
        lock_id: id.into(),
        daemon_id: format!("daemon-{host}"),
        hostname: host.into(),
        pid: 4242,
        owner_id: None,
        uid: Some(1000),
        token: Some(7),
        created_at: now,
        acquired_at: now,
        ttl,
        count: 1,
        detached: false,
    };
    // One holder expires at once, the other lives 3 s: the file must be held for 3 s.
    let joint = Joint {
        mode: JointMode::Shared,
        holders: vec![
            holder("a", "reader-1", Duration::from_millis(1)),
            holder("b", "reader-2", Duration::from_secs(3)),
        ],
    };
    std::fs::write(
        format!("{target}.lock"),
        joint.to_json("file-1", "daemon-reader-1", now),
    )
    .expect("write the lock file");

    let output = go_acquire(&peer, "fresh", &target, 1).await;
    assert_eq!(output.status.code(), Some(1), "{}", says(&output));
    assert!(
        says(&output).starts_with("held after 1"),
        "{}",
        says(&output)
    );
    let client = daemon.client().await;
    let mut ours = client.new_lock(&target, LockOptions::default().ttl(LEASE));
    let refused = ours
        .acquire()
        .await
        .expect_err("held by the listed readers");
    assert_eq!(refused.kind(), vfslock::ErrorKind::AlreadyHeld, "{refused}");
    assert!(refused.to_string().contains("reader-1"), "{refused}");

    // Past the last holder's expiry the file is stale: taken over.
    let mut waiting = client.new_lock(&target, LockOptions::default().ttl(LEASE));
    waiting
        .acquire_timeout(Duration::from_secs(20))
        .await
        .expect("stale once every holder expired");
    assert!(
        SystemTime::now() >= now + Duration::from_secs(3),
        "granted before the last listed holder expired"
    );
    let file = std::fs::read_to_string(format!("{target}.lock")).expect("our lock file");
    assert!(!file.contains("reader-2"), "{file}");
    waiting.release().await.expect("release");
}

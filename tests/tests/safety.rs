//! Safety across hosts, end to end. Hosts are modelled as several `vfslockd` processes, each with
//! its own socket, log and `--host-id`, sharing one directory of `file://` targets:
//!
//! - of many clients on many hosts racing for one stale lock, exactly one wins, every round;
//! - a holder whose lock file is replaced or removed behind its back learns it at its daemon's
//!   next write (renewal, release, or handoff to a local waiter) and never touches the new file;
//! - fencing tokens strictly increase across daemons, restarts, a lost fence counter, and for
//!   `mem://` across restarts;
//! - a frozen daemon's client loses its lease before another host can take the lock, and the
//!   thawed daemon leaves the new holder's file alone;
//! - renewals failing on a broken fence keep the lease through a short outage and lose it before
//!   it expires in a long one, without deleting the lock file while the store fails; a delete
//!   that failed is retried once it works, so waiters need not wait out the TTL;
//! - a skewed clock can steal early under the seed rule (and tokens keep their order), cannot
//!   under the watched rule, and a lock written from the future is judged by watching it;
//! - two hosts share a contended lock fairly.

#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use vfslock::{Client, ErrorKind, LockFileFormat, LockOptions};
use vfslock_tests::{
    eventually, fixture, next_position, race, sole_winner, stale_lock_for_round, watch_queue,
    within, Daemon, DEADLINE, TEST_CONFIG,
};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// [`TEST_CONFIG`]'s settings plus `extra` keys of `[locks]`, with the file store's stale rule.
fn config(extra: &str, file_rule: &str) -> String {
    format!(
        r#"
[locks]
idle-actor-timeout = "200ms"
recheck-min = "10ms"
recheck-max = "200ms"
stale-answer-timeout = "3s"
{extra}

[stores.file]
stale-rule = "{file_rule}"
"#
    )
}

/// The directory the simulated hosts share.
fn shared_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("vfslock-shared-")
        .tempdir()
        .expect("shared directory")
}

/// One simulated host: a daemon with its own socket and `--host-id`, its targets in `shared`.
fn host(config: &str, shared: &Path, id: &str, extra: &[&str]) -> Daemon {
    let mut args = vec!["--host-id", id];
    args.extend_from_slice(extra);
    Daemon::start_host(config, Some(shared), &args)
}

/// `count` hosts named `h0`, `h1`, ... sharing `shared`.
fn hosts(config: &str, shared: &Path, count: usize) -> Vec<Daemon> {
    (0..count)
        .map(|i| host(config, shared, &format!("h{i}"), &[]))
        .collect()
}

fn lock_file(target: &str) -> PathBuf {
    PathBuf::from(format!("{target}.lock"))
}

fn fence_file(target: &str) -> PathBuf {
    PathBuf::from(format!("{target}.lock.fence"))
}

fn read_json(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("lock file {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "lock file {} is not JSON ({e}): {}",
            path.display(),
            String::from_utf8_lossy(&bytes)
        )
    })
}

/// The `token` of the lock file at `path`.
fn file_token(path: &Path) -> u64 {
    let json = read_json(path);
    json["token"]
        .as_u64()
        .unwrap_or_else(|| panic!("no token in {}: {json}", path.display()))
}

/// The `createdAt` of the lock file at `path`, as the wall clock.
fn file_created_at(path: &Path) -> SystemTime {
    let json = read_json(path);
    json["createdAt"]
        .as_str()
        .and_then(vfslockd::lockfile::parse_go_time)
        .unwrap_or_else(|| panic!("no readable createdAt in {}: {json}", path.display()))
}

/// Runs `f` holding the fence of the lock file beside `fence` (`<lock>.fence`), through the
/// daemon's own fence code, as every vfslock host does around each write of the lock file.
fn under_fence<T>(fence: &Path, f: impl FnOnce() -> T) -> T {
    let fence = fence.to_string_lossy();
    let lock_path = fence.strip_suffix(".fence").expect("a .fence path");
    vfslockd::store::fs::with_fence(lock_path, f)
        .unwrap_or_else(|e| panic!("lock the fence {fence}: {e}"))
}

/// Replaces the lock file at `path` with `bytes` (or removes it, with `None`) as another host
/// would after judging it stale: under the fence, by a temporary file renamed over it.
fn overwrite_as_another_host(path: &Path, bytes: Option<&[u8]>) {
    static NONCE: AtomicU64 = AtomicU64::new(0);
    let fence = PathBuf::from(format!("{}.fence", path.display()));
    under_fence(&fence, || match bytes {
        Some(bytes) => {
            let temp = path.with_file_name(format!(
                ".test-{}-{}.tmp",
                std::process::id(),
                NONCE.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::write(&temp, bytes).expect("write the temporary lock file");
            std::fs::rename(&temp, path).expect("rename it over the lock file");
        }
        None => std::fs::remove_file(path).expect("remove the lock file"),
    });
}

/// Makes the fence unusable: `<lock>.fence` becomes a directory, which the daemon's
/// `open(O_RDWR)` refuses with EISDIR, so every write of the lock file fails.
fn break_fence(fence: &Path) {
    let start = Instant::now();
    loop {
        match std::fs::remove_file(fence) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("remove the fence {}: {e}", fence.display()),
        }
        match std::fs::create_dir(fence) {
            Ok(()) => return,
            // A daemon re-created the file in between: again.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => panic!("make the fence {} a directory: {e}", fence.display()),
        }
        assert!(start.elapsed() < DEADLINE, "could not break the fence");
    }
}

/// Undoes [`break_fence`]: the next write re-creates the fence file (its counter lost).
fn restore_fence(fence: &Path) {
    std::fs::remove_dir(fence)
        .unwrap_or_else(|e| panic!("remove the fence directory {}: {e}", fence.display()));
}

/// Freezes `daemon` with SIGSTOP while the test holds the target's fence, so that the daemon is
/// not frozen in the middle of a write with the fence locked (which would lock every other host
/// out of the lock file until it thaws): the fence is let go only once all its threads stopped.
fn freeze_outside_the_fence(daemon: &Daemon, fence: &Path) {
    under_fence(fence, || {
        daemon.signal(libc::SIGSTOP);
        let start = Instant::now();
        while !all_threads_stopped(daemon.pid()) {
            assert!(start.elapsed() < DEADLINE, "vfslockd did not stop");
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}

/// Whether every thread of `pid` is in the stopped state (`T` in `/proc/<pid>/task/*/stat`).
fn all_threads_stopped(pid: u32) -> bool {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the daemon's threads");
    tasks.filter_map(Result::ok).all(|task| {
        // A thread that exited meanwhile does not count.
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            return true;
        };
        // `tid (comm) S ...`: the state follows the last parenthesis.
        let state = stat
            .rfind(')')
            .and_then(|end| stat[end + 1..].trim_start().chars().next());
        matches!(state, Some('T') | Some('t') | None)
    })
}

/// Waits until the daemon's log contains `text`.
async fn logged(daemon: &Daemon, text: &str) {
    eventually(&format!("the daemon to log {text:?}"), || {
        daemon.log().contains(text)
    })
    .await;
}

/// A round trip to the target's actor in `client`'s daemon: answered only after every message
/// the actor had before it, so whatever the actor was doing to the lock file is done.
async fn settle(client: &Client, target: &str) -> Option<vfslock::LockMetadata> {
    within("a metadata request", client.metadata(target))
        .await
        .expect("metadata request")
}

// ---------------------------------------------------------------------------------------------
// 1. Race-free stale steals
// ---------------------------------------------------------------------------------------------

const RACE_HOSTS: usize = 8;
const RACE_CLIENTS_PER_HOST: usize = 4;
const RACE_ROUNDS: usize = 200;

#[tokio::test(flavor = "multi_thread")]
async fn of_32_clients_on_8_hosts_racing_for_a_stale_lock_exactly_one_wins_every_round() {
    let shared = shared_dir();
    let daemons = hosts(TEST_CONFIG, shared.path(), RACE_HOSTS);
    let target = daemons[0].file_target("raced.csv");
    let path = lock_file(&target);
    let mut clients = Vec::new();
    for i in 0..RACE_HOSTS * RACE_CLIENTS_PER_HOST {
        // Each its own connection, spread over the hosts.
        clients.push(daemons[i % RACE_HOSTS].client().await);
    }
    let mut last_token = 0;
    for round in 0..RACE_ROUNDS {
        let (stale, stale_token) = stale_lock_for_round(round, last_token);
        let stale = serde_json::to_vec_pretty(&stale).unwrap();
        overwrite_as_another_host(&path, Some(&stale));
        let outcomes = race(&clients, &target).await;
        let (winner_index, mut lock) = sole_winner(&format!("round {round}"), outcomes);
        let winner_id = lock.lock_id().expect("winner's lock id").to_owned();
        let token = lock.token().expect("winner's token");
        assert!(
            token > last_token,
            "round {round}: token {token} is not above the previous winner's {last_token}"
        );
        let on_disk = read_json(&path);
        assert_eq!(on_disk["lockId"], winner_id.as_str(), "round {round}");
        assert_eq!(on_disk["token"], token, "round {round}");
        assert_eq!(
            on_disk["ownerId"],
            format!("racer-{winner_index}"),
            "round {round}"
        );
        if let Some(stale_token) = stale_token {
            assert!(
                token > stale_token,
                "round {round}: token {token} is not above the stale lock's {stale_token}"
            );
        }
        last_token = token;
        within("the winner's release", lock.release())
            .await
            .expect("release");
        assert!(!path.exists(), "round {round}: lock file after the release");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Ownership checked on every write
// ---------------------------------------------------------------------------------------------

const OWNERSHIP_TTL: Duration = Duration::from_millis(1500);

/// What another host did to the holder's lock file.
#[derive(Clone, Copy, Debug)]
enum Intruder {
    /// Wrote the Go library's lock (ttl 0: never stale).
    GoFile,
    /// Wrote its own vfslock lock, with the next token.
    VfslockFile,
    /// Removed the file.
    Removal,
}

/// At which write the holder's daemon meets the intruder's file.
#[derive(Clone, Copy, Debug)]
enum Noticed {
    /// The next renewal (a short TTL).
    Renewal,
    /// The release, which deletes the file (a long TTL: no renewal first).
    Release,
    /// The release, which hands the lock to a waiter of the same daemon by overwriting it.
    Handoff,
}

async fn a_replaced_lock_file_is_lost_and_left_alone(
    daemon: &Daemon,
    intruder: Intruder,
    noticed: Noticed,
) {
    let case = format!("{intruder:?} noticed {noticed:?}");
    let target = daemon.file_target(&format!("owned-{intruder:?}-{noticed:?}.csv"));
    let path = lock_file(&target);
    let ttl = match noticed {
        Noticed::Renewal => OWNERSHIP_TTL,
        Noticed::Release | Noticed::Handoff => Duration::from_secs(60),
    };
    let client = daemon.client().await;
    let mut lock = client.new_lock(&target, LockOptions::default().ttl(ttl));
    lock.acquire().await.expect("acquire");
    let token = lock.token().expect("token");

    // For the handoff, a waiter of the same daemon in line before the file is replaced.
    let waiter = match noticed {
        Noticed::Handoff => {
            let waiter_client = daemon.client().await;
            let (options, mut positions) = watch_queue(LockOptions::default());
            let mut waiter = waiter_client.new_lock(&target, options);
            let task = tokio::spawn(async move {
                let result = waiter.acquire_timeout(OWNERSHIP_TTL * 2).await;
                (result, waiter)
            });
            assert_eq!(next_position(&mut positions).await, 1, "{case}");
            Some(task)
        }
        _ => None,
    };

    let foreign_id = "0123456789abcdef0123456789abcdef";
    let foreign: Option<Vec<u8>> = match intruder {
        Intruder::GoFile => Some(fixture("go-lockfile-no-ttl.lock")),
        Intruder::VfslockFile => {
            let mut json = read_json(&path);
            json["lockId"] = foreign_id.into();
            json["daemonId"] = "fedcba9876543210fedcba9876543210".into();
            json["hostname"] = "other-host".into();
            json["pid"] = 1.into();
            json["ttl"] = 3_600_000_000_000i64.into();
            json["token"] = (token + 1).into();
            Some(serde_json::to_vec_pretty(&json).unwrap())
        }
        Intruder::Removal => None,
    };
    overwrite_as_another_host(&path, foreign.as_deref());

    if let Noticed::Renewal = noticed {
        let reason = within("the holder to learn of the loss", lock.lost()).await;
        assert!(reason.contains("replaced or removed"), "{case}: {reason}");
        assert!(!lock.is_held(), "{case}");
    }
    let err = lock
        .release()
        .await
        .expect_err("the release reports the loss");
    assert_eq!(err.kind(), ErrorKind::LeaseLost, "{case}: {err}");
    assert!(
        err.message().contains("replaced or removed"),
        "{case}: {err}"
    );
    assert!(!lock.is_held(), "{case}");

    if let Some(task) = waiter {
        let (result, mut waiter) = within("the waiter's acquire", task)
            .await
            .expect("waiter task");
        match intruder {
            // Nothing to hand over; the waiter then finds the lock free.
            Intruder::Removal => {
                result.unwrap_or_else(|e| panic!("{case}: the waiter: {e:?}"));
                assert!(waiter.token().expect("token") > token, "{case}");
                assert_eq!(read_json(&path)["lockId"], waiter.lock_id().unwrap());
                waiter.release().await.expect("release");
            }
            _ => {
                let err = result.expect_err("the lock was not ours to hand over");
                assert!(err.is_timeout(), "{case}: {err:?}");
            }
        }
    }
    settle(&client, &target).await;
    assert_eq!(std::fs::read(&path).ok(), foreign, "{case}");

    // Nothing more happens to the file, renewals and retries included: watch it for a TTL.
    let until = Instant::now() + OWNERSHIP_TTL;
    while Instant::now() < until {
        assert_eq!(
            std::fs::read(&path).ok(),
            foreign,
            "{case}: the daemon touched the file it had lost"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The daemon now sees the new holder as everyone else does.
    let other = daemon.client().await;
    let mut second = other.new_lock(&target, LockOptions::default());
    match intruder {
        Intruder::GoFile => {
            let err = second.acquire().await.expect_err("the Go lock is held");
            assert!(err.is_already_held(), "{case}: {err:?}");
            let holder = err.holder().expect("holder");
            assert_eq!(holder.format, LockFileFormat::Go, "{case}");
            assert_eq!(holder.hostname, "batch-host", "{case}");
        }
        Intruder::VfslockFile => {
            let err = second.acquire().await.expect_err("the other host's lock");
            assert!(err.is_already_held(), "{case}: {err:?}");
            let holder = err.holder().expect("holder");
            assert_eq!(holder.lock_id.as_deref(), Some(foreign_id), "{case}");
            assert_eq!(holder.hostname, "other-host", "{case}");
        }
        Intruder::Removal => {
            second.acquire().await.expect("a removed lock is free");
            assert!(second.token().expect("token") > token, "{case}");
            second.release().await.expect("release");
        }
    }
    assert_eq!(std::fs::read(&path).ok(), foreign, "{case}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_holder_whose_lock_file_is_replaced_or_removed_loses_it_and_leaves_it_alone() {
    let shared = shared_dir();
    let daemon = Arc::new(host(TEST_CONFIG, shared.path(), "h0", &[]));
    // All at once, on one daemon: nine targets, one actor each.
    let mut cases = Vec::new();
    for intruder in [Intruder::GoFile, Intruder::VfslockFile, Intruder::Removal] {
        for noticed in [Noticed::Renewal, Noticed::Release, Noticed::Handoff] {
            let daemon = daemon.clone();
            cases.push(tokio::spawn(async move {
                a_replaced_lock_file_is_lost_and_left_alone(&daemon, intruder, noticed).await
            }));
        }
    }
    for case in cases {
        within("a case", case).await.expect("case task");
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Fencing tokens
// ---------------------------------------------------------------------------------------------

/// Takes and releases the free lock on a file `target` through `client`; checks that its token
/// is above `last` and is the one in the lock file. Returns the token.
async fn take_file_lock(client: &Client, target: &str, last: u64, what: &str) -> u64 {
    let mut lock = client.new_lock(target, LockOptions::default());
    lock.acquire()
        .await
        .unwrap_or_else(|e| panic!("{what}: acquire: {e}"));
    let token = lock.token().expect("token");
    assert!(token > last, "{what}: token {token} after {last}");
    assert_eq!(file_token(&lock_file(target)), token, "{what}");
    assert_eq!(lock.held_metadata().and_then(|m| m.token), Some(token));
    lock.release().await.expect("release");
    token
}

#[tokio::test(flavor = "multi_thread")]
async fn fencing_tokens_strictly_increase_across_daemons_restarts_and_a_lost_fence() {
    let shared = shared_dir();
    // A short skew allowance: the lock of a killed daemon goes stale soon after its TTL.
    let config = config(r#"skew-allowance = "200ms""#, "seed");
    let mut daemons = hosts(&config, shared.path(), 3);
    let target = daemons[0].file_target("fenced.csv");
    let path = lock_file(&target);

    // (a) Through different daemons sharing the directory.
    let mut last = 0;
    for round in 0..9 {
        let client = daemons[round % 3].client().await;
        last = take_file_lock(&client, &target, last, &format!("host {}", round % 3)).await;
    }

    // (b) Across a restart, after a release...
    daemons[0].kill();
    daemons[0].restart();
    last = take_file_lock(&daemons[0].client().await, &target, last, "after a restart").await;

    // ... and with the lock held by the daemon killed: taken over once stale.
    let ttl = Duration::from_secs(1);
    let client = daemons[1].client().await;
    let mut doomed = client.new_lock(&target, LockOptions::default().ttl(ttl));
    doomed.acquire().await.expect("acquire");
    let doomed_token = doomed.token().expect("token");
    assert!(doomed_token > last);
    assert_eq!(file_token(&path), doomed_token);
    daemons[1].kill();
    within("the holder to see its daemon die", doomed.lost()).await;
    daemons[1].restart();
    let client = daemons[1].client().await;
    let mut heir = client.new_lock(&target, LockOptions::default());
    within("the stale lock", heir.acquire_timeout(DEADLINE))
        .await
        .expect("take over the killed daemon's lock");
    last = heir.token().expect("token");
    assert!(last > doomed_token, "token {last} after {doomed_token}");
    assert_eq!(file_token(&path), last);
    heir.release().await.expect("release");

    // (c) The fence file, and the counter in it, is lost: the time floor keeps tokens going up.
    std::fs::remove_file(fence_file(&target)).expect("delete the fence");
    last = take_file_lock(&daemons[2].client().await, &target, last, "lost fence").await;
    assert!(fence_file(&target).exists(), "the fence comes back");
    take_file_lock(&daemons[0].client().await, &target, last, "new fence").await;

    // (d) mem:// lock files live in the daemon's memory, gone with a restart.
    let mut daemon = Daemon::start();
    let target = "mem:///fenced";
    let mut last = 0;
    for round in 0..3 {
        let client = daemon.client().await;
        let mut lock = client.new_lock(target, LockOptions::default());
        lock.acquire().await.expect("acquire mem");
        let token = lock.token().expect("token");
        assert!(
            token > last,
            "mem round {round}: token {token} after {last}"
        );
        let meta = client.metadata(target).await.expect("metadata");
        assert_eq!(meta.and_then(|m| m.token), Some(token));
        last = token;
        lock.release().await.expect("release");
        drop(client);
        daemon.kill();
        daemon.restart();
    }
}

// ---------------------------------------------------------------------------------------------
// 4. A frozen daemon
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_daemons_client_loses_the_lease_before_another_host_takes_it() {
    let shared = shared_dir();
    let a = host(TEST_CONFIG, shared.path(), "h-a", &[]);
    let b = host(TEST_CONFIG, shared.path(), "h-b", &[]);
    let target = a.file_target("frozen.csv");
    let path = lock_file(&target);
    let ttl = Duration::from_secs(2);

    let a_client = a.client().await;
    let a_status = a.client().await; // connected now: a frozen daemon cannot answer a handshake
    let b_client = b.client().await;
    let mut a_lock = a_client.new_lock(&target, LockOptions::default().ttl(ttl));
    a_lock.acquire().await.expect("A acquires");
    let a_token = a_lock.token().expect("token");
    // B's own lease is long, so its lock file stays exactly as first written during the test.
    let mut b_lock =
        b_client.new_lock(&target, LockOptions::default().ttl(Duration::from_secs(60)));

    freeze_outside_the_fence(&a, &fence_file(&target));
    let (a_lost, b_granted) = within("A's loss and B's grant", async {
        tokio::join!(
            async {
                let reason = a_lock.lost().await;
                (Instant::now(), reason)
            },
            async {
                let result = b_lock.acquire_timeout(DEADLINE).await;
                (Instant::now(), result)
            },
        )
    })
    .await;
    let b_bytes = std::fs::read(&path).expect("B's lock file");
    a.signal(libc::SIGCONT);

    let (a_lost_at, reason) = a_lost;
    let (b_granted_at, result) = b_granted;
    result.expect("B takes the stale lock");
    assert!(
        a_lost_at < b_granted_at,
        "A's client learnt of the loss {:?} after B was granted the lock ({reason})",
        a_lost_at - b_granted_at
    );
    assert!(!a_lock.is_held());
    let b_token = b_lock.token().expect("token");
    assert!(b_token > a_token, "B's token {b_token}, A's {a_token}");
    let b_id = b_lock.lock_id().expect("lock id").to_owned();
    let json: serde_json::Value = serde_json::from_slice(&b_bytes).unwrap();
    assert_eq!(json["lockId"], b_id.as_str());
    assert_eq!(json["token"], b_token);

    // Thawed, A runs its overdue renewal, finds the deadline passed and loses the lease...
    within("A to answer again", a_status.status())
        .await
        .expect("status");
    logged(&a, "lease lost").await;
    // ... and whatever it then did to the lock file is done once its actor answers this.
    let seen = settle(&a_status, &target).await.expect("B's lock file");
    assert_eq!(seen.lock_id.as_deref(), Some(b_id.as_str()));
    assert_eq!(
        std::fs::read(&path).expect("B's lock file"),
        b_bytes,
        "the thawed daemon A changed B's lock file"
    );
    assert!(b_lock.is_held());
    let err = a_lock.release().await.expect_err("A had lost the lease");
    assert_eq!(err.kind(), ErrorKind::LeaseLost, "{err}");
    settle(&a_status, &target).await;
    assert_eq!(std::fs::read(&path).expect("B's lock file"), b_bytes);
    assert!(b_lock.is_held());
    b_lock.release().await.expect("B releases");
    assert!(!path.exists());
}

// ---------------------------------------------------------------------------------------------
// 5. Failing renewals: a broken fence
// ---------------------------------------------------------------------------------------------

const OUTAGE_TTL: Duration = Duration::from_secs(3);

/// A lease of 3 s is certainly valid for 2 s after each renewal.
fn outage_config() -> String {
    config(r#"lease-margin = "1s""#, "seed")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_short_store_outage_keeps_the_lease() {
    let shared = shared_dir();
    let daemon = host(&outage_config(), shared.path(), "h0", &[]);
    let target = daemon.file_target("outage.csv");
    let (path, fence) = (lock_file(&target), fence_file(&target));
    let client = daemon.client().await;
    let mut lock = client.new_lock(&target, LockOptions::default().ttl(OUTAGE_TTL));
    lock.acquire().await.expect("acquire");

    break_fence(&fence);
    logged(&daemon, "renewal failed").await;
    restore_fence(&fence);
    let created_at_restore = file_created_at(&path);

    // Only the absence of a loss is tested here, so waiting a while is the test.
    let lost = tokio::time::timeout(OUTAGE_TTL * 2, lock.lost()).await;
    assert!(lost.is_err(), "the lease was lost: {lost:?}");
    assert!(lock.is_held());
    let created_at = file_created_at(&path);
    assert!(
        created_at > created_at_restore,
        "createdAt did not move on after the outage: {created_at:?}"
    );
    assert_eq!(read_json(&path)["lockId"], lock.lock_id().unwrap());
    lock.release().await.expect("release");
    assert!(!path.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_release_whose_delete_fails_is_retried_so_waiters_do_not_wait_out_the_ttl() {
    let shared = shared_dir();
    let daemon = host(&outage_config(), shared.path(), "h0", &[]);
    let target = daemon.file_target("leftover.csv");
    let (path, fence) = (lock_file(&target), fence_file(&target));
    let client = daemon.client().await;
    let hour = Duration::from_secs(3600);
    let mut first = client.new_lock(&target, LockOptions::default().ttl(hour));
    first.acquire().await.expect("acquire");

    break_fence(&fence);
    first.release().await.expect("release");
    logged(&daemon, "could not delete the lock file").await;
    assert!(path.exists(), "the failed delete left the lock file");

    restore_fence(&fence);
    // Without the retry the file stays for the hour-long TTL of a lock nobody holds.
    eventually("the retried delete", || !path.exists()).await;
    let mut second = client.new_lock(&target, LockOptions::default().ttl(hour));
    second.acquire().await.expect("the lock is free again");
    assert!(daemon.log().contains("retried the delete of our lock file"));
    assert_eq!(read_json(&path)["lockId"], second.lock_id().unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_store_outage_loses_the_lease_before_it_expires_and_leaves_the_file() {
    let shared = shared_dir();
    let a = host(&outage_config(), shared.path(), "h-a", &[]);
    let b = host(&outage_config(), shared.path(), "h-b", &[]);
    let target = a.file_target("outage.csv");
    let (path, fence) = (lock_file(&target), fence_file(&target));
    let a_client = a.client().await;
    let mut lock = a_client.new_lock(&target, LockOptions::default().ttl(OUTAGE_TTL));
    lock.acquire().await.expect("acquire");
    let token = lock.token().expect("token");

    break_fence(&fence);
    let reason = within("the lease to be lost", lock.lost()).await;
    let lost_at = SystemTime::now();
    let bytes = std::fs::read(&path).expect("the lock file stays");
    let last_created_at = file_created_at(&path);
    assert!(
        lost_at < last_created_at + OUTAGE_TTL,
        "the loss ({reason}) came {:?} after the lease had expired",
        lost_at.duration_since(last_created_at + OUTAGE_TTL)
    );
    assert!(!lock.is_held());

    // The daemon gives up on the lease and cannot delete the file under a broken fence.
    logged(&a, "lease lost").await;
    settle(&a_client, &target).await;
    assert_eq!(std::fs::read(&path).expect("the lock file stays"), bytes);
    let err = lock.release().await.expect_err("the lease was lost");
    assert_eq!(err.kind(), ErrorKind::LeaseLost, "{err}");

    // Nobody takes it while the fence is broken.
    let b_client = b.client().await;
    let mut heir = b_client.new_lock(&target, LockOptions::default());
    let err = heir
        .acquire()
        .await
        .expect_err("no lock under a broken fence");
    assert!(
        matches!(err.kind(), ErrorKind::Store | ErrorKind::AlreadyHeld),
        "{err:?}"
    );
    assert_eq!(std::fs::read(&path).expect("the lock file stays"), bytes);

    // Fixed, the lock is free again: the daemon that lost the lease retries its conditional
    // delete (its own bytes only; its holder was told first), or, had that not come first,
    // the lock is taken over as a stale lock after its TTL.
    restore_fence(&fence);
    within("the lock", heir.acquire_timeout(DEADLINE))
        .await
        .expect("take the lock once the fence is fixed");
    let granted_at = SystemTime::now();
    assert!(heir.token().expect("token") > token);
    // Never before the holder was told: the heir's grant follows the loss, whichever way the
    // lock came free.
    assert!(
        granted_at >= lost_at,
        "granted before the holder lost the lease"
    );
    let by_retry = a.log().contains("retried the delete of our lock file");
    assert!(
        by_retry || granted_at >= last_created_at + OUTAGE_TTL,
        "taken before the lease expired, and not after the owner's own delete"
    );
    // Either way the retry, whenever it runs, leaves the new holder's file alone.
    logged(&a, "retried the delete of our lock file").await;
    settle(&a_client, &target).await;
    assert_eq!(read_json(&path)["lockId"], heir.lock_id().unwrap());
    heir.release().await.expect("release");
}

// ---------------------------------------------------------------------------------------------
// 6. Clock skew
// ---------------------------------------------------------------------------------------------

const SKEW: &str = "+1h";

#[tokio::test(flavor = "multi_thread")]
async fn a_skewed_host_steals_early_under_the_seed_rule_and_the_holder_learns_it() {
    let shared = shared_dir();
    let config = config(r#"skew-allowance = "1s""#, "seed");
    let a = host(&config, shared.path(), "h-a", &[]);
    let b = host(&config, shared.path(), "h-b", &["--clock-offset", SKEW]);
    let target = a.file_target("skewed.csv");
    let path = lock_file(&target);

    let a_client = a.client().await;
    let mut a_lock = a_client.new_lock(&target, LockOptions::default().ttl(Duration::from_secs(3)));
    a_lock.acquire().await.expect("A acquires");
    let a_token = a_lock.token().expect("token");
    assert!(a_lock.is_held());

    let b_client = b.client().await;
    let mut b_lock = b_client.new_lock(&target, LockOptions::default());
    b_lock
        .acquire()
        .await
        .expect("to B's clock, A's fresh lock is an hour old: stale");
    let b_token = b_lock.token().expect("token");
    assert!(b_token > a_token, "B's token {b_token}, A's {a_token}");
    let ahead = file_created_at(&path)
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    assert!(
        ahead > Duration::from_secs(30 * 60),
        "B's clock is not skewed"
    );

    let reason = within("A to learn of the steal", a_lock.lost()).await;
    assert!(reason.contains("replaced or removed"), "{reason}");
    assert!(!a_lock.is_held());
    let err = a_lock.release().await.expect_err("lost");
    assert_eq!(err.kind(), ErrorKind::LeaseLost, "{err}");
    settle(&a_client, &target).await;
    assert_eq!(read_json(&path)["lockId"], b_lock.lock_id().unwrap());
    assert_eq!(file_token(&path), b_token);
    assert!(b_lock.is_held());
    b_lock.release().await.expect("B releases");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_skewed_host_under_the_watched_rule_never_takes_a_renewed_lock() {
    let shared = shared_dir();
    let a = host(
        &config(r#"skew-allowance = "1s""#, "seed"),
        shared.path(),
        "h-a",
        &[],
    );
    let b = host(
        &config(r#"skew-allowance = "1s""#, "watched"),
        shared.path(),
        "h-b",
        &["--clock-offset", SKEW],
    );
    let target = a.file_target("watched.csv");
    let path = lock_file(&target);
    let ttl = Duration::from_secs(2);

    let a_client = a.client().await;
    let mut a_lock = a_client.new_lock(&target, LockOptions::default().ttl(ttl));
    a_lock.acquire().await.expect("A acquires");
    let a_id = a_lock.lock_id().unwrap().to_owned();

    let b_client = b.client().await;
    let (options, mut positions) = watch_queue(LockOptions::default());
    let mut b_lock = b_client.new_lock(&target, options);
    let started = Instant::now();
    let err = within("B's wait to end", b_lock.acquire_timeout(ttl * 3))
        .await
        .expect_err("B must not take a lock that A keeps renewing");
    assert!(err.is_timeout(), "{err:?}");
    assert!(started.elapsed() >= ttl * 3);
    assert_eq!(next_position(&mut positions).await, 1, "B waited in line");
    assert_eq!(
        err.holder().and_then(|h| h.lock_id.as_deref()),
        Some(a_id.as_str())
    );
    assert!(!b_lock.is_held());
    assert!(a_lock.is_held());
    assert_eq!(read_json(&path)["lockId"], a_id.as_str());
    a_lock.release().await.expect("A releases");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lock_from_a_skewed_dead_host_is_taken_only_after_watching_it_for_a_ttl() {
    let shared = shared_dir();
    let config = config(r#"skew-allowance = "1s""#, "seed");
    let a = host(&config, shared.path(), "h-a", &[]);
    let mut b = host(&config, shared.path(), "h-b", &["--clock-offset", SKEW]);
    let target = a.file_target("future.csv");
    let path = lock_file(&target);
    let ttl = Duration::from_secs(2);

    let b_client = b.client().await;
    let mut b_lock = b_client.new_lock(&target, LockOptions::default().ttl(ttl));
    b_lock.acquire().await.expect("B acquires");
    let b_token = b_lock.token().expect("token");
    b.kill();
    let ahead = file_created_at(&path)
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    assert!(
        ahead > Duration::from_secs(30 * 60),
        "B's createdAt is not in the future"
    );

    let a_client = a.client().await;
    let (options, mut positions) = watch_queue(LockOptions::default());
    let mut a_lock = a_client.new_lock(&target, options);
    let (queued_at, result) = within("A to take the dead host's lock", async {
        let acquire = a_lock.acquire_wait();
        tokio::pin!(acquire);
        let queued_at = tokio::select! {
            result = &mut acquire => panic!("granted at once, before watching it: {result:?}"),
            position = next_position(&mut positions) => {
                assert_eq!(position, 1);
                Instant::now()
            }
        };
        (queued_at, acquire.await)
    })
    .await;
    result.expect("A takes the lock once it watched it unchanged for a TTL");
    let waited = queued_at.elapsed();
    assert!(
        waited >= ttl / 2,
        "taken {waited:?} after A first saw it, less than half its {ttl:?} TTL"
    );
    let a_token = a_lock.token().expect("token");
    assert!(a_token > b_token, "A's token {a_token} after B's {b_token}");
    assert_eq!(file_token(&path), a_token);
    a_lock.release().await.expect("release");
}

// ---------------------------------------------------------------------------------------------
// 7. Fair handoff between hosts
// ---------------------------------------------------------------------------------------------

const HANDOFF_CONFIG: &str = r#"
[locks]
idle-actor-timeout = "200ms"
recheck-min = "10ms"
recheck-max = "50ms"
handoff-max-count = 8
handoff-max-time = "100ms"
"#;
const FAIR_HOSTS: usize = 2;
const FAIR_CLIENTS_PER_HOST: usize = 4;
const ACQUISITIONS: usize = 400;

#[tokio::test(flavor = "multi_thread")]
async fn two_hosts_with_four_clients_each_share_a_contended_lock_fairly() {
    let shared = shared_dir();
    let daemons = hosts(HANDOFF_CONFIG, shared.path(), FAIR_HOSTS);
    let target = daemons[0].file_target("contended.csv");
    let inside = Arc::new(AtomicBool::new(false));
    let granted = Arc::new(AtomicUsize::new(0));
    let per_host: Arc<Vec<AtomicUsize>> =
        Arc::new((0..FAIR_HOSTS).map(|_| AtomicUsize::new(0)).collect());
    let tokens = Arc::new(Mutex::new(Vec::with_capacity(ACQUISITIONS)));

    let mut workers = Vec::new();
    for (host, daemon) in daemons.iter().enumerate() {
        for worker in 0..FAIR_CLIENTS_PER_HOST {
            let client = daemon.client().await;
            let mut lock = client.new_lock(
                &target,
                LockOptions::default().owner_id(format!("h{host}-w{worker}")),
            );
            let (inside, granted, per_host, tokens) = (
                inside.clone(),
                granted.clone(),
                per_host.clone(),
                tokens.clone(),
            );
            workers.push(tokio::spawn(async move {
                loop {
                    within("a turn at the contended lock", lock.acquire_wait())
                        .await
                        .expect("acquire_wait");
                    assert!(
                        !inside.swap(true, Ordering::SeqCst),
                        "two holders at once (h{host}-w{worker} granted while held)"
                    );
                    let n = granted.fetch_add(1, Ordering::SeqCst);
                    if n < ACQUISITIONS {
                        per_host[host].fetch_add(1, Ordering::SeqCst);
                        tokens.lock().unwrap().push(lock.token().expect("token"));
                    }
                    tokio::task::yield_now().await;
                    inside.store(false, Ordering::SeqCst);
                    lock.release().await.expect("release");
                    if n + 1 >= ACQUISITIONS {
                        break;
                    }
                }
                drop(client);
            }));
        }
    }
    for worker in workers {
        within("a worker to finish", worker)
            .await
            .expect("worker task");
    }

    let counts: Vec<usize> = per_host.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    assert_eq!(counts.iter().sum::<usize>(), ACQUISITIONS);
    for (host, &count) in counts.iter().enumerate() {
        assert!(
            count >= ACQUISITIONS / 4,
            "host {host} got {count} of {ACQUISITIONS} acquisitions: {counts:?}"
        );
    }
    let tokens = tokens.lock().unwrap();
    for pair in tokens.windows(2) {
        assert!(
            pair[0] < pair[1],
            "tokens out of order in grant order: {} then {}",
            pair[0],
            pair[1]
        );
    }
}

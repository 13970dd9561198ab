//! Shared locks and semaphores end to end (issue 15), on every store: real daemons sharing one
//! store (two hosts where the store can be shared), talking to the test's clients over their
//! real sockets. Each case runs once per store, as `<case>::<store>`:
//!
//! 1. every cell of the table of how requests meet holders, one case per column (held by
//!    nobody, shared holders, a semaphore, an exclusive holder; a foreign one is case 4), and
//!    the last holder out deletes the lock file, whichever host it is on;
//! 3. a dead host's shared entry expires while another host's stays;
//! 4. a Go-format lock file blocks a shared acquire and a semaphore;
//! 5. SFTP (create-only) refuses both modes, naming them.

use std::time::{Duration, SystemTime};

use vfslock::{Client, ErrorKind, Lock, LockOptions};
use vfslock_tests::{within, Daemon, Store, StoreTarget};
use vfslockd::lockfile::joint::Joint;

#[path = "support/raw.rs"]
#[allow(dead_code)] // stores.rs uses all of it, this file a part
mod raw;
use raw::Raw;

#[path = "support/hosts.rs"]
#[allow(dead_code)] // each file uses a part
mod hosts;
use hosts::{host, per_store, two_clients, two_hosts, Host};

fn shared() -> LockOptions {
    LockOptions::default().shared()
}

fn slots(n: u32) -> LockOptions {
    LockOptions::default().slots(n)
}

async fn take(client: &Client, target: &str, options: LockOptions) -> Lock {
    let mut lock = client.new_lock(target, options);
    within("acquire", lock.acquire())
        .await
        .unwrap_or_else(|e| panic!("acquire {target}: {e}"));
    lock
}

async fn refused(client: &Client, target: &str, options: LockOptions) -> vfslock::Error {
    let mut lock = client.new_lock(target, options);
    let error = within("acquire", lock.acquire())
        .await
        .expect_err("refused");
    assert!(!lock.is_held());
    error
}

async fn release(mut lock: Lock) {
    within("release", lock.release()).await.expect("release");
}

/// The lock file's bytes, read past the daemons; `None` for `mem://` (out of reach) or no file.
async fn raw(target: &StoreTarget) -> Option<Vec<u8>> {
    if target.store == Store::Mem {
        return None;
    }
    Raw::new(target.store).read(target.key()).await
}

// ---------------------------------------------------------------------------------------------
// 1. The table: one case per column (what holds the lock), each cell of it asserted
// ---------------------------------------------------------------------------------------------

/// Two clients of one target, on two daemons where the store can be shared.
struct Table {
    _first: Host,
    _second: Option<Host>,
    a: Client,
    b: Client,
    target: StoreTarget,
}

impl Table {
    async fn new(store: Store, name: &str) -> Table {
        let (first, second) = two_hosts(store);
        let (a, b) = two_clients(&first, &second).await;
        Table {
            _first: first,
            _second: second,
            a,
            b,
            target: store.target(name),
        }
    }

    fn url(&self) -> &str {
        &self.target.url
    }
}

/// Held by nobody: every request is granted.
async fn cells_nobody(store: Store) {
    let t = Table::new(store, "modes-nobody").await;
    for (options, cell) in [
        (LockOptions::default(), "exclusive"),
        (shared(), "shared"),
        (slots(2), "semaphore"),
    ] {
        let lock = take(&t.a, t.url(), options).await;
        assert!(lock.is_held(), "{store:?} {cell} against nobody");
        release(lock).await;
        assert_eq!(raw(&t.target).await, None, "{store:?} {cell}: released");
    }
}

per_store!(cells_nobody, [
    file => File, mem => Mem, s3 => S3, gcs => Gcs, azblob => Azblob,
]);

/// Held shared: exclusive waits (or "held"), shared joins (on the other host too), a semaphore
/// is refused naming both kinds; the last one out deletes the file.
async fn cells_shared(store: Store) {
    let t = Table::new(store, "modes-shared").await;
    let url = t.url();
    let reader_a = take(&t.a, url, shared()).await;
    let reader_b = take(&t.b, url, shared()).await;
    assert!(reader_a.token().is_some() && reader_b.token().is_some());
    if store != Store::Mem {
        let bytes = raw(&t.target).await.expect("the shared lock file");
        let joint = Joint::parse(&bytes).expect("a holder list");
        assert_eq!(joint.holders.len(), 2, "one entry per daemon");
    }
    let error = refused(&t.a, url, LockOptions::default()).await;
    assert_eq!(error.kind(), ErrorKind::AlreadyHeld, "{error}");
    let mut writer = t.b.new_lock(url, LockOptions::default());
    let timed_out = within(
        "a bounded wait",
        writer.acquire_timeout(Duration::from_millis(300)),
    )
    .await
    .expect_err("an exclusive request waits for shared holders");
    assert_eq!(timed_out.kind(), ErrorKind::Timeout, "{timed_out}");
    let error = refused(&t.b, url, slots(2)).await;
    assert_eq!(error.kind(), ErrorKind::ModeConflict, "{error}");
    assert!(
        error.message().contains("shared") && error.message().contains("semaphore of 2"),
        "{error}"
    );
    release(reader_a).await;
    assert!(
        store == Store::Mem || raw(&t.target).await.is_some(),
        "b still holds"
    );
    release(reader_b).await;
    assert_eq!(
        raw(&t.target).await,
        None,
        "the last one out deleted the file"
    );
    // The waiting exclusive request then gets it.
    release(take(&t.b, url, LockOptions::default()).await).await;
}

per_store!(cells_shared, [
    file => File, mem => Mem, s3 => S3, gcs => Gcs, azblob => Azblob,
]);

/// Held as a semaphore of 2: one more joins, a third waits (or is refused as held) and gets a
/// freed slot, another size and a shared request are refused naming both, exclusive waits.
async fn cells_semaphore(store: Store) {
    let t = Table::new(store, "modes-semaphore").await;
    let url = t.url();
    let slot_a = take(&t.a, url, slots(2)).await;
    let slot_b = take(&t.b, url, slots(2)).await;
    let error = refused(&t.a, url, slots(2)).await;
    assert_eq!(error.kind(), ErrorKind::AlreadyHeld, "{error}");
    let error = refused(&t.b, url, slots(3)).await;
    assert_eq!(error.kind(), ErrorKind::ModeConflict, "{error}");
    assert!(
        error.message().contains("2 slots") && error.message().contains("asked for 3"),
        "{error}"
    );
    let error = refused(&t.a, url, shared()).await;
    assert_eq!(error.kind(), ErrorKind::ModeConflict, "{error}");
    let error = refused(&t.a, url, LockOptions::default()).await;
    assert_eq!(error.kind(), ErrorKind::AlreadyHeld, "{error}");
    let mut third = t.a.new_lock(url, slots(2));
    let (waited, ()) = tokio::join!(
        within(
            "the third slot",
            third.acquire_timeout(Duration::from_secs(20))
        ),
        async {
            release(slot_b).await;
        }
    );
    waited.expect("a freed slot is taken by the waiter");
    release(third).await;
    release(slot_a).await;
    assert_eq!(raw(&t.target).await, None);
}

per_store!(cells_semaphore, [
    file => File, mem => Mem, s3 => S3, gcs => Gcs, azblob => Azblob,
]);

/// Held exclusively: shared and semaphore requests wait (or are refused as held), and a
/// waiting reader gets it at release with a greater token; a writer after the reader gets a
/// greater one still.
async fn cells_exclusive(store: Store) {
    let t = Table::new(store, "modes-exclusive").await;
    let url = t.url();
    let exclusive = take(&t.b, url, LockOptions::default()).await;
    for options in [shared(), slots(2)] {
        let error = refused(&t.a, url, options).await;
        assert_eq!(error.kind(), ErrorKind::AlreadyHeld, "{error}");
    }
    let exclusive_token = exclusive.token();
    let mut reader = t.a.new_lock(url, shared());
    let (waited, ()) = tokio::join!(
        within(
            "the reader",
            reader.acquire_timeout(Duration::from_secs(20))
        ),
        async {
            release(exclusive).await;
        }
    );
    waited.expect("a shared waiter gets the lock once the writer lets go");
    assert!(
        reader.token() > exclusive_token,
        "tokens keep increasing across modes"
    );
    let reader_token = reader.token();
    release(reader).await;
    let writer = take(&t.b, url, LockOptions::default()).await;
    assert!(
        writer.token() > reader_token,
        "an exclusive token exceeds a shared one"
    );
    release(writer).await;
}

per_store!(cells_exclusive, [
    file => File, mem => Mem, s3 => S3, gcs => Gcs, azblob => Azblob,
]);

// ---------------------------------------------------------------------------------------------
// 3. A dead host's entry expires, another host's stays
// ---------------------------------------------------------------------------------------------

async fn dead_host_expires(store: Store) {
    let target = store.target("modes-dead");
    let url = target.url.as_str();
    let dying = host(store, "dying");
    let living = host(store, "living");
    let lease = Duration::from_secs(2);
    let dying_client = dying.client().await;
    let _dead = take(&dying_client, url, shared().ttl(lease)).await;
    let granted_at = SystemTime::now();
    let living_client = living.client().await;
    let kept = take(&living_client, url, shared()).await;
    // kill -9: the dying host's entry stays in the file until its lease runs out.
    let mut dying = dying;
    dying.kill();
    drop(dying_client);
    let before = Joint::parse(&raw(&target).await.expect("file")).expect("joint");
    assert_eq!(before.holders.len(), 2);
    // Past its expiry (and the skew allowance of the test config), a third host's join drops
    // it and keeps the living one.
    let expiry = granted_at + lease + Duration::from_millis(1500);
    if let Ok(left) = expiry.duration_since(SystemTime::now()) {
        tokio::time::sleep(left).await;
    }
    let third = host(store, "third");
    let third_client = third.client().await;
    let joined = take(&third_client, url, shared()).await;
    let after = Joint::parse(&raw(&target).await.expect("file")).expect("joint");
    let hosts: Vec<&str> = after.holders.iter().map(|h| h.hostname.as_str()).collect();
    assert_eq!(hosts, ["living", "third"], "{after:?}");
    release(joined).await;
    release(kept).await;
    assert_eq!(raw(&target).await, None);
}

per_store!(dead_host_expires, [
    file => File, s3 => S3, gcs => Gcs, azblob => Azblob,
]);

// ---------------------------------------------------------------------------------------------
// 4. A Go-format lock file is one exclusive holder
// ---------------------------------------------------------------------------------------------

async fn go_lock_blocks(store: Store) {
    let daemon = host(store, "h0");
    let client = daemon.client().await;
    let target = store.target("modes-go");
    let created = vfslockd::lockfile::format_go_time(SystemTime::now());
    let go = format!(
        "{{\n  \"createdAt\": \"{created}\",\n  \"ttl\": 60000000000,\n  \"hostname\": \
         \"go-peer\",\n  \"pid\": 77\n}}"
    );
    let raw_access = Raw::new(store);
    raw_access.write(target.key(), go.as_bytes()).await;
    for options in [shared(), slots(3)] {
        let error = refused(&client, &target.url, options).await;
        assert_eq!(error.kind(), ErrorKind::AlreadyHeld, "{error}");
        assert!(error.message().contains("go-peer"), "{error}");
    }
    assert_eq!(raw(&target).await.as_deref(), Some(go.as_bytes()));
    raw_access.delete(target.key()).await;
}

per_store!(go_lock_blocks, [
    file => File, s3 => S3, gcs => Gcs, azblob => Azblob,
]);

// ---------------------------------------------------------------------------------------------
// 5. SFTP refuses the modes
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn sftp_refuses_shared_locks_and_semaphores_naming_the_mode() {
    let daemon = host(Store::Sftp, "h0");
    let client = daemon.client().await;
    let target = Store::Sftp.target("modes-sftp");
    for (options, named) in [(shared(), "shared"), (slots(2), "semaphore of 2 slots")] {
        let error = refused(&client, &target.url, options).await;
        assert_eq!(error.kind(), ErrorKind::Unsupported, "{error}");
        assert!(error.message().contains(named), "{error}");
        assert!(error.message().contains("compare-and-swap"), "{error}");
    }
    // Exclusive locks still work there.
    release(take(&client, &target.url, LockOptions::default()).await).await;
}

// ---------------------------------------------------------------------------------------------
// 6. The admin view
// ---------------------------------------------------------------------------------------------

fn ctl_json(daemon: &Daemon, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let output = vfslock_tests::vfslockctl(daemon, None, &all);
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "vfslockctl {args:?}: {e}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// `show` lists every holder of a semaphore (this daemon's two local holders, the other
/// host's entry) with their slots, and `list` gives the mode and the number of local holders.
#[tokio::test(flavor = "multi_thread")]
async fn show_lists_every_holder_and_list_the_mode_and_count() {
    let store = Store::File;
    let here = host(store, "here");
    let there = host(store, "there");
    let target = store.target("modes-view");
    let url = target.url.as_str();
    let a = here.client().await;
    let b = there.client().await;
    let first = take(&a, url, slots(3).owner_id("first")).await;
    let second = take(&a, url, slots(3).owner_id("second")).await;
    let remote = take(&b, url, slots(3).owner_id("remote")).await;

    let shown = ctl_json(&here, &["show", url]);
    assert_eq!(shown["locked"], true, "{shown}");
    assert_eq!(shown["mode"], "slots", "{shown}");
    assert_eq!(shown["slots"], 3, "{shown}");
    let holders = shown["holders"].as_array().expect("holders");
    let owners: Vec<(&str, &str, bool)> = holders
        .iter()
        .map(|h| {
            (
                h["owner_id"].as_str().unwrap_or("-"),
                h["hostname"].as_str().unwrap_or("-"),
                h["local"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(
        owners,
        [
            ("first", "here", true),
            ("second", "here", true),
            ("remote", "there", false)
        ],
        "{shown}"
    );
    for holder in holders {
        assert!(holder["token"].as_u64().is_some(), "{holder}");
        assert!(holder["expires_at"].is_string(), "{holder}");
        assert_eq!(holder["slots_taken"], 1, "{holder}");
    }
    let text = vfslock_tests::vfslockctl(&here, None, &["show", url]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("3 (3 of 3 slots taken)"), "{text}");

    let listed = ctl_json(&here, &["list"]);
    let entry = listed
        .as_array()
        .and_then(|l| {
            l.iter()
                .find(|e| e["target"].as_str() == Some(format!("file://{url}").as_str()))
        })
        .unwrap_or_else(|| panic!("{url} in {listed}"));
    assert_eq!(entry["mode"], "slots", "{entry}");
    assert_eq!(entry["slots"], 3, "{entry}");
    assert_eq!(entry["holders"], 2, "{entry}");

    for lock in [first, second, remote] {
        release(lock).await;
    }
    let shown = ctl_json(&here, &["show", url]);
    assert_eq!(shown["locked"], false, "{shown}");
}

// ---------------------------------------------------------------------------------------------
// 7. A writer is not starved by readers on other hosts
// ---------------------------------------------------------------------------------------------

const READERS_PER_HOST: usize = 4;
const READ_HOLD: Duration = Duration::from_millis(100);

/// 8 readers loop on one target, 4 through each of two daemons, so that the lock is always
/// held shared; a writer then starts waiting on the first daemon. Readers of its own daemon
/// queue behind it (first come, first served); the other daemon reads the writer's waiting
/// mark before every join and lets no new reader in while it is fresh. So the writer is
/// granted after at most a bounded number of new shared grants: the readers already on their
/// way (one each), plus what the other daemon grants while it trusts a "no writer" it read
/// (`recheck-min` on file://, `MARK_INTERVAL` on object stores; one per reader per hold).
async fn writer_not_starved(store: Store) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    let target = store.target("modes-writer");
    let url = target.url.clone();
    let (first, second) = two_hosts(store);
    let second = second.expect("two hosts");
    let grants = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = tokio::task::JoinSet::new();
    for host in [&first, &second] {
        for _ in 0..READERS_PER_HOST {
            let client = host.client().await;
            let (url, grants, stop) = (url.clone(), grants.clone(), stop.clone());
            readers.spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let mut reader = client.new_lock(&url, shared());
                    match reader.acquire_timeout(Duration::from_secs(60)).await {
                        Ok(()) => {
                            grants.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(READ_HOLD).await;
                            reader.release().await.expect("release a read lock");
                        }
                        Err(e) => panic!("a reader failed: {e}"),
                    }
                }
            });
        }
    }
    // The readers are in full swing: every one of them has been granted at least twice.
    let started = std::time::Instant::now();
    while grants.load(Ordering::SeqCst) < (2 * 2 * READERS_PER_HOST) as u64 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the readers do not get going"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let client = first.client().await;
    let mut writer = client.new_lock(&url, LockOptions::default());
    let before = grants.load(Ordering::SeqCst);
    within(
        "the writer, while readers loop on both hosts",
        writer.acquire_timeout(Duration::from_secs(60)),
    )
    .await
    .expect("the writer is granted");
    let new_grants = grants.load(Ordering::SeqCst) - before;
    let in_flight = (2 * READERS_PER_HOST) as u64;
    // How long the other daemon trusts a "no writer waits" it read: `recheck-min` (25 ms by
    // the daemon's default, 10 ms in the test config) on file://, a second on object stores;
    // one grant per reader per hold in that time, at least one.
    let trusted_ms = if store == Store::File { 25 } else { 1000 };
    let trusted = READERS_PER_HOST as u64 * (trusted_ms / READ_HOLD.as_millis() as u64).max(1);
    assert!(
        new_grants <= in_flight + trusted,
        "{store:?}: {new_grants} new shared grants while the writer waited (bound {})",
        in_flight + trusted
    );
    eprintln!("{store:?}: {new_grants} new shared grants while the writer waited");
    release(writer).await;
    stop.store(true, Ordering::SeqCst);
    while let Some(done) = readers.join_next().await {
        done.expect("a reader task");
    }
}

per_store!(writer_not_starved, [file => File, s3 => S3]);

// ---------------------------------------------------------------------------------------------
// 8. The blocking API and vfslockctl
// ---------------------------------------------------------------------------------------------

/// The blocking API takes the same options: two blocking readers hold at once, a blocking
/// writer is refused while they do.
#[tokio::test(flavor = "multi_thread")]
async fn blocking_clients_take_shared_locks_too() {
    let daemon = host(Store::File, "h0");
    let socket = daemon.socket().to_owned();
    let target = Store::File.target("modes-blocking");
    let url = target.url.clone();
    tokio::task::spawn_blocking(move || {
        let client = vfslock::blocking::Client::connect(&socket).expect("connect");
        let mut first = client.new_lock(&url, shared());
        let mut second = client.new_lock(&url, shared());
        first.acquire().expect("a blocking reader");
        second.acquire().expect("a second blocking reader at once");
        let mut writer = client.new_lock(&url, LockOptions::default());
        let error = writer.acquire().expect_err("no writer while readers hold");
        assert_eq!(error.kind(), ErrorKind::AlreadyHeld, "{error}");
        first.release().expect("release");
        second.release().expect("release");
        writer
            .acquire()
            .expect("the writer once the readers are gone");
        writer.release().expect("release");
    })
    .await
    .expect("the blocking client's thread");
}

/// `vfslockctl run -s` runs commands side by side under a shared lock; `run -n` (exclusive)
/// exits 1 meanwhile, and `run --slots 2 -n` is refused with exit 1 naming both kinds.
#[tokio::test(flavor = "multi_thread")]
async fn vfslockctl_run_takes_shared_locks_and_semaphores() {
    let daemon = host(Store::File, "h0");
    let target = Store::File.target("modes-ctl");
    let url = target.url.as_str();
    let client = daemon.client().await;
    let reader = take(&client, url, shared()).await;
    let inner = format!(
        "{} --socket {} run -s -n {url} -- true",
        vfslock_tests::bin("vfslockctl").display(),
        daemon.socket().display()
    );
    let out = vfslock_tests::vfslockctl(
        &daemon,
        None,
        &["run", "-s", "-n", url, "--", "sh", "-c", &inner],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = vfslock_tests::vfslockctl(&daemon, None, &["run", "-n", url, "--", "true"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = vfslock_tests::vfslockctl(
        &daemon,
        None,
        &["run", "--slots", "2", "-n", url, "--", "true"],
    );
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("shared") && said.contains("semaphore of 2"),
        "{said}"
    );
    let out = vfslock_tests::vfslockctl(
        &daemon,
        None,
        &["run", "-s", "--slots", "2", url, "--", "true"],
    );
    assert_eq!(out.status.code(), Some(2), "-s and --slots are one choice");
    release(reader).await;
}

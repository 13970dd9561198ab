//! The lock protocol end to end on every kind of store: `file://`, `mem://`, and the object
//! stores `s3://`, `gs://`, `azblob://` and `sftp://` on the real local servers that
//! `tests/servers/start.sh` starts (a missing server fails these tests: run that script, or
//! `tests/run.sh`). Each case runs once per store, as `<case>::<store>`:
//!
//! 1. acquire and release, and a second acquire is already-held with the holder's metadata;
//! 2. of 9 clients on 3 daemons racing for a stale lock, exactly one wins, every round (on SFTP,
//!    which is create-only, nobody steals it and every acquire says why);
//! 3. fencing tokens strictly increase across daemons sharing the store and across a restart,
//!    and equal the lock object's `token` (SFTP issues none);
//! 4. a holder whose lock object is replaced behind its back learns it at its next renewal,
//!    and leaves the new object alone;
//! 5. a queued waiter gets the lock when the holder releases it (a handoff where the store can
//!    replace) and when the holder's connection drops;
//! 6. writes that land but report a failure (the `faults` feature) are resolved by reading back;
//! 7. store requests per uncontended acquire + release, counted on the wire by a proxy for the
//!    HTTP stores and equal to the daemon's own counter;
//! 8. a target no store serves is refused, and a store whose server is unreachable stops the
//!    daemon at startup;
//! 9. an SFTP store's `ssh` control masters do not outlive the daemon when its whole process
//!    group gets SIGTERM, and those a SIGKILLed daemon left are ended at its next start
//!    (issue 13).

use std::path::Path;

use std::time::{Duration, Instant};

use vfslock::{Client, ErrorKind, Lock, LockOptions};
use vfslock_tests::http_counter::HttpCounter;
#[path = "support/raw.rs"]
mod raw;
use raw::Raw;
use vfslock_tests::{
    next_position, race, sole_winner, stale_lock_for_round, start_refused, test_env, watch_queue,
    within, Daemon, Store, StoreTarget, DEADLINE,
};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// One test per (case, store): `case::store`, so that a failure names its store.
macro_rules! per_store {
    ($(#[$attr:meta])* $case:ident, [$($name:ident => $store:ident),+ $(,)?]) => {
        mod $case {
            per_store!(@tests [$(#[$attr])*] $case; $($name => $store),+);
        }
    };
    (@tests [$($attrs:tt)*] $case:ident;
        $name:ident => $store:ident $(, $more:ident => $stores:ident)*) => {
        #[tokio::test(flavor = "multi_thread")]
        $($attrs)*
        async fn $name() {
            super::$case(vfslock_tests::Store::$store).await;
        }
        per_store!(@tests [$($attrs)*] $case; $($more => $stores),*);
    };
    (@tests [$($attrs:tt)*] $case:ident;) => {};
}

/// A daemon that is stopped with SIGTERM when dropped, so that it closes its store connections
/// (an SFTP store's SSH master outlives a SIGKILL until the daemon starts again).
struct Host(Daemon);

impl std::ops::Deref for Host {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.0
    }
}

impl std::ops::DerefMut for Host {
    fn deref_mut(&mut self) -> &mut Daemon {
        &mut self.0
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// A daemon serving `store`, with `locks` added to the test `[locks]` and `tail` appended.
fn host_with(store: Store, id: &str, locks: &str, tail: &str) -> Host {
    Host(Daemon::start_host(
        &store.daemon_config(locks, tail),
        None,
        &["--host-id", id],
    ))
}

/// A daemon serving `store` with the test settings.
fn host(store: Store) -> Host {
    host_with(store, "h0", "", "")
}

/// `count` daemons `h0`, `h1`, ... serving `store` (for `file://`, targets are absolute paths,
/// so they share the filesystem; `mem://` cannot be shared).
fn hosts(store: Store, count: usize) -> Vec<Host> {
    (0..count)
        .map(|i| host_with(store, &format!("h{i}"), "", ""))
        .collect()
}

/// The lock as the daemon reads it now (answered only after the target's actor handled
/// everything sent before).
async fn daemon_view(client: &Client, target: &str) -> Option<vfslock::LockMetadata> {
    within("a metadata request", client.metadata(target))
        .await
        .expect("metadata request")
}

/// Whether the target is locked, by the daemon's view and, where the test can look, by the
/// store's (which must agree).
async fn locked(client: &Client, raw: &Raw, target: &StoreTarget) -> bool {
    let seen = daemon_view(client, &target.url).await.is_some();
    if target.store.has_raw_access() {
        let present = raw.read(target.key()).await.is_some();
        assert_eq!(
            present, seen,
            "{:?}: the daemon and the store disagree about {}",
            target.store, target.url
        );
    }
    seen
}

/// The `(name, value)` counters `status` shows for the object store serving `store`'s prefix.
async fn counters(client: &Client, store: Store) -> Vec<(String, u64)> {
    let prefix = store.prefix();
    let status = within("status", client.status()).await.expect("status");
    status
        .stores
        .into_iter()
        .find(|s| s.scheme == prefix)
        .unwrap_or_else(|| panic!("status shows no store {prefix}"))
        .counters
}

fn counter(counters: &[(String, u64)], name: &str) -> u64 {
    counters
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no counter {name} in {counters:?}"))
        .1
}

/// Checks a lock object against the holding `lock`: its `lockId`, and its `token` where the
/// store issues tokens (absent where it does not).
fn assert_object_is(store: Store, json: &serde_json::Value, lock: &Lock, what: &str) {
    assert_eq!(
        json["lockId"],
        lock.lock_id().expect("held"),
        "{store:?} {what}: {json}"
    );
    if store.has_tokens() {
        let token = lock.token().expect("a token where the store issues them");
        assert_eq!(json["token"], token, "{store:?} {what}: {json}");
    } else {
        assert_eq!(lock.token(), None, "{store:?} {what}");
        assert!(json.get("token").is_none(), "{store:?} {what}: {json}");
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Acquire and release
// ---------------------------------------------------------------------------------------------

async fn acquire_release(store: Store) {
    let daemon = host(store);
    let raw = Raw::new(store);
    let target = store.target("acquire");
    let client = daemon.client().await;
    let other = daemon.client().await;
    assert!(!locked(&client, &raw, &target).await);

    let mut lock = client.new_lock(&target.url, LockOptions::default().owner_id("first"));
    within("acquire", lock.acquire())
        .await
        .expect("acquire a free lock");
    assert!(lock.is_held());
    assert!(
        locked(&client, &raw, &target).await,
        "{store:?}: lock object after acquire"
    );
    let lock_id = lock.lock_id().expect("a held lock has an id").to_owned();
    if store.has_raw_access() {
        let json = raw.json(target.key()).await;
        assert_object_is(store, &json, &lock, "after acquire");
        assert_eq!(json["ownerId"], "first", "{store:?}: {json}");
        assert_eq!(json["hostname"], "h0", "{store:?}: {json}");
    }
    let seen = daemon_view(&client, &target.url).await.expect("locked");
    assert_eq!(seen.lock_id.as_deref(), Some(lock_id.as_str()), "{store:?}");
    assert_eq!(seen.token, lock.token(), "{store:?}");

    for (who, c) in [("same client", &client), ("other client", &other)] {
        let mut second = c.new_lock(&target.url, LockOptions::default().owner_id("second"));
        let err = within("a second acquire", second.acquire())
            .await
            .expect_err(who);
        assert_eq!(
            err.kind(),
            ErrorKind::AlreadyHeld,
            "{store:?} {who}: {err:?}"
        );
        let holder = err
            .holder()
            .unwrap_or_else(|| panic!("{store:?} {who}: no holder"));
        assert_eq!(
            holder.lock_id.as_deref(),
            Some(lock_id.as_str()),
            "{store:?} {who}"
        );
        assert_eq!(holder.owner_id.as_deref(), Some("first"), "{store:?} {who}");
        assert_eq!(holder.pid, i64::from(std::process::id()), "{store:?} {who}");
        assert_eq!(holder.hostname, "h0", "{store:?} {who}");
        assert!(!second.is_held());
    }

    within("release", lock.release()).await.expect("release");
    assert!(!lock.is_held());
    assert!(
        !locked(&client, &raw, &target).await,
        "{store:?}: lock object after release"
    );

    let mut second = other.new_lock(&target.url, LockOptions::default());
    within("acquire", second.acquire())
        .await
        .expect("acquire after release");
    assert!(locked(&client, &raw, &target).await);
    within("release", second.release()).await.expect("release");
    assert!(!locked(&client, &raw, &target).await);
}

per_store!(acquire_release, [
    file => File, mem => Mem, s3 => S3, gcs => Gcs, azblob => Azblob, sftp => Sftp,
]);

// ---------------------------------------------------------------------------------------------
// 2. Racing for a stale lock
// ---------------------------------------------------------------------------------------------

const RACE_DAEMONS: usize = 3;
const RACE_CLIENTS_PER_DAEMON: usize = 3;
const RACE_ROUNDS: usize = 20;

async fn stale_steal_race(store: Store) {
    let daemons = hosts(store, RACE_DAEMONS);
    let raw = Raw::new(store);
    let target = store.target("race");
    let key = target.key();
    let mut clients = Vec::new();
    for i in 0..RACE_DAEMONS * RACE_CLIENTS_PER_DAEMON {
        clients.push(daemons[i % RACE_DAEMONS].client().await);
    }

    if !store.can_steal() {
        // Create-only: a stale lock cannot be replaced atomically, so nobody takes it, and
        // every acquire says why instead of reporting it held.
        let stale = serde_json::to_vec_pretty(&stale_lock_for_round(0, 0).0).unwrap();
        raw.write(key, &stale).await;
        for (i, (lock, result)) in race(&clients, &target.url).await.into_iter().enumerate() {
            let err = result.expect_err("a stale lock is not stolen on a create-only store");
            assert_eq!(
                err.kind(),
                ErrorKind::Unsupported,
                "{store:?} racer {i}: {err:?}"
            );
            assert!(
                err.message().contains("create-only"),
                "{store:?} racer {i}: {err}"
            );
            assert!(!lock.is_held());
        }
        assert_eq!(
            raw.read(key).await.as_deref(),
            Some(&stale[..]),
            "{store:?}: the stale lock was changed"
        );
        // Removed by hand, as the message says, it can be taken.
        raw.delete(key).await;
        let mut lock = clients[0].new_lock(&target.url, LockOptions::default());
        within("acquire", lock.acquire())
            .await
            .expect("acquire once the stale lock is gone");
        within("release", lock.release()).await.expect("release");
        assert_eq!(raw.read(key).await, None);
        return;
    }

    let mut last_token = 0;
    for round in 0..RACE_ROUNDS {
        // Even rounds: the Go library's expired lock. Odd rounds: a dead vfslock host's expired
        // lock whose token is far above the fence's counter: the winner's must exceed it.
        let (stale, stale_token) = stale_lock_for_round(round, last_token);
        raw.write(key, &serde_json::to_vec_pretty(&stale).unwrap())
            .await;
        let outcomes = race(&clients, &target.url).await;
        let (winner_index, mut lock) = sole_winner(&format!("{store:?} round {round}"), outcomes);
        let token = lock.token().expect("winner's token");
        assert!(
            token > last_token,
            "{store:?} round {round}: token {token} after {last_token}"
        );
        if let Some(stale_token) = stale_token {
            assert!(
                token > stale_token,
                "{store:?} round {round}: token {token} not above the stale {stale_token}"
            );
        }
        let json = raw.json(key).await;
        assert_object_is(store, &json, &lock, &format!("round {round}"));
        assert_eq!(
            json["ownerId"],
            format!("racer-{winner_index}"),
            "{store:?} round {round}"
        );
        last_token = token;
        within("the winner's release", lock.release())
            .await
            .expect("release");
        assert_eq!(
            raw.read(key).await,
            None,
            "{store:?} round {round}: lock object after release"
        );
    }
}

per_store!(stale_steal_race, [
    file => File, s3 => S3, gcs => Gcs, azblob => Azblob, sftp => Sftp,
]);

// ---------------------------------------------------------------------------------------------
// 3. Fencing tokens
// ---------------------------------------------------------------------------------------------

const FENCED_ROUNDS: usize = 6;

/// Takes and releases the lock through `daemon`; returns the grant's token after checking it
/// against the lock object (or, for `mem://`, the daemon's reading of it).
async fn fenced_cycle(daemon: &Daemon, raw: &Raw, target: &StoreTarget) -> Option<u64> {
    let store = target.store;
    let client = daemon.client().await;
    let mut lock = client.new_lock(&target.url, LockOptions::default());
    within("acquire", lock.acquire()).await.expect("acquire");
    if store.has_raw_access() {
        assert_object_is(store, &raw.json(target.key()).await, &lock, "fenced");
    }
    let seen = daemon_view(&client, &target.url).await.expect("locked");
    assert_eq!(seen.token, lock.token(), "{store:?}: the daemon's reading");
    assert_eq!(seen.lock_id.as_deref(), lock.lock_id(), "{store:?}");
    let token = lock.token();
    within("release", lock.release()).await.expect("release");
    token
}

async fn fencing_order(store: Store) {
    // `mem://` lives in one daemon: its tokens are checked across that daemon's restart.
    let mut daemons = hosts(store, if store == Store::Mem { 1 } else { 2 });
    let raw = Raw::new(store);
    let target = store.target("fenced");
    let mut tokens = Vec::new();
    for round in 0..FENCED_ROUNDS {
        tokens.push(fenced_cycle(&daemons[round % daemons.len()], &raw, &target).await);
    }
    daemons[0].stop();
    daemons[0].restart();
    for daemon in daemons.iter().rev() {
        tokens.push(fenced_cycle(daemon, &raw, &target).await);
    }
    if !store.has_tokens() {
        assert!(tokens.iter().all(Option::is_none), "{store:?}: {tokens:?}");
        return;
    }
    let tokens: Vec<u64> = tokens
        .into_iter()
        .map(|t| t.unwrap_or_else(|| panic!("{store:?}: a grant without a token")))
        .collect();
    for pair in tokens.windows(2) {
        assert!(
            pair[0] < pair[1],
            "{store:?}: tokens out of order: {tokens:?}"
        );
    }
}

per_store!(fencing_order, [
    file => File, mem => Mem, s3 => S3, gcs => Gcs, azblob => Azblob, sftp => Sftp,
]);

// ---------------------------------------------------------------------------------------------
// 4. A lock object replaced behind the holder's back
// ---------------------------------------------------------------------------------------------

const LEASE_TTL: Duration = Duration::from_secs(2);

async fn lease_lost(store: Store) {
    let daemon = host(store);
    let raw = Raw::new(store);
    let target = store.target("lease-lost");
    let key = target.key();
    let client = daemon.client().await;
    let mut lock = client.new_lock(&target.url, LockOptions::default().ttl(LEASE_TTL));
    within("acquire", lock.acquire()).await.expect("acquire");

    // Right after a renewal, so that the next one (a third of the TTL later) is the first to
    // meet the foreign object; a create-only store's renewal is not atomic (read, compare,
    // write), so an overwrite in the middle of one would be clobbered.
    let first = raw.read(key).await.expect("the lock object");
    let start = Instant::now();
    let renewed = loop {
        let now = raw.read(key).await.expect("the lock object");
        // SFTP's create-only renewal rewrites the file in place: a read in the middle of it
        // sees part of it, which is not the renewed lock yet.
        if now != first && serde_json::from_slice::<serde_json::Value>(&now).is_ok() {
            break now;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{store:?}: the lease was never renewed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let mut foreign: serde_json::Value = serde_json::from_slice(&renewed).expect("JSON");
    let foreign_id = "0123456789abcdef0123456789abcdef";
    foreign["lockId"] = foreign_id.into();
    foreign["daemonId"] = "fedcba9876543210fedcba9876543210".into();
    foreign["hostname"] = "other-host".into();
    foreign["ttl"] = 3_600_000_000_000i64.into();
    if let Some(token) = foreign["token"].as_u64() {
        foreign["token"] = (token + 1).into();
    }
    let foreign = serde_json::to_vec_pretty(&foreign).unwrap();
    raw.write(key, &foreign).await;
    let replaced_at = Instant::now();

    let reason = within("the holder to learn of the loss", lock.lost()).await;
    assert!(
        replaced_at.elapsed() < LEASE_TTL,
        "{store:?}: learnt {:?} after the replacement, later than the next renewal",
        replaced_at.elapsed()
    );
    assert!(
        reason.contains("replaced or removed"),
        "{store:?}: {reason}"
    );
    assert!(!lock.is_held());
    let err = within("release", lock.release())
        .await
        .expect_err("the lease was lost");
    assert_eq!(err.kind(), ErrorKind::LeaseLost, "{store:?}: {err}");

    let seen = daemon_view(&client, &target.url)
        .await
        .expect("the foreign lock");
    assert_eq!(seen.lock_id.as_deref(), Some(foreign_id), "{store:?}");
    assert_eq!(
        raw.read(key).await.as_deref(),
        Some(&foreign[..]),
        "{store:?}: the foreign object was changed"
    );
    let mut other = client.new_lock(&target.url, LockOptions::default());
    let err = within("acquire", other.acquire())
        .await
        .expect_err("held by the foreign lock");
    assert!(err.is_already_held(), "{store:?}: {err:?}");
    assert_eq!(
        err.holder().map(|h| h.hostname.as_str()),
        Some("other-host")
    );
    assert_eq!(
        raw.read(key).await.as_deref(),
        Some(&foreign[..]),
        "{store:?}: the foreign object was changed"
    );
    raw.delete(key).await;
}

per_store!(lease_lost, [
    file => File, s3 => S3, gcs => Gcs, azblob => Azblob, sftp => Sftp,
]);

// ---------------------------------------------------------------------------------------------
// 5. Handoff and release on disconnect
// ---------------------------------------------------------------------------------------------

/// A waiter on a client of its own, queued first in line behind the current holder.
async fn queued_waiter(
    daemon: &Daemon,
    target: &str,
    owner: &str,
) -> (
    Client,
    tokio::task::JoinHandle<(Lock, Result<(), vfslock::Error>)>,
) {
    let client = daemon.client().await;
    let (options, mut positions) = watch_queue(LockOptions::default().owner_id(owner));
    let mut lock = client.new_lock(target, options);
    let task = tokio::spawn(async move {
        let result = lock.acquire_timeout(DEADLINE).await;
        (lock, result)
    });
    assert_eq!(
        next_position(&mut positions).await,
        1,
        "{owner} is first in line"
    );
    (client, task)
}

async fn granted(
    store: Store,
    task: tokio::task::JoinHandle<(Lock, Result<(), vfslock::Error>)>,
) -> Lock {
    let (lock, result) = within("the waiter's grant", task)
        .await
        .expect("waiter task");
    result.unwrap_or_else(|e| panic!("{store:?}: the waiter was not granted the lock: {e:?}"));
    assert!(lock.is_held());
    lock
}

async fn handoff_and_disconnect(store: Store) {
    let daemon = host(store);
    let raw = Raw::new(store);
    let target = store.target("handoff");
    let observer = daemon.client().await;

    let holder_client = daemon.client().await;
    let mut holder = holder_client.new_lock(&target.url, LockOptions::default().owner_id("holder"));
    within("acquire", holder.acquire()).await.expect("acquire");
    let (heir_client, heir) = queued_waiter(&daemon, &target.url, "heir").await;
    let before = if store.is_object() {
        Some(counters(&observer, store).await)
    } else {
        None
    };

    // An explicit release: handed straight to the waiter where the store can replace a lock,
    // released and created afresh where it cannot (SFTP).
    within("release", holder.release()).await.expect("release");
    let heir = granted(store, heir).await;
    if let Some(before) = before {
        let after = counters(&observer, store).await;
        let delta = |name| counter(&after, name) - counter(&before, name);
        if store.can_steal() {
            assert_eq!(
                delta("deletes"),
                0,
                "{store:?}: not handed off: {before:?} → {after:?}"
            );
            assert!(delta("replaces") >= 1, "{store:?}: {before:?} → {after:?}");
        } else {
            assert!(
                delta("deletes") >= 1 && delta("creates") >= 1,
                "{store:?}: {before:?} → {after:?}"
            );
        }
    }
    let seen = daemon_view(&observer, &target.url).await.expect("locked");
    assert_eq!(seen.owner_id.as_deref(), Some("heir"), "{store:?}");
    assert_eq!(seen.lock_id.as_deref(), heir.lock_id(), "{store:?}");
    if store.has_raw_access() {
        assert_object_is(
            store,
            &raw.json(target.key()).await,
            &heir,
            "after the handoff",
        );
    }

    // The heir's connection drops without a word (no release frame): the next waiter gets it.
    let (_last_client, last) = queued_waiter(&daemon, &target.url, "last").await;
    // SAFETY: shuts down the heir client's own socket; the descriptor stays open and owned by it.
    let rc = unsafe { libc::shutdown(heir_client.as_raw_fd(), libc::SHUT_RDWR) };
    assert_eq!(rc, 0, "shutdown: {}", std::io::Error::last_os_error());
    let mut last = granted(store, last).await;
    let seen = daemon_view(&observer, &target.url).await.expect("locked");
    assert_eq!(seen.owner_id.as_deref(), Some("last"), "{store:?}");
    if store.has_raw_access() {
        assert_object_is(
            store,
            &raw.json(target.key()).await,
            &last,
            "after the disconnect",
        );
    }
    drop(heir);
    within("release", last.release()).await.expect("release");
    assert!(
        !locked(&observer, &raw, &target).await,
        "{store:?}: lock object after release"
    );
}

per_store!(handoff_and_disconnect, [
    file => File, mem => Mem, s3 => S3, gcs => Gcs, azblob => Azblob, sftp => Sftp,
]);

// ---------------------------------------------------------------------------------------------
// 6. Ambiguous writes
// ---------------------------------------------------------------------------------------------

const AMBIGUOUS_CYCLES: usize = 30;

async fn ambiguous_writes(store: Store) {
    let daemon = host_with(store, "h0", "", "[faults]\nwrite-then-fail = 0.5\n");
    let raw = Raw::new(store);
    let target = store.target("ambiguous");
    let client = daemon.client().await;
    for cycle in 0..AMBIGUOUS_CYCLES {
        let mut lock = client.new_lock(&target.url, LockOptions::default());
        within("acquire", lock.acquire())
            .await
            .unwrap_or_else(|e| panic!("{store:?} cycle {cycle}: acquire: {e:?}"));
        assert_object_is(
            store,
            &raw.json(target.key()).await,
            &lock,
            &format!("cycle {cycle}"),
        );
        within("release", lock.release())
            .await
            .unwrap_or_else(|e| panic!("{store:?} cycle {cycle}: release: {e:?}"));
    }
    assert_eq!(
        raw.read(target.key()).await,
        None,
        "{store:?}: a lock object was left"
    );
    let counters = counters(&client, store).await;
    let ambiguous = counter(&counters, "ambiguous");
    assert!(
        ambiguous > 0,
        "{store:?}: no write was ambiguous: {counters:?}"
    );
    // Every injected fault must have been resolved as an ambiguous write.
    if let Some((_, injected)) = counters.iter().find(|(name, _)| name == "injected") {
        assert!(ambiguous >= *injected, "{store:?}: {counters:?}");
    }
    eprintln!("{store:?} with write-then-fail = 0.5, {AMBIGUOUS_CYCLES} cycles: {counters:?}");
}

per_store!(ambiguous_writes, [s3 => S3, gcs => Gcs, azblob => Azblob, sftp => Sftp]);

// ---------------------------------------------------------------------------------------------
// 7. Requests per uncontended acquire + release
// ---------------------------------------------------------------------------------------------

const MEASURED_CYCLES: u64 = 10;

/// The server endpoint of an HTTP object store.
fn endpoint_of(store: Store) -> String {
    test_env(match store {
        Store::S3 => "VFSLOCK_TEST_S3_ENDPOINT",
        Store::Gcs => "VFSLOCK_TEST_GCS_ENDPOINT",
        Store::Azblob => "VFSLOCK_TEST_AZBLOB_ENDPOINT",
        other => unreachable!("{other:?} speaks no HTTP"),
    })
}

/// A counting proxy in front of `store`'s server, and a daemon that reaches the store through it.
async fn proxied(store: Store, fencing: bool) -> (HttpCounter, Host) {
    let server = endpoint_of(store);
    let proxy = HttpCounter::start(&server).await;
    let mut table = store.config_at(&store.prefix(), Some(&proxy.endpoint_for(&server)));
    if !fencing {
        table.push_str("fencing = false\n");
    }
    let config = format!("{}\n{table}\n", vfslock_tests::TEST_CONFIG);
    let daemon = Host(Daemon::start_host(&config, None, &["--host-id", "h0"]));
    (proxy, daemon)
}

/// HTTP stores, through a proxy that counts what goes on the wire: after one warm-up cycle
/// (the first reads the fence), each uncontended acquire + release is 3 requests with fencing
/// tokens (create the lock, commit the fence, delete the lock) and 2 without, on GCS as on S3
/// and Azure Blob (one upload carrying `ifGenerationMatch`, never a resumable session). The
/// daemon's own `requests` counter equals the proxy's count, probe and all.
async fn http_requests_per_cycle(store: Store) {
    for fencing in [true, false] {
        let (proxy, daemon) = proxied(store, fencing).await;
        let target = store.target("requests");
        let client = daemon.client().await;
        let cycle = || async {
            let mut lock = client.new_lock(&target.url, LockOptions::default());
            within("acquire", lock.acquire()).await.expect("acquire");
            within("release", lock.release()).await.expect("release");
        };
        cycle().await;
        let wire_before = proxy.requests().len();
        let before = counters(&client, store).await;
        for _ in 0..MEASURED_CYCLES {
            cycle().await;
        }
        let after = counters(&client, store).await;
        let on_the_wire = proxy.requests();
        let measured = &on_the_wire[wire_before..];
        let counted = counter(&after, "requests") - counter(&before, "requests");
        let expected = if fencing { 3 } else { 2 };
        eprintln!(
            "{store:?}, fencing {fencing}: one cycle sent {:?}",
            &measured[..expected.min(measured.len())]
        );
        assert_eq!(
            measured.len() as u64,
            expected as u64 * MEASURED_CYCLES,
            "{store:?}, fencing {fencing}: requests on the wire for {MEASURED_CYCLES} cycles: {measured:#?}"
        );
        assert_eq!(
            counted,
            measured.len() as u64,
            "{store:?}, fencing {fencing}: the daemon counted {counted}, the wire carried {}",
            measured.len()
        );
        // Everything the daemon sent since it started, its startup probe included, is counted.
        assert_eq!(
            counter(&after, "requests"),
            on_the_wire.len() as u64,
            "{store:?}, fencing {fencing}: {on_the_wire:#?}"
        );
        assert!(
            !on_the_wire
                .iter()
                .any(|line| line.contains("uploadType=resumable")),
            "{store:?}: a resumable upload was sent: {on_the_wire:#?}"
        );
    }
}

per_store!(http_requests_per_cycle, [s3 => S3, gcs => Gcs, azblob => Azblob]);

/// The store applies the lock file's create, and its answer is lost on the way back (the proxy
/// closes the connection instead): the daemon reads the object back, finds its own bytes, and
/// holds the lock. On GCS this is the one-request upload, which has no session to ask.
async fn lost_answer_is_read_back(store: Store) {
    let (proxy, daemon) = proxied(store, true).await;
    let target = store.target("lost-answer");
    let client = daemon.client().await;
    proxy.lose_answer_to(|line| {
        (line.starts_with("PUT ") || line.starts_with("POST "))
            && line.contains("data.csv.lock")
            && !line.contains(".fence")
    });
    let wire_before = proxy.requests().len();
    let before = counters(&client, store).await;
    let mut lock = client.new_lock(&target.url, LockOptions::default());
    within("acquire", lock.acquire())
        .await
        .expect("the create landed: the read-back must find it ours");
    let after = counters(&client, store).await;
    assert_eq!(
        counter(&after, "ambiguous") - counter(&before, "ambiguous"),
        1,
        "{store:?}: {after:?}"
    );
    let sent = proxy.requests()[wire_before..].to_vec();
    let create = sent
        .iter()
        .position(|line| line.contains("data.csv.lock") && !line.contains(".fence"))
        .unwrap_or_else(|| panic!("{store:?}: no create sent: {sent:#?}"));
    assert!(
        sent[create + 1..]
            .iter()
            .any(|line| line.starts_with("GET ") || line.starts_with("HEAD ")),
        "{store:?}: the lost create was not read back: {sent:#?}"
    );
    let raw = Raw::new(store);
    let object = raw.read(target.key()).await.expect("the lock object");
    let json: serde_json::Value = serde_json::from_slice(&object).expect("lock JSON");
    assert_object_is(store, &json, &lock, "after a lost answer");
    within("release", lock.release()).await.expect("release");
    assert_eq!(
        raw.read(target.key()).await,
        None,
        "{store:?}: the lock object was left"
    );
}

per_store!(lost_answer_is_read_back, [s3 => S3, gcs => Gcs, azblob => Azblob]);

/// SFTP counts its round trips per operation: at most 3 per cycle (create, then read and
/// delete on release).
async fn requests_per_cycle(store: Store) {
    let daemon = host(store);
    let target = store.target("requests");
    let client = daemon.client().await;
    let before = counters(&client, store).await;
    for _ in 0..MEASURED_CYCLES {
        let mut lock = client.new_lock(&target.url, LockOptions::default());
        within("acquire", lock.acquire()).await.expect("acquire");
        within("release", lock.release()).await.expect("release");
    }
    let after = counters(&client, store).await;
    let requests = (counter(&after, "requests") - counter(&before, "requests")) as f64
        / MEASURED_CYCLES as f64;
    assert!(
        requests <= 3.0,
        "{store:?}: {requests} round trips per cycle, more than 3: {after:?}"
    );
}

per_store!(requests_per_cycle, [sftp => Sftp]);

// ---------------------------------------------------------------------------------------------
// 8. Unserved targets and unreachable stores
// ---------------------------------------------------------------------------------------------

async fn unserved_target_is_refused(store: Store) {
    let daemon = host(store);
    let client = daemon.client().await;
    // Same scheme, outside the configured prefix.
    let outside = match store {
        Store::Sftp => format!("sftp://{}/elsewhere/data.csv", Store::sftp_authority()),
        _ => format!("{}://no-such-bucket/data.csv", store.scheme()),
    };
    let mut lock = client.new_lock(&outside, LockOptions::default());
    let err = within("acquire", lock.acquire())
        .await
        .expect_err("no store serves it");
    assert_eq!(err.kind(), ErrorKind::InvalidTarget, "{store:?}: {err:?}");
    for prefix in [store.prefix().as_str(), "file://", "mem://"] {
        assert!(
            err.message().contains(prefix),
            "{store:?}: {prefix} not named: {err}"
        );
    }
    // The served prefix still works on the same connection.
    let target = store.target("served");
    let mut lock = client.new_lock(&target.url, LockOptions::default());
    within("acquire", lock.acquire()).await.expect("acquire");
    within("release", lock.release()).await.expect("release");
}

per_store!(unserved_target_is_refused, [s3 => S3, gcs => Gcs, azblob => Azblob, sftp => Sftp]);

async fn unreachable_store_stops_the_daemon(store: Store) {
    // Port 9 (discard) is closed on loopback: every connection is refused.
    let (prefix, endpoint) = match store {
        Store::Sftp => {
            let user = test_env("VFSLOCK_TEST_SFTP_USER");
            let root = test_env("VFSLOCK_TEST_SFTP_ROOT");
            (
                format!("sftp://{user}@127.0.0.1:9{}/", root.trim_end_matches('/')),
                None,
            )
        }
        Store::Azblob => (
            store.prefix(),
            Some(format!(
                "http://127.0.0.1:9/{}",
                test_env("VFSLOCK_TEST_AZBLOB_ACCOUNT")
            )),
        ),
        _ => (store.prefix(), Some("http://127.0.0.1:9".to_owned())),
    };
    let config = format!(
        "{}{}",
        vfslock_tests::TEST_CONFIG,
        store.config_at(&prefix, endpoint.as_deref())
    );
    let started = Instant::now();
    let (status, log) = tokio::task::spawn_blocking(move || start_refused(&config))
        .await
        .expect("start_refused");
    assert!(!status.success(), "{store:?}: {status}\n{log}");
    assert!(
        log.contains(&prefix),
        "{store:?}: the log does not name {prefix}:\n{log}"
    );
    eprintln!(
        "{store:?}: refused in {:?}: {}",
        started.elapsed(),
        log.lines().last().unwrap_or_default()
    );
}

per_store!(unreachable_store_stops_the_daemon, [
    s3 => S3, gcs => Gcs, azblob => Azblob, sftp => Sftp,
]);

/// A server that ignores conditions (simulated by the fault layer dropping them from every
/// write) is refused at startup by the probe, with the missing capability named; with
/// `accept-weak` the daemon starts and `status` says WEAK.
async fn a_store_that_ignores_conditions_is_refused_unless_accepted_weak(store: Store) {
    let config = format!("{}\n[faults]\nignore-conditions = true\n", store.config());
    let refused = config.clone();
    let (status, log) = tokio::task::spawn_blocking(move || start_refused(&refused))
        .await
        .expect("start_refused");
    assert!(!status.success(), "{store:?}: {status}\n{log}");
    assert!(
        log.contains("create-if-not-exists is not enforced") && log.contains("accept-weak"),
        "{store:?}: {log}"
    );

    let weak = config.replace("[[stores.object]]", "[[stores.object]]\naccept-weak = true");
    let daemon = Daemon::start_with(&weak);
    let status = daemon.client().await.status().await.expect("status");
    let described = status
        .stores
        .iter()
        .find(|s| s.scheme == store.prefix())
        .expect("the store is listed");
    assert!(described.description.contains("WEAK"), "{described:?}");
    assert!(
        daemon.log().contains("WEAK mode"),
        "the weak mode is logged"
    );
}

per_store!(a_store_that_ignores_conditions_is_refused_unless_accepted_weak, [
    s3 => S3, gcs => Gcs, azblob => Azblob,
]);

/// Secrets stay in the daemon: a config file holding a literal key that others can read is
/// warned about, and the key appears in no log line, no `status` and no `--print-config`.
#[tokio::test]
async fn secrets_are_warned_about_and_never_shown() {
    let account_key = test_env("VFSLOCK_TEST_AZBLOB_KEY");
    let config = Store::Azblob.config().replace(
        "\"env:VFSLOCK_TEST_AZBLOB_KEY\"",
        &format!("{account_key:?}"),
    );
    assert!(
        config.contains(&account_key),
        "the test needs a literal key:\n{config}"
    );
    // The harness writes the config 0644: readable by others.
    let daemon = Daemon::start_with(&config);
    let log = daemon.log();
    assert!(
        log.contains("the config file holds secrets and others can read it"),
        "{log}"
    );
    let client = daemon.client().await;
    let target = Store::Azblob.target("secrets");
    let mut lock = client.new_lock(target.url.clone(), LockOptions::default());
    lock.acquire().await.expect("acquire");
    lock.release().await.expect("release");
    let status = format!("{:?}", client.status().await.expect("status"));
    assert!(!status.contains(&account_key), "status shows the key");
    assert!(
        !daemon.log().contains(&account_key),
        "the log shows the key"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, &config).unwrap();
    let printed = std::process::Command::new(vfslock_tests::bin("vfslockd"))
        .arg("--config")
        .arg(&path)
        .arg("--print-config")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&printed.stdout);
    assert!(
        printed.contains("<redacted>") && !printed.contains(&account_key),
        "{printed}"
    );
}

// ---------------------------------------------------------------------------------------------
// 9. No ssh left behind (SFTP)
// ---------------------------------------------------------------------------------------------

/// The `ssh` processes of our user whose command line names a path inside `dir`, as pid and
/// command line. A test daemon's control sockets live inside its own temporary directory
/// (`Daemon::start_own_group` puts `XDG_STATE_HOME` there too), so this finds exactly its `ssh`
/// processes, however it names them, and none of a daemon of another test.
fn ssh_naming(dir: &Path) -> Vec<(i32, String)> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let needle = format!("{}/", dir.display());
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse().ok()) else {
            continue;
        };
        if entry.metadata().ok().map(|m| m.uid()) != Some(uid) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let argv0 = cmdline.split(' ').next().unwrap_or_default();
        let ssh = argv0 == "ssh" || argv0.ends_with("/ssh") || argv0 == "ssh:";
        if ssh && cmdline.contains(&needle) {
            found.push((pid, cmdline.trim_end().to_owned()));
        }
    }
    found
}

/// Ends the `ssh` processes [`ssh_naming`] finds when dropped, so that a failing test leaves
/// none behind on the machine either.
struct EndSshOnDrop(std::path::PathBuf);

impl Drop for EndSshOnDrop {
    fn drop(&mut self) {
        for (pid, _) in ssh_naming(&self.0) {
            // SAFETY: plain syscall on a pid just read from /proc.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
}

/// Takes and releases a lock on a fresh SFTP target through `daemon`, so that its store has
/// connections open (and their `ssh` masters running) when the test stops it.
async fn use_sftp(daemon: &Daemon, test: &str) {
    let client = daemon.client().await;
    let target = Store::Sftp.target(test);
    let mut lock = client.new_lock(&target.url, LockOptions::default());
    within("acquire", lock.acquire()).await.expect("acquire");
    within("release", lock.release()).await.expect("release");
}

/// A signal to the daemon's whole process group, as `timeout(1)` sends SIGTERM, while a lock is
/// held: the `ssh` channel dies at once with the daemon, whose shutdown then still works on the
/// store (it releases the lock), and the daemon still ends every control master it started.
/// SIGINT and SIGHUP (Ctrl-C, a closed terminal) reach the whole group too, and end it the
/// same way. The master used to survive most SIGTERMs and every SIGHUP (issue 13).
#[tokio::test(flavor = "multi_thread")]
async fn sftp_ssh_does_not_outlive_a_sigterm_to_the_process_group() {
    for (round, signal) in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGTERM]
        .into_iter()
        .enumerate()
    {
        let mut daemon =
            Daemon::start_own_group(&Store::Sftp.daemon_config("", ""), &["--host-id", "h0"]);
        let dir = daemon.dir().to_owned();
        let _end = EndSshOnDrop(dir.clone());
        let client = daemon.client().await;
        let target = Store::Sftp.target("ssh-group-term");
        let mut held = client.new_lock(&target.url, LockOptions::default());
        within("acquire", held.acquire()).await.expect("acquire");
        assert!(
            !ssh_naming(&dir).is_empty(),
            "round {round}: the daemon runs no ssh naming {}: the test cannot see its masters",
            dir.display()
        );
        let status = daemon.signal_group(libc::SIGTERM);
        assert!(
            status.success(),
            "round {round}: {status}\n{}",
            daemon.log()
        );
        let start = Instant::now();
        loop {
            let left = ssh_naming(&dir);
            if left.is_empty() {
                break;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "round {round} (signal {signal}): ssh still runs {DEADLINE:?} after the daemon \
                 exited: {left:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A SIGKILL leaves the daemon no chance to end its `ssh` masters; its next start ends them
/// before it serves, and then works with masters of its own, which it ends at exit.
#[tokio::test(flavor = "multi_thread")]
async fn sftp_ssh_left_by_a_sigkilled_daemon_is_ended_by_the_next_start() {
    let mut daemon =
        Daemon::start_own_group(&Store::Sftp.daemon_config("", ""), &["--host-id", "h0"]);
    let dir = daemon.dir().to_owned();
    let _end = EndSshOnDrop(dir.clone());
    use_sftp(&daemon, "ssh-kill").await;
    daemon.kill();
    let left = ssh_naming(&dir);
    assert!(
        !left.is_empty(),
        "a SIGKILLed daemon left no ssh naming {}: the test cannot see its masters",
        dir.display()
    );

    daemon.restart();
    // The predecessor's processes are known by their command lines (each names its own
    // control directory), not by pid, which a new process may reuse.
    let still: Vec<_> = ssh_naming(&dir)
        .into_iter()
        .filter(|(_, cmdline)| left.iter().any(|(_, old)| old == cmdline))
        .collect();
    assert!(
        still.is_empty(),
        "the restarted daemon serves while its predecessor's ssh still runs: {still:?}\n{}",
        daemon.log()
    );
    assert!(
        daemon
            .log()
            .contains("ended the ssh control masters of the previous run"),
        "{}",
        daemon.log()
    );
    use_sftp(&daemon, "ssh-kill-again").await;
    let status = daemon.signal_group(libc::SIGTERM);
    assert!(status.success(), "{status}\n{}", daemon.log());
    let left = ssh_naming(&dir);
    assert!(left.is_empty(), "ssh outlives the daemon: {left:?}");
}

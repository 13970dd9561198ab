//! Shared locks and semaphores end to end (issue 15), on every store: real daemons sharing one
//! store (two hosts where the store can be shared), talking to the test's clients over their
//! real sockets. Each case runs once per store, as `<case>::<store>`:
//!
//! 1. every cell of the table of how requests meet holders (exclusive, shared, a semaphore);
//! 2. the last holder out deletes the lock file, whichever host it is on;
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

/// One test per (case, store): `case::store`.
macro_rules! per_store {
    ($case:ident, [$($name:ident => $store:ident),+ $(,)?]) => {
        mod $case {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    super::$case(vfslock_tests::Store::$store).await;
                }
            )+
        }
    };
}

/// A daemon with host id `id` serving `store`, stopped with SIGTERM when dropped (so that an
/// SFTP store's ssh master goes with it).
struct Host(Daemon);

impl std::ops::Deref for Host {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.0
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.0.stop();
    }
}

fn host(store: Store, id: &str) -> Host {
    Host(Daemon::start_host(
        &store.daemon_config("", ""),
        None,
        &["--host-id", id],
    ))
}

/// Two daemons on one store where it can be shared; one daemon twice on `mem://`.
fn two_hosts(store: Store) -> (Host, Option<Host>) {
    let first = host(store, "h0");
    let second = (store != Store::Mem).then(|| host(store, "h1"));
    (first, second)
}

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
// 1. The table
// ---------------------------------------------------------------------------------------------

async fn table(store: Store) {
    let (first, second) = two_hosts(store);
    let a = first.client().await;
    let b = match &second {
        Some(host) => host.client().await,
        None => first.client().await,
    };
    let target = store.target("modes-table");
    let url = target.url.as_str();

    // Held by nobody: each mode is granted.
    for options in [LockOptions::default(), shared(), slots(2)] {
        release(take(&a, url, options).await).await;
    }

    // Held shared: shared joins (on the other host too), exclusive waits, a semaphore is
    // refused naming both kinds.
    let reader_a = take(&a, url, shared()).await;
    let reader_b = take(&b, url, shared()).await;
    assert!(reader_a.token().is_some() && reader_b.token().is_some());
    if store != Store::Mem {
        let bytes = raw(&target).await.expect("the shared lock file");
        let joint = Joint::parse(&bytes).expect("a holder list");
        assert_eq!(joint.holders.len(), if second.is_some() { 2 } else { 1 });
    }
    let error = refused(&a, url, LockOptions::default()).await;
    assert_eq!(error.kind(), ErrorKind::AlreadyHeld, "{error}");
    let mut writer = b.new_lock(url, LockOptions::default());
    let timed_out = within(
        "a bounded wait",
        writer.acquire_timeout(Duration::from_millis(300)),
    )
    .await
    .expect_err("an exclusive request waits for shared holders");
    assert_eq!(timed_out.kind(), ErrorKind::Timeout, "{timed_out}");
    let error = refused(&b, url, slots(2)).await;
    assert_eq!(error.kind(), ErrorKind::ModeConflict, "{error}");
    assert!(
        error.message().contains("shared") && error.message().contains("semaphore of 2"),
        "{error}"
    );
    release(reader_a).await;
    release(reader_b).await;
    assert_eq!(
        raw(&target).await,
        None,
        "the last one out deleted the file"
    );

    // Held as a semaphore of 2: one more joins, a third waits (or is refused as held), another
    // size and a shared request are refused naming both, exclusive waits.
    let slot_a = take(&a, url, slots(2)).await;
    let slot_b = take(&b, url, slots(2)).await;
    let error = refused(&a, url, slots(2)).await;
    assert_eq!(error.kind(), ErrorKind::AlreadyHeld, "{error}");
    let error = refused(&b, url, slots(3)).await;
    assert_eq!(error.kind(), ErrorKind::ModeConflict, "{error}");
    assert!(
        error.message().contains("2 slots") && error.message().contains("asked for 3"),
        "{error}"
    );
    let error = refused(&a, url, shared()).await;
    assert_eq!(error.kind(), ErrorKind::ModeConflict, "{error}");
    let error = refused(&a, url, LockOptions::default()).await;
    assert_eq!(error.kind(), ErrorKind::AlreadyHeld, "{error}");
    // A waiting slot is granted when one is freed.
    let mut third = a.new_lock(url, slots(2));
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
    assert_eq!(raw(&target).await, None);

    // Held exclusively: shared and semaphore requests wait (or are refused as held).
    let exclusive = take(&b, url, LockOptions::default()).await;
    for options in [shared(), slots(2)] {
        let error = refused(&a, url, options).await;
        assert_eq!(error.kind(), ErrorKind::AlreadyHeld, "{error}");
    }
    let exclusive_token = exclusive.token();
    let mut reader = a.new_lock(url, shared());
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
    // An exclusive token exceeds every earlier one, shared ones included.
    let reader_token = reader.token();
    release(reader).await;
    let writer = take(&b, url, LockOptions::default()).await;
    assert!(writer.token() > reader_token);
    release(writer).await;
}

per_store!(table, [
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
    dying.0.kill();
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

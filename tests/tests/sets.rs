//! Several targets held together (`Client::lock_all`), and max-hold, end to end on every store:
//! real daemons sharing one store (two hosts where the store can be shared), talking to the
//! test's clients over their real sockets. Each store case runs once per store, as
//! `<case>::<store>` (SFTP, create-only, skips the shared sets of case 1):
//!
//! 1. a set is held whole (every lock, token and lock file), refuses others, and its release
//!    removes every lock file; a shared set is held by two clients at once;
//! 2. a set whose last target (in key order) is held elsewhere times out and leaves none held;
//! 3. two hosts taking overlapping sets in opposite orders, over and over, never deadlock;
//! 4. one lost lease ends the set: `lost()` names it, `with_lock_all` stops its closure;
//! 5. max-hold ends a lease (the acquire's or the daemon's cap) and is capped by the daemon.
//!
//! Then, on `file://` and `mem://` only: a set's max-hold, duplicate targets, the blocking API,
//! `vfslockctl run` with several targets and `--max-hold`, and a protocol version 1 client
//! under a daemon's max-hold.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vfslock::{Client, ErrorKind, LockOptions, LockSet, WithLockError};
use vfslock_tests::{v1, within, Daemon, Store, StoreTarget};

#[path = "support/raw.rs"]
#[allow(dead_code)] // stores.rs uses all of it, this file a part
mod raw;
use raw::Raw;

#[path = "support/hosts.rs"]
#[allow(dead_code)] // each file uses a part
mod hosts;
use hosts::{host, host_with, per_store, two_clients, two_hosts};

fn exclusive() -> LockOptions {
    LockOptions::default()
}

/// `n` targets of `store`, unique to this test.
fn targets(store: Store, name: &str, n: usize) -> Vec<StoreTarget> {
    (0..n)
        .map(|i| store.target(&format!("{name}-{i}")))
        .collect()
}

fn urls(targets: &[&StoreTarget]) -> Vec<String> {
    targets.iter().map(|t| t.url.clone()).collect()
}

async fn lock_all(client: &Client, targets: &[&StoreTarget], options: LockOptions) -> LockSet {
    within("lock_all", client.lock_all(urls(targets), options))
        .await
        .unwrap_or_else(|e| panic!("lock_all {:?}: {e}", urls(targets)))
}

/// The lock file's bytes, read past the daemons; `None` for `mem://` (out of reach) or no file.
async fn raw(target: &StoreTarget) -> Option<Vec<u8>> {
    if !target.store.has_raw_access() {
        return None;
    }
    Raw::new(target.store).read(target.key()).await
}

/// Whether the lock file exists; `true` for `mem://`, whose lock files the test cannot see.
async fn file_exists(target: &StoreTarget) -> bool {
    !target.store.has_raw_access() || raw(target).await.is_some()
}

/// Asserts that nothing holds `target`: its lock file is gone, and `client` can take it at
/// once (and lets it go again).
async fn free(client: &Client, target: &StoreTarget, what: &str) {
    assert_eq!(
        raw(target).await,
        None,
        "{what}: {} has a lock file",
        target.url
    );
    let mut lock = client.new_lock(&target.url, exclusive());
    within("a try", lock.acquire())
        .await
        .unwrap_or_else(|e| panic!("{what}: {} is still held: {e}", target.url));
    within("release", lock.release())
        .await
        .expect("release the try");
    assert_eq!(raw(target).await, None, "{what}: released again");
}

/// Waits (bounded) until `target`'s lock file is gone: for a release the daemon makes on its
/// own, after it told the holder, which has no event of its own for the test to await.
async fn gone(target: &StoreTarget) {
    let start = Instant::now();
    while raw(target).await.is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{}: the lock file is still there",
            target.url
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 1. A set is held whole
// ---------------------------------------------------------------------------------------------

async fn set_held_whole(store: Store) {
    let (first, second) = two_hosts(store);
    let (a, b) = two_clients(&first, &second).await;
    let all = targets(store, "sets-whole", 3);
    // Given out of order: last, first, middle.
    let given = [&all[2], &all[0], &all[1]];
    let mut set = lock_all(&a, &given, exclusive()).await;
    assert!(set.is_held());
    assert_eq!(set.locks().len(), 3);
    for target in &all {
        let lock = set
            .get(&target.url)
            .unwrap_or_else(|| panic!("{} in the set", target.url));
        assert!(lock.is_held(), "{}", target.url);
        assert_eq!(
            lock.token().is_some(),
            store.has_tokens(),
            "{store:?} {}: a token where the store gives them",
            target.url
        );
        if store.has_raw_access() {
            assert!(raw(target).await.is_some(), "{}: a lock file", target.url);
        }
        let mut other = b.new_lock(&target.url, exclusive());
        let error = within("a try", other.acquire())
            .await
            .expect_err("held by the set");
        assert_eq!(error.kind(), ErrorKind::AlreadyHeld, "{error}");
        assert!(!other.is_held());
    }
    // The tokens are each lock's own.
    if store.has_tokens() {
        let mut tokens: Vec<u64> = set.locks().iter().filter_map(|l| l.token()).collect();
        tokens.sort_unstable();
        tokens.dedup();
        assert_eq!(tokens.len(), 3, "{tokens:?}");
    }
    within("release the set", set.release())
        .await
        .expect("release the set");
    assert!(!set.is_held(), "a released set holds nothing");
    for target in &all {
        free(&b, target, "after the set's release").await;
    }

    // A shared set is held by two clients at once.
    if store != Store::Sftp {
        let mut readers_a = lock_all(&a, &given, exclusive().shared()).await;
        let mut readers_b = lock_all(&b, &[&all[1], &all[2], &all[0]], exclusive().shared()).await;
        assert!(readers_a.is_held() && readers_b.is_held());
        let error = within("an exclusive set", a.lock_all(urls(&given), exclusive()))
            .await
            .expect_err("no exclusive set while readers hold");
        assert_eq!(error.kind(), ErrorKind::AlreadyHeld, "{error}");
        within("release", readers_a.release())
            .await
            .expect("release");
        for target in &all {
            assert!(file_exists(target).await, "b still holds {}", target.url);
        }
        within("release", readers_b.release())
            .await
            .expect("release");
        for target in &all {
            free(&a, target, "after both shared sets").await;
        }
    }
}

per_store!(set_held_whole, [
    file => File, mem => Mem, s3 => S3, gcs => Gcs, azblob => Azblob, sftp => Sftp,
]);

// ---------------------------------------------------------------------------------------------
// 2. The last target held elsewhere: a timeout, and nothing left held
// ---------------------------------------------------------------------------------------------

async fn last_target_held_elsewhere_times_out_leaving_none(store: Store) {
    let (first, second) = two_hosts(store);
    let (a, b) = two_clients(&first, &second).await;
    let all = targets(store, "sets-last", 3);
    let refs: Vec<&StoreTarget> = all.iter().collect();
    // The daemon's key order, as the set takes them.
    let mut probe = lock_all(&a, &refs, exclusive()).await;
    let order: Vec<String> = probe
        .locks()
        .iter()
        .map(|l| l.target().to_owned())
        .collect();
    within("release", probe.release()).await.expect("release");
    let last = all
        .iter()
        .find(|t| t.url == order[2])
        .expect("the last target");
    let others: Vec<&StoreTarget> = all.iter().filter(|t| t.url != order[2]).collect();

    let mut holder = b.new_lock(&last.url, exclusive());
    within("the holder", holder.acquire())
        .await
        .expect("the other host takes the last target");
    let started = Instant::now();
    let error = within(
        "lock_all",
        a.lock_all(
            // The held one first as given: the order given does not matter.
            [
                last.url.clone(),
                others[1].url.clone(),
                others[0].url.clone(),
            ],
            exclusive().wait_timeout(Duration::from_millis(300)),
        ),
    )
    .await
    .expect_err("the last target is held");
    assert_eq!(error.kind(), ErrorKind::Timeout, "{error}");
    assert!(error.message().contains("none of them is held"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "one deadline for the set: {:?}",
        started.elapsed()
    );
    for target in &others {
        free(&b, target, "after the failed set").await;
    }
    assert!(holder.is_held(), "the other host's lock is untouched");
    within("release", holder.release()).await.expect("release");
    assert_eq!(raw(last).await, None);
}

per_store!(last_target_held_elsewhere_times_out_leaving_none, [
    file => File, mem => Mem, s3 => S3, gcs => Gcs, azblob => Azblob, sftp => Sftp,
]);

// ---------------------------------------------------------------------------------------------
// 3. Opposite orders do not deadlock
// ---------------------------------------------------------------------------------------------

async fn opposite_orders_do_not_deadlock(store: Store) {
    let rounds = match store {
        Store::File | Store::Mem => 20,
        Store::Sftp => 5,
        _ => 8,
    };
    let (first, second) = two_hosts(store);
    let (a, b) = two_clients(&first, &second).await;
    let all = Arc::new(targets(store, "sets-orders", 3));
    let forward: Vec<String> = all.iter().map(|t| t.url.clone()).collect();
    let backward: Vec<String> = forward.iter().rev().cloned().collect();
    // Both sets hold every target: at most one of them at a time.
    let holding = Arc::new(AtomicU32::new(0));
    let started = Instant::now();
    let mut loops = tokio::task::JoinSet::new();
    for (name, client, order) in [("forward", a, forward), ("backward", b, backward)] {
        let holding = holding.clone();
        loops.spawn(async move {
            for round in 0..rounds {
                let mut set = client
                    .lock_all(
                        order.clone(),
                        exclusive().wait_timeout(Duration::from_secs(10)),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("{store:?} {name} round {round}: {e}"));
                assert!(set.is_held(), "{name} round {round}: held whole");
                assert_eq!(
                    holding.fetch_add(1, Ordering::SeqCst),
                    0,
                    "{name} round {round}: both sets held at once"
                );
                tokio::task::yield_now().await;
                assert!(set.is_held(), "{name} round {round}: still whole");
                holding.fetch_sub(1, Ordering::SeqCst);
                set.release()
                    .await
                    .unwrap_or_else(|e| panic!("{name} round {round}: release: {e}"));
            }
        });
    }
    while let Some(done) = within("the loops", loops.join_next()).await {
        done.expect("a loop");
    }
    eprintln!("{store:?}: {rounds} rounds each in {:?}", started.elapsed());
    let client = first.client().await;
    for target in all.iter() {
        free(&client, target, "after the loops").await;
    }
}

per_store!(opposite_orders_do_not_deadlock, [
    file => File, mem => Mem, s3 => S3, gcs => Gcs, azblob => Azblob, sftp => Sftp,
]);

// ---------------------------------------------------------------------------------------------
// 4. One lost lease ends the set
// ---------------------------------------------------------------------------------------------

async fn one_lost_lease_ends_the_set(store: Store) {
    let daemon = host(store, "h0");
    let client = daemon.client().await;
    // Tests run as root, so another client of the daemon may break a lock as an admin.
    let admin = daemon.client().await;
    let all = targets(store, "sets-lost", 2);
    let refs: Vec<&StoreTarget> = all.iter().collect();
    let (kept, broken) = (&all[0], &all[1]);

    let mut set = lock_all(&client, &refs, exclusive()).await;
    within("break", admin.break_lock(&broken.url, "sets test"))
        .await
        .expect("an admin breaks one lock of the set")
        .expect("it was held");
    let reason = within("the set to hear of the loss", set.lost()).await;
    assert!(
        reason.contains(&broken.url) && reason.contains("sets test"),
        "{reason}"
    );
    assert!(!set.is_held(), "a set with a lost lock is not held whole");
    assert!(
        set.get(&kept.url).is_some_and(|l| l.is_held()),
        "the other lock is held until the set is released"
    );
    let error = within("release", set.release())
        .await
        .expect_err("the release reports the loss");
    assert!(error.is_lease_lost(), "{error}");
    assert_eq!(error.kind(), ErrorKind::LeaseLost, "{error}");
    free(&client, kept, "after releasing a set with a lost lock").await;
    free(&client, broken, "after the break").await;

    // with_lock_all: the closure is stopped by the loss, which is the result.
    let outcome = within(
        "with_lock_all to stop its closure",
        client.with_lock_all(urls(&refs), exclusive(), async |set: &LockSet| {
            assert!(set.is_held());
            admin
                .break_lock(&broken.url, "sets test again")
                .await
                .expect("break")
                .expect("it was held");
            // Never returns by itself: only the loss can end it.
            std::future::pending::<()>().await;
            Ok::<(), std::convert::Infallible>(())
        }),
    )
    .await;
    match outcome {
        Err(WithLockError::Lock(error)) => {
            assert!(error.is_lease_lost(), "{error}");
            assert!(error.message().contains("sets test again"), "{error}");
        }
        other => panic!("expected the loss, got {other:?}"),
    }
    free(&client, kept, "after with_lock_all").await;
    free(&client, broken, "after with_lock_all").await;
}

per_store!(one_lost_lease_ends_the_set, [
    file => File, mem => Mem, s3 => S3, gcs => Gcs, azblob => Azblob, sftp => Sftp,
]);

// ---------------------------------------------------------------------------------------------
// 5. Max-hold
// ---------------------------------------------------------------------------------------------

const CAP: &str = "max-hold = \"2s\"\n";

async fn max_hold_ends_a_lease_and_is_capped(store: Store) {
    let daemon = host_with(store, "h0", CAP);
    let client = daemon.client().await;
    let asked = store.target("sets-max-hold");
    let capped = store.target("sets-capped");
    let refused = store.target("sets-too-long");

    // More than the cap is refused, naming it.
    let mut greedy = client.new_lock(&refused.url, exclusive().max_hold(Duration::from_secs(10)));
    let error = within("acquire", greedy.acquire())
        .await
        .expect_err("above the cap");
    assert_eq!(error.kind(), ErrorKind::LimitExceeded, "{error}");
    assert!(
        error.message().contains("2s") && error.message().contains("max-hold"),
        "{error}"
    );
    assert!(!greedy.is_held());
    assert_eq!(
        raw(&refused).await,
        None,
        "a refused acquire leaves no file"
    );

    // One asking for nothing (so the cap), then one asking for 500ms.
    let mut uncapped = client.new_lock(&capped.url, exclusive());
    let mut short = client.new_lock(&asked.url, exclusive().max_hold(Duration::from_millis(500)));
    within("acquire", uncapped.acquire())
        .await
        .expect("acquire");
    let capped_granted = Instant::now();
    within("acquire", short.acquire()).await.expect("acquire");

    let reason = within("its max-hold", short.lost()).await;
    // The 500ms one, not the cap (which names 2s).
    assert!(
        reason.contains("max-hold") && reason.contains("500ms"),
        "{reason}"
    );
    assert!(!short.is_held());
    assert!(uncapped.is_held(), "the cap is not up yet");
    let error = within("release", short.release())
        .await
        .expect_err("the release reports the max-hold");
    assert_eq!(error.kind(), ErrorKind::MaxHoldReached, "{error}");
    assert!(error.message().contains("max-hold"), "{error}");
    assert!(error.is_lease_lost(), "a max-hold is a lost lease too");
    gone(&asked).await;

    let reason = within("the daemon's cap", uncapped.lost()).await;
    let capped_held = capped_granted.elapsed();
    assert!(
        reason.contains("max-hold") && reason.contains("2s"),
        "{reason}"
    );
    assert!(
        capped_held >= Duration::from_millis(1900),
        "ended by the 2s cap: {capped_held:?}"
    );
    assert!(!uncapped.is_held());
    let error = within("release", uncapped.release())
        .await
        .expect_err("the release reports the cap");
    assert_eq!(error.kind(), ErrorKind::MaxHoldReached, "{error}");
    gone(&capped).await;
    // Both are free for the next holder.
    free(&client, &asked, "after the max-hold").await;
    free(&client, &capped, "after the cap").await;
}

per_store!(max_hold_ends_a_lease_and_is_capped, [
    file => File, mem => Mem, s3 => S3, gcs => Gcs, azblob => Azblob, sftp => Sftp,
]);

/// A set's max-hold applies to each of its locks: the set is lost at it, and its release
/// reports the max-hold.
#[tokio::test(flavor = "multi_thread")]
async fn a_sets_max_hold_ends_the_set() {
    let daemon = host(Store::File, "h0");
    let client = daemon.client().await;
    let all = targets(Store::File, "sets-set-max-hold", 2);
    let refs: Vec<&StoreTarget> = all.iter().collect();
    let mut set = lock_all(
        &client,
        &refs,
        exclusive().max_hold(Duration::from_millis(300)),
    )
    .await;
    let reason = within("the set's max-hold", set.lost()).await;
    assert!(
        reason.contains("max-hold") && reason.contains("300ms"),
        "{reason}"
    );
    assert!(!set.is_held());
    let error = within("release", set.release())
        .await
        .expect_err("the release reports the max-hold");
    assert_eq!(error.kind(), ErrorKind::MaxHoldReached, "{error}");
    for target in &all {
        gone(target).await;
        free(&client, target, "after the set's max-hold").await;
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Refusals and the blocking API
// ---------------------------------------------------------------------------------------------

/// Dropping a held set, without releasing it, releases every lock of it: a waiting set of
/// another client gets all of them, and nothing is left once that one is released too.
#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_set_releases_every_lock() {
    let daemon = host(Store::File, "h0");
    let (first, second) = (daemon.client().await, daemon.client().await);
    let targets: Vec<String> = ["c", "a", "b"]
        .iter()
        .map(|name| daemon.file_target(&format!("dropped-{name}.csv")))
        .collect();
    let set = within("lock_all", first.lock_all(targets.clone(), exclusive()))
        .await
        .expect("the first set");
    assert!(set.is_held());
    let error = within("a try", second.lock_all(targets.clone(), exclusive()))
        .await
        .expect_err("held by the first set");
    assert_eq!(error.kind(), ErrorKind::AlreadyHeld, "{error}");
    drop(set);
    let mut after = within(
        "the set after the drop",
        second.lock_all(
            targets.clone(),
            exclusive().wait_timeout(Duration::from_secs(10)),
        ),
    )
    .await
    .expect("every lock of the dropped set is free");
    assert!(after.is_held());
    within("release", after.release()).await.expect("release");
    for target in &targets {
        assert!(
            !std::path::Path::new(&format!("{target}.lock")).exists(),
            "{target}: a lock file was left"
        );
    }
}

/// A target given twice, or named twice (a path and its file:// URL), and an empty set are
/// refused before anything is taken.
#[tokio::test(flavor = "multi_thread")]
async fn duplicate_targets_and_empty_sets_are_refused() {
    let daemon = host(Store::File, "h0");
    let client = daemon.client().await;
    let path = daemon.file_target("dup.csv");
    let other = daemon.file_target("other.csv");
    for set in [
        vec![path.clone(), other.clone(), path.clone()],
        vec![path.clone(), format!("file://{path}")],
        vec![],
    ] {
        let error = within("lock_all", client.lock_all(set.clone(), exclusive()))
            .await
            .expect_err("refused");
        assert_eq!(error.kind(), ErrorKind::InvalidTarget, "{set:?}: {error}");
    }
    for target in [&path, &other] {
        assert!(
            !std::path::Path::new(&format!("{target}.lock")).exists(),
            "nothing was taken"
        );
    }
}

/// The blocking API: a set is held whole, a second one is refused while it is, and
/// `with_lock_all` runs its closure holding both.
#[tokio::test(flavor = "multi_thread")]
async fn blocking_clients_lock_sets_too() {
    let daemon = host(Store::File, "h0");
    let socket = daemon.socket().to_owned();
    let (a, b) = (daemon.file_target("a.csv"), daemon.file_target("b.csv"));
    tokio::task::spawn_blocking(move || {
        let client = vfslock::blocking::Client::connect(&socket).expect("connect");
        let mut set = client
            .lock_all([b.clone(), a.clone()], exclusive())
            .expect("a blocking set");
        assert!(set.is_held());
        let error = client
            .lock_all([a.clone(), b.clone()], exclusive())
            .expect_err("held");
        assert_eq!(error.kind(), ErrorKind::AlreadyHeld, "{error}");
        set.release().expect("release");
        let seen = client
            .with_lock_all([a.clone(), b.clone()], exclusive(), |set| {
                Ok::<_, std::convert::Infallible>(set.locks().len())
            })
            .expect("with_lock_all");
        assert_eq!(seen, 2);
        for target in [&a, &b] {
            assert!(!std::path::Path::new(&format!("{target}.lock")).exists());
        }
    })
    .await
    .expect("the blocking client's thread");
}

// ---------------------------------------------------------------------------------------------
// 7. vfslockctl run with several targets and --max-hold
// ---------------------------------------------------------------------------------------------

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn lock_file(target: &str) -> std::path::PathBuf {
    format!("{target}.lock").into()
}

/// The command sees every target and token, in the order given, and no single-target
/// variables; the lock files exist while it runs and are gone after.
#[tokio::test(flavor = "multi_thread")]
async fn vfslockctl_run_passes_every_target_and_token() {
    let daemon = host(Store::File, "h0");
    let (a, b, c) = (
        daemon.file_target("a.csv"),
        daemon.file_target("b.csv"),
        daemon.file_target("c.csv"),
    );
    let out_file = daemon.file_target("env.out");
    let script = format!(
        "echo \"$VFSLOCK_TARGET_COUNT|$VFSLOCK_TARGET_1|$VFSLOCK_TOKEN_1|$VFSLOCK_TARGET_2|\
         $VFSLOCK_TOKEN_2|$VFSLOCK_TARGET_3|$VFSLOCK_TOKEN_3|${{VFSLOCK_TARGET-unset}}|\
         ${{VFSLOCK_TOKEN-unset}}\" > {out_file}; for f in \"$VFSLOCK_TARGET_1\" \
         \"$VFSLOCK_TARGET_2\" \"$VFSLOCK_TARGET_3\"; do test -e \"$f.lock\" || exit 9; done"
    );
    // Given as c, a, b: the variables follow the command line, not the key order.
    let out = vfslock_tests::vfslockctl(
        &daemon,
        None,
        &["run", &c, &a, &b, "--", "sh", "-c", &script],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let seen = std::fs::read_to_string(&out_file).expect("the command's output");
    let fields: Vec<&str> = seen.trim_end().split('|').collect();
    assert_eq!(fields.len(), 9, "{seen}");
    assert_eq!(fields[0], "3", "{seen}");
    assert_eq!(
        [fields[1], fields[3], fields[5]],
        [&c, &a, &b].map(String::as_str)
    );
    let tokens: Vec<u64> = [fields[2], fields[4], fields[6]]
        .iter()
        .map(|t| t.parse().unwrap_or_else(|_| panic!("a token: {seen}")))
        .collect();
    assert!(
        tokens.iter().all(|&t| t > 0) && tokens[0] != tokens[1] && tokens[1] != tokens[2],
        "{tokens:?}"
    );
    assert_eq!(
        [fields[7], fields[8]],
        ["unset", "unset"],
        "single-target variables with several targets: {seen}"
    );
    for target in [&a, &b, &c] {
        assert!(!lock_file(target).exists(), "{target} released");
    }
}

/// `--max-hold` ends the lease while the command runs: it gets SIGTERM long before it ends.
#[tokio::test(flavor = "multi_thread")]
async fn vfslockctl_run_max_hold_terminates_the_command() {
    let daemon = host(Store::File, "h0");
    let (a, b) = (daemon.file_target("a.csv"), daemon.file_target("b.csv"));
    let started = Instant::now();
    let out = vfslock_tests::vfslockctl(
        &daemon,
        None,
        &["run", "--max-hold", "300ms", &a, &b, "--", "sleep", "30"],
    );
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(stderr(&out).contains("max-hold"), "{}", stderr(&out));
    let client = daemon.client().await;
    for target in [&a, &b] {
        assert!(!lock_file(target).exists(), "{target} released");
        let mut lock = client.new_lock(target, exclusive());
        within("a try", lock.acquire()).await.expect("free");
        within("release", lock.release()).await.expect("release");
    }
}

/// Without `--`, only the first word is a target: `run A B CMD` runs `B CMD`, which does not
/// exist, and fails; nothing is left held. And `run -n` on a set with one target held exits 1
/// and leaves the others free.
#[tokio::test(flavor = "multi_thread")]
async fn vfslockctl_run_refusals_leave_nothing_held() {
    let daemon = host(Store::File, "h0");
    let (a, b, c) = (
        daemon.file_target("a.csv"),
        daemon.file_target("b.csv"),
        daemon.file_target("c.csv"),
    );
    let out = vfslock_tests::vfslockctl(&daemon, None, &["run", &a, &b, "true"]);
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot run"), "{}", stderr(&out));
    for target in [&a, &b] {
        assert!(!lock_file(target).exists(), "{target}");
    }

    let client = daemon.client().await;
    let mut holder = client.new_lock(&b, exclusive());
    within("acquire", holder.acquire()).await.expect("acquire");
    let out = vfslock_tests::vfslockctl(&daemon, None, &["run", "-n", &a, &b, &c, "--", "true"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&b),
        "names the held one: {}",
        stderr(&out)
    );
    for target in [&a, &c] {
        assert!(!lock_file(target).exists(), "{target}");
        let mut lock = client.new_lock(target, exclusive());
        within("a try", lock.acquire()).await.expect("free");
        within("release", lock.release()).await.expect("release");
    }
    assert!(holder.is_held());
    within("release", holder.release()).await.expect("release");
}

// ---------------------------------------------------------------------------------------------
// 8. A protocol version 1 client under a daemon's max-hold
// ---------------------------------------------------------------------------------------------

/// A client of the first release knows nothing of max-hold, but the daemon's cap applies to
/// it: it hears a plain lost lease naming the max-hold, and the lock is free after.
#[tokio::test(flavor = "multi_thread")]
async fn a_version_1_client_hears_the_max_hold_as_a_lost_lease() {
    let daemon = Daemon::start_with(&Store::Mem.daemon_config("max-hold = \"500ms\"\n", ""));
    let target = "mem:///sets/v1.csv";
    let (mut old, welcome) = v1::Client::connect(daemon.socket())
        .await
        .expect("a version 1 client");
    assert_eq!(welcome.protocol_version, 1);
    old.request(
        1,
        v1::Request::Acquire(v1::AcquireRequest {
            target: target.into(),
            ttl: None,
            owner_id: Some("release-1".into()),
            wait: v1::WaitMode::Try,
            ask_on_stale: false,
            detached: false,
        }),
    )
    .await;
    let mut granted = false;
    let reason = loop {
        match within("the version 1 client's frames", old.next()).await {
            Ok(v1::ServerFrame::Response {
                id: 1,
                result: Ok(v1::Response::Granted(_)),
            }) => granted = true,
            Ok(v1::ServerFrame::Event {
                event: v1::Event::LeaseRenewed { .. },
                ..
            }) => {}
            Ok(v1::ServerFrame::Event {
                id: 1,
                event: v1::Event::LeaseLost { reason },
            }) => break reason,
            Ok(other) => panic!("unexpected frame {other:?}"),
            Err(e) => panic!("the version 1 client failed: {e}"),
        }
    };
    assert!(granted, "granted before it was lost");
    assert!(
        reason.contains("max-hold") && reason.contains("500ms"),
        "{reason}"
    );
    let client = daemon.client().await;
    let mut lock = client.new_lock(target, exclusive());
    within("a try", lock.acquire())
        .await
        .expect("the daemon released it");
    within("release", lock.release()).await.expect("release");
    // The old client's connection is still served.
    old.request(2, v1::Request::Ping).await;
    loop {
        match within("a pong", old.next()).await {
            Ok(v1::ServerFrame::Response {
                id: 2,
                result: Ok(v1::Response::Pong),
            }) => break,
            Ok(v1::ServerFrame::Event { .. }) => {}
            other => panic!("expected a pong, got {other:?}"),
        }
    }
}

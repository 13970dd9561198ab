//! Supervision (issue 12): a lock actor whose handler panics is replaced at once by a fresh one
//! that cleans up after it. Its holder is told the lease is lost, its waiters and the request
//! that made it fail are answered, its lock file is deleted, the connections' counts are
//! corrected, the failure is logged with the panic message, and the next request is served.
//!
//! The panic comes from the `faults` build's hook: an acquire whose owner id is
//! `[faults] panic-owner` makes its target's actor panic.

use std::path::Path;

use vfslock::{ErrorKind, LockOptions};
use vfslock_tests::{eventually, next_position, targets, watch_queue, within, Daemon, TEST_CONFIG};

const TRIGGER: &str = "panic now";

fn config() -> String {
    format!(
        "{TEST_CONFIG}\n[limits]\nmax-locks-per-session = 1\n\n[faults]\npanic-owner = \"{TRIGGER}\"\n"
    )
}

async fn a_failed_actor_is_cleaned_up_after_and_replaced(
    daemon: &Daemon,
    target: &str,
    lock_file: Option<&Path>,
) {
    let holder_client = daemon.client().await;
    let mut holder = holder_client.new_lock(target, LockOptions::default());
    holder.acquire().await.expect("acquire");
    if let Some(file) = lock_file {
        assert!(file.exists(), "no lock file at {}", file.display());
    }
    let waiter_client = daemon.client().await;
    let (options, mut positions) = watch_queue(LockOptions::default());
    let mut waiting = waiter_client.new_lock(target, options);
    let waiter = tokio::spawn(async move { waiting.acquire_wait().await });
    assert_eq!(next_position(&mut positions).await, 1);
    let status = holder_client.status().await.expect("status");
    assert_eq!((status.held, status.waiting), (1, 1));

    let trigger_client = daemon.client().await;
    let mut trigger = trigger_client.new_lock(target, LockOptions::default().owner_id(TRIGGER));
    let error = trigger.acquire().await.expect_err("the actor failed on it");
    assert_eq!(error.kind(), ErrorKind::Internal, "{error}");
    assert!(error.message().contains("vfslockd failed"), "{error}");
    assert!(error.message().contains("send it again"), "{error}");

    let lost = within("the holder to hear of the loss", holder.lost()).await;
    assert!(lost.contains("vfslockd failed"), "{lost}");
    assert!(lost.contains("acquire the lock again"), "{lost}");
    assert!(!holder.is_held());
    // The kind says the daemon failed, not the store or another holder.
    let released = holder.release().await.expect_err("the lease was lost");
    assert_eq!(released.kind(), ErrorKind::Internal, "{released}");
    let waited = within("the waiter's answer", waiter)
        .await
        .expect("waiter task")
        .expect_err("the waiter is answered with an error");
    assert_eq!(waited.kind(), ErrorKind::Internal, "{waited}");
    assert!(waited.message().contains("vfslockd failed"), "{waited}");
    if let Some(file) = lock_file {
        eventually("the failed actor's lock file to be deleted", || {
            !file.exists()
        })
        .await;
    }

    // The holder's connection may hold one lock (`max-locks-per-session = 1`): its count
    // was corrected, so it can lock again; the target is served by a fresh actor.
    let mut again = holder_client.new_lock(target, LockOptions::default());
    again.acquire().await.expect("the next acquire is served");
    assert!(again.is_held());
    let status = holder_client.status().await.expect("status");
    assert_eq!(
        (status.held, status.waiting),
        (1, 0),
        "{target}: {status:?}"
    );
    again.release().await.expect("release");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lock_actor_that_panics_is_replaced_and_everything_it_held_is_settled() {
    let daemon = Daemon::start_with(&config());
    for (target, lock_file) in targets(&daemon, "supervised.csv") {
        a_failed_actor_is_cleaned_up_after_and_replaced(&daemon, &target, lock_file.as_deref())
            .await;
    }
    let log = daemon.log();
    let failures = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("the lock actor failed"))
        .collect::<Vec<_>>();
    assert_eq!(failures.len(), 2, "one error per failure:\n{log}");
    assert!(
        failures.iter().all(|l| l.contains("panics on request")),
        "the panic message is logged:\n{log}"
    );
}

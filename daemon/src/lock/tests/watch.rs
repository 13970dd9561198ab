use std::sync::Arc;
use std::time::Duration;

use vfslock_proto::{ErrorKind, Response, WaitMode};

use crate::address::Address;
use crate::link::SessionLink;
use crate::lock::tests::{answer, foreign_record, granted, released, Daemon, Frames};
use crate::lock::LockMessage;

const TARGET: &str = "mem:///watched";

impl Daemon {
    /// Asks, for `session`'s request `id`, to be told when `target` is not held.
    async fn watch(
        &self,
        session: &Arc<SessionLink>,
        id: u64,
        target: &str,
        timeout: Option<Duration>,
    ) {
        let message = LockMessage::WatchRelease {
            session: session.clone(),
            id,
            timeout,
        };
        self.send(target, message).await
    }

    /// Waits until the actor of `target` has handled everything sent to it before: a
    /// describe by a session of its own goes through the same mailbox, after them.
    async fn barrier(&self, target: &str) {
        let (asker, mut frames) = self.session(99, 0);
        let message = LockMessage::Describe {
            session: asker.clone(),
            id: 1,
        };
        self.send(target, message).await;
        answer(&mut frames).await.expect("described");
    }

    /// Deletes `target`'s lock file straight from its store, as its holder elsewhere would.
    async fn remove_lock_file(&self, target: &str) {
        let address = Address::parse(target).unwrap();
        let store = self.ctx.stores.for_address(&address).unwrap();
        let path = crate::store::lock_path(&address);
        let observed = store.read(&path).await.unwrap().expect("a lock file");
        store.delete(&path, &observed.version()).await.unwrap();
    }
}

/// Nothing was written to `frames` so far.
fn silent(frames: &mut Frames) {
    assert!(frames.try_recv().is_err(), "an answer came too early");
}

#[tokio::test]
async fn a_free_target_is_answered_at_once_and_a_stale_lock_file_holds_nobody() {
    let daemon = Daemon::start().await;
    let (watcher, mut frames) = daemon.session(1, 1000);
    daemon.watch(&watcher, 1, TARGET, None).await;
    assert_eq!(answer(&mut frames).await, Ok(Response::NotHeld));

    let stale = "mem:///watched/stale";
    let ttl = Duration::from_secs(30);
    daemon
        .plant(stale, foreign_record(Duration::from_secs(3600), ttl))
        .await;
    daemon.watch(&watcher, 2, stale, None).await;
    assert_eq!(answer(&mut frames).await, Ok(Response::NotHeld));
    assert!(
        daemon.lock_file(stale).await.is_some(),
        "a watcher takes nothing, steals nothing"
    );
}

#[tokio::test]
async fn a_holding_here_wakes_its_watchers_when_it_ends_not_when_it_is_handed_on() {
    let daemon = Daemon::start().await;
    let (holder, mut holder_frames) = daemon.session(1, 1000);
    let (next, mut next_frames) = daemon.session(2, 1000);
    let (watcher, mut frames) = daemon.session(3, 1000);
    daemon.acquire(&holder, 1, TARGET, WaitMode::Try).await;
    let held = granted(&mut holder_frames).await;
    daemon.watch(&watcher, 7, TARGET, None).await;
    daemon
        .acquire(&next, 1, TARGET, WaitMode::Wait { timeout: None })
        .await;
    daemon.barrier(TARGET).await;
    silent(&mut frames);

    // Handed straight to the waiter: still held.
    daemon.release(&holder, 2, TARGET, &held.lock_id).await;
    released(&mut holder_frames).await;
    let handed = granted(&mut next_frames).await;
    daemon.barrier(TARGET).await;
    silent(&mut frames);

    // The last holder lets go: the watcher hears it, and the lock was not taken for it.
    daemon.release(&next, 2, TARGET, &handed.lock_id).await;
    released(&mut next_frames).await;
    assert_eq!(answer(&mut frames).await, Ok(Response::NotHeld));
    assert!(daemon.lock_file(TARGET).await.is_none());
    assert_eq!(watcher.open_acquires(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_holder_elsewhere_is_rechecked_until_its_lock_file_is_gone() {
    let daemon = Daemon::start().await;
    let (watcher, mut frames) = daemon.session(1, 1000);
    let ttl = Duration::from_secs(3600);
    daemon
        .plant(TARGET, foreign_record(Duration::ZERO, ttl))
        .await;
    daemon.watch(&watcher, 1, TARGET, None).await;
    daemon.barrier(TARGET).await;
    silent(&mut frames);
    daemon.remove_lock_file(TARGET).await;
    // Found by a re-check (the clock is paused: the runtime jumps to each timer).
    assert_eq!(answer(&mut frames).await, Ok(Response::NotHeld));
}

#[tokio::test(start_paused = true)]
async fn a_watch_times_out_naming_the_holder_and_can_be_cancelled() {
    let daemon = Daemon::start().await;
    let (holder, mut holder_frames) = daemon.session(1, 1000);
    let (watcher, mut frames) = daemon.session(2, 1000);
    daemon.acquire(&holder, 1, TARGET, WaitMode::Try).await;
    granted(&mut holder_frames).await;

    daemon
        .watch(&watcher, 1, TARGET, Some(Duration::from_millis(300)))
        .await;
    let error = answer(&mut frames).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Timeout);
    assert!(error.message.contains("still held"), "{}", error.message);
    assert_eq!(error.holder.map(|h| h.pid), Some(holder.caller.pid));

    daemon.watch(&watcher, 2, TARGET, None).await;
    let cancel = LockMessage::Cancel {
        session: watcher.clone(),
        id: 3,
        acquire_id: 2,
    };
    daemon.send(TARGET, cancel).await;
    let mut answers = Vec::new();
    for _ in 0..2 {
        match crate::lock::tests::next(&mut frames).await {
            vfslock_proto::ServerFrame::Response { id, result } => answers.push((id, result)),
            other => panic!("{other:?}"),
        }
    }
    answers.sort_by_key(|(id, _)| *id);
    assert_eq!(answers[0].0, 2);
    assert_eq!(
        answers[0].1.as_ref().unwrap_err().kind,
        ErrorKind::Cancelled
    );
    assert_eq!(answers[1], (3, Ok(Response::Cancelled)));
}

//! Waiting for a release without taking the lock (`vfslockctl wait`,
//! `Client::wait_released`): for a job that must run after another one, and for scripts that
//! would otherwise poll `show`.
//!
//! A watcher is answered as soon as the target is not held: no lock file, or a stale one (a
//! stale file holds nobody). It never takes the lock, never marks this daemon as waiting and
//! never delays a waiter. Held here, it is woken when the holding ends: after the message that
//! ended it, one read of the lock file tells whether the target is free or already held again
//! (by a waiter of this daemon the lock was handed to, or by another host). Held elsewhere, it
//! looks again on the re-check schedule that waiting acquires use (backoff, and never later
//! than the moment the file turns stale), so watchers and waiters of one target share their
//! reads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::ActorRef;
use vfslock_proto::{ErrorKind, LockMetadata, RequestId, Response, WireError};

use super::actor::{LockActor, LockMessage};
use super::replies::describe_holder;
use super::state::LockState;
use crate::link::SessionLink;
use crate::lockfile::joint::Joint;
use crate::store::StoreError;

/// The requests waiting for a target's release, and when to look at its lock file.
#[derive(Debug, Default)]
pub struct Watchers {
    waiting: Vec<Watcher>,
    /// A look at the lock file is due: a watcher came, a holding here ended, or a re-check
    /// fell due.
    look_due: bool,
    /// Whether the lock was held here when the watchers last looked, so that the end of the
    /// holding is noticed whichever message ended it.
    held_here: bool,
}

/// One request waiting for a release.
#[derive(Debug)]
struct Watcher {
    session: Arc<SessionLink>,
    id: RequestId,
    since: Instant,
}

impl Watchers {
    /// Whether no request waits for a release.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Takes out the watcher `id` of session `session_id`.
    fn remove(&mut self, session_id: u64, id: RequestId) -> Option<Watcher> {
        let at = self
            .waiting
            .iter()
            .position(|w| w.session.id == session_id && w.id == id)?;
        Some(self.waiting.remove(at))
    }

    /// Drops the watchers of a closed connection (there is no one to answer).
    pub fn remove_session(&mut self, session_id: u64) {
        self.waiting.retain(|w| w.session.id != session_id);
    }

    /// A re-check fell due: look at the lock file after this message.
    pub fn recheck_due(&mut self) {
        if !self.waiting.is_empty() {
            self.look_due = true;
        }
    }
}

impl LockActor {
    /// Request: answer `id` of `session` when the target is not held, or after `timeout`.
    pub(super) fn on_watch(
        &self,
        myself: &ActorRef<LockMessage>,
        state: &mut LockState,
        session: Arc<SessionLink>,
        id: RequestId,
        timeout: Option<Duration>,
    ) {
        if let Some(timeout) = timeout {
            let session_id = session.id;
            myself.send_after(timeout, move || LockMessage::WaitExpired {
                session_id,
                acquire_id: id,
            });
        }
        state.watchers.waiting.push(Watcher {
            session,
            id,
            since: Instant::now(),
        });
        state.watchers.look_due = true;
    }

    /// After each message that found watchers: answers them if the target is no longer held, else makes
    /// sure they look again (when a holding here ends, or on the re-check schedule).
    pub(super) async fn look_for_release(
        &self,
        myself: &ActorRef<LockMessage>,
        state: &mut LockState,
    ) {
        let watchers = &mut state.watchers;
        watchers.waiting.retain(|w| !w.session.is_closed());
        if watchers.waiting.is_empty() {
            watchers.look_due = false;
            watchers.held_here = false;
            return;
        }
        if !state.phase.is_free() {
            // Held here (or a steal is pending): the end of it is what they wait for.
            watchers.held_here = true;
            return;
        }
        if std::mem::take(&mut watchers.held_here) {
            watchers.look_due = true;
        }
        if !std::mem::take(&mut watchers.look_due) {
            return;
        }
        let read = self
            .within(state.target.store.read(&state.target.lock_path))
            .await;
        let holder = match read {
            Ok(None) => None,
            Ok(Some(observed)) => {
                let (holder, stale) = self.judge(state, &observed);
                let holds_nobody = match Joint::parse(&observed.bytes) {
                    Some(joint) => {
                        self.expired_entries(state, &observed, &joint).len() >= joint.holders.len()
                    }
                    None => stale,
                };
                (!holds_nobody).then_some(holder)
            }
            // A file nobody here may read is held (as for acquires); a store that fails is
            // asked again on the re-check schedule.
            Err(StoreError {
                unreadable: Some(file),
                ..
            }) => Some(super::replies::unreadable_holder(&file)),
            Err(e) => {
                tracing::debug!(target = %state.target.url, error = %e,
                    "cannot read the lock file for the requests waiting for its release");
                self.schedule_recheck(myself, state, None);
                return;
            }
        };
        match holder {
            None => self.answer_watchers(state),
            Some(holder) => {
                self.saw_holder(state, &holder);
                self.schedule_recheck(myself, state, Some(&holder));
            }
        }
    }

    /// The target is not held: every watcher is answered.
    fn answer_watchers(&self, state: &mut LockState) {
        for watcher in state.watchers.waiting.drain(..) {
            tracing::debug!(target = %state.target.url, waited = ?watcher.since.elapsed(),
                "not held: a request waiting for its release is answered");
            watcher.session.reply(watcher.id, Ok(Response::NotHeld));
        }
        if state.queue.is_empty() {
            state.recheck.delay = self.ctx.settings.locks.recheck_min;
        }
    }

    /// The watcher `id` of `session_id` ran out of time: it is told who holds the lock.
    /// Returns false when no such watcher waits (answered already, or an acquire's id).
    pub(super) async fn watch_expired(
        &self,
        state: &mut LockState,
        session_id: u64,
        id: RequestId,
    ) -> bool {
        let Some(watcher) = state.watchers.remove(session_id, id) else {
            return false;
        };
        let holder = self.holder_metadata(state).await;
        let error = still_held(&state.target.url, watcher.since.elapsed(), holder.as_ref());
        watcher.session.reply(id, Err(error));
        true
    }

    /// The watcher `id` of `session_id` is cancelled. Returns false when no such watcher waits.
    pub(super) fn cancel_watch(
        &self,
        state: &mut LockState,
        session_id: u64,
        id: RequestId,
    ) -> bool {
        let Some(watcher) = state.watchers.remove(session_id, id) else {
            return false;
        };
        watcher.session.reply(id, Err(super::replies::cancelled()));
        true
    }

    /// The daemon stops: every watcher is told.
    pub(super) fn shut_down_watchers(&self, state: &mut LockState) {
        for watcher in state.watchers.waiting.drain(..) {
            watcher
                .session
                .reply(watcher.id, Err(super::replies::shutting_down()));
        }
    }
}

/// The answer to a watcher whose timeout ran out.
fn still_held(url: &str, waited: Duration, holder: Option<&LockMetadata>) -> WireError {
    let mut error = WireError::new(
        ErrorKind::Timeout,
        format!(
            "{url} was still held after {waited:.1?} of waiting for its release: {}",
            describe_holder(holder)
        ),
    );
    error.holder = holder.cloned().map(Box::new);
    error
}

#[cfg(test)]
#[path = "tests/watch.rs"]
mod tests;

//! Cleanup: what is left when a holding, a connection, an actor or the daemon ends.
//!
//! - a lock file of ours whose delete failed is retried with backoff ([`Leftover`]);
//! - a closed connection's waits are dropped and its holding released;
//! - an idle actor retires, with the registry's agreement that no message is on its way;
//! - at shutdown, holders are told, lock files deleted if still ours, waiters refused;
//! - after an actor failed, its successor answers what the failed one left open and deletes
//!   its lock files (the crash journal's rule) before serving anything else.
//!
//! Handles [`LockMessage::SessionClosed`], [`LockMessage::IdleCheck`],
//! [`LockMessage::RetryDelete`], [`LockMessage::Shutdown`] and [`LockMessage::Recover`].

use std::time::{Duration, Instant};

use ractor::{ActorId, ActorRef};
use vfslock_proto::{ErrorKind, Event};

use super::actor::{LockActor, LockMessage};
use super::audit::Ended;
use super::lifecycle::must;
use super::replies::{self, STOPPING};
use super::state::{Leftover, LockState};
use crate::store::{Conditional, Version};

impl LockActor {
    /// [`delete_if_ours`](Self::delete_if_ours) at the end of a holding: a delete that fails
    /// is retried later ([`Leftover`]).
    pub(super) async fn delete_or_retry(
        &self,
        state: &mut LockState,
        written: &Version,
    ) -> Option<Conditional> {
        let outcome = self.delete_if_ours(state, written).await;
        if outcome.is_none() {
            let ttl_ns = crate::lockfile::parse(&written.bytes).ttl_ns;
            let ttl = u64::try_from(ttl_ns)
                .ok()
                .filter(|&ns| ns > 0)
                .map_or(self.ctx.settings.locks.default_ttl, Duration::from_nanos);
            state.leftover = Some(Box::new(Leftover {
                version: written.clone(),
                entry: None,
                give_up_at: Instant::now() + ttl,
                delay: self.ctx.settings.locks.recheck_min,
                scheduled: false,
            }));
        }
        outcome
    }

    /// Schedules the retry of a leftover's delete, once.
    pub(super) fn schedule_leftover(&self, myself: &ActorRef<LockMessage>, state: &mut LockState) {
        if let Some(leftover) = state.leftover.as_mut().filter(|l| !l.scheduled) {
            leftover.scheduled = true;
            myself.send_after(leftover.delay, || LockMessage::RetryDelete);
        }
    }

    /// Retries the delete of a leftover: done, failed again (backoff), or given up once the
    /// file is stale anyway.
    pub(super) async fn retry_delete(&self, myself: &ActorRef<LockMessage>, state: &mut LockState) {
        let Some(mut leftover) = state.leftover.take() else {
            return;
        };
        leftover.scheduled = false;
        let outcome = match &leftover.entry {
            Some(entry) => self
                .remove_own_entry(state, entry)
                .await
                .map(|gone| format!("entry removed: {gone}")),
            None => self
                .delete_exactly(state, &leftover.version)
                .await
                .map(|outcome| format!("{outcome:?}")),
        };
        match outcome {
            Ok(outcome) => {
                tracing::info!(target = %state.target.url, %outcome, "retried the delete of our lock file");
                if let Some(entry) = &leftover.entry {
                    self.ctx.journal_release(entry);
                }
                // Waiters here may take it now rather than at their next re-check.
                self.serve_queue(myself, state).await;
            }
            Err(e) if Instant::now() < leftover.give_up_at => {
                tracing::debug!(target = %state.target.url, error = %e, "the delete of our lock file failed again");
                leftover.delay = (leftover.delay * 2).min(self.ctx.settings.locks.recheck_max);
                state.leftover = Some(leftover);
            }
            Err(e) => {
                tracing::error!(
                    target = %state.target.url,
                    error = %e,
                    "gave up deleting our lock file; it is stale now"
                );
                if let Some(entry) = &leftover.entry {
                    self.ctx.journal_release(entry);
                }
            }
        }
    }

    /// Deletes the lock file if it is still exactly `version`, within the store timeout.
    pub(super) async fn delete_exactly(
        &self,
        state: &LockState,
        version: &Version,
    ) -> Result<Conditional, crate::store::StoreError> {
        self.within(state.target.store.delete(&state.target.lock_path, version))
            .await
    }

    /// Deletes the lock file if it still holds `written`; logs what else happened.
    pub(super) async fn delete_if_ours(
        &self,
        state: &LockState,
        written: &Version,
    ) -> Option<Conditional> {
        match self.delete_exactly(state, written).await {
            Ok(Conditional::Done) => Some(Conditional::Done),
            Ok(Conditional::Changed) => {
                tracing::warn!(
                    target = %state.target.url,
                    "the lock file was no longer the one this daemon wrote; left it alone"
                );
                Some(Conditional::Changed)
            }
            Err(e) => {
                tracing::error!(
                    target = %state.target.url,
                    error = %e,
                    "could not delete the lock file"
                );
                None
            }
        }
    }

    /// A connection closed: its waits end, and what it holds is released.
    pub(super) async fn drop_session(
        &self,
        myself: &ActorRef<LockMessage>,
        state: &mut LockState,
        session_id: u64,
    ) {
        state.queue.remove_session(session_id);
        state.watchers.remove_session(session_id);
        if state
            .phase
            .steal()
            .is_some_and(|s| s.waiter.session.id == session_id)
        {
            must(state.phase.end_steal());
        }
        if state.holding().is_some_and(|h| h.session.id == session_id) {
            let _ = self
                .release_holder(myself, state, Ended::ConnectionClosed)
                .await;
        }
        let members: Vec<_> = state.joint().map_or_else(Vec::new, |j| {
            j.members
                .iter()
                .filter(|m| m.session.id == session_id)
                .map(|m| m.acquire_id)
                .collect()
        });
        for acquire_id in members {
            let _ = self
                .leave_joint(
                    myself,
                    state,
                    (session_id, acquire_id),
                    Ended::ConnectionClosed,
                )
                .await;
        }
    }

    /// The daemon is stopping: waiters are refused, the holder is told and its lock file
    /// deleted if still ours.
    pub(super) async fn shut_down(&self, state: &mut LockState) {
        self.shut_down_watchers(state);
        for waiter in state.queue.drain() {
            waiter
                .session
                .reply(waiter.acquire_id, Err(replies::shutting_down()));
        }
        if let Ok(pending) = state.phase.end_steal() {
            pending
                .waiter
                .session
                .reply(pending.waiter.acquire_id, Err(replies::shutting_down()));
        }
        if let Ok(holding) = state.phase.end_holding() {
            let cause = crate::metrics::LossCause::DaemonStopping;
            self.audit_ended(&state.target.url, &holding, Ended::Lost(cause, STOPPING));
            self.tally.held(vfslock_proto::LockMode::Exclusive, -1);
            self.tally.hold_ended(holding.since);
            self.tally.lost(cause, 1);
            holding.session.event(
                holding.acquire_id,
                Event::Releasing {
                    reason: STOPPING.into(),
                },
            );
            self.delete_if_ours(state, &holding.written).await;
            self.ctx.journal_release(&holding.record.lock_id);
            holding.session.acquire_ended(holding.acquire_id);
        }
        self.shut_down_joint(state).await;
        let _ = state.phase.retire();
    }

    /// Keeps an idle-check timer running while the actor is idle.
    pub(super) fn track_idleness(&self, myself: &ActorRef<LockMessage>, state: &mut LockState) {
        if !state.is_idle() {
            state.idle.since = None;
            return;
        }
        if state.idle.since.is_none() {
            state.idle.since = Some(Instant::now());
        }
        if !state.idle.check_scheduled {
            state.idle.check_scheduled = true;
            myself.send_after(self.ctx.settings.locks.idle_actor_timeout, || {
                LockMessage::IdleCheck
            });
        }
    }

    /// Stops the actor if it has been idle long enough and the registry agrees that no
    /// message is on its way to it.
    pub(super) fn try_retire(&self, myself: &ActorRef<LockMessage>, state: &mut LockState) -> bool {
        let idle_long_enough = state
            .idle
            .since
            .is_some_and(|since| since.elapsed() >= self.ctx.settings.locks.idle_actor_timeout);
        if state.is_idle()
            && idle_long_enough
            && self
                .registry
                .try_retire(&state.target.key, myself.get_id(), state.idle.handled)
        {
            must(state.phase.retire());
            myself.stop(Some("idle".into()));
            return true;
        }
        false
    }

    /// Cleans up after `failed`, the actor that served this target before and died (a panic in
    /// a handler). Its state is gone, so what it had open comes from outside it: the
    /// connections' open requests routed to it, and the crash journal's entries for this
    /// target. In this order: its holders are told their lease is lost; every other request it
    /// left unanswered (waiters, requests still in its mailbox) gets an error; then its lock
    /// files are deleted where they are still ours. Detached leases are not journaled and stay,
    /// as they do across a restart. This runs as the successor's first message, so nothing is
    /// granted here before it is done.
    pub(super) async fn recover(&self, state: &LockState, failed: ActorId, why: &str) {
        let url = &state.target.url;
        let mut told = 0;
        let mut answered = 0;
        let sessions = self.ctx.sessions.all();
        let mut orphans = Vec::with_capacity(sessions.len());
        for session in sessions {
            let open = session.open_at(failed);
            if !open.held.is_empty() || !open.pending.is_empty() {
                orphans.push((session, open));
            }
        }
        for (session, open) in &orphans {
            for &id in &open.held {
                // Kind `Internal`: the daemon failed, not the store or another holder.
                session.event(
                    id,
                    Event::LeaseEnded {
                        kind: ErrorKind::Internal,
                        reason: replies::daemon_failed_holder(url, why),
                    },
                );
                told += 1;
                self.tally.lost(crate::metrics::LossCause::DaemonFailed, 1);
            }
        }
        for (session, open) in &orphans {
            for &id in &open.pending {
                session.reply(id, Err(replies::daemon_failed_request(url, why)));
                answered += 1;
            }
        }
        let (mut deleted, kept) = match &self.ctx.journal {
            Some(journal) => journal.recover_target(&self.ctx.stores, url).await,
            None => (0, 0),
        };
        if state.target.store.is_private() && self.delete_private_leftover(state).await {
            deleted += 1;
        }
        tracing::warn!(target = %url, holders_told = told, requests_answered = answered, lock_files_deleted = deleted, lock_files_kept = kept, "cleaned up after the failed lock actor");
    }

    /// A private store's lock files are not journaled (they die with the daemon), but they
    /// outlive an actor: only this daemon writes there, and only the failed actor wrote this
    /// target's file, so a file with this daemon's id that is not a detached lease was its.
    async fn delete_private_leftover(&self, state: &LockState) -> bool {
        let Ok(Some(observed)) = self
            .within(state.target.store.read(&state.target.lock_path))
            .await
        else {
            return false;
        };
        if let Some(mut joint) = crate::lockfile::joint::Joint::parse(&observed.bytes) {
            // Only this daemon writes a private store: every entry is ours; detached leases
            // stay, the failed actor's connection-held entry goes.
            joint.holders.retain(|h| h.detached);
            return self.keep_only(state, &observed, joint).await;
        }
        let parsed = crate::lockfile::parse(&observed.bytes);
        if parsed.detached || parsed.daemon_id.as_deref() != Some(self.ctx.instance_id.as_str()) {
            return false;
        }
        matches!(
            self.delete_if_ours(state, &observed.version()).await,
            Some(Conditional::Done)
        )
    }
}

impl LockActor {
    /// Rewrites the lock file read as `observed` to list only `joint`'s holders (deleting it if
    /// none is left), if it is still that version; whether anything was removed.
    async fn keep_only(
        &self,
        state: &LockState,
        observed: &crate::store::Observed,
        joint: crate::lockfile::joint::Joint,
    ) -> bool {
        if joint.holders.is_empty() {
            return matches!(
                self.delete_if_ours(state, &observed.version()).await,
                Some(Conditional::Done)
            );
        }
        let now = self.ctx.now();
        let writer = self.ctx.instance_id.clone();
        let make: crate::store::MakeLock =
            Box::new(move |_| joint.to_json(&crate::context::random_id(), &writer, now));
        matches!(
            self.within(state.target.store.replace(
                &state.target.lock_path,
                &observed.version(),
                crate::store::Token::Keep,
                make,
            ))
            .await,
            Ok(crate::store::Replaced::Done(_))
        )
    }
}

#[cfg(test)]
#[path = "tests/cleanup.rs"]
mod tests;

//! Handoff fairness between this daemon's waiters and other hosts'.
//!
//! A release with a local waiter hands the lock straight over (one conditional replace, no
//! window in which the file is absent). Other hosts' waiters only poll, so an unbroken run of
//! local handoffs would starve them: the run is capped (`handoff-max-count`, `handoff-max-time`)
//! and followed by a cooldown in which the lock is released for real. The cap only applies while
//! some other daemon has lately marked itself waiting in the store; private stores (`mem://`)
//! have no other hosts and no cap.

use super::actor::LockActor;
use super::state::{LockState, Waiter};

impl LockActor {
    /// While this daemon's waiters wait for a holder elsewhere (not for a cooldown of its own),
    /// tells the other daemons, once per re-check, so that the holder's daemon gives them their
    /// turn ([`Self::uncap_if_nobody_else_waits`]); while one of them is exclusive, the mark
    /// says so, and other hosts let no new shared holder in ([`crate::store::waiting`]). Once
    /// no exclusive request waits any more, a mark that said so is taken back.
    pub(super) async fn mark_waiting(&self, state: &mut LockState) {
        // Nobody else can wait for a private store's lock; the hot path pays nothing here.
        if state.target.store.is_private()
            || (state.queue.is_empty() && state.recheck.marked_exclusive.is_none())
        {
            return;
        }
        let exclusive = state.queue.has_exclusive();
        let store = state.target.store.clone();
        let now = self.ctx.now();
        let settings = &self.ctx.settings;
        let fresh_for = (
            settings.locks.recheck_max * 3,
            settings.locks.skew_allowance,
        );
        if state.recheck.marked_exclusive.is_some() && !exclusive {
            state.recheck.marked_exclusive = None;
            store
                .mark_waiting(
                    &state.target.lock_path,
                    &self.ctx.instance_id,
                    false,
                    now,
                    fresh_for,
                )
                .await;
            return;
        }
        let waits_elsewhere = state.holding().is_none()
            && !state.queue.is_empty()
            && (state.recheck.scheduled || state.joint().is_some())
            && state.handoff.cooldown_until.is_none();
        if !waits_elsewhere || state.recheck.marked_generation == state.recheck.generation {
            return;
        }
        // Object stores: marks cost a PUT each, and serve only a writer waiting for shared
        // holders, at most once per interval.
        if store.is_object() {
            let due = state
                .recheck
                .marked_exclusive
                .is_none_or(|at| at.elapsed() >= crate::store::waiting::MARK_INTERVAL);
            if !(exclusive && (state.recheck.joint_seen || state.joint().is_some()) && due) {
                return;
            }
        }
        state.recheck.marked_generation = state.recheck.generation;
        if exclusive {
            state.recheck.marked_exclusive = Some(std::time::Instant::now());
        }
        store
            .mark_waiting(
                &state.target.lock_path,
                &self.ctx.instance_id,
                exclusive,
                now,
                fresh_for,
            )
            .await;
    }

    /// At a capped handoff streak, starts a new one if no daemon elsewhere marked itself
    /// waiting lately: the cap and its cooldown exist for other hosts' waiters, which poll, and
    /// without them they would only slow down this daemon's queue.
    pub(super) async fn uncap_if_nobody_else_waits(&self, state: &mut LockState) {
        let settings = &self.ctx.settings;
        let capped = state.handoff.streak.is_some_and(|(count, since)| {
            count >= settings.locks.handoff_max_count
                || since.elapsed() >= settings.locks.handoff_max_time
        });
        if !capped || state.queue.is_empty() {
            return;
        }
        // A waiting daemon re-checks at least every `recheck-max` (with jitter).
        let fresh = settings.locks.recheck_max * 3;
        if !state
            .target
            .store
            .others_waiting(&state.target.lock_path, fresh, &self.ctx.instance_id)
            .await
        {
            state.handoff.streak = None;
        }
    }

    /// The next local waiter to hand the lock to, if the handoff streak allows one more.
    pub(super) fn next_handoff(&self, state: &mut LockState) -> Option<Waiter> {
        if !state.target.store.can_replace() || !self.handoff_allowed(state) {
            return None;
        }
        // Handed over are exclusive waiters only: a shared-mode head takes the lock from the
        // store once the file is gone (release, then the queue is served). A head held back for
        // an earlier waiter of the previous run is not handed anything either.
        if state.servable_head()?.mode != vfslock_proto::LockMode::Exclusive {
            return None;
        }
        state.queue.pop_front()
    }

    /// Whether the streak allows one more handoff.
    pub(super) fn handoff_allowed(&self, state: &LockState) -> bool {
        let settings = &self.ctx.settings;
        match state.handoff.streak {
            // Nobody outside this daemon can wait for a private store's lock: no streak cap, no
            // cooldown; the local queue alone is first come, first served.
            _ if state.target.store.is_private() => true,
            None => settings.locks.handoff_max_count > 0,
            Some((count, since)) => {
                count < settings.locks.handoff_max_count
                    && since.elapsed() < settings.locks.handoff_max_time
            }
        }
    }
}

#[cfg(test)]
#[path = "tests/handoff.rs"]
mod tests;

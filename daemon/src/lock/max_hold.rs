//! Max-hold: a cap on how long a lease that this daemon renews may be held.
//!
//! A lease lives as long as its holder's connection does, and a hung job keeps its connection
//! open: without a cap it holds the lock for ever. With one (the acquire's, or the daemon's
//! `locks.max-hold`), a timer started at the grant ends the holding: the daemon stops renewing,
//! tells the holder first (a loss of kind [`ErrorKind::MaxHoldReached`] that names the cap),
//! then releases the lock as a release would (a handoff to the next waiter, or a conditional
//! delete). Detached leases have no max-hold: nothing renews them, so they end at their TTL.
//!
//! Handles [`LockMessage::HoldExpired`].

use std::time::Duration;

use ractor::ActorRef;
use vfslock_proto::{ErrorKind, Event, RequestId};

use super::actor::{LockActor, LockMessage};
use super::audit::Ended;
use super::replies;
use super::state::{LockState, MaxHold, Waiter};
use super::timing::Timer;
use crate::metrics::LossCause;

impl LockActor {
    /// The timer that ends `waiter`'s holding at its max-hold, if it has one; started when it
    /// is granted.
    pub(super) fn max_hold_timer(
        myself: &ActorRef<LockMessage>,
        waiter: &Waiter,
    ) -> Option<MaxHold> {
        let limit = waiter.max_hold?;
        let (session_id, acquire_id) = (waiter.session.id, waiter.acquire_id);
        let timer = Timer(myself.send_after(limit, move || LockMessage::HoldExpired {
            session_id,
            acquire_id,
        }));
        Some(MaxHold { limit, timer })
    }

    /// The holding of `session_id`'s acquire `acquire_id` reached its max-hold: its holder is
    /// told, then the lock is released. A timer of a holding that already ended finds nothing.
    pub(super) async fn hold_expired(
        &self,
        myself: &ActorRef<LockMessage>,
        state: &mut LockState,
        session_id: u64,
        acquire_id: RequestId,
    ) {
        let url = state.target.url.clone();
        if state
            .holding()
            .is_some_and(|h| h.is(session_id, acquire_id))
        {
            let Ok(holding) = state.phase.end_holding() else {
                return;
            };
            let limit = limit_of(holding.max_hold.as_ref());
            let reason = replies::max_hold_reached(&url, limit);
            self.audit_ended(&url, &holding, Ended::Lost(LossCause::MaxHold, &reason));
            self.tally.held(vfslock_proto::LockMode::Exclusive, -1);
            self.tally.hold_ended(holding.since);
            self.tally.lost(LossCause::MaxHold, 1);
            if holding.unclaimed.is_some() {
                // Kept after a restart and not resumed before its max-hold came.
                self.ctx.restarts.count_lost();
            }
            holding.session.acquire_ended(holding.acquire_id);
            self.ctx.journal_lost(&holding.record.lock_id);
            tell(&holding.session, acquire_id, &url, (limit, &reason));
            let lock_id = holding.record.lock_id.clone();
            // The holder was told before anyone else can be given the lock.
            let _ = self.end_holding(myself, state, holding).await;
            self.ctx.journal_release(&lock_id);
        } else if let Some(member) = state
            .joint()
            .and_then(|j| j.members.iter().find(|m| m.is(session_id, acquire_id)))
        {
            let limit = limit_of(member.max_hold.as_ref());
            let reason = replies::max_hold_reached(&url, limit);
            // Before the holder hears: a restart after this must not hand its share back.
            let entry = &state.joint().expect("found above").entry.lock_id;
            self.ctx.journal_member_left(entry, &member.lock_id);
            tell(&member.session, acquire_id, &url, (limit, &reason));
            self.tally.lost(LossCause::MaxHold, 1);
            let ended = Ended::Lost(LossCause::MaxHold, &reason);
            let _ = self
                .leave_joint(myself, state, (session_id, acquire_id), ended)
                .await;
        } else {
            return;
        }
        self.serve_queue(myself, state).await;
    }
}

fn limit_of(max_hold: Option<&MaxHold>) -> Duration {
    max_hold.map_or(Duration::ZERO, |m| m.limit)
}

/// Tells the holder of `acquire_id` that its lease of `url` ended at its max-hold `limit`, in
/// the words of `reason`.
fn tell(
    session: &crate::link::SessionLink,
    acquire_id: RequestId,
    url: &str,
    (limit, reason): (Duration, &str),
) {
    tracing::info!(target = %url, max_hold = ?limit, "lease ended at its max-hold");
    session.event(
        acquire_id,
        Event::LeaseEnded {
            kind: ErrorKind::MaxHoldReached,
            reason: reason.to_owned(),
        },
    );
}

#[cfg(test)]
#[path = "tests/max_hold.rs"]
mod tests;

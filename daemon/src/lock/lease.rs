//! The lease: granted to a client of this daemon, renewed while the holder lives, lost when it
//! cannot be kept, ended at release (by a handoff or a conditional delete).
//!
//! Handles [`LockMessage::Release`] (with the holding's own lock id) and [`LockMessage::Renew`].
//! A holder is always told of a loss before anything else is done about the lock file.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::ActorRef;
use vfslock_proto::{ErrorKind, Event, Grant, LockMetadata, LockMode, Response, WireError};

use super::acquire::maker;
use super::actor::{LockActor, LockMessage};
use super::audit::Ended;
use super::lifecycle::must;
use super::replies;
use super::state::{Holding, LockState, Renewal, Waiter};
use super::timing::{self, first_renewal, next_renewal, Timer};
use crate::lockfile::{self, LockRecord};
use crate::metrics::LossCause;
use crate::store::{Conditional, Replaced, Token, Written};

/// First delay before retrying a failed renewal.
pub(super) const RENEW_RETRY_MIN: Duration = Duration::from_millis(50);

impl LockActor {
    /// Until when a lease confirmed by a write sent at `sent` is certainly valid: the TTL minus
    /// a margin (the larger of a tenth of the TTL and `lease-margin`, at most half the TTL) for
    /// clock drift and the time the holder needs to hear about a loss.
    pub(super) fn valid_until(&self, sent: Instant, ttl: Duration) -> Option<Instant> {
        if ttl.is_zero() {
            return None;
        }
        let margin = (ttl / 10)
            .max(self.ctx.settings.locks.lease_margin)
            .min(ttl / 2);
        Some(sent + (ttl - margin))
    }

    /// What the holder of `record`, valid until `valid_until`, is told.
    pub(super) fn grant_of(
        &self,
        state: &LockState,
        record: &LockRecord,
        valid_until: Option<Instant>,
        stole: Option<LockMetadata>,
    ) -> Grant {
        Grant {
            target: state.target.url.clone(),
            lock_id: record.lock_id.clone(),
            metadata: lockfile::into_wire(record.to_parsed(), None, false),
            stole,
            token: record.token,
            valid_for: valid_until.map(|until| until.saturating_duration_since(Instant::now())),
            valid_until_monotonic_ns: valid_until.and_then(crate::context::monotonic_ns),
        }
    }

    /// Answers `waiter` with its grant, and holds the lock for it (a detached lease is not
    /// held here: its lock file is its state).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn grant(
        &self,
        myself: &ActorRef<LockMessage>,
        state: &mut LockState,
        waiter: Waiter,
        mut record: LockRecord,
        written: Written,
        sent: Instant,
        stole: Option<LockMetadata>,
    ) {
        record.token = written.token;
        let ttl = record.ttl;
        let valid_until = self.valid_until(sent, ttl);
        let grant = self.grant_of(state, &record, valid_until, stole);
        if record.detached {
            waiter
                .session
                .reply(waiter.acquire_id, Ok(Response::Granted(grant)));
            waiter.session.acquire_ended(waiter.acquire_id);
            // A detached lease belongs to its uid and lock id, not to this actor's session
            // bookkeeping: nothing renews or releases it here; its lock file is its state.
            tracing::info!(target = %state.target.url, uid = ?record.uid, lock_id = %record.lock_id, ttl = ?record.ttl, "detached lease granted");
            return;
        }
        // Held and counted before the holder hears: what it then asks (`status`) agrees.
        let (session, acquire_id) = (waiter.session.clone(), waiter.acquire_id);
        let max_hold = Self::max_hold_timer(myself, &waiter);
        if max_hold.is_some() {
            // Before the holder hears of it: a restart ends the holding at the same time.
            let until = self.ctx.now() + waiter.max_hold.unwrap_or_default();
            self.ctx.journal_cap(&record.lock_id, until);
        }
        must(state.phase.hold(Holding {
            session: waiter.session,
            acquire_id: waiter.acquire_id,
            record,
            written: written.version(),
            since: Instant::now(),
            valid_until,
            renewal: Renewal::first(RENEW_RETRY_MIN),
            max_hold,
            unclaimed: None,
        }));
        self.tally.held(LockMode::Exclusive, 1);
        session.reply(acquire_id, Ok(Response::Granted(grant)));
        state.recheck.delay = self.ctx.settings.locks.recheck_min;
        if !ttl.is_zero() {
            // A store so slow that the lease is over by the time it answered: the renewal
            // that runs at once finds the deadline passed and reports the loss.
            let next = if valid_until.is_some_and(|until| until <= Instant::now()) {
                Duration::ZERO
            } else {
                first_renewal(ttl).saturating_sub(sent.elapsed())
            };
            schedule_renewal(myself, state, next);
        }
    }

    /// Ends the current holding at its holder's request: hands the lock straight to the next
    /// waiter of this daemon if the streak of such handoffs allows, else deletes the lock file
    /// (if it is still ours). Answers what the releaser is told. `ended` says why, for the
    /// audit log.
    pub(super) async fn release_holder(
        &self,
        myself: &ActorRef<LockMessage>,
        state: &mut LockState,
        ended: Ended<'_>,
    ) -> Result<Response, WireError> {
        let Ok(holding) = state.phase.end_holding() else {
            return Ok(Response::Released { held: false });
        };
        self.audit_ended(&state.target.url, &holding, ended);
        self.tally.held(LockMode::Exclusive, -1);
        self.tally.hold_ended(holding.since);
        let lock_id = holding.record.lock_id.clone();
        holding.session.acquire_ended(holding.acquire_id);
        let outcome = self.end_holding(myself, state, holding).await;
        // After the store write: a crash before it leaves the entry for the next start.
        self.ctx.journal_release(&lock_id);
        outcome
    }

    pub(super) async fn end_holding(
        &self,
        myself: &ActorRef<LockMessage>,
        state: &mut LockState,
        holding: Holding,
    ) -> Result<Response, WireError> {
        if holding
            .valid_until
            .is_some_and(|until| Instant::now() >= until)
        {
            // Past its deadline the lease may already be someone else's; only the conditional
            // delete is allowed, and the releaser learns that it had lost the lease.
            self.delete_or_retry(state, &holding.written).await;
            return Err(replies::lease_lost_at_release(
                &state.target.url,
                "it was not renewed in time",
            ));
        }
        self.uncap_if_nobody_else_waits(state).await;
        if let Some(waiter) = self.next_handoff(state) {
            let (record, sent, replaced) = self.take_over(state, &waiter, &holding.written).await;
            match replaced {
                Ok(Replaced::Done(written)) => {
                    let streak = state.handoff.streak.get_or_insert((0, Instant::now()));
                    streak.0 = streak.0.saturating_add(1);
                    if let Some(instruments) = self.tally.instruments() {
                        instruments.handed_off();
                    }
                    self.grant(myself, state, waiter, record, written, sent, None);
                    return Ok(Response::Released { held: true });
                }
                Ok(Replaced::Changed) => {
                    state.queue.push_front(waiter);
                    return Err(replies::lease_lost_at_release(
                        &state.target.url,
                        "the lock file was replaced or removed by someone else",
                    ));
                }
                Err(e) => {
                    state.queue.push_front(waiter);
                    tracing::warn!(target = %state.target.url, error = %e, "handoff failed; releasing instead");
                }
            }
        }
        let outcome = self.delete_or_retry(state, &holding.written).await;
        if state.handoff.streak.take().is_some() && !state.queue.is_empty() {
            // A capped streak: let other hosts' waiters, which poll, find the lock free.
            let cooldown = self.ctx.settings.locks.handoff_cooldown;
            state.handoff.cooldown_until = Some(Instant::now() + cooldown);
            if let Some(instruments) = self.tally.instruments() {
                instruments.capped();
            }
        }
        match outcome {
            Some(Conditional::Changed) => Err(replies::lease_lost_at_release(
                &state.target.url,
                "the lock file was replaced or removed by someone else",
            )),
            _ => Ok(Response::Released { held: true }),
        }
    }

    /// Ends the holding because its lease is lost: the holder is told first, then (if the
    /// file may still be ours) a conditional delete is the only write left.
    pub(super) async fn lose(
        &self,
        myself: &ActorRef<LockMessage>,
        state: &mut LockState,
        (reason, cause): (String, LossCause),
        try_delete: bool,
    ) {
        let Ok(holding) = state.phase.end_holding() else {
            return;
        };
        self.audit_ended(&state.target.url, &holding, Ended::Lost(cause, &reason));
        self.tally.held(LockMode::Exclusive, -1);
        self.tally.hold_ended(holding.since);
        self.tally.lost(cause, 1);
        tracing::warn!(target = %state.target.url, %reason, "lease lost");
        if holding.unclaimed.is_some() {
            // A holding kept for its session after a restart, which will never get it back.
            self.ctx.restarts.count_lost();
        }
        // Before the holder hears: a restart after this must not hand the holding back.
        self.ctx.journal_lost(&holding.record.lock_id);
        holding.session.acquire_ended(holding.acquire_id);
        holding.session.event(
            holding.acquire_id,
            Event::LeaseEnded {
                kind: ErrorKind::LeaseLost,
                reason,
            },
        );
        if try_delete {
            self.delete_or_retry(state, &holding.written).await;
        }
        self.ctx.journal_release(&holding.record.lock_id);
        self.serve_queue(myself, state).await;
    }

    /// Rewrites the holder's lock file with a fresh `createdAt`, only if it is still the
    /// version we wrote; a failure is retried with backoff until the deadline, which is a loss.
    pub(super) async fn renew(&self, myself: &ActorRef<LockMessage>, state: &mut LockState) {
        let Some(holding) = state.holding() else {
            return;
        };
        let sent = Instant::now();
        let remaining = holding
            .valid_until
            .map(|until| until.saturating_duration_since(sent));
        if remaining == Some(Duration::ZERO) {
            let reason = replies::not_renewed_in_time(&state.target.url);
            return self
                .lose(myself, state, (reason, LossCause::StoreOutage), true)
                .await;
        }
        let mut record = holding.record.clone();
        record.created_at = self.ctx.now();
        let ttl = record.ttl;
        let limit = remaining.map_or(self.ctx.settings.locks.store_timeout, |r| {
            r.min(self.ctx.settings.locks.store_timeout)
        });
        let outcome = timing::within(
            limit,
            state.target.store.replace(
                &state.target.lock_path,
                &holding.written,
                Token::Keep,
                maker(Arc::new(record.clone())),
            ),
        )
        .await;
        match outcome {
            Ok(Replaced::Done(written)) => {
                state.target.store.count_renewal();
                let valid_until = self.valid_until(sent, ttl);
                let holding = state.phase.holding_mut().expect("checked above");
                holding.record = record;
                holding.written = written.version();
                holding.valid_until = valid_until;
                holding.renewal.retry_delay = RENEW_RETRY_MIN;
                if let Some(until) = valid_until {
                    holding.session.event(
                        holding.acquire_id,
                        Event::LeaseRenewed {
                            valid_for: until.saturating_duration_since(Instant::now()),
                            valid_until_monotonic_ns: crate::context::monotonic_ns(until),
                        },
                    );
                }
                let next = next_renewal(ttl).saturating_sub(sent.elapsed());
                schedule_renewal(myself, state, next);
            }
            Ok(Replaced::Changed) => {
                let reason = replies::replaced_by_someone_else(&state.target.url);
                self.lose(myself, state, (reason, LossCause::StolenOrBroken), false)
                    .await;
            }
            Err(e) => {
                // Retry with backoff while the deadline allows; the retry that finds the
                // deadline passed declares the loss.
                let holding = state.phase.holding_mut().expect("checked above");
                let left = holding.valid_until.map_or(Duration::MAX, |until| {
                    until.saturating_duration_since(Instant::now())
                });
                let delay = holding.renewal.retry_delay.min(left);
                holding.renewal.retry_delay = (holding.renewal.retry_delay * 2).min(ttl / 3);
                tracing::warn!(target = %state.target.url, error = %e, retry_in = ?delay, "renewal failed");
                state.target.store.count_renewal_failure();
                schedule_renewal(myself, state, delay);
            }
        }
    }
}

/// Sends this actor the renewal of the current holding (exclusive or joint) after `delay`,
/// replacing (and so stopping) the timer of the one before.
pub(super) fn schedule_renewal(
    myself: &ActorRef<LockMessage>,
    state: &mut LockState,
    delay: Duration,
) {
    state.renewals += 1;
    let generation = state.renewals;
    let Some(renewal) = state.phase.renewal_mut() else {
        return;
    };
    renewal.generation = generation;
    renewal.timer =
        Some(Timer(myself.send_after(delay, move || {
            LockMessage::Renew { generation }
        })));
}

#[cfg(test)]
#[path = "tests/lease.rs"]
mod tests;

//! Acquiring: a request is tried on the store at once, or queued; a lock file found stale is
//! judged, and taken over (after the acquirer's on-stale decision, if it asked for one); a lock
//! held elsewhere is re-checked with backoff; the queue is served in order whenever the lock
//! may be free.
//!
//! Handles [`LockMessage::Acquire`], [`LockMessage::Cancel`], [`LockMessage::StaleVerdict`],
//! [`LockMessage::StaleAnswerExpired`], [`LockMessage::WaitExpired`] and
//! [`LockMessage::Recheck`] (through [`LockActor::serve_queue`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::ActorRef;
use vfslock_proto::{
    AcquireRequest, ErrorKind, Event, LockFileFormat, LockMetadata, LockMode, RequestId, WaitMode,
    WaitPlace, WireError,
};

use super::actor::{LockActor, LockMessage};
use super::joint::{joint_mode, mode_conflict};
use super::lifecycle::must;
use super::replies;
use super::requeue::JournaledPlace;
use super::state::{LockState, PendingSteal, Waiter};
use super::timing::{jitter, Timer};
use crate::config::StaleRule;
use crate::context::random_id;
use crate::link::SessionLink;
use crate::lockfile::{self, LockRecord};
use crate::store::{Created, MakeLock, Observed, Replaced, StoreError, Token, Version, Written};

/// What an attempt on the store came to.
pub(super) enum Attempt {
    /// The waiter holds the lock now (already answered).
    Granted,
    /// The waiter's on-stale decision was asked; it is parked in the state.
    Asked,
    /// Someone else holds it; the waiter comes back.
    Held(Box<Waiter>, Box<LockMetadata>),
    /// The store failed; the waiter comes back with the error.
    Failed(Box<Waiter>, WireError),
}

/// Why a steal did not happen.
pub(super) enum StealLost {
    /// The file changed after it was judged; the waiter comes back.
    Changed(Box<Waiter>),
    /// The store failed.
    Failed(Box<Waiter>, WireError),
}

impl LockActor {
    #[allow(clippy::too_many_arguments)] // the acquire's parts, as the message carries them
    pub(super) async fn on_acquire(
        &self,
        myself: &ActorRef<LockMessage>,
        state: &mut LockState,
        session: Arc<SessionLink>,
        id: RequestId,
        request: AcquireRequest,
        (mode, max_hold): (LockMode, Option<Duration>),
        place: Option<&WaitPlace>,
    ) {
        let ttl = request.ttl.unwrap_or(self.ctx.settings.locks.default_ttl);
        if request.detached && ttl.is_zero() {
            return session.reply(id, Err(replies::detached_needs_ttl()));
        }
        if let Some(error) = joint_mode(mode).and_then(|m| self.refuse_mode(state, m)) {
            return session.reply(id, Err(error));
        }
        let (ordinal, journaled) = match self.claim_place(state, &session, place) {
            Ok(place) => place,
            Err(error) => return session.reply(id, Err(error)),
        };
        let waiter = Waiter {
            session,
            acquire_id: id,
            request,
            ttl,
            mode,
            max_hold,
            expiry: None,
            ordinal,
            journaled,
            queued_at: None,
            told: None,
        };
        if state.fenced() {
            // A holding of the previous run may still be believed in: nothing is granted here
            // until its resume window closes.
            let holder = self.holder_metadata(state).await;
            return self.refuse_or_queue(myself, state, waiter, holder);
        }
        // A waiter that took its place back goes by its place too when it was the last one
        // expected: the waiters queued meanwhile are all later than it.
        let requeued = waiter.journaled.is_some();
        if state.expected.active() || requeued {
            // Waiters of the previous run may still ask for their places: this one queues at
            // its own, and whoever is first and here is served.
            let holder = self.holder_metadata(state).await;
            self.refuse_or_queue(myself, state, waiter, holder);
            if state.phase.is_free() {
                self.serve_queue(myself, state).await;
            }
            return;
        }
        // Queued waiters go first: a newcomer must not overtake them when a foreign holder
        // has just let go.
        if state.phase.is_free() && !state.queue.is_empty() {
            self.serve_queue(myself, state).await;
        }
        if state.queue.is_empty() {
            match self.joins_here(state, mode) {
                Some(Ok(())) => {
                    let outcome = self.join_local(myself, state, waiter).await;
                    return self.settle_attempt(myself, state, outcome);
                }
                Some(Err(conflict)) => return waiter.session.reply(id, Err(conflict)),
                None => {}
            }
        }
        if !state.phase.is_free() || !state.queue.is_empty() {
            if let (Some(asked), Some(joint)) = (joint_mode(mode), state.joint()) {
                if asked != joint.mode {
                    let conflict = mode_conflict(&state.target.url, asked, joint.mode);
                    return waiter.session.reply(id, Err(conflict));
                }
            }
            let holder = self.holder_metadata(state).await;
            let writer_behind_readers = state.joint().is_some()
                && mode == LockMode::Exclusive
                && matches!(waiter.request.wait, WaitMode::Wait { .. });
            self.refuse_or_queue(myself, state, waiter, holder);
            if writer_behind_readers {
                // Re-checked like a wait for another host, so that its waiting mark stays fresh
                // while other hosts' readers hold on too.
                self.schedule_recheck(myself, state, None);
            }
            return;
        }
        let outcome = self.attempt_any(myself, state, waiter).await;
        self.settle_attempt(myself, state, outcome);
    }

    /// Deals with what an attempt came to: held (a try is refused, a wait queued and the
    /// holder re-checked), or failed (answered).
    fn settle_attempt(
        &self,
        myself: &ActorRef<LockMessage>,
        state: &mut LockState,
        outcome: Attempt,
    ) {
        match outcome {
            Attempt::Granted | Attempt::Asked => {}
            Attempt::Held(waiter, holder) => {
                self.saw_holder(state, &holder);
                let queued = matches!(waiter.request.wait, WaitMode::Wait { .. });
                self.refuse_or_queue(myself, state, *waiter, Some((*holder).clone()));
                if queued {
                    self.schedule_recheck(myself, state, Some(&holder));
                }
            }
            Attempt::Failed(waiter, error) => waiter.session.reply(waiter.acquire_id, Err(error)),
        }
    }

    /// Tries to take the lock on the store in the waiter's mode.
    pub(super) async fn attempt_any(
        &self,
        myself: &ActorRef<LockMessage>,
        state: &mut LockState,
        waiter: Waiter,
    ) -> Attempt {
        match joint_mode(waiter.mode) {
            None => self.attempt(myself, state, waiter).await,
            Some(mode) => self.attempt_joint(myself, state, waiter, mode).await,
        }
    }

    /// Answers a try with "already held", or queues a wait.
    fn refuse_or_queue(
        &self,
        myself: &ActorRef<LockMessage>,
        state: &mut LockState,
        mut waiter: Waiter,
        holder: Option<LockMetadata>,
    ) {
        match waiter.request.wait {
            WaitMode::Try => {
                let error = replies::already_held(&state.target.url, holder, state.queue.len());
                waiter.session.reply(waiter.acquire_id, Err(error));
            }
            WaitMode::Wait { timeout } => {
                let limit = self.ctx.settings.limits.max_waiters_per_target;
                if state.queue.len() >= limit {
                    let error = replies::too_many_waiters(&state.target.url, limit);
                    return waiter.session.reply(waiter.acquire_id, Err(error));
                }
                if let Some(timeout) = timeout {
                    let (session_id, acquire_id) = (waiter.session.id, waiter.acquire_id);
                    waiter.expiry = Some(Timer(myself.send_after(timeout, move || {
                        LockMessage::WaitExpired {
                            session_id,
                            acquire_id,
                        }
                    })));
                }
                // Journaled, queued and counted before the waiter hears its place.
                let (session, acquire_id) = (waiter.session.clone(), waiter.acquire_id);
                let ordinal = waiter.ordinal;
                let resume = session
                    .resume
                    .as_ref()
                    .filter(|_| self.ctx.journal.is_some());
                if resume.is_some() {
                    // A place taken back is journaled again, with the new session's owner.
                    waiter.journaled = Some(JournaledPlace::write(
                        &self.ctx,
                        ordinal,
                        &state.target.url,
                        &session,
                    ));
                }
                let position = state.queue.insert_in_order(waiter) as u32;
                let event = match resume {
                    Some((secret, window)) => Event::Queued {
                        position,
                        ordinal,
                        resume: secret.ticket(*window),
                    },
                    None => Event::QueuePosition { position },
                };
                session.event(acquire_id, event);
            }
        }
    }

    /// Tries to take the lock in the store for `waiter`: create, or judge and steal a stale
    /// file, or ask the waiter's on-stale decision first. Only while the lock is free here.
    pub(super) async fn attempt(
        &self,
        myself: &ActorRef<LockMessage>,
        state: &mut LockState,
        mut waiter: Waiter,
    ) -> Attempt {
        let store = state.target.store.clone();
        // A file that vanishes between our create and our read, or changes between our read
        // and our steal, is raced by someone else: look again, a few times.
        for _ in 0..4 {
            let record = self.new_record(&waiter, None);
            if journaled(state, &record) {
                self.ctx
                    .journal_acquire(&record.lock_id, &state.target.url, &waiter.session);
            }
            let sent = Instant::now();
            let record = Arc::new(record);
            let created = self
                .within(store.create(
                    &state.target.lock_path,
                    self.ctx.token_floor(),
                    maker(record.clone()),
                ))
                .await;
            // The store is done with its copy: take the record back without copying it.
            let record = Arc::unwrap_or_clone(record);
            match created {
                Err(e) => return Attempt::Failed(Box::new(waiter), replies::store_error(e)),
                Ok(Created::Won(written)) => {
                    self.log_skew(state, &written);
                    state.handoff.streak = None;
                    self.grant(myself, state, waiter, record, written, sent, None);
                    return Attempt::Granted;
                }
                Ok(Created::Exists) => self.ctx.journal_release(&record.lock_id),
            }
            let observed = match self.read_for_attempt(state, waiter).await {
                Ok((back, observed)) => {
                    waiter = back;
                    match observed {
                        Some(observed) => observed,
                        None => continue,
                    }
                }
                Err(outcome) => return outcome,
            };
            let (holder, stale) = self.judge(state, &observed);
            if !stale {
                return Attempt::Held(Box::new(waiter), Box::new(holder));
            }
            if waiter.request.ask_on_stale {
                return self.ask_on_stale(myself, state, waiter, observed, holder);
            }
            match self.steal(myself, state, waiter, observed, holder).await {
                Ok(()) => return Attempt::Granted,
                // Someone else replaced or removed the file we judged: look at it afresh.
                Err(StealLost::Changed(back)) => waiter = *back,
                Err(StealLost::Failed(back, error)) => return Attempt::Failed(back, error),
            }
        }
        // The file kept changing under us: someone is busy with it, which is being held.
        busy(waiter, &state.target.url)
    }

    /// Asks `waiter` whether the stale lock `holder` may be taken (the file read as
    /// `observed`), and parks it until its decision comes or its deadline passes.
    pub(super) fn ask_on_stale(
        &self,
        myself: &ActorRef<LockMessage>,
        state: &mut LockState,
        waiter: Waiter,
        observed: Observed,
        holder: LockMetadata,
    ) -> Attempt {
        waiter.session.event(
            waiter.acquire_id,
            Event::StaleQuestion {
                holder: holder.clone(),
            },
        );
        let (session_id, acquire_id) = (waiter.session.id, waiter.acquire_id);
        myself.send_after(self.ctx.settings.locks.stale_answer_timeout, move || {
            LockMessage::StaleAnswerExpired {
                session_id,
                acquire_id,
            }
        });
        must(state.phase.ask_steal(PendingSteal {
            waiter,
            judged: observed,
            holder,
        }));
        Attempt::Asked
    }

    /// Reads the lock file an attempt for `waiter` found there: the waiter back with the file
    /// (`None`: it vanished meanwhile, look again), or the attempt's outcome when the read
    /// already tells it.
    pub(super) async fn read_for_attempt(
        &self,
        state: &LockState,
        waiter: Waiter,
    ) -> Result<(Waiter, Option<Observed>), Attempt> {
        match self
            .within(state.target.store.read(&state.target.lock_path))
            .await
        {
            // Others kept rewriting it (handoffs, renewals): it is held; wait or say so.
            Err(e) if e.contended => Err(busy(waiter, &state.target.url)),
            // There but unreadable to us: held by someone unknown, and never stale, since its
            // bytes cannot be compared for an exact steal. Re-checked with backoff like any
            // foreign holder, until the file is gone.
            Err(StoreError {
                unreadable: Some(file),
                ..
            }) => {
                let holder = replies::unreadable_holder(&file);
                Err(Attempt::Held(Box::new(waiter), Box::new(holder)))
            }
            Err(e) => Err(Attempt::Failed(Box::new(waiter), replies::store_error(e))),
            Ok(observed) => Ok((waiter, observed)),
        }
    }

    /// Parses a lock file and judges it stale or not, now, by the store's rule.
    ///
    /// The seed rule trusts the writer's clock (with the skew allowance); the watched rule
    /// trusts only this daemon's monotonic clock: stale once it has itself seen the same bytes
    /// for a whole TTL. A `createdAt` further in the future than the allowance can only come
    /// from a skewed clock, so it is judged by the watched rule whatever the store's rule.
    pub(super) fn judge(&self, state: &LockState, observed: &Observed) -> (LockMetadata, bool) {
        let settings = &self.ctx.settings;
        let parsed = lockfile::parse(&observed.bytes);
        let now = self.ctx.now();
        // Nobody holds an empty file for long (a racing reader or a cut-short create left it):
        // it stops blocking sooner than a corrupt one, which may be a lock we cannot read.
        let grace = if observed.bytes.is_empty() {
            settings.locks.empty_grace
        } else {
            settings.locks.corrupt_grace
        };
        let from_future = parsed
            .created_at()
            .is_some_and(|created| created > now + settings.locks.skew_allowance);
        let stale = if state.target.store.stale_rule() == StaleRule::Watched || from_future {
            let needed = match parsed.format {
                LockFileFormat::Foreign => None,
                LockFileFormat::Corrupt => Some(grace),
                _ if parsed.ttl_ns == 0 => None,
                _ if parsed.created_at().is_none() => Some(settings.locks.corrupt_grace),
                _ => Some(Duration::from_nanos(parsed.ttl_ns.max(0) as u64)),
            };
            let watched = self
                .ctx
                .watched
                .unchanged_for(&state.target.key, &observed.bytes);
            needed.is_some_and(|needed| watched >= needed)
        } else {
            let judged_at = now
                .checked_sub(settings.locks.skew_allowance)
                .unwrap_or(now);
            lockfile::is_stale(&parsed, observed.modified, judged_at, grace)
        };
        (lockfile::into_wire(parsed, observed.modified, stale), stale)
    }

    /// Logs how far the store's clock (the file's last-modified time) is from ours.
    fn log_skew(&self, state: &LockState, written: &Written) {
        let Some(modified) = written.modified else {
            return;
        };
        let now = self.ctx.now();
        let (skew, ahead) = match modified.duration_since(now) {
            Ok(store_ahead) => (store_ahead, "ahead of"),
            Err(behind) => (behind.duration(), "behind"),
        };
        if skew > self.ctx.settings.locks.skew_allowance {
            tracing::warn!(target = %state.target.url, ?skew, "the store's clock is {ahead} ours by more than the skew allowance");
        } else {
            tracing::trace!(target = %state.target.url, ?skew, "store clock {ahead} ours");
        }
    }

    /// Replaces the stale file `judged` (exactly that version) with the waiter's lock.
    pub(super) async fn steal(
        &self,
        myself: &ActorRef<LockMessage>,
        state: &mut LockState,
        waiter: Waiter,
        judged: Observed,
        holder: LockMetadata,
    ) -> Result<(), StealLost> {
        if let Some(mode) = joint_mode(waiter.mode) {
            return self
                .join_judged(myself, state, waiter, mode, judged, Some(holder))
                .await;
        }
        let (record, sent, replaced) = self.take_over(state, &waiter, &judged.version()).await;
        match replaced {
            Ok(Replaced::Done(written)) => {
                tracing::info!(target = %state.target.url, stale_pid = holder.pid, stale_host = %holder.hostname, "took over a stale lock");
                self.ctx.watched.forget(&state.target.key);
                state.handoff.streak = None;
                if let Some(instruments) = self.tally.instruments() {
                    instruments.stole();
                }
                self.grant(myself, state, waiter, record, written, sent, Some(holder));
                Ok(())
            }
            Ok(Replaced::Changed) => Err(StealLost::Changed(Box::new(waiter))),
            Err(e) => Err(StealLost::Failed(Box::new(waiter), replies::store_error(e))),
        }
    }

    /// Replaces the lock file `expected` (a stale one, or the releasing holder's) with a new
    /// holding for `waiter`, with a fresh token. Returns the new record, when its write was
    /// sent (the lease is measured from then), and what the store did.
    pub(super) async fn take_over(
        &self,
        state: &LockState,
        waiter: &Waiter,
        expected: &Version,
    ) -> (LockRecord, Instant, Result<Replaced, StoreError>) {
        let record = self.new_record(waiter, None);
        if journaled(state, &record) {
            self.ctx
                .journal_acquire(&record.lock_id, &state.target.url, &waiter.session);
        }
        let sent = Instant::now();
        let replaced = self
            .within(state.target.store.replace(
                &state.target.lock_path,
                expected,
                Token::Fresh {
                    floor: self.ctx.token_floor(),
                },
                maker(Arc::new(record.clone())),
            ))
            .await;
        if !matches!(replaced, Ok(Replaced::Done(_))) {
            self.ctx.journal_release(&record.lock_id);
        }
        (record, sent, replaced)
    }

    /// The on-stale verdict (or its deadline) for the pending steal of `acquire_id`.
    pub(super) async fn decide_steal(
        &self,
        myself: &ActorRef<LockMessage>,
        state: &mut LockState,
        session_id: u64,
        acquire_id: RequestId,
        allow: bool,
        reason: String,
    ) {
        let asked = state
            .phase
            .steal()
            .is_some_and(|s| s.waiter.is(session_id, acquire_id));
        if !asked {
            return; // A late answer for a steal already decided.
        }
        let pending = must(state.phase.end_steal());
        if allow {
            match self
                .steal(
                    myself,
                    state,
                    pending.waiter,
                    pending.judged,
                    pending.holder,
                )
                .await
            {
                Ok(()) => {}
                // Someone else changed the file after it was judged: back to the head of the
                // line, where the next look decides afresh.
                Err(StealLost::Changed(waiter)) => state.queue.push_front(*waiter),
                Err(StealLost::Failed(waiter, error)) => {
                    waiter.session.reply(waiter.acquire_id, Err(error))
                }
            }
        } else {
            let mut error = WireError::new(ErrorKind::StaleVetoed, reason);
            error.holder = Some(Box::new(pending.holder));
            pending
                .waiter
                .session
                .reply(pending.waiter.acquire_id, Err(error));
        }
        self.serve_queue(myself, state).await;
    }

    /// The lock record a grant to `waiter` writes.
    pub(super) fn new_record(
        &self,
        waiter: &Waiter,
        acquired_at: Option<std::time::SystemTime>,
    ) -> LockRecord {
        let now = self.ctx.now();
        LockRecord {
            created_at: now,
            acquired_at: acquired_at.unwrap_or(now),
            ttl: waiter.ttl,
            hostname: self.ctx.host_id.clone(),
            pid: waiter.session.caller.pid,
            owner_id: waiter.request.owner_id.clone().filter(|o| !o.is_empty()),
            lock_id: random_id(),
            daemon_id: self.ctx.instance_id.clone(),
            token: None,
            uid: waiter.session.caller.uid,
            detached: waiter.request.detached,
            // A detached lease's file is its whole state: it always says its own ttl.
            peer_ttl: match self.ctx.settings.locks.peer_ttl_factor {
                factor if factor > 1 && !waiter.request.detached => {
                    Some(waiter.ttl.saturating_mul(factor))
                }
                _ => None,
            },
        }
    }

    /// Grants the lock to waiters in order while nobody here holds it.
    pub(super) async fn serve_queue(&self, myself: &ActorRef<LockMessage>, state: &mut LockState) {
        if state.fenced() {
            // Served when the resume window closes (`LockMessage::WindowClosed`).
            return;
        }
        if let Some(until) = state.handoff.cooldown_until {
            let left = until.saturating_duration_since(Instant::now());
            if !left.is_zero() && !state.queue.is_empty() {
                // Holding back after a capped handoff streak; look again when it ends.
                if !state.recheck.scheduled {
                    state.recheck.generation += 1;
                    state.recheck.scheduled = true;
                    let generation = state.recheck.generation;
                    myself.send_after(left, move || LockMessage::Recheck { generation });
                }
                return;
            }
            state.handoff.cooldown_until = None;
        }
        // A head held back is served when the earlier waiter of the previous run asks again,
        // or when the resume window closes (`LockMessage::WindowClosed`).
        while let Some(mode) = state.servable_head().map(|head| head.mode) {
            // Free: the head tries the store. Held jointly here: a head of the same mode joins
            // (consecutive shared requests at the head are granted together); any other head
            // waits for the joint holders to leave, and so does everyone behind it.
            let joins = match self.joins_here(state, mode) {
                Some(Ok(())) => true,
                Some(Err(_)) | None if !state.phase.is_free() => break,
                _ => false,
            };
            let waiter = state.queue.pop_front().expect("looked at above");
            let outcome = if joins {
                self.join_local(myself, state, waiter).await
            } else {
                self.attempt_any(myself, state, waiter).await
            };
            match outcome {
                Attempt::Granted | Attempt::Asked => {}
                Attempt::Held(waiter, holder) => {
                    self.saw_holder(state, &holder);
                    state.queue.push_front(*waiter);
                    self.schedule_recheck(myself, state, Some(&holder));
                    break;
                }
                Attempt::Failed(waiter, error) => {
                    waiter.session.reply(waiter.acquire_id, Err(error))
                }
            }
        }
        if state.queue.is_empty() && state.watchers.is_empty() {
            state.recheck.delay = self.ctx.settings.locks.recheck_min;
        }
    }

    /// Schedules a look at a lock file held outside this daemon: exponential backoff with
    /// jitter, but never later than the moment the file turns stale.
    pub(super) fn schedule_recheck(
        &self,
        myself: &ActorRef<LockMessage>,
        state: &mut LockState,
        holder: Option<&LockMetadata>,
    ) {
        if state.recheck.scheduled || state.holding().is_some() {
            return;
        }
        let settings = &self.ctx.settings;
        state.recheck.joint_seen = holder.is_some_and(|h| {
            h.format == LockFileFormat::Vfslock(crate::lockfile::joint::JOINT_FORMAT_VERSION)
        });
        let mut delay = jitter(state.recheck.delay);
        if let Some(until_stale) = holder.and_then(|h| self.until_stale(h)) {
            delay = delay.min(until_stale + Duration::from_millis(1));
        }
        state.recheck.delay = (state.recheck.delay * 2).min(settings.locks.recheck_max);
        state.recheck.generation += 1;
        state.recheck.scheduled = true;
        let generation = state.recheck.generation;
        myself.send_after(delay, move || LockMessage::Recheck { generation });
    }

    fn until_stale(&self, holder: &LockMetadata) -> Option<Duration> {
        let created = holder.created_at_unix_ns?;
        if holder.ttl_ns <= 0 {
            return None;
        }
        let stale_at_ns = created.checked_add(holder.ttl_ns as i128)?;
        let now_ns = lockfile::unix_ns(self.ctx.now());
        let left = stale_at_ns.saturating_sub(now_ns).max(0);
        Some(Duration::from_nanos(
            u64::try_from(left).unwrap_or(u64::MAX),
        ))
    }

    /// Gives up the acquire `acquire_id`: a waiter or a pending steal is answered "cancelled";
    /// a grant that crossed the cancel is released at once.
    pub(super) async fn cancel(
        &self,
        myself: &ActorRef<LockMessage>,
        state: &mut LockState,
        session_id: u64,
        acquire_id: RequestId,
    ) {
        if let Some(waiter) = state.queue.remove(session_id, acquire_id) {
            waiter.session.reply(acquire_id, Err(replies::cancelled()));
        } else if state
            .phase
            .steal()
            .is_some_and(|s| s.waiter.is(session_id, acquire_id))
        {
            let pending = must(state.phase.end_steal());
            pending
                .waiter
                .session
                .reply(acquire_id, Err(replies::cancelled()));
        } else if state
            .holding()
            .is_some_and(|h| h.is(session_id, acquire_id))
        {
            // The grant crossed the cancel: nobody wants it, so give it back at once.
            let _ = self
                .release_holder(myself, state, super::audit::Ended::Cancelled)
                .await;
        }
    }

    /// A waiting acquire's timeout ran out: it is told who holds the lock.
    pub(super) async fn wait_expired(
        &self,
        state: &mut LockState,
        session_id: u64,
        acquire_id: RequestId,
    ) {
        let Some(waiter) = state.queue.remove(session_id, acquire_id) else {
            return;
        };
        let holder = self.holder_metadata(state).await;
        let timeout = match waiter.request.wait {
            WaitMode::Wait { timeout: Some(t) } => t,
            _ => Duration::ZERO,
        };
        let error = replies::wait_timed_out(&state.target.url, timeout, holder);
        waiter.session.reply(waiter.acquire_id, Err(error));
    }
}

/// The lock file's bytes for `record`, with the token the store issues (or the record's own
/// when renewing).
pub(super) fn maker(record: Arc<LockRecord>) -> MakeLock {
    Box::new(move |token| record.to_json_with_token(token.or(record.token)))
}

/// The answer for a lock file others keep changing faster than we can read it: held, by
/// someone we could not pin down.
fn busy(waiter: Waiter, url: &str) -> Attempt {
    Attempt::Held(Box::new(waiter), Box::new(replies::busy_holder(url)))
}

/// Whether a new holding's lock id goes into the crash journal: not for detached leases (their
/// lock file is their state). A private store's (`mem://`) holdings are kept in the journal's
/// table only, for a planned restart to hand over (`journal::Journal::hand_over_private`).
fn journaled(_state: &LockState, record: &LockRecord) -> bool {
    !record.detached
}

#[cfg(test)]
#[path = "tests/acquire.rs"]
mod tests;

//! The target actor: one per lock target, the only writer of that target's lock file in this
//! daemon.
//!
//! Handlers await store calls (that is the serialization) but never anything that only a later
//! message can bring: waiters' reply channels are kept in the state, and renewals, re-checks,
//! wait timeouts and on-stale deadlines are timer messages to the actor itself, each carrying
//! enough to recognise it as out of date.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use vfslock_proto::{
    AcquireRequest, ErrorKind, Event, Grant, ListEntry, LockMetadata, RequestId, Response,
    WaitMode, WireError,
};

use super::{Holding, PendingSteal, SessionLink, TargetLockState, Timer, Waiter};
use crate::address::Address;
use crate::config::StaleRule;
use crate::context::{random_id, Context, Stats};
use crate::lockfile::{self, LockRecord};
use crate::store::{
    Conditional, Created, MakeLock, Observed, Replaced, Store, StoreError, Token, Written,
};
use vfslock_proto::LockFileFormat;

/// The actor. Holds only read-only configuration; everything that changes is in
/// [`TargetLockState`].
pub struct TargetLock {
    /// The daemon's shared context.
    pub ctx: Arc<Context>,
}

/// Messages of a target actor: requests routed by the registry, and timers it sends itself.
#[derive(Debug)]
pub enum TargetLockMessage {
    /// Request: take the lock for `session`'s acquire `id`.
    Acquire {
        /// Who asks.
        session: Arc<SessionLink>,
        /// The acquire's request id.
        id: RequestId,
        /// What is asked.
        request: AcquireRequest,
    },
    /// Request: release the lock `lock_id` if `session` holds it.
    Release {
        /// Who asks.
        session: Arc<SessionLink>,
        /// The release's request id.
        id: RequestId,
        /// The holding to release.
        lock_id: String,
    },
    /// Request: give up the acquire `acquire_id`, releasing it if it was already granted.
    Cancel {
        /// Who asks.
        session: Arc<SessionLink>,
        /// The cancel's request id.
        id: RequestId,
        /// The acquire to cancel.
        acquire_id: RequestId,
    },
    /// Request: the on-stale decision for a pending steal.
    StaleVerdict {
        /// Who answers.
        session_id: u64,
        /// The acquire that was asked.
        acquire_id: RequestId,
        /// Whether the steal may go ahead.
        allow: bool,
        /// Why not.
        reason: String,
    },
    /// Request: extend the detached lease `lock_id` (the caller's uid's, or any for an admin).
    RenewDetached {
        /// Who asks.
        session: Arc<SessionLink>,
        /// The request id.
        id: RequestId,
        /// The detached lease.
        lock_id: String,
        /// A new TTL, or the lease's own.
        ttl: Option<Duration>,
    },
    /// Request: remove whoever holds the lock (the session checked that the caller is an
    /// admin).
    Break {
        /// Who asks.
        session: Arc<SessionLink>,
        /// The request id.
        id: RequestId,
        /// Why, for the log and the holder.
        reason: String,
    },
    /// Request: read the lock file.
    Metadata {
        /// Who asks.
        session: Arc<SessionLink>,
        /// The request id.
        id: RequestId,
    },
    /// Event: the session closed; drop its waits and release what it holds.
    SessionClosed {
        /// The closed session.
        session_id: u64,
    },
    /// Request: what is held and queued here (for `vfslockctl list`).
    Snapshot(RpcReplyPort<Option<ListEntry>>),
    /// Request: the daemon is stopping; tell the holder, release, fail the waiters, stop.
    Shutdown(RpcReplyPort<()>),
    /// Timer: renew the holder's lease if `generation` is still current.
    Renew {
        /// The renewal generation it was scheduled for.
        generation: u64,
    },
    /// Timer: re-check a lock file held outside this daemon.
    Recheck {
        /// The re-check generation it was scheduled for.
        generation: u64,
    },
    /// Timer: a waiting acquire's timeout.
    WaitExpired {
        /// The waiter's session.
        session_id: u64,
        /// The waiter's acquire.
        acquire_id: RequestId,
    },
    /// Timer: the on-stale decision did not come in time.
    StaleAnswerExpired {
        /// The asked session.
        session_id: u64,
        /// The asked acquire.
        acquire_id: RequestId,
    },
    /// Timer: see whether the actor has been idle long enough to stop.
    IdleCheck,
    /// Timer: retry deleting a lock file of ours whose delete failed.
    RetryDelete,
}

impl TargetLockMessage {
    /// Whether the registry routed this message (and counted it). Snapshots and shutdown are
    /// sent to the actors directly, timers by the actor itself.
    pub fn is_routed(&self) -> bool {
        !matches!(
            self,
            TargetLockMessage::Snapshot(_)
                | TargetLockMessage::Shutdown(_)
                | TargetLockMessage::Renew { .. }
                | TargetLockMessage::Recheck { .. }
                | TargetLockMessage::WaitExpired { .. }
                | TargetLockMessage::StaleAnswerExpired { .. }
                | TargetLockMessage::IdleCheck
                | TargetLockMessage::RetryDelete
        )
    }
}

/// What an attempt on the store came to.
enum Attempt {
    /// The waiter holds the lock now (already answered).
    Granted,
    /// The waiter's on-stale decision was asked; it is parked in the state.
    Asked,
    /// Someone else holds it; the waiter comes back.
    Held(Box<Waiter>, Box<LockMetadata>),
    /// The store failed; the waiter comes back with the error.
    Failed(Box<Waiter>, WireError),
}

fn store_error(error: StoreError) -> WireError {
    let kind = if error.unsupported {
        ErrorKind::Unsupported
    } else {
        ErrorKind::Store
    };
    WireError::new(kind, error.message)
}

impl Actor for TargetLock {
    type Msg = TargetLockMessage;
    type State = TargetLockState;
    type Arguments = Address;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        address: Address,
    ) -> Result<Self::State, ActorProcessingErr> {
        let store = self
            .ctx
            .stores
            .for_address(&address)
            .ok_or_else(|| format!("no store serves {}", address.url()))?;
        Stats::add(&self.ctx.stats.targets, 1);
        Ok(TargetLockState {
            url: address.url(),
            store,
            key: address.key().to_owned(),
            lock_path: super::store_path(&address),
            holder: None,
            waiters: Default::default(),
            steal: None,
            renew_generation: 0,
            renewal_timer: None,
            recheck_generation: 0,
            recheck_scheduled: false,
            recheck_delay: self.ctx.settings.recheck_min,
            handled: 0,
            idle_since: Some(Instant::now()),
            idle_check_scheduled: false,
            streak: None,
            cooldown_until: None,
            leftover: None,
            marked_generation: 0,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        Stats::add(&self.ctx.stats.targets, -1);
        Stats::add(&self.ctx.stats.waiting, -(state.waiters.len() as i64));
        if state.holder.is_some() {
            Stats::add(&self.ctx.stats.held, -1);
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Boxed: the handling of one message awaits store calls several levels deep, and its
        // future (about 4 KiB) would otherwise be part of every actor's task for its whole
        // life, held or idle. One allocation per message is cheaper than that per lock.
        Box::pin(self.handle_message(myself, message, state)).await
    }
}

impl TargetLock {
    async fn handle_message(
        &self,
        myself: ActorRef<TargetLockMessage>,
        message: TargetLockMessage,
        state: &mut TargetLockState,
    ) -> Result<(), ActorProcessingErr> {
        if message.is_routed() {
            state.handled += 1;
        }
        match message {
            TargetLockMessage::Acquire {
                session,
                id,
                request,
            } => self.on_acquire(&myself, state, session, id, request).await,
            TargetLockMessage::Release {
                session,
                id,
                lock_id,
            } => {
                let held = state
                    .holder
                    .as_ref()
                    .is_some_and(|h| h.session.id == session.id && h.record.lock_id == lock_id);
                let result = if held {
                    self.release_holder(&myself, state).await
                } else {
                    self.release_detached(state, &session, &lock_id).await
                };
                session.reply(id, result);
                self.serve_queue(&myself, state).await;
            }
            TargetLockMessage::RenewDetached {
                session,
                id,
                lock_id,
                ttl,
            } => {
                let result = self.renew_detached(state, &session, &lock_id, ttl).await;
                session.reply(id, result);
            }
            TargetLockMessage::Break {
                session,
                id,
                reason,
            } => {
                let result = self.break_lock(&myself, state, &session, &reason).await;
                session.reply(id, result);
                self.serve_queue(&myself, state).await;
            }
            TargetLockMessage::Cancel {
                session,
                id,
                acquire_id,
            } => {
                self.cancel(&myself, state, session.id, acquire_id).await;
                session.reply(id, Ok(Response::Cancelled));
                self.serve_queue(&myself, state).await;
            }
            TargetLockMessage::StaleVerdict {
                session_id,
                acquire_id,
                allow,
                reason,
            } => {
                let reason =
                    format!("the on-stale handler refused to take the stale lock: {reason}");
                self.decide_steal(&myself, state, session_id, acquire_id, allow, reason)
                    .await;
            }
            TargetLockMessage::StaleAnswerExpired {
                session_id,
                acquire_id,
            } => {
                let reason = format!(
                    "the on-stale handler did not answer within {:?}; the stale lock was left alone",
                    self.ctx.settings.stale_answer_timeout
                );
                self.decide_steal(&myself, state, session_id, acquire_id, false, reason)
                    .await;
            }
            TargetLockMessage::Metadata { session, id } => {
                let result = self.read_metadata(state).await;
                session.reply(id, result.map(Response::Metadata));
            }
            TargetLockMessage::SessionClosed { session_id } => {
                self.drop_session(&myself, state, session_id).await;
                self.serve_queue(&myself, state).await;
            }
            TargetLockMessage::Snapshot(reply) => {
                let _ = reply.send(self.snapshot(state));
            }
            TargetLockMessage::Shutdown(reply) => {
                self.shut_down(state).await;
                let _ = reply.send(());
                myself.stop(Some("daemon shutdown".into()));
                return Ok(());
            }
            TargetLockMessage::Renew { generation } => {
                if generation == state.renew_generation {
                    self.renew(&myself, state).await;
                }
            }
            TargetLockMessage::Recheck { generation } => {
                if generation == state.recheck_generation {
                    state.recheck_scheduled = false;
                    self.serve_queue(&myself, state).await;
                }
            }
            TargetLockMessage::WaitExpired {
                session_id,
                acquire_id,
            } => {
                if let Some(waiter) = state.remove_waiter(session_id, acquire_id) {
                    Stats::add(&self.ctx.stats.waiting, -1);
                    let holder = self.holder_metadata(state).await;
                    let timeout = match waiter.request.wait {
                        WaitMode::Wait { timeout: Some(t) } => t,
                        _ => Duration::ZERO,
                    };
                    let mut error = WireError::new(
                        ErrorKind::Timeout,
                        format!(
                            "timed out after {timeout:?} waiting for {}{}; run `vfslockctl show {}` \
                             to see who holds it",
                            state.url,
                            describe_holder(holder.as_ref()),
                            state.url
                        ),
                    );
                    error.holder = holder.map(Box::new);
                    waiter.session.reply(waiter.acquire_id, Err(error));
                }
            }
            TargetLockMessage::IdleCheck => {
                state.idle_check_scheduled = false;
                if self.try_retire(&myself, state) {
                    return Ok(());
                }
            }
            TargetLockMessage::RetryDelete => self.retry_delete(&myself, state).await,
        }
        self.schedule_leftover(&myself, state);
        self.mark_waiting(state).await;
        self.track_idleness(&myself, state);
        Ok(())
    }
}

fn describe_holder(holder: Option<&LockMetadata>) -> String {
    match holder {
        Some(h) => format!(
            " (held by pid {} on {}{})",
            h.pid,
            h.hostname,
            h.owner_id
                .as_deref()
                .map(|o| format!(", owner {o}"))
                .unwrap_or_default()
        ),
        None => String::new(),
    }
}

impl TargetLock {
    fn store(&self, state: &TargetLockState) -> Arc<Store> {
        state.store.clone()
    }

    async fn on_acquire(
        &self,
        myself: &ActorRef<TargetLockMessage>,
        state: &mut TargetLockState,
        session: Arc<SessionLink>,
        id: RequestId,
        request: AcquireRequest,
    ) {
        let ttl = request.ttl.unwrap_or(self.ctx.settings.default_ttl);
        if request.detached && ttl.is_zero() {
            let error = WireError::new(
                ErrorKind::InvalidTarget,
                "a detached lease needs a TTL above zero: nothing renews it",
            );
            return session.reply(id, Err(error));
        }
        let waiter = Waiter {
            session,
            acquire_id: id,
            request,
            ttl,
            expiry: None,
        };
        // Queued waiters go first: a newcomer must not overtake them when a foreign holder
        // has just let go.
        if state.holder.is_none() && state.steal.is_none() && !state.waiters.is_empty() {
            self.serve_queue(myself, state).await;
        }
        if state.holder.is_some() || state.steal.is_some() || !state.waiters.is_empty() {
            let holder = self.holder_metadata(state).await;
            self.refuse_or_queue(myself, state, waiter, holder);
            return;
        }
        match self.attempt(myself, state, waiter).await {
            Attempt::Granted | Attempt::Asked => {}
            Attempt::Held(waiter, holder) => {
                let queued = matches!(waiter.request.wait, WaitMode::Wait { .. });
                self.refuse_or_queue(myself, state, *waiter, Some((*holder).clone()));
                if queued {
                    self.schedule_recheck(myself, state, Some(&holder));
                }
            }
            Attempt::Failed(waiter, error) => waiter.session.reply(waiter.acquire_id, Err(error)),
        }
    }

    /// Answers a try with "already held", or queues a wait.
    fn refuse_or_queue(
        &self,
        myself: &ActorRef<TargetLockMessage>,
        state: &mut TargetLockState,
        mut waiter: Waiter,
        holder: Option<LockMetadata>,
    ) {
        match waiter.request.wait {
            WaitMode::Try => {
                let message = match &holder {
                    Some(_) => format!(
                        "{} is already locked{}; run `vfslockctl show {}` to see who holds it",
                        state.url,
                        describe_holder(holder.as_ref()),
                        state.url
                    ),
                    None => format!(
                        "{} is busy: {} acquire(s) wait for it on this daemon",
                        state.url,
                        state.waiters.len()
                    ),
                };
                let mut error = WireError::new(ErrorKind::AlreadyHeld, message);
                error.holder = holder.map(Box::new);
                waiter.session.reply(waiter.acquire_id, Err(error));
            }
            WaitMode::Wait { timeout } => {
                let limit = self.ctx.settings.max_waiters_per_target;
                if state.waiters.len() >= limit {
                    let error = WireError::new(
                        ErrorKind::LimitExceeded,
                        format!(
                            "{limit} acquires already wait for {} (limits.max-waiters-per-target); \
                             try again later",
                            state.url
                        ),
                    );
                    return waiter.session.reply(waiter.acquire_id, Err(error));
                }
                if let Some(timeout) = timeout {
                    let (session_id, acquire_id) = (waiter.session.id, waiter.acquire_id);
                    waiter.expiry = Some(Timer(myself.send_after(timeout, move || {
                        TargetLockMessage::WaitExpired {
                            session_id,
                            acquire_id,
                        }
                    })));
                }
                waiter.session.event(
                    waiter.acquire_id,
                    Event::QueuePosition {
                        position: state.waiters.len() as u32 + 1,
                    },
                );
                state.waiters.push_back(waiter);
                Stats::add(&self.ctx.stats.waiting, 1);
            }
        }
    }

    /// Tries to take the lock in the store for `waiter`: create, or judge and steal a stale
    /// file, or ask the waiter's on-stale decision first.
    async fn attempt(
        &self,
        myself: &ActorRef<TargetLockMessage>,
        state: &mut TargetLockState,
        mut waiter: Waiter,
    ) -> Attempt {
        let store = self.store(state);
        // A file that vanishes between our create and our read, or changes between our read
        // and our steal, is raced by someone else: look again, a few times.
        for _ in 0..4 {
            let record = self.new_record(&waiter, None);
            if journaled(state, &record) {
                self.ctx.journal_acquire(&record.lock_id, &state.url);
            }
            let sent = Instant::now();
            let record = Arc::new(record);
            let created = self
                .within(store.create(
                    &state.lock_path,
                    self.ctx.token_floor(),
                    maker(record.clone()),
                ))
                .await;
            // The store is done with its copy: take the record back without copying it.
            let record = Arc::unwrap_or_clone(record);
            match created {
                Err(e) => return Attempt::Failed(Box::new(waiter), store_error(e)),
                Ok(Created::Won(written)) => {
                    self.log_skew(state, &written);
                    state.streak = None;
                    self.grant(myself, state, waiter, record, written, sent, None);
                    return Attempt::Granted;
                }
                Ok(Created::Exists) => self.ctx.journal_release(&record.lock_id),
            }
            let observed = match self.within(store.read(&state.lock_path)).await {
                // Others kept rewriting it (handoffs, renewals): it is held; wait or say so.
                Err(e) if e.contended => return busy(waiter, &state.url),
                Err(e) => return Attempt::Failed(Box::new(waiter), store_error(e)),
                Ok(None) => continue,
                Ok(Some(observed)) => observed,
            };
            let (holder, stale) = self.judge(state, &observed);
            if !stale {
                return Attempt::Held(Box::new(waiter), Box::new(holder));
            }
            if waiter.request.ask_on_stale {
                waiter.session.event(
                    waiter.acquire_id,
                    Event::StaleQuestion {
                        holder: holder.clone(),
                    },
                );
                let (session_id, acquire_id) = (waiter.session.id, waiter.acquire_id);
                myself.send_after(self.ctx.settings.stale_answer_timeout, move || {
                    TargetLockMessage::StaleAnswerExpired {
                        session_id,
                        acquire_id,
                    }
                });
                state.steal = Some(PendingSteal {
                    waiter,
                    judged: observed,
                    holder,
                });
                return Attempt::Asked;
            }
            match self.steal(myself, state, waiter, observed, holder).await {
                Ok(()) => return Attempt::Granted,
                // Someone else replaced or removed the file we judged: look at it afresh.
                Err(StealLost::Changed(back)) => waiter = *back,
                Err(StealLost::Failed(back, error)) => return Attempt::Failed(back, error),
            }
        }
        // The file kept changing under us: someone is busy with it, which is being held.
        busy(waiter, &state.url)
    }

    /// Bounds a store call by the configured store timeout.
    async fn within<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.within_for(self.ctx.settings.store_timeout, call).await
    }

    async fn within_for<T>(
        &self,
        limit: Duration,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
            Err(StoreError::new(format!(
                "the store did not answer within {limit:?}"
            )))
        })
    }

    /// Parses a lock file and judges it stale or not, now, by the store's rule.
    ///
    /// The seed rule trusts the writer's clock (with the skew allowance); the watched rule
    /// trusts only this daemon's monotonic clock: stale once it has itself seen the same bytes
    /// for a whole TTL. A `createdAt` further in the future than the allowance can only come
    /// from a skewed clock, so it is judged by the watched rule whatever the store's rule.
    fn judge(&self, state: &TargetLockState, observed: &Observed) -> (LockMetadata, bool) {
        let settings = &self.ctx.settings;
        let parsed = lockfile::parse(&observed.bytes);
        let now = self.ctx.now();
        let from_future = parsed
            .created_at()
            .is_some_and(|created| created > now + settings.skew_allowance);
        let stale = if self.store(state).stale_rule() == StaleRule::Watched || from_future {
            let needed = match parsed.format {
                LockFileFormat::Foreign => None,
                LockFileFormat::Corrupt => Some(settings.corrupt_grace),
                _ if parsed.ttl_ns == 0 => None,
                _ if parsed.created_at().is_none() => Some(settings.corrupt_grace),
                _ => Some(Duration::from_nanos(parsed.ttl_ns.max(0) as u64)),
            };
            let watched = self.ctx.watched.unchanged_for(&state.key, &observed.bytes);
            needed.is_some_and(|needed| watched >= needed)
        } else {
            let judged_at = now.checked_sub(settings.skew_allowance).unwrap_or(now);
            lockfile::is_stale(
                &parsed,
                observed.modified,
                judged_at,
                settings.corrupt_grace,
            )
        };
        (lockfile::into_wire(parsed, observed.modified, stale), stale)
    }

    /// Logs how far the store's clock (the file's last-modified time) is from ours.
    fn log_skew(&self, state: &TargetLockState, written: &Written) {
        let Some(modified) = written.modified else {
            return;
        };
        let now = self.ctx.now();
        let (skew, ahead) = match modified.duration_since(now) {
            Ok(store_ahead) => (store_ahead, "ahead of"),
            Err(behind) => (behind.duration(), "behind"),
        };
        if skew > self.ctx.settings.skew_allowance {
            tracing::warn!(target = %state.url, ?skew, "the store's clock is {ahead} ours by more than the skew allowance");
        } else {
            tracing::trace!(target = %state.url, ?skew, "store clock {ahead} ours");
        }
    }

    /// Replaces the stale file `judged` (exactly that version) with the waiter's lock.
    async fn steal(
        &self,
        myself: &ActorRef<TargetLockMessage>,
        state: &mut TargetLockState,
        waiter: Waiter,
        judged: Observed,
        holder: LockMetadata,
    ) -> Result<(), StealLost> {
        let (record, sent, replaced) = self.take_over(state, &waiter, &judged.version()).await;
        match replaced {
            Ok(Replaced::Done(written)) => {
                tracing::info!(target = %state.url, stale_pid = holder.pid, stale_host = %holder.hostname, "took over a stale lock");
                self.ctx.watched.forget(&state.key);
                state.streak = None;
                self.grant(myself, state, waiter, record, written, sent, Some(holder));
                Ok(())
            }
            Ok(Replaced::Changed) => Err(StealLost::Changed(Box::new(waiter))),
            Err(e) => Err(StealLost::Failed(Box::new(waiter), store_error(e))),
        }
    }

    /// Replaces the lock file `expected` (a stale one, or the releasing holder's) with a new
    /// holding for `waiter`, with a fresh token. Returns the new record, when its write was
    /// sent (the lease is measured from then), and what the store did.
    async fn take_over(
        &self,
        state: &TargetLockState,
        waiter: &Waiter,
        expected: &crate::store::Version,
    ) -> (LockRecord, Instant, Result<Replaced, StoreError>) {
        let record = self.new_record(waiter, None);
        if journaled(state, &record) {
            self.ctx.journal_acquire(&record.lock_id, &state.url);
        }
        let sent = Instant::now();
        let replaced = self
            .within(self.store(state).replace(
                &state.lock_path,
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

    async fn decide_steal(
        &self,
        myself: &ActorRef<TargetLockMessage>,
        state: &mut TargetLockState,
        session_id: u64,
        acquire_id: RequestId,
        allow: bool,
        reason: String,
    ) {
        let asked = state
            .steal
            .as_ref()
            .is_some_and(|s| s.waiter.is(session_id, acquire_id));
        if !asked {
            return; // A late answer for a steal already decided.
        }
        let pending = state.steal.take().expect("checked above");
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
                Err(StealLost::Changed(waiter)) => {
                    // Someone else changed the file after it was judged: back to the head of
                    // the line, where the next look decides afresh.
                    state.waiters.push_front(*waiter);
                    Stats::add(&self.ctx.stats.waiting, 1);
                }
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

    fn new_record(
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
            pid: waiter.session.peer.pid,
            owner_id: waiter.request.owner_id.clone().filter(|o| !o.is_empty()),
            lock_id: random_id(),
            daemon_id: self.ctx.instance_id.clone(),
            token: None,
            uid: waiter.session.peer.uid,
            detached: waiter.request.detached,
        }
    }

    /// Until when a lease confirmed by a write sent at `sent` is certainly valid: the TTL minus
    /// a margin (the larger of a tenth of the TTL and `lease-margin`, at most half the TTL) for
    /// clock drift and the time the holder needs to hear about a loss.
    fn valid_until(&self, sent: Instant, ttl: Duration) -> Option<Instant> {
        if ttl.is_zero() {
            return None;
        }
        let margin = (ttl / 10).max(self.ctx.settings.lease_margin).min(ttl / 2);
        Some(sent + (ttl - margin))
    }

    #[allow(clippy::too_many_arguments)]
    fn grant(
        &self,
        myself: &ActorRef<TargetLockMessage>,
        state: &mut TargetLockState,
        waiter: Waiter,
        mut record: LockRecord,
        written: Written,
        sent: Instant,
        stole: Option<LockMetadata>,
    ) {
        record.token = written.token;
        let ttl = record.ttl;
        let valid_until = self.valid_until(sent, ttl);
        let metadata = lockfile::into_wire(record.to_parsed(), None, false);
        let grant = Grant {
            target: state.url.clone(),
            lock_id: record.lock_id.clone(),
            metadata,
            stole,
            token: written.token,
            valid_for: valid_until.map(|until| until.saturating_duration_since(Instant::now())),
            valid_until_monotonic_ns: valid_until.and_then(crate::context::monotonic_ns),
        };
        waiter
            .session
            .reply(waiter.acquire_id, Ok(Response::Granted(grant)));
        if record.detached {
            waiter.session.acquire_ended(waiter.acquire_id);
            // A detached lease belongs to its uid and lock id, not to this actor's session
            // bookkeeping: nothing renews or releases it here; its lock file is its state.
            tracing::info!(target = %state.url, uid = ?record.uid, lock_id = %record.lock_id, ttl = ?record.ttl, "detached lease granted");
            return;
        }
        state.holder = Some(Holding {
            session: waiter.session,
            acquire_id: waiter.acquire_id,
            record,
            written: written.version(),
            since: Instant::now(),
            valid_until,
            retry_delay: RENEW_RETRY_MIN,
        });
        Stats::add(&self.ctx.stats.held, 1);
        state.recheck_delay = self.ctx.settings.recheck_min;
        state.cancel_renewal();
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
    /// (if it is still ours). Answers what the releaser is told.
    async fn release_holder(
        &self,
        myself: &ActorRef<TargetLockMessage>,
        state: &mut TargetLockState,
    ) -> Result<Response, WireError> {
        let Some(holding) = state.holder.take() else {
            return Ok(Response::Released { held: false });
        };
        let lock_id = holding.record.lock_id.clone();
        holding.session.acquire_ended(holding.acquire_id);
        let outcome = self.end_holding(myself, state, holding).await;
        // After the store write: a crash before it leaves the entry for the next start.
        self.ctx.journal_release(&lock_id);
        outcome
    }

    async fn end_holding(
        &self,
        myself: &ActorRef<TargetLockMessage>,
        state: &mut TargetLockState,
        holding: Holding,
    ) -> Result<Response, WireError> {
        Stats::add(&self.ctx.stats.held, -1);
        state.cancel_renewal();
        if holding
            .valid_until
            .is_some_and(|until| Instant::now() >= until)
        {
            // Past its deadline the lease may already be someone else's; only the conditional
            // delete is allowed, and the releaser learns that it had lost the lease.
            self.delete_or_retry(state, &holding.written).await;
            return Err(lease_lost_at_release(
                &state.url,
                "it was not renewed in time",
            ));
        }
        self.uncap_if_nobody_else_waits(state).await;
        if let Some(waiter) = self.next_handoff(state) {
            let (record, sent, replaced) = self.take_over(state, &waiter, &holding.written).await;
            match replaced {
                Ok(Replaced::Done(written)) => {
                    let streak = state.streak.get_or_insert((0, Instant::now()));
                    streak.0 = streak.0.saturating_add(1);
                    self.grant(myself, state, waiter, record, written, sent, None);
                    return Ok(Response::Released { held: true });
                }
                Ok(Replaced::Changed) => {
                    state.waiters.push_front(waiter);
                    Stats::add(&self.ctx.stats.waiting, 1);
                    return Err(lease_lost_at_release(
                        &state.url,
                        "the lock file was replaced or removed by someone else",
                    ));
                }
                Err(e) => {
                    state.waiters.push_front(waiter);
                    Stats::add(&self.ctx.stats.waiting, 1);
                    tracing::warn!(target = %state.url, error = %e, "handoff failed; releasing instead");
                }
            }
        }
        let outcome = self.delete_or_retry(state, &holding.written).await;
        if state.streak.take().is_some() && !state.waiters.is_empty() {
            // A capped streak: let other hosts' waiters, which poll, find the lock free.
            let cooldown = self.ctx.settings.handoff_cooldown;
            state.cooldown_until = Some(Instant::now() + cooldown);
        }
        match outcome {
            Some(Conditional::Changed) => Err(lease_lost_at_release(
                &state.url,
                "the lock file was replaced or removed by someone else",
            )),
            _ => Ok(Response::Released { held: true }),
        }
    }

    /// Reads the lock file and checks that it is the detached lease `lock_id` and that
    /// `session` may act on it.
    async fn detached_lease(
        &self,
        state: &TargetLockState,
        session: &SessionLink,
        lock_id: &str,
    ) -> Result<Option<(Observed, lockfile::ParsedLock)>, WireError> {
        let Some(observed) = self
            .within(self.store(state).read(&state.lock_path))
            .await
            .map_err(store_error)?
        else {
            return Ok(None);
        };
        let parsed = lockfile::parse(&observed.bytes);
        if !parsed.detached || parsed.lock_id.as_deref() != Some(lock_id) {
            return Ok(None);
        }
        let peer = session.peer;
        if !(peer.admin || (peer.uid.is_some() && peer.uid == parsed.uid)) {
            tracing::warn!(target = %state.url, uid = ?peer.uid, owner = ?parsed.uid, "refused an action on another user's detached lease");
            return Err(WireError::new(
                ErrorKind::PermissionDenied,
                format!(
                    "the detached lease {lock_id} on {} belongs to uid {}; only that user or an \
                     admin may release or renew it",
                    state.url,
                    parsed.uid.map_or("unknown".to_owned(), |u| u.to_string())
                ),
            ));
        }
        Ok(Some((observed, parsed)))
    }

    async fn release_detached(
        &self,
        state: &TargetLockState,
        session: &SessionLink,
        lock_id: &str,
    ) -> Result<Response, WireError> {
        let Some((observed, _)) = self.detached_lease(state, session, lock_id).await? else {
            return Ok(Response::Released { held: false });
        };
        match self.delete_if_ours(state, &observed.version()).await {
            Some(Conditional::Done) => {
                tracing::info!(target = %state.url, %lock_id, "detached lease released");
                Ok(Response::Released { held: true })
            }
            _ => Ok(Response::Released { held: false }),
        }
    }

    async fn renew_detached(
        &self,
        state: &TargetLockState,
        session: &SessionLink,
        lock_id: &str,
        ttl: Option<Duration>,
    ) -> Result<Response, WireError> {
        let gone = || {
            WireError::new(
                ErrorKind::LeaseLost,
                format!(
                    "{} holds no detached lease {lock_id}: it ran out, was released or was \
                     broken",
                    state.url
                ),
            )
        };
        let Some((observed, parsed)) = self.detached_lease(state, session, lock_id).await? else {
            return Err(gone());
        };
        let now = self.ctx.now();
        let record = LockRecord {
            created_at: now,
            acquired_at: parsed.acquired_at().unwrap_or(now),
            ttl: ttl.unwrap_or(Duration::from_nanos(parsed.ttl_ns.max(1) as u64)),
            hostname: self.ctx.host_id.clone(),
            pid: parsed.pid,
            owner_id: parsed.owner_id.clone(),
            lock_id: lock_id.to_owned(),
            daemon_id: self.ctx.instance_id.clone(),
            token: parsed.token,
            uid: parsed.uid,
            detached: true,
        };
        if record.ttl.is_zero() {
            return Err(WireError::new(
                ErrorKind::InvalidTarget,
                "a detached lease needs a TTL above zero",
            ));
        }
        let (_, stale) = self.judge(state, &observed);
        if stale {
            return Err(gone());
        }
        match self
            .within(self.store(state).replace(
                &state.lock_path,
                &observed.version(),
                Token::Keep,
                maker(Arc::new(record)),
            ))
            .await
        {
            Ok(Replaced::Done(written)) => Ok(Response::Renewed(lockfile::to_wire(
                &lockfile::parse(&written.bytes),
                written.modified,
                false,
            ))),
            Ok(Replaced::Changed) => Err(gone()),
            Err(e) => Err(store_error(e)),
        }
    }

    /// An admin's break: the holder of this daemon is told its lease is lost; any other
    /// holder's file (another host's, a Go peer's, a detached lease) is deleted if it is still
    /// the version read, and its holder, if a vfslockd serves it, learns at its next renewal.
    async fn break_lock(
        &self,
        myself: &ActorRef<TargetLockMessage>,
        state: &mut TargetLockState,
        session: &SessionLink,
        reason: &str,
    ) -> Result<Response, WireError> {
        let who = format!(
            "uid {} (pid {})",
            session
                .peer
                .uid
                .map_or("unknown".to_owned(), |u| u.to_string()),
            session.peer.pid
        );
        if let Some(holding) = &state.holder {
            let broken = lockfile::into_wire(lockfile::parse(&holding.written.bytes), None, false);
            tracing::warn!(target = %state.url, by = %who, %reason, holder_pid = broken.pid, "lock broken by an admin");
            let why = format!("the lock on {} was broken by {who}: {reason}", state.url);
            self.lose(myself, state, why, true).await;
            return Ok(Response::Broken(Some(broken)));
        }
        for _ in 0..4 {
            let observed = self
                .within(self.store(state).read(&state.lock_path))
                .await
                .map_err(store_error)?;
            let Some(observed) = observed else {
                return Ok(Response::Broken(None));
            };
            match self
                .within(
                    self.store(state)
                        .delete(&state.lock_path, &observed.version()),
                )
                .await
                .map_err(store_error)?
            {
                Conditional::Done => {
                    let (broken, _) = self.judge(state, &observed);
                    tracing::warn!(target = %state.url, by = %who, %reason, holder_pid = broken.pid, holder_host = %broken.hostname, "lock broken by an admin");
                    return Ok(Response::Broken(Some(broken)));
                }
                Conditional::Changed => continue,
            }
        }
        Err(WireError::new(
            ErrorKind::Store,
            format!(
                "the lock file of {} kept changing while it was being broken; try again",
                state.url
            ),
        ))
    }

    /// The next local waiter to hand the lock to, if the handoff streak allows one more.
    /// While this daemon's waiters wait for a holder elsewhere (not for a cooldown of its own),
    /// tells the other daemons, once per re-check, so that the holder's daemon gives them their
    /// turn ([`Self::uncap_if_nobody_else_waits`]).
    async fn mark_waiting(&self, state: &mut TargetLockState) {
        if state.holder.is_none()
            && !state.waiters.is_empty()
            && state.recheck_scheduled
            && state.cooldown_until.is_none()
            && state.marked_generation != state.recheck_generation
        {
            state.marked_generation = state.recheck_generation;
            state
                .store
                .mark_waiting(&state.lock_path, &self.ctx.instance_id)
                .await;
        }
    }

    /// At a capped handoff streak, starts a new one if no daemon elsewhere marked itself
    /// waiting lately: the cap and its cooldown exist for other hosts' waiters, which poll, and
    /// without them they would only slow down this daemon's queue.
    async fn uncap_if_nobody_else_waits(&self, state: &mut TargetLockState) {
        let settings = &self.ctx.settings;
        let capped = state.streak.is_some_and(|(count, since)| {
            count >= settings.handoff_max_count || since.elapsed() >= settings.handoff_max_time
        });
        if !capped || state.waiters.is_empty() {
            return;
        }
        // A waiting daemon re-checks at least every `recheck-max` (with jitter).
        let fresh = settings.recheck_max * 3;
        if !state
            .store
            .others_waiting(&state.lock_path, fresh, &self.ctx.instance_id)
            .await
        {
            state.streak = None;
        }
    }

    fn next_handoff(&self, state: &mut TargetLockState) -> Option<Waiter> {
        let settings = &self.ctx.settings;
        if !state.store.can_replace() {
            return None;
        }
        let allowed = match state.streak {
            // Nobody outside this daemon can wait for a private store's lock: no streak cap, no
            // cooldown; the local queue alone is first come, first served.
            _ if state.store.is_private() => true,
            None => settings.handoff_max_count > 0,
            Some((count, since)) => {
                count < settings.handoff_max_count && since.elapsed() < settings.handoff_max_time
            }
        };
        if !allowed {
            return None;
        }
        while let Some(waiter) = state.waiters.pop_front() {
            Stats::add(&self.ctx.stats.waiting, -1);
            if !waiter.session.is_closed() {
                return Some(waiter);
            }
        }
        None
    }

    /// [`delete_if_ours`](Self::delete_if_ours) at the end of a holding: a delete that fails
    /// is retried later ([`super::Leftover`]).
    async fn delete_or_retry(
        &self,
        state: &mut TargetLockState,
        written: &crate::store::Version,
    ) -> Option<Conditional> {
        let outcome = self.delete_if_ours(state, written).await;
        if outcome.is_none() {
            let ttl_ns = crate::lockfile::parse(&written.bytes).ttl_ns;
            let ttl = u64::try_from(ttl_ns)
                .ok()
                .filter(|&ns| ns > 0)
                .map_or(self.ctx.settings.default_ttl, Duration::from_nanos);
            state.leftover = Some(Box::new(super::Leftover {
                version: written.clone(),
                give_up_at: Instant::now() + ttl,
                delay: self.ctx.settings.recheck_min,
                scheduled: false,
            }));
        }
        outcome
    }

    fn schedule_leftover(&self, myself: &ActorRef<TargetLockMessage>, state: &mut TargetLockState) {
        if let Some(leftover) = state.leftover.as_mut().filter(|l| !l.scheduled) {
            leftover.scheduled = true;
            myself.send_after(leftover.delay, || TargetLockMessage::RetryDelete);
        }
    }

    async fn retry_delete(
        &self,
        myself: &ActorRef<TargetLockMessage>,
        state: &mut TargetLockState,
    ) {
        let Some(mut leftover) = state.leftover.take() else {
            return;
        };
        leftover.scheduled = false;
        match self
            .within(
                self.store(state)
                    .delete(&state.lock_path, &leftover.version),
            )
            .await
        {
            Ok(outcome) => {
                tracing::info!(target = %state.url, ?outcome, "retried the delete of our lock file");
                // Waiters here may take it now rather than at their next re-check.
                self.serve_queue(myself, state).await;
            }
            Err(e) if Instant::now() < leftover.give_up_at => {
                tracing::debug!(target = %state.url, error = %e, "the delete of our lock file failed again");
                leftover.delay = (leftover.delay * 2).min(self.ctx.settings.recheck_max);
                state.leftover = Some(leftover);
            }
            Err(e) => tracing::error!(
                target = %state.url,
                error = %e,
                "gave up deleting our lock file; it is stale now"
            ),
        }
    }

    /// Deletes the lock file if it still holds `written`; logs what else happened.
    async fn delete_if_ours(
        &self,
        state: &TargetLockState,
        written: &crate::store::Version,
    ) -> Option<Conditional> {
        match self
            .within(self.store(state).delete(&state.lock_path, written))
            .await
        {
            Ok(Conditional::Done) => Some(Conditional::Done),
            Ok(Conditional::Changed) => {
                tracing::warn!(
                    target = %state.url,
                    "the lock file was no longer the one this daemon wrote; left it alone"
                );
                Some(Conditional::Changed)
            }
            Err(e) => {
                tracing::error!(
                    target = %state.url,
                    error = %e,
                    "could not delete the lock file"
                );
                None
            }
        }
    }

    /// Ends the holding because its lease is lost: the holder is told first, then (if the
    /// file may still be ours) a conditional delete is the only write left.
    async fn lose(
        &self,
        myself: &ActorRef<TargetLockMessage>,
        state: &mut TargetLockState,
        reason: String,
        try_delete: bool,
    ) {
        let Some(holding) = state.holder.take() else {
            return;
        };
        Stats::add(&self.ctx.stats.held, -1);
        state.cancel_renewal();
        tracing::warn!(target = %state.url, %reason, "lease lost");
        holding.session.acquire_ended(holding.acquire_id);
        holding
            .session
            .event(holding.acquire_id, Event::LeaseLost { reason });
        if try_delete {
            self.delete_or_retry(state, &holding.written).await;
        }
        self.ctx.journal_release(&holding.record.lock_id);
        self.serve_queue(myself, state).await;
    }

    async fn renew(&self, myself: &ActorRef<TargetLockMessage>, state: &mut TargetLockState) {
        let Some(holding) = state.holder.as_ref() else {
            return;
        };
        let sent = Instant::now();
        let remaining = holding
            .valid_until
            .map(|until| until.saturating_duration_since(sent));
        if remaining == Some(Duration::ZERO) {
            let reason = format!(
                "the lease on {} could not be renewed before its deadline",
                state.url
            );
            return self.lose(myself, state, reason, true).await;
        }
        let mut record = holding.record.clone();
        record.created_at = self.ctx.now();
        let ttl = record.ttl;
        let limit = remaining.map_or(self.ctx.settings.store_timeout, |r| {
            r.min(self.ctx.settings.store_timeout)
        });
        let outcome = self
            .within_for(
                limit,
                self.store(state).replace(
                    &state.lock_path,
                    &holding.written,
                    Token::Keep,
                    maker(Arc::new(record.clone())),
                ),
            )
            .await;
        match outcome {
            Ok(Replaced::Done(written)) => {
                state.store.count_renewal();
                let valid_until = self.valid_until(sent, ttl);
                let holding = state.holder.as_mut().expect("checked above");
                holding.record = record;
                holding.written = written.version();
                holding.valid_until = valid_until;
                holding.retry_delay = RENEW_RETRY_MIN;
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
                let reason = format!(
                    "the lock file of {} was replaced or removed by someone else",
                    state.url
                );
                self.lose(myself, state, reason, false).await;
            }
            Err(e) => {
                // Retry with backoff while the deadline allows; the retry that finds the
                // deadline passed declares the loss.
                let holding = state.holder.as_mut().expect("checked above");
                let left = holding.valid_until.map_or(Duration::MAX, |until| {
                    until.saturating_duration_since(Instant::now())
                });
                let delay = holding.retry_delay.min(left);
                holding.retry_delay = (holding.retry_delay * 2).min(ttl / 3);
                tracing::warn!(target = %state.url, error = %e, retry_in = ?delay, "renewal failed");
                schedule_renewal(myself, state, delay);
            }
        }
    }

    /// Grants the lock to waiters in order while nobody here holds it.
    async fn serve_queue(&self, myself: &ActorRef<TargetLockMessage>, state: &mut TargetLockState) {
        if let Some(until) = state.cooldown_until {
            let left = until.saturating_duration_since(Instant::now());
            if !left.is_zero() && !state.waiters.is_empty() {
                // Holding back after a capped handoff streak; look again when it ends.
                if !state.recheck_scheduled {
                    state.recheck_generation += 1;
                    state.recheck_scheduled = true;
                    let generation = state.recheck_generation;
                    myself.send_after(left, move || TargetLockMessage::Recheck { generation });
                }
                return;
            }
            state.cooldown_until = None;
        }
        while state.holder.is_none() && state.steal.is_none() {
            let Some(waiter) = state.waiters.pop_front() else {
                break;
            };
            Stats::add(&self.ctx.stats.waiting, -1);
            if waiter.session.is_closed() {
                continue;
            }
            match self.attempt(myself, state, waiter).await {
                Attempt::Granted | Attempt::Asked => {}
                Attempt::Held(waiter, holder) => {
                    state.waiters.push_front(*waiter);
                    Stats::add(&self.ctx.stats.waiting, 1);
                    self.schedule_recheck(myself, state, Some(&holder));
                    break;
                }
                Attempt::Failed(waiter, error) => {
                    waiter.session.reply(waiter.acquire_id, Err(error))
                }
            }
        }
        if state.waiters.is_empty() {
            state.recheck_delay = self.ctx.settings.recheck_min;
        }
    }

    /// Schedules a look at a lock file held outside this daemon: exponential backoff with
    /// jitter, but never later than the moment the file turns stale.
    fn schedule_recheck(
        &self,
        myself: &ActorRef<TargetLockMessage>,
        state: &mut TargetLockState,
        holder: Option<&LockMetadata>,
    ) {
        if state.recheck_scheduled || state.holder.is_some() {
            return;
        }
        let settings = &self.ctx.settings;
        let mut delay = jitter(state.recheck_delay);
        if let Some(until_stale) = holder.and_then(|h| self.until_stale(h)) {
            delay = delay.min(until_stale + Duration::from_millis(1));
        }
        state.recheck_delay = (state.recheck_delay * 2).min(settings.recheck_max);
        state.recheck_generation += 1;
        state.recheck_scheduled = true;
        let generation = state.recheck_generation;
        myself.send_after(delay, move || TargetLockMessage::Recheck { generation });
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

    async fn cancel(
        &self,
        myself: &ActorRef<TargetLockMessage>,
        state: &mut TargetLockState,
        session_id: u64,
        acquire_id: RequestId,
    ) {
        if let Some(waiter) = state.remove_waiter(session_id, acquire_id) {
            Stats::add(&self.ctx.stats.waiting, -1);
            waiter.session.reply(
                acquire_id,
                Err(WireError::new(
                    ErrorKind::Cancelled,
                    "the acquire was cancelled",
                )),
            );
        } else if state
            .steal
            .as_ref()
            .is_some_and(|s| s.waiter.is(session_id, acquire_id))
        {
            let pending = state.steal.take().expect("checked above");
            pending.waiter.session.reply(
                acquire_id,
                Err(WireError::new(
                    ErrorKind::Cancelled,
                    "the acquire was cancelled",
                )),
            );
        } else if state
            .holder
            .as_ref()
            .is_some_and(|h| h.session.id == session_id && h.acquire_id == acquire_id)
        {
            // The grant crossed the cancel: nobody wants it, so give it back at once.
            let _ = self.release_holder(myself, state).await;
        }
    }

    async fn drop_session(
        &self,
        myself: &ActorRef<TargetLockMessage>,
        state: &mut TargetLockState,
        session_id: u64,
    ) {
        let before = state.waiters.len();
        state.waiters.retain(|w| w.session.id != session_id);
        Stats::add(
            &self.ctx.stats.waiting,
            -((before - state.waiters.len()) as i64),
        );
        if state
            .steal
            .as_ref()
            .is_some_and(|s| s.waiter.session.id == session_id)
        {
            state.steal = None;
        }
        if state
            .holder
            .as_ref()
            .is_some_and(|h| h.session.id == session_id)
        {
            let _ = self.release_holder(myself, state).await;
        }
    }

    async fn read_metadata(
        &self,
        state: &TargetLockState,
    ) -> Result<Option<LockMetadata>, WireError> {
        match self.within(self.store(state).read(&state.lock_path)).await {
            Ok(None) => Ok(None),
            Ok(Some(observed)) => Ok(Some(self.judge(state, &observed).0)),
            Err(e) => Err(store_error(e)),
        }
    }

    /// The current holder's lock file: ours from memory, otherwise read from the store.
    async fn holder_metadata(&self, state: &TargetLockState) -> Option<LockMetadata> {
        if let Some(holding) = &state.holder {
            return Some(lockfile::into_wire(holding.record.to_parsed(), None, false));
        }
        if let Some(steal) = &state.steal {
            return Some(steal.holder.clone());
        }
        self.read_metadata(state).await.ok().flatten()
    }

    fn snapshot(&self, state: &TargetLockState) -> Option<ListEntry> {
        if state.is_idle() {
            return None;
        }
        let holder = state.holder.as_ref();
        Some(ListEntry {
            target: state.url.clone(),
            lock_id: holder.map(|h| h.record.lock_id.clone()),
            pid: holder.map(|h| h.record.pid),
            uid: holder.and_then(|h| h.session.peer.uid),
            owner_id: holder.and_then(|h| h.record.owner_id.clone()),
            held_for: holder.map(|h| h.since.elapsed()),
            ttl: holder.map(|h| h.record.ttl).unwrap_or_default(),
            token: holder.and_then(|h| h.record.token),
            waiters: state.waiters.len() as u32,
        })
    }

    async fn shut_down(&self, state: &mut TargetLockState) {
        let refusal = || WireError::new(ErrorKind::ShuttingDown, "vfslockd is shutting down");
        for waiter in state.waiters.drain(..) {
            Stats::add(&self.ctx.stats.waiting, -1);
            waiter.session.reply(waiter.acquire_id, Err(refusal()));
        }
        if let Some(pending) = state.steal.take() {
            pending
                .waiter
                .session
                .reply(pending.waiter.acquire_id, Err(refusal()));
        }
        if let Some(holding) = state.holder.take() {
            Stats::add(&self.ctx.stats.held, -1);
            state.cancel_renewal();
            holding.session.event(
                holding.acquire_id,
                Event::Releasing {
                    reason: "vfslockd is shutting down and releases this lock".into(),
                },
            );
            self.delete_if_ours(state, &holding.written).await;
            self.ctx.journal_release(&holding.record.lock_id);
            holding.session.acquire_ended(holding.acquire_id);
        }
    }

    /// Keeps an idle-check timer running while the actor is idle.
    fn track_idleness(&self, myself: &ActorRef<TargetLockMessage>, state: &mut TargetLockState) {
        if !state.is_idle() {
            state.idle_since = None;
            return;
        }
        if state.idle_since.is_none() {
            state.idle_since = Some(Instant::now());
        }
        if !state.idle_check_scheduled {
            state.idle_check_scheduled = true;
            myself.send_after(self.ctx.settings.idle_actor_timeout, || {
                TargetLockMessage::IdleCheck
            });
        }
    }

    /// Stops the actor if it has been idle long enough and the registry agrees that no
    /// message is on its way to it.
    fn try_retire(
        &self,
        myself: &ActorRef<TargetLockMessage>,
        state: &mut TargetLockState,
    ) -> bool {
        let idle_long_enough = state
            .idle_since
            .is_some_and(|since| since.elapsed() >= self.ctx.settings.idle_actor_timeout);
        if state.is_idle()
            && idle_long_enough
            && self
                .ctx
                .registry
                .try_retire(&state.key, myself.get_id(), state.handled)
        {
            myself.stop(Some("idle".into()));
            return true;
        }
        false
    }
}

/// Why a steal did not happen.
enum StealLost {
    /// The file changed after it was judged; the waiter comes back.
    Changed(Box<Waiter>),
    /// The store failed.
    Failed(Box<Waiter>, WireError),
}

/// First delay before retrying a failed renewal.
const RENEW_RETRY_MIN: Duration = Duration::from_millis(50);

/// The lock file's bytes for `record`, with the token the store issues (or the record's own
/// when renewing).
fn maker(record: Arc<LockRecord>) -> MakeLock {
    Box::new(move |token| record.to_json_with_token(token.or(record.token)))
}

/// The answer for a lock file others keep changing faster than we can read it: held, by
/// someone we could not pin down.
fn busy(waiter: Waiter, url: &str) -> Attempt {
    let mut holder = lockfile::into_wire(lockfile::parse(b"{}"), None, false);
    holder.hostname = format!("(busy: the lock file of {url} kept changing)");
    Attempt::Held(Box::new(waiter), Box::new(holder))
}

fn lease_lost_at_release(url: &str, why: &str) -> WireError {
    WireError::new(
        ErrorKind::LeaseLost,
        format!("the lease on {url} had been lost before the release: {why}; the lock file was left alone"),
    )
}

/// Whether a new holding's lock id goes into the crash journal: not for detached leases (their
/// lock file is their state) nor on a private store, whose lock files die with the daemon.
fn journaled(state: &TargetLockState, record: &LockRecord) -> bool {
    !record.detached && !state.store.is_private()
}

/// Sends this actor the renewal of the current holding after `delay`, replacing (and so
/// stopping) the timer of the one before.
fn schedule_renewal(
    myself: &ActorRef<TargetLockMessage>,
    state: &mut TargetLockState,
    delay: Duration,
) {
    let generation = state.renew_generation;
    state.renewal_timer =
        Some(Timer(myself.send_after(delay, move || {
            TargetLockMessage::Renew { generation }
        })));
}

/// When a new holding is first renewed: anywhere from a tenth of a third of the TTL to a third.
/// Locks granted together (a job that takes 10,000 at once) would otherwise renew together,
/// every third of the TTL, in one burst; spread once, [`next_renewal`] keeps them spread.
/// Renewing early is always safe: the lease only gets longer.
fn first_renewal(ttl: Duration) -> Duration {
    (ttl / 3).mul_f64(0.1 + 0.9 * unit_random())
}

/// The delay between renewals: a third of the TTL, less up to a tenth of it at random, so that
/// renewals that happen to fall together drift apart instead of staying in step.
fn next_renewal(ttl: Duration) -> Duration {
    (ttl / 3).mul_f64(0.9 + 0.1 * unit_random())
}

/// A random number in [0, 1), for spreading timers: from a per-thread xorshift generator
/// seeded once from the OS, so that a grant does not pay a `getrandom` system call for it.
fn unit_random() -> f64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut seed = [0u8; 8];
            let _ = getrandom::fill(&mut seed);
            u64::from_le_bytes(seed) | 1
        });
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    })
}

/// ±25 % of `delay`, so waiters of many daemons do not poll in step.
fn jitter(delay: Duration) -> Duration {
    let mut byte = [0u8; 1];
    let _ = getrandom::fill(&mut byte);
    let factor = 0.75 + f64::from(byte[0]) / 255.0 * 0.5;
    delay.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::outbound::{Outbound, Outgoing};
    use crate::target::Peer;
    use vfslock_proto::ServerFrame;

    /// What a session's writer task would write.
    type Frames = tokio::sync::mpsc::UnboundedReceiver<Outgoing>;

    fn future_size<F: std::future::Future>(_: &F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every actor's task holds the future of the message being handled for its whole life;
    /// the real work is boxed per message so that an idle or held lock does not pay for it.
    #[tokio::test]
    async fn an_actors_resident_message_future_stays_small() {
        let settings = crate::config::Settings::defaults();
        let stores = crate::store::Stores::new(&settings).await.unwrap();
        let ctx = Arc::new(Context::new(settings, stores, "host".into()));
        let address = Address::parse("mem:///x").unwrap();
        let (actor_ref, _handle) =
            ractor::Actor::spawn(None, TargetLock { ctx: ctx.clone() }, address.clone())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        let actor = TargetLock { ctx };
        let mut state = ractor::Actor::pre_start(&actor, actor_ref.clone(), address)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let handling = ractor::Actor::handle(
            &actor,
            actor_ref.clone(),
            TargetLockMessage::IdleCheck,
            &mut state,
        );
        let size = future_size(&handling);
        drop(handling);
        assert!(size <= 256, "the resident handle future is {size} bytes");
        actor_ref.stop(None);
    }

    /// An actor on `mem:///timers` and two sessions to drive it with, as a session would.
    async fn actor_and_sessions() -> (ActorRef<TargetLockMessage>, [(Arc<SessionLink>, Frames); 2])
    {
        let settings = crate::config::Settings::defaults();
        let stores = crate::store::Stores::new(&settings).await.unwrap();
        let ctx = Arc::new(Context::new(settings, stores, "host".into()));
        let address = Address::parse("mem:///timers").unwrap();
        let (actor, _handle) = ractor::Actor::spawn(None, TargetLock { ctx }, address)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let session = |id| {
            let (out, frames) = Outbound::queued();
            let peer = Peer {
                pid: 1,
                uid: Some(0),
                admin: true,
            };
            (Arc::new(SessionLink::new(id, out, peer)), frames)
        };
        (actor, [session(1), session(2)])
    }

    fn acquire(session: &Arc<SessionLink>, id: RequestId, wait: WaitMode) -> TargetLockMessage {
        TargetLockMessage::Acquire {
            session: session.clone(),
            id,
            request: AcquireRequest {
                target: "mem:///timers".into(),
                ttl: Some(Duration::from_secs(30)),
                owner_id: None,
                wait,
                ask_on_stale: false,
                detached: false,
            },
        }
    }

    fn release(session: &Arc<SessionLink>, id: RequestId, lock_id: String) -> TargetLockMessage {
        TargetLockMessage::Release {
            session: session.clone(),
            id,
            lock_id,
        }
    }

    fn alive_tasks() -> usize {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    }

    /// The next answer (events skipped) of a session.
    async fn answer(frames: &mut Frames) -> Result<Response, WireError> {
        loop {
            match frames.recv().await.expect("the session's queue is open") {
                Outgoing::Frame(ServerFrame::Response { result, .. }) => return result,
                Outgoing::Frame(ServerFrame::Event { .. }) => continue,
                Outgoing::Rest(_) => panic!("a queued-only session got raw bytes"),
            }
        }
    }

    async fn granted(frames: &mut Frames) -> String {
        match answer(frames).await {
            Ok(Response::Granted(grant)) => grant.lock_id,
            other => panic!("expected a grant, got {other:?}"),
        }
    }

    async fn released(frames: &mut Frames) {
        match answer(frames).await {
            Ok(Response::Released { held: true }) => {}
            other => panic!("expected a release, got {other:?}"),
        }
    }

    /// How many more tasks are alive than `before`, once aborted ones had the turns to go.
    async fn tasks_left_over(before: usize) -> usize {
        for _ in 0..100 {
            if alive_tasks() <= before + 2 {
                break;
            }
            tokio::task::yield_now().await;
        }
        alive_tasks().saturating_sub(before)
    }

    /// A lock taken and released many times a second must not leave a renewal timer asleep
    /// behind each holding: with a 30 s TTL each would live for up to 10 s, and a busy lock
    /// piled up tens of thousands of them (memory, and a fuller timer wheel on every cycle).
    #[tokio::test]
    async fn a_release_stops_the_renewal_timer_of_its_holding() {
        let (actor, [(session, mut frames), _]) = actor_and_sessions().await;
        let before = alive_tasks();
        const CYCLES: u64 = 50;
        for cycle in 0..CYCLES {
            let id = cycle * 2 + 1;
            actor.cast(acquire(&session, id, WaitMode::Try)).unwrap();
            let lock_id = granted(&mut frames).await;
            actor.cast(release(&session, id + 1, lock_id)).unwrap();
            released(&mut frames).await;
        }
        let left = tasks_left_over(before).await;
        assert!(
            left <= 2,
            "{left} tasks outlive {CYCLES} released holdings: renewal timers were left asleep"
        );
        actor.stop(None);
    }

    /// The same for the timeout of a wait that was granted in time.
    #[tokio::test]
    async fn a_granted_wait_stops_its_timeout_timer() {
        let (actor, [(first, mut first_frames), (second, mut second_frames)]) =
            actor_and_sessions().await;
        let before = alive_tasks();
        const CYCLES: u64 = 20;
        let patient = WaitMode::Wait {
            timeout: Some(Duration::from_secs(60)),
        };
        for cycle in 0..CYCLES {
            let id = cycle * 2 + 1;
            actor.cast(acquire(&first, id, WaitMode::Try)).unwrap();
            let first_lock = granted(&mut first_frames).await;
            // Queued behind the holder, with a timeout timer of its own.
            actor.cast(acquire(&second, id, patient)).unwrap();
            actor.cast(release(&first, id + 1, first_lock)).unwrap();
            released(&mut first_frames).await;
            let second_lock = granted(&mut second_frames).await;
            actor.cast(release(&second, id + 1, second_lock)).unwrap();
            released(&mut second_frames).await;
        }
        let left = tasks_left_over(before).await;
        assert!(
            left <= 2,
            "{left} tasks outlive {CYCLES} granted waits: their timeout timers were left asleep"
        );
        actor.stop(None);
    }
}

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

use super::{Holding, PendingSteal, SessionLink, TargetLockState, Waiter};
use crate::address::{Address, Scheme};
use crate::context::{random_id, Context, Stats};
use crate::lockfile::{self, LockRecord};
use crate::store::{Conditional, Created, Observed, Store};

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
    Held(Box<Waiter>, LockMetadata),
    /// The store failed; the waiter comes back with the error.
    Failed(Box<Waiter>, WireError),
}

fn store_error(message: impl Into<String>) -> WireError {
    WireError::new(ErrorKind::Store, message)
}

/// Where a target's lock file lives inside its store. `mem://` volumes get their own prefix so
/// `mem://vol/x` and `mem:///vol/x` never share a file.
fn store_path(address: &Address) -> String {
    match address.scheme() {
        Scheme::File => address.lock_path(),
        Scheme::Mem if address.authority().is_empty() => format!("root{}", address.lock_path()),
        Scheme::Mem => format!("vol/{}{}", address.authority(), address.lock_path()),
    }
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
        Stats::add(&self.ctx.stats.targets, 1);
        Ok(TargetLockState {
            url: address.url(),
            scheme: address.scheme(),
            key: address.key(),
            lock_path: store_path(&address),
            holder: None,
            waiters: Default::default(),
            steal: None,
            renew_generation: 0,
            recheck_generation: 0,
            recheck_scheduled: false,
            recheck_delay: self.ctx.settings.recheck_min,
            handled: 0,
            idle_since: Some(Instant::now()),
            idle_check_scheduled: false,
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
                if held {
                    self.release_holder(state).await;
                }
                session.reply(id, Ok(Response::Released { held }));
                self.serve_queue(&myself, state).await;
            }
            TargetLockMessage::Cancel {
                session,
                id,
                acquire_id,
            } => {
                self.cancel(state, session.id, acquire_id).await;
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
                self.drop_session(state, session_id).await;
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
        }
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
    fn store(&self, state: &TargetLockState) -> &Store {
        self.ctx
            .stores
            .get(state.scheme)
            .expect("sessions route only targets of configured stores")
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
        let waiter = Waiter {
            session,
            acquire_id: id,
            request,
            ttl,
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
                self.refuse_or_queue(myself, state, *waiter, Some(holder.clone()));
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
        waiter: Waiter,
        holder: Option<LockMetadata>,
    ) {
        match waiter.request.wait {
            WaitMode::Try => {
                let mut error = WireError::new(
                    ErrorKind::AlreadyHeld,
                    format!(
                        "{} is already locked{}; run `vfslockctl show {}` to see who holds it",
                        state.url,
                        describe_holder(holder.as_ref()),
                        state.url
                    ),
                );
                error.holder = holder.map(Box::new);
                waiter.session.reply(waiter.acquire_id, Err(error));
            }
            WaitMode::Wait { timeout } => {
                if let Some(timeout) = timeout {
                    let (session_id, acquire_id) = (waiter.session.id, waiter.acquire_id);
                    myself.send_after(timeout, move || TargetLockMessage::WaitExpired {
                        session_id,
                        acquire_id,
                    });
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
        waiter: Waiter,
    ) -> Attempt {
        let store = self.store(state);
        // A file that vanishes between our create and our read, or changes between our read
        // and our steal, is raced by someone else: look again, a few times.
        for _ in 0..4 {
            let record = self.new_record(&waiter, None);
            let bytes = record.to_json();
            match store.create(&state.lock_path, bytes.clone()).await {
                Err(e) => return Attempt::Failed(Box::new(waiter), store_error(e.message)),
                Ok(Created::Won) => {
                    self.grant(myself, state, waiter, record, bytes, None);
                    return Attempt::Granted;
                }
                Ok(Created::Exists) => {}
            }
            let observed = match store.read(&state.lock_path).await {
                Err(e) => return Attempt::Failed(Box::new(waiter), store_error(e.message)),
                Ok(None) => continue,
                Ok(Some(observed)) => observed,
            };
            let (holder, stale) = self.judge(&observed);
            if !stale {
                return Attempt::Held(Box::new(waiter), holder);
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
                Err(StealLost::Changed(back)) => {
                    return self.retry_after_lost_steal(myself, state, *back).await
                }
                Err(StealLost::Failed(back, error)) => return Attempt::Failed(back, error),
            }
        }
        Attempt::Failed(
            Box::new(waiter),
            store_error(format!(
                "the lock file of {} kept changing while it was being taken; try again",
                state.url
            )),
        )
    }

    /// After a steal found the file changed: look at it afresh, once, without recursion.
    async fn retry_after_lost_steal(
        &self,
        myself: &ActorRef<TargetLockMessage>,
        state: &mut TargetLockState,
        waiter: Waiter,
    ) -> Attempt {
        let store = self.store(state);
        match store.read(&state.lock_path).await {
            Err(e) => Attempt::Failed(Box::new(waiter), store_error(e.message)),
            Ok(Some(observed)) => {
                let (holder, _) = self.judge(&observed);
                Attempt::Held(Box::new(waiter), holder)
            }
            Ok(None) => {
                let record = self.new_record(&waiter, None);
                let bytes = record.to_json();
                match store.create(&state.lock_path, bytes.clone()).await {
                    Ok(Created::Won) => {
                        self.grant(myself, state, waiter, record, bytes, None);
                        Attempt::Granted
                    }
                    Ok(Created::Exists) => Attempt::Held(Box::new(waiter), self.unknown_holder()),
                    Err(e) => Attempt::Failed(Box::new(waiter), store_error(e.message)),
                }
            }
        }
    }

    fn unknown_holder(&self) -> LockMetadata {
        lockfile::to_wire(&lockfile::parse(b""), None, false)
    }

    /// Parses a lock file and judges it stale or not, now.
    fn judge(&self, observed: &Observed) -> (LockMetadata, bool) {
        let parsed = lockfile::parse(&observed.bytes);
        let stale = lockfile::is_stale(
            &parsed,
            observed.modified,
            self.ctx.now(),
            self.ctx.settings.corrupt_grace,
        );
        (lockfile::to_wire(&parsed, observed.modified, stale), stale)
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
        let record = self.new_record(&waiter, None);
        let bytes = record.to_json();
        match self
            .store(state)
            .replace(&state.lock_path, bytes.clone(), &judged.bytes)
            .await
        {
            Ok(Conditional::Done) => {
                tracing::info!(target = %state.url, stale_pid = holder.pid, stale_host = %holder.hostname, "took over a stale lock");
                self.grant(myself, state, waiter, record, bytes, Some(holder));
                Ok(())
            }
            Ok(Conditional::Changed) => Err(StealLost::Changed(Box::new(waiter))),
            Err(e) => Err(StealLost::Failed(Box::new(waiter), store_error(e.message))),
        }
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
        }
    }

    fn grant(
        &self,
        myself: &ActorRef<TargetLockMessage>,
        state: &mut TargetLockState,
        waiter: Waiter,
        record: LockRecord,
        written: Vec<u8>,
        stole: Option<LockMetadata>,
    ) {
        let metadata = lockfile::to_wire(&lockfile::parse(&written), None, false);
        let grant = Grant {
            target: state.url.clone(),
            lock_id: record.lock_id.clone(),
            metadata,
            stole,
        };
        let ttl = record.ttl;
        waiter
            .session
            .reply(waiter.acquire_id, Ok(Response::Granted(grant)));
        state.holder = Some(Holding {
            session: waiter.session,
            acquire_id: waiter.acquire_id,
            record,
            written,
            since: Instant::now(),
        });
        Stats::add(&self.ctx.stats.held, 1);
        state.recheck_delay = self.ctx.settings.recheck_min;
        state.renew_generation += 1;
        if !ttl.is_zero() {
            let generation = state.renew_generation;
            myself.send_after(ttl / 3, move || TargetLockMessage::Renew { generation });
        }
    }

    /// Deletes the holder's lock file (if it is still ours) and forgets the holder.
    async fn release_holder(&self, state: &mut TargetLockState) {
        let Some(holding) = state.holder.take() else {
            return;
        };
        Stats::add(&self.ctx.stats.held, -1);
        state.renew_generation += 1;
        match self
            .store(state)
            .delete(&state.lock_path, &holding.written)
            .await
        {
            Ok(Conditional::Done) => {}
            Ok(Conditional::Changed) => tracing::warn!(
                target = %state.url,
                "at release the lock file was no longer the one this daemon wrote; left it alone"
            ),
            Err(e) => tracing::error!(
                target = %state.url,
                error = %e,
                "could not delete the lock file at release; it goes stale when its TTL runs out"
            ),
        }
    }

    async fn renew(&self, myself: &ActorRef<TargetLockMessage>, state: &mut TargetLockState) {
        let Some(holding) = state.holder.as_ref() else {
            return;
        };
        let mut record = holding.record.clone();
        record.created_at = self.ctx.now();
        let bytes = record.to_json();
        let ttl = record.ttl;
        let outcome = self
            .store(state)
            .replace(&state.lock_path, bytes.clone(), &holding.written)
            .await;
        let generation = state.renew_generation;
        match outcome {
            Ok(Conditional::Done) => {
                let holding = state.holder.as_mut().expect("checked above");
                holding.record = record;
                holding.written = bytes;
                myself.send_after(ttl / 3, move || TargetLockMessage::Renew { generation });
            }
            Ok(Conditional::Changed) => {
                let holding = state.holder.take().expect("checked above");
                Stats::add(&self.ctx.stats.held, -1);
                state.renew_generation += 1;
                tracing::warn!(target = %state.url, "lease lost: the lock file was replaced or removed by someone else");
                holding.session.event(
                    holding.acquire_id,
                    Event::LeaseLost {
                        reason: format!(
                            "the lock file of {} was replaced or removed by someone else",
                            state.url
                        ),
                    },
                );
                self.serve_queue(myself, state).await;
            }
            Err(e) => {
                // Try again soon; the safety issue bounds this by the lease deadline.
                tracing::warn!(target = %state.url, error = %e, "renewal failed; retrying");
                myself.send_after(ttl / 10, move || TargetLockMessage::Renew { generation });
            }
        }
    }

    /// Grants the lock to waiters in order while nobody here holds it.
    async fn serve_queue(&self, myself: &ActorRef<TargetLockMessage>, state: &mut TargetLockState) {
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

    async fn cancel(&self, state: &mut TargetLockState, session_id: u64, acquire_id: RequestId) {
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
            self.release_holder(state).await;
        }
    }

    async fn drop_session(&self, state: &mut TargetLockState, session_id: u64) {
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
            self.release_holder(state).await;
        }
    }

    async fn read_metadata(
        &self,
        state: &TargetLockState,
    ) -> Result<Option<LockMetadata>, WireError> {
        match self.store(state).read(&state.lock_path).await {
            Ok(None) => Ok(None),
            Ok(Some(observed)) => Ok(Some(self.judge(&observed).0)),
            Err(e) => Err(store_error(e.message)),
        }
    }

    /// The current holder's lock file: ours from memory, otherwise read from the store.
    async fn holder_metadata(&self, state: &TargetLockState) -> Option<LockMetadata> {
        if let Some(holding) = &state.holder {
            return Some(lockfile::to_wire(
                &lockfile::parse(&holding.written),
                None,
                false,
            ));
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
        if let Some(holding) = &state.holder {
            holding.session.event(
                holding.acquire_id,
                Event::Releasing {
                    reason: "vfslockd is shutting down and releases this lock".into(),
                },
            );
        }
        self.release_holder(state).await;
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

/// ±25 % of `delay`, so waiters of many daemons do not poll in step.
fn jitter(delay: Duration) -> Duration {
    let mut byte = [0u8; 1];
    let _ = getrandom::fill(&mut byte);
    let factor = 0.75 + f64::from(byte[0]) / 255.0 * 0.5;
    delay.mul_f64(factor)
}

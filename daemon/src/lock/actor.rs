//! The lock actor: its messages, its start and stop, and the dispatch of each message to the
//! concern that handles it.
//!
//! Handlers await store calls (that is the serialization) but never anything that only a later
//! message can bring: waiters' reply channels are kept in the state, and renewals, re-checks,
//! wait timeouts and on-stale deadlines are timer messages to the actor itself, each carrying
//! enough to recognise it as out of date.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::Instrument;
use vfslock_proto::{AcquireRequest, LockMode, QueuedLock, RequestId, Response};

use super::audit::Ended;
use super::registry::Registry;
use super::state::{LockState, Tally, Target};
use super::timing;
use crate::address::Address;
use crate::context::Context;
use crate::link::SessionLink;
use crate::store::StoreError;

/// The actor. Holds only what does not change while it lives; everything that does is in
/// [`LockState`].
pub struct LockActor {
    /// The daemon's shared context.
    pub ctx: Arc<Context>,
    /// The registry that routes to this actor, asked before retiring.
    pub registry: Arc<Registry>,
    /// This actor's share of the daemon's gauges, outside its state (see [`Tally`]).
    pub tally: Arc<Tally>,
}

/// Messages of a lock actor: requests routed by the registry, and timers it sends itself.
#[derive(Debug)]
pub enum LockMessage {
    /// Request: take the lock for `session`'s acquire `id`.
    Acquire {
        /// Who asks.
        session: Arc<SessionLink>,
        /// The acquire's request id.
        id: RequestId,
        /// What is asked.
        request: AcquireRequest,
        /// How the lock is to be held.
        mode: LockMode,
        /// The longest it may be held (the request's, or the daemon's cap); `None`: no limit.
        max_hold: Option<Duration>,
        /// The place in the previous run's queue it asks for again ([`super::requeue`]).
        place: Option<Box<vfslock_proto::WaitPlace>>,
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
    /// Request: the lock file with every holder it lists.
    Describe {
        /// Who asks.
        session: Arc<SessionLink>,
        /// The request id.
        id: RequestId,
    },
    /// Request: what is held and queued here (for `vfslockctl list`).
    Snapshot(RpcReplyPort<Option<QueuedLock>>),
    /// Timer: tell the waiters where they stand ([`super::waiting`]).
    AnnounceQueue,
    /// Request: the daemon is stopping; tell the holder, release, fail the waiters, stop.
    Shutdown(RpcReplyPort<()>),
    /// Request (the supervisor's, always this actor's first message): the actor `failed` that
    /// served this target before died; clean up after it before anything else is served.
    Recover {
        /// The actor that failed.
        failed: ActorId,
        /// Why, for the messages to its clients.
        why: String,
    },
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
    /// Timer: the holding of `session_id`'s acquire `acquire_id` has been held for its
    /// max-hold.
    HoldExpired {
        /// The holder's session.
        session_id: u64,
        /// The holder's acquire.
        acquire_id: RequestId,
    },
    /// Startup: keep a holding the previous run journaled, for its session to resume, until
    /// the resume window closes.
    Adopt(Box<super::resume::Kept>),
    /// Startup: hold these places of the previous run's waiters (ordinals and owners) for
    /// their sessions until `until` ([`super::requeue`]).
    AdoptWaits {
        /// The places.
        waits: Vec<(u64, crate::journal::Owner)>,
        /// When the resume window closes.
        until: std::time::Instant,
    },
    /// Request: hand the kept holding `lock_id` to `session`, which proves with `secret` that
    /// it is the session `claimed` that held it.
    Resume {
        /// Who asks.
        session: Arc<SessionLink>,
        /// The resume's request id: events about the holding carry it from now on.
        id: RequestId,
        /// The holding.
        lock_id: String,
        /// The session it was granted to.
        claimed: String,
        /// That session's secret.
        secret: vfslock_proto::Secret,
    },
    /// Timer: the resume window has closed: what nobody resumed is released, and the target
    /// may be granted again.
    WindowClosed,
    /// Request: answer when the lock is not held, without taking it ([`super::watch`]).
    WatchRelease {
        /// Who asks.
        session: Arc<SessionLink>,
        /// The request id.
        id: RequestId,
        /// How long to wait; `None`: as long as it takes.
        timeout: Option<Duration>,
    },
}

impl LockMessage {
    /// Whether the registry routed this message (and counted it). Snapshots, shutdown and
    /// recovery are sent to the actors directly, timers by the actor itself.
    pub fn is_routed(&self) -> bool {
        !matches!(
            self,
            LockMessage::Snapshot(_)
                | LockMessage::Shutdown(_)
                | LockMessage::Recover { .. }
                | LockMessage::Renew { .. }
                | LockMessage::Recheck { .. }
                | LockMessage::WaitExpired { .. }
                | LockMessage::StaleAnswerExpired { .. }
                | LockMessage::IdleCheck
                | LockMessage::RetryDelete
                | LockMessage::HoldExpired { .. }
                | LockMessage::Adopt(_)
                | LockMessage::AdoptWaits { .. }
                | LockMessage::WindowClosed
                | LockMessage::AnnounceQueue
        )
    }

    /// The connection and request id this message answers, for requests that get an answer.
    pub fn request(&self) -> Option<(&Arc<SessionLink>, RequestId)> {
        match self {
            LockMessage::Acquire { session, id, .. }
            | LockMessage::Release { session, id, .. }
            | LockMessage::Cancel { session, id, .. }
            | LockMessage::RenewDetached { session, id, .. }
            | LockMessage::Break { session, id, .. }
            | LockMessage::Metadata { session, id }
            | LockMessage::Describe { session, id }
            | LockMessage::Resume { session, id, .. }
            | LockMessage::WatchRelease { session, id, .. } => Some((session, *id)),
            _ => None,
        }
    }
}

impl Actor for LockActor {
    type Msg = LockMessage;
    type State = LockState;
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
        let target = Target {
            url: address.url(),
            key: address.key().to_owned(),
            store,
            lock_path: crate::store::lock_path(&address),
        };
        self.tally.attach(&target.store);
        Ok(LockState::new(
            target,
            self.tally.clone(),
            self.ctx.settings.locks.recheck_min,
        ))
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        self.tally.settle();
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
        // A request is handled in its own span (made by the session that routed it), so that
        // what is logged here, and the store calls below, belong to it.
        Box::pin(self.handle_in_span(myself, message, state)).await
    }
}

impl LockActor {
    /// Handles `message`, in its request's span if it is a request.
    async fn handle_in_span(
        &self,
        myself: ActorRef<LockMessage>,
        message: LockMessage,
        state: &mut LockState,
    ) -> Result<(), ActorProcessingErr> {
        // Request spans are `debug` (see `server::session`): below that, nothing to look up,
        // and the handling is not wrapped (which would move its large future once more).
        let span = match message.request() {
            Some((session, id)) if tracing::enabled!(tracing::Level::DEBUG) => session.span_of(id),
            _ => tracing::Span::none(),
        };
        if span.is_disabled() {
            return self.handle_message(myself, message, state).await;
        }
        self.handle_message(myself, message, state)
            .instrument(span)
            .await
    }

    async fn handle_message(
        &self,
        myself: ActorRef<LockMessage>,
        message: LockMessage,
        state: &mut LockState,
    ) -> Result<(), ActorProcessingErr> {
        if message.is_routed() {
            state.idle.handled += 1;
        }
        #[cfg(feature = "faults")]
        super::faults::panic_if_asked(&self.ctx, &message, &state.target.url);
        match message {
            LockMessage::Acquire {
                session,
                id,
                request,
                mode,
                max_hold,
                place,
            } => {
                self.on_acquire(
                    &myself,
                    state,
                    session,
                    id,
                    request,
                    (mode, max_hold),
                    place.as_deref(),
                )
                .await
            }
            LockMessage::Release {
                session,
                id,
                lock_id,
            } => {
                let held = state
                    .holding()
                    .is_some_and(|h| h.session.id == session.id && h.record.lock_id == lock_id);
                let member = state.joint().and_then(|j| {
                    j.members
                        .iter()
                        .find(|m| m.session.id == session.id && m.lock_id == lock_id)
                        .map(|m| m.acquire_id)
                });
                let result = if held {
                    self.release_holder(&myself, state, Ended::Released).await
                } else if let Some(acquire_id) = member {
                    self.leave_joint(&myself, state, (session.id, acquire_id), Ended::Released)
                        .await
                } else {
                    self.release_detached(state, &session, &lock_id).await
                };
                session.reply(id, result);
                self.serve_queue(&myself, state).await;
            }
            LockMessage::RenewDetached {
                session,
                id,
                lock_id,
                ttl,
            } => {
                let result = self.renew_detached(state, &session, &lock_id, ttl).await;
                session.reply(id, result);
            }
            LockMessage::Break {
                session,
                id,
                reason,
            } => {
                let result = self.break_lock(&myself, state, &session, &reason).await;
                session.reply(id, result);
                self.serve_queue(&myself, state).await;
            }
            LockMessage::Cancel {
                session,
                id,
                acquire_id,
            } => {
                if !self.cancel_watch(state, session.id, acquire_id) {
                    self.cancel(&myself, state, session.id, acquire_id).await;
                }
                session.reply(id, Ok(Response::Cancelled));
                self.serve_queue(&myself, state).await;
            }
            LockMessage::StaleVerdict {
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
            LockMessage::StaleAnswerExpired {
                session_id,
                acquire_id,
            } => {
                let reason = format!(
                    "the on-stale handler did not answer within {:?}; the stale lock was left alone",
                    self.ctx.settings.locks.stale_answer_timeout
                );
                self.decide_steal(&myself, state, session_id, acquire_id, false, reason)
                    .await;
            }
            LockMessage::Metadata { session, id } => {
                let result = self.read_metadata(state).await;
                session.reply(id, result.map(Response::Metadata));
            }
            LockMessage::Describe { session, id } => {
                let result = self.describe(state).await;
                session.reply(id, result.map(Response::Described));
            }
            LockMessage::SessionClosed { session_id } => {
                self.drop_session(&myself, state, session_id).await;
                self.serve_queue(&myself, state).await;
            }
            LockMessage::Snapshot(reply) => {
                let _ = reply.send(self.queued_snapshot(state));
            }
            LockMessage::AnnounceQueue => self.announce_queue(state),
            LockMessage::Shutdown(reply) => {
                self.shut_down(state).await;
                let _ = reply.send(());
                myself.stop(Some("daemon shutdown".into()));
                return Ok(());
            }
            LockMessage::Recover { failed, why } => self.recover(state, failed, &why).await,
            LockMessage::Renew { generation } => {
                let due = state
                    .holding()
                    .is_some_and(|h| h.renewal.generation == generation);
                let joint_due = state
                    .joint()
                    .is_some_and(|j| j.renewal.generation == generation);
                if due {
                    self.renew(&myself, state).await;
                } else if joint_due {
                    self.renew_joint(&myself, state).await;
                }
            }
            LockMessage::Recheck { generation } => {
                if generation == state.recheck.generation {
                    state.recheck.scheduled = false;
                    state.watchers.recheck_due();
                    self.serve_queue(&myself, state).await;
                }
            }
            LockMessage::WaitExpired {
                session_id,
                acquire_id,
            } => {
                if !self.watch_expired(state, session_id, acquire_id).await {
                    self.wait_expired(state, session_id, acquire_id).await
                }
            }
            LockMessage::IdleCheck => {
                state.idle.check_scheduled = false;
                if self.try_retire(&myself, state) {
                    return Ok(());
                }
            }
            LockMessage::RetryDelete => self.retry_delete(&myself, state).await,
            LockMessage::HoldExpired {
                session_id,
                acquire_id,
            } => {
                self.hold_expired(&myself, state, session_id, acquire_id)
                    .await
            }
            LockMessage::Adopt(kept) => self.adopt(&myself, state, *kept).await,
            LockMessage::AdoptWaits { waits, until } => {
                self.adopt_waits(&myself, state, waits, until)
            }
            LockMessage::Resume {
                session,
                id,
                lock_id,
                claimed,
                secret,
            } => {
                self.resume(&myself, state, session, id, &lock_id, &claimed, &secret)
                    .await
            }
            LockMessage::WindowClosed => self.window_closed(&myself, state).await,
            LockMessage::WatchRelease {
                session,
                id,
                timeout,
            } => self.on_watch(&myself, state, session, id, timeout),
        }
        self.schedule_leftover(&myself, state);
        self.mark_waiting(state).await;
        self.announce_if_moved(&myself, state);
        // Most targets have no watcher: then nothing more is done for them after a message.
        if !state.watchers.is_empty() {
            self.look_for_release(&myself, state).await;
        }
        self.track_idleness(&myself, state);
        Ok(())
    }

    /// Bounds a store call by the configured store timeout.
    pub(super) async fn within<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        timing::within(self.ctx.settings.locks.store_timeout, call).await
    }
}

#[cfg(test)]
#[path = "tests/actor.rs"]
mod tests;

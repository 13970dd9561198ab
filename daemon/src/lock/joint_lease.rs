//! A joint holding's entry in the lock file, once taken (see `joint.rs` for the format, the
//! modes and how the entry is added): every rewrite of it (slot count, lease, renewal), local
//! holders leaving, an entry left behind when the last one could not remove it, the loss of
//! the entry, shutdown, and detached shared leases changed by their lock id.
//!
//! Handles [`LockMessage::Release`] and [`LockMessage::Renew`] for joint holdings.

use std::time::{Duration, Instant};

use ractor::ActorRef;
use vfslock_proto::{ErrorKind, Event, Response, WireError};

use super::actor::{LockActor, LockMessage};
use super::audit::Ended;
use super::joint::{Changed, CHANGE_TRIES};
use super::lease::RENEW_RETRY_MIN;
use super::lifecycle::must;
use super::replies::{self, STOPPING};
use super::state::{JointHolding, LockState};
use super::timing::{self, next_renewal};
use crate::context::random_id;
use crate::lockfile::joint::{HolderEntry, Joint, JointMode};
use crate::metrics::LossCause;
use crate::store::{Conditional, MakeLock, Observed, Replaced, StoreError, Token};

impl LockActor {
    /// Writes our entry as the joint holding now wants it (slot count, lease, a fresh
    /// `createdAt`), on the version last seen, reading the file again when someone else wrote
    /// meanwhile. With no local holder left, removes the entry (deleting the file if it was the
    /// last). Expired entries of others are left out on the way.
    pub(super) async fn rewrite_entry(&self, state: &mut LockState) -> Result<Changed, StoreError> {
        let limit = state.joint().and_then(|j| j.valid_until).map_or(
            self.ctx.settings.locks.store_timeout,
            |until| {
                until
                    .saturating_duration_since(Instant::now())
                    .min(self.ctx.settings.locks.store_timeout)
            },
        );
        let store = state.target.store.clone();
        let path = state.target.lock_path.clone();
        let mut observed: Option<Observed> = None;
        for _ in 0..CHANGE_TRIES {
            let joint = state.joint().expect("rewritten while held jointly");
            let (bytes, version) = match &observed {
                Some(o) => (o.bytes.clone(), o.version()),
                None => (joint.written.bytes.clone(), joint.written.clone()),
            };
            let Some(mut next) = Joint::parse(&bytes) else {
                return Ok(Changed::Gone);
            };
            let own = joint.entry.lock_id.clone();
            if next.entry(&own).is_none() {
                return Ok(Changed::Gone);
            }
            let judged = Observed {
                bytes: bytes.clone(),
                tag: version.tag.clone(),
                modified: None,
            };
            let expired = self.expired_entries(state, &judged, &next);
            next.holders
                .retain(|h| h.lock_id == own || !expired.contains(&h.lock_id));
            let joint = state.joint().expect("rewritten while held jointly");
            let leaving = joint.members.is_empty();
            let now = self.ctx.now();
            let (count, ttl) = (joint.wanted_count(), joint.wanted_ttl());
            if leaving {
                next.remove(&own);
            } else {
                if let JointMode::Slots(n) = next.mode {
                    let others = next
                        .holders
                        .iter()
                        .filter(|h| h.lock_id != own)
                        .map(|h| h.count)
                        .fold(0u32, u32::saturating_add);
                    if others.saturating_add(count) > n {
                        if observed.is_some() {
                            return Ok(Changed::Full);
                        }
                        // Judged on what we last wrote: others may have left since. Look.
                        match timing::within(limit, store.read(&path)).await? {
                            None => return Ok(Changed::Gone),
                            Some(fresh) => {
                                observed = Some(fresh);
                                continue;
                            }
                        }
                    }
                }
                let entry = next.entry_mut(&own).expect("checked above");
                entry.count = count;
                entry.ttl = ttl;
                entry.created_at = now;
            }
            if next.holders.is_empty() {
                match timing::within(limit, store.delete(&path, &version)).await? {
                    Conditional::Done => return Ok(Changed::Deleted),
                    Conditional::Changed => {}
                }
            } else {
                let writer = self.ctx.instance_id.clone();
                let make: MakeLock = Box::new(move |_| next.to_json(&random_id(), &writer, now));
                match timing::within(limit, store.replace(&path, &version, Token::Keep, make))
                    .await?
                {
                    Replaced::Done(written) => {
                        let joint = state
                            .phase
                            .joint_mut()
                            .expect("rewritten while held jointly");
                        if let Some(entry) =
                            Joint::parse(&written.bytes).and_then(|j| j.entry(&own).cloned())
                        {
                            joint.entry = entry;
                        }
                        joint.written = written.version();
                        return Ok(Changed::Done);
                    }
                    Replaced::Changed => {}
                }
            }
            // Someone else wrote meanwhile: read what is there and make the change on it.
            match timing::within(limit, store.read(&path)).await? {
                None => return Ok(Changed::Gone),
                Some(fresh) => observed = Some(fresh),
            }
        }
        Err(StoreError::contended(format!(
            "the lock file of {} kept changing while this daemon rewrote its entry",
            state.target.url
        )))
    }

    /// A local holder (`session_id`'s acquire `acquire_id`) of the joint holding lets go
    /// (release, its connection closed, its max-hold): it is answered; with no local holder
    /// left, our entry leaves the file and the lock is free here. `ended` says why, for the
    /// audit log.
    pub(super) async fn leave_joint(
        &self,
        myself: &ActorRef<LockMessage>,
        state: &mut LockState,
        (session_id, acquire_id): (u64, vfslock_proto::RequestId),
        ended: Ended<'_>,
    ) -> Result<Response, WireError> {
        let Some(joint) = state.phase.joint_mut() else {
            return Ok(Response::Released { held: false });
        };
        let Some(at) = joint
            .members
            .iter()
            .position(|m| m.is(session_id, acquire_id))
        else {
            return Ok(Response::Released { held: false });
        };
        let member = joint.members.remove(at);
        let held = (joint.mode.lock_mode(), &joint.entry);
        self.audit_member_ended(&state.target.url, held, &member, ended);
        self.ctx
            .journal_member_left(&joint.entry.lock_id, &member.lock_id);
        self.tally.held(joint.mode.lock_mode(), -1);
        self.tally.hold_ended(member.since);
        member.session.acquire_ended(member.acquire_id);
        let past_deadline = joint
            .valid_until
            .is_some_and(|until| Instant::now() >= until);
        let changes_file = joint.members.is_empty() || joint.wanted_count() != joint.entry.count;
        if !changes_file {
            return Ok(Response::Released { held: true });
        }
        let outcome = self.rewrite_entry(state).await;
        let last = state.joint().is_some_and(|j| j.members.is_empty());
        let gone = matches!(outcome, Ok(Changed::Gone));
        let failed = outcome.is_err();
        let result = match outcome {
            Ok(Changed::Done | Changed::Deleted) if !past_deadline => {
                Ok(Response::Released { held: true })
            }
            Ok(Changed::Done | Changed::Deleted) => Err(replies::lease_lost_at_release(
                &state.target.url,
                "it was not renewed in time",
            )),
            Ok(Changed::Gone) => Err(replies::lease_lost_at_release(
                &state.target.url,
                "the lock file was replaced or removed by someone else",
            )),
            Ok(Changed::Full) => Ok(Response::Released { held: true }),
            Err(e) => {
                // The holder did let go. A semaphore's count is put right at the next renewal;
                // an entry left behind by the last holder is removed by retries with backoff,
                // as an exclusive lock file whose delete failed is (`Leftover`).
                tracing::warn!(target = %state.target.url, error = %e, "could not rewrite our entry of a shared lock at release; retrying");
                Ok(Response::Released { held: true })
            }
        };
        if gone && !last {
            let reason = replies::replaced_by_someone_else(&state.target.url);
            self.lose_joint(myself, state, (reason, LossCause::StolenOrBroken))
                .await;
        } else if last {
            let joint = must(state.phase.end_joint());
            if failed {
                self.leave_entry_behind(state, &joint);
            } else {
                self.ctx.journal_release(&joint.entry.lock_id);
            }
        }
        result
    }

    /// Our entry could not be removed from the lock file when the last local holder left:
    /// retried later (it stays in the journal until it is gone, so a restart removes it too).
    fn leave_entry_behind(&self, state: &mut LockState, joint: &JointHolding) {
        let ttl = if joint.entry.ttl.is_zero() {
            self.ctx.settings.locks.default_ttl
        } else {
            joint.entry.ttl
        };
        state.leftover = Some(Box::new(super::state::Leftover {
            version: joint.written.clone(),
            entry: Some(joint.entry.lock_id.clone()),
            give_up_at: Instant::now() + ttl,
            delay: self.ctx.settings.locks.recheck_min,
            scheduled: false,
        }));
    }

    /// Removes our entry `lock_id` from whatever version of the lock file is there (deleting
    /// the file if it was the last entry): `true` when it was removed, `false` when it was
    /// gone already.
    pub(super) async fn remove_own_entry(
        &self,
        state: &LockState,
        lock_id: &str,
    ) -> Result<bool, StoreError> {
        let store = &state.target.store;
        let path = &state.target.lock_path;
        for _ in 0..CHANGE_TRIES {
            let Some(observed) = self.within(store.read(path)).await? else {
                return Ok(false);
            };
            let Some(mut joint) = Joint::parse(&observed.bytes) else {
                return Ok(false);
            };
            if !joint.remove(lock_id) {
                return Ok(false);
            }
            let done = if joint.holders.is_empty() {
                self.within(store.delete(path, &observed.version())).await? == Conditional::Done
            } else {
                let writer = self.ctx.instance_id.clone();
                let now = self.ctx.now();
                let make: MakeLock = Box::new(move |_| joint.to_json(&random_id(), &writer, now));
                matches!(
                    self.within(store.replace(path, &observed.version(), Token::Keep, make))
                        .await?,
                    Replaced::Done(_)
                )
            };
            if done {
                return Ok(true);
            }
        }
        Err(StoreError::contended(format!(
            "the lock file of {} kept changing while this daemon removed its entry",
            state.target.url
        )))
    }

    /// Renews our entry: a fresh `createdAt`, on the version last seen (or read again); a
    /// failure is retried with backoff until the deadline, which is a loss for every local
    /// holder.
    pub(super) async fn renew_joint(&self, myself: &ActorRef<LockMessage>, state: &mut LockState) {
        let Some(joint) = state.joint() else {
            return;
        };
        let sent = Instant::now();
        if joint.valid_until.is_some_and(|until| until <= sent) {
            let reason = replies::not_renewed_in_time(&state.target.url);
            return self
                .lose_joint(myself, state, (reason, LossCause::StoreOutage))
                .await;
        }
        match self.rewrite_entry(state).await {
            Ok(Changed::Done) | Ok(Changed::Full) => {
                state.target.store.count_renewal();
                let joint = state.phase.joint_mut().expect("renewed while held jointly");
                let ttl = joint.entry.ttl;
                joint.valid_until = self.valid_until(sent, ttl);
                joint.renewal.retry_delay = RENEW_RETRY_MIN;
                if let Some(until) = joint.valid_until {
                    for member in &joint.members {
                        member.session.event(
                            member.acquire_id,
                            Event::LeaseRenewed {
                                valid_for: until.saturating_duration_since(Instant::now()),
                                valid_until_monotonic_ns: crate::context::monotonic_ns(until),
                            },
                        );
                    }
                }
                if !ttl.is_zero() {
                    let next = next_renewal(ttl).saturating_sub(sent.elapsed());
                    super::lease::schedule_renewal(myself, state, next);
                }
            }
            Ok(Changed::Gone | Changed::Deleted) => {
                let reason = replies::replaced_by_someone_else(&state.target.url);
                self.lose_joint(myself, state, (reason, LossCause::StolenOrBroken))
                    .await;
            }
            Err(e) => {
                let joint = state.phase.joint_mut().expect("renewed while held jointly");
                let ttl = joint.entry.ttl;
                let left = joint.valid_until.map_or(Duration::MAX, |until| {
                    until.saturating_duration_since(Instant::now())
                });
                let delay = joint.renewal.retry_delay.min(left);
                joint.renewal.retry_delay = (joint.renewal.retry_delay * 2).min(ttl / 3);
                tracing::warn!(target = %state.target.url, error = %e, retry_in = ?delay, "renewal of a shared lock failed");
                state.target.store.count_renewal_failure();
                super::lease::schedule_renewal(myself, state, delay);
            }
        }
    }

    /// Ends the joint holding because its lease is lost: every local holder is told.
    pub(super) async fn lose_joint(
        &self,
        myself: &ActorRef<LockMessage>,
        state: &mut LockState,
        lost: (String, LossCause),
    ) {
        self.end_joint_lost(state, lost);
        self.serve_queue(myself, state).await;
    }

    /// [`LockActor::lose_joint`] without serving the queue (an admin's break removes the file
    /// first).
    pub(super) fn end_joint_lost(
        &self,
        state: &mut LockState,
        (reason, cause): (String, LossCause),
    ) {
        let Ok(joint) = state.phase.end_joint() else {
            return;
        };
        tracing::warn!(target = %state.target.url, %reason, holders = joint.members.len(), "shared lease lost");
        self.tally
            .held(joint.mode.lock_mode(), -(joint.members.len() as i64));
        for member in &joint.members {
            let held = (joint.mode.lock_mode(), &joint.entry);
            let ended = Ended::Lost(cause, &reason);
            self.audit_member_ended(&state.target.url, held, member, ended);
            self.tally.hold_ended(member.since);
        }
        self.tally.lost(cause, joint.members.len() as u64);
        // Before the holders hear: a restart after this must not hand the holding back.
        self.ctx.journal_lost(&joint.entry.lock_id);
        for member in &joint.members {
            member.session.acquire_ended(member.acquire_id);
            member.session.event(
                member.acquire_id,
                Event::LeaseEnded {
                    kind: ErrorKind::LeaseLost,
                    reason: reason.clone(),
                },
            );
        }
        self.ctx.journal_release(&joint.entry.lock_id);
    }

    /// The daemon is stopping: every local holder is told, and our entry leaves the file.
    pub(super) async fn shut_down_joint(&self, state: &mut LockState) {
        let Some(joint) = state.phase.joint_mut() else {
            return;
        };
        let members = std::mem::take(&mut joint.members);
        self.tally
            .held(joint.mode.lock_mode(), -(members.len() as i64));
        for member in &members {
            let held = (joint.mode.lock_mode(), &joint.entry);
            let ended = Ended::Lost(LossCause::DaemonStopping, STOPPING);
            self.audit_member_ended(&state.target.url, held, member, ended);
            self.tally.hold_ended(member.since);
        }
        self.tally
            .lost(LossCause::DaemonStopping, members.len() as u64);
        for member in &members {
            member.session.event(
                member.acquire_id,
                Event::Releasing {
                    reason: STOPPING.into(),
                },
            );
        }
        let removed = self.rewrite_entry(state).await;
        if let Err(e) = &removed {
            // Left in the journal: the next start removes it.
            tracing::error!(target = %state.target.url, error = %e, "could not remove our entry of a shared lock at shutdown; the next start removes it, or it expires with its lease");
        }
        for member in &members {
            member.session.acquire_ended(member.acquire_id);
        }
        if let Ok(joint) = state.phase.end_joint() {
            if removed.is_ok() {
                self.ctx.journal_release(&joint.entry.lock_id);
            }
        }
    }

    /// Removes or renews (`renew` with its new ttl) the detached entry `lock_id` of a joint
    /// lock file, if `session` may act on it: the lock's mode and the entry as it was (removed)
    /// or is now (renewed); `Ok(None)` when there is no such entry.
    pub(super) async fn change_detached_entry(
        &self,
        state: &LockState,
        session: &crate::link::SessionLink,
        lock_id: &str,
        renew: Option<Option<Duration>>,
    ) -> Result<Option<(JointMode, HolderEntry)>, WireError> {
        for _ in 0..CHANGE_TRIES {
            let Some(observed) = self
                .within(state.target.store.read(&state.target.lock_path))
                .await
                .map_err(replies::store_error)?
            else {
                return Ok(None);
            };
            let Some(mut joint) = Joint::parse(&observed.bytes) else {
                return Ok(None);
            };
            let Some(entry) = joint.entry(lock_id).filter(|e| e.detached).cloned() else {
                return Ok(None);
            };
            let caller = &session.caller;
            if !(caller.admin || (caller.uid.is_some() && caller.uid == entry.uid)) {
                return Err(replies::not_your_detached_lease(
                    &state.target.url,
                    lock_id,
                    entry.uid,
                ));
            }
            let now = self.ctx.now();
            if let Some(ttl) = renew {
                if self
                    .expired_entries(state, &observed, &joint)
                    .contains(&entry.lock_id)
                {
                    return Ok(None);
                }
                let changed = joint.entry_mut(lock_id).expect("found above");
                changed.created_at = now;
                if let Some(ttl) = ttl {
                    changed.ttl = ttl;
                }
                if changed.ttl.is_zero() {
                    return Err(WireError::new(
                        ErrorKind::InvalidTarget,
                        "a detached lease needs a TTL above zero",
                    ));
                }
            } else {
                joint.remove(lock_id);
            }
            let result = (joint.mode, joint.entry(lock_id).cloned().unwrap_or(entry));
            let done = if joint.holders.is_empty() {
                self.delete_exactly(state, &observed.version())
                    .await
                    .map_err(replies::store_error)?
                    == Conditional::Done
            } else {
                let writer = self.ctx.instance_id.clone();
                let make: MakeLock = Box::new(move |_| joint.to_json(&random_id(), &writer, now));
                matches!(
                    self.within(state.target.store.replace(
                        &state.target.lock_path,
                        &observed.version(),
                        Token::Keep,
                        make,
                    ))
                    .await
                    .map_err(replies::store_error)?,
                    Replaced::Done(_)
                )
            };
            if done {
                return Ok(Some(result));
            }
        }
        Err(replies::kept_changing_while_breaking(&state.target.url))
    }
}

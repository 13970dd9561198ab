//! Holdings that outlive the daemon: kept after a restart for the session that held them, and
//! handed back to it when it proves who it is.
//!
//! At startup the daemon sends each target whose holding the previous run journaled (with a
//! session that may resume it) an [`LockMessage::Adopt`]. The actor renews the lock file,
//! conditional on its still carrying the holding's lock id, and holds it for nobody: its
//! session is a placeholder that hears nothing. Until the resume window closes (W from the
//! daemon's start) nothing is granted on the target, whether or not the holding could be kept:
//! its holder may still believe in it, and the safety rule promises it that nobody else gets the
//! lock before W has passed since the last word it heard.
//!
//! [`LockMessage::Resume`] hands the holding to the asking connection when the caller's uid and
//! the session's secret match what the journal kept, after one more conditional renewal (the
//! lock file may have been broken or stolen while nobody renewed it, at the store's end). When
//! the window closes, what nobody resumed is released as a lost lease would be, and the target
//! is served again.
//!
//! Shared locks and semaphores are kept share by share. The journal names this daemon's entry
//! in the lock file (one for all its local holders of the target) and, under it, each local
//! holder whose session may resume, by the holder's own lock id (the one its grant named).
//! The actor renews the entry, conditional on its still being listed (the other daemons'
//! entries stay as they are), with a semaphore's slot count cut to the holders kept, and holds
//! it for one placeholder member per kept holder. A resume hands one member back after one
//! more conditional renewal of the entry. The target stays fenced, as for an exclusive lock,
//! until every kept member was resumed or the window closed: a new holder here could otherwise
//! take a slot an unresumed member still believes it has, or an exclusive holder could get in
//! beside it. When the window closes, the unresumed members leave as a release would (the
//! entry goes with the last of them). A joint entry journaled by an earlier release (no
//! members) is settled at startup as after a crash.

use std::sync::Arc;
use std::time::Instant;

use ractor::ActorRef;
use vfslock_proto::{ErrorKind, LockMode, Response, Secret, WireError};

use crate::metrics::LossCause;

use super::acquire::maker;
use super::actor::{LockActor, LockMessage};
use super::audit::Ended;
use super::joint::Changed;
use super::lease::{schedule_renewal, RENEW_RETRY_MIN};
use super::lifecycle::must;
use super::replies;
use super::state::{Holding, JointHolding, LockState, MaxHold, Member, Renewal};
use super::timing::{first_renewal, Timer};
use crate::context::random_id;
use crate::journal::{JointMember, Owner};
use crate::link::{Caller, Outbound, SessionLink};
use crate::lockfile::joint::{Joint, JointMode};
use crate::lockfile::{self, LockRecord};
use crate::store::{Replaced, Token};

/// A holding of the previous run to keep for its session.
#[derive(Debug)]
pub struct Kept {
    /// The holding's lock id.
    pub lock_id: String,
    /// Who may resume it (an exclusive holding); `None` for a joint entry whose first holder
    /// cannot resume.
    pub owner: Option<Owner>,
    /// The local holders of a joint entry (a shared lock or semaphore) that may resume.
    pub members: Vec<JointMember>,
    /// When the resume window closes: W after this daemon's start.
    pub until: Instant,
}

/// The session id of the placeholder that holds a kept holding: no connection has it.
const NOBODY: u64 = u64::MAX;

/// A placeholder session for a kept holding of `uid`: it hears nothing.
fn placeholder(uid: Option<u32>) -> Arc<SessionLink> {
    Arc::new(SessionLink::new(
        NOBODY,
        Outbound::queued().0,
        Caller {
            uid,
            ..Caller::default()
        },
    ))
}

impl LockActor {
    /// Keeps the journaled holding `kept` for its session, and fences the target until the
    /// window closes.
    pub(super) async fn adopt(
        &self,
        myself: &ActorRef<LockMessage>,
        state: &mut LockState,
        kept: Kept,
    ) {
        let url = state.target.url.clone();
        let fence = state
            .resume_fence
            .map_or(kept.until, |fence| fence.max(kept.until));
        state.resume_fence = Some(fence);
        myself.send_after(fence.saturating_duration_since(Instant::now()), || {
            LockMessage::WindowClosed
        });
        // The store work waits its turn: the fence above already keeps the target from anyone.
        let _turn = self.ctx.restart_work.turn().await;
        if !state.phase.is_free() {
            // Two resumable holdings of one exclusive lock cannot both be ours.
            self.ctx.restarts.count_lost();
            return self.settle_unkept(&url, &kept.lock_id).await;
        }
        let observed = match self
            .within(state.target.store.read(&state.target.lock_path))
            .await
        {
            Ok(Some(observed)) => observed,
            Ok(None) => {
                tracing::warn!(target = %url, lock_id = %kept.lock_id, "a holding of the previous run is gone from the store: its holder will hear that it is lost");
                self.ctx.restarts.count_lost();
                return self.ctx.journal_release(&kept.lock_id);
            }
            Err(e) => {
                // Left in the journal: the next start looks again.
                tracing::warn!(target = %url, error = %e, "cannot read a holding of the previous run; not kept");
                return self.ctx.restarts.count_lost();
            }
        };
        if let Some(there) = lockfile::joint::Joint::parse(&observed.bytes) {
            if kept.members.is_empty() {
                self.ctx.restarts.count_lost();
                return self.settle_unkept(&url, &kept.lock_id).await;
            }
            return self.adopt_joint(myself, state, kept, observed, there).await;
        }
        let Some(owner) = kept.owner else {
            return self.settle_unkept(&url, &kept.lock_id).await;
        };
        let parsed = lockfile::parse(&observed.bytes);
        if parsed.lock_id.as_deref() != Some(kept.lock_id.as_str()) || parsed.detached {
            tracing::warn!(target = %url, lock_id = %kept.lock_id, "a holding of the previous run was replaced in the store: its holder will hear that it is lost");
            self.ctx.restarts.count_lost();
            return self.ctx.journal_release(&kept.lock_id);
        }
        let record = self.record_of(&parsed, &kept.lock_id);
        let ttl = record.ttl;
        let sent = Instant::now();
        let replaced = self
            .within(state.target.store.replace(
                &state.target.lock_path,
                &observed.version(),
                Token::Keep,
                maker(Arc::new(record.clone())),
            ))
            .await;
        match replaced {
            Ok(Replaced::Done(written)) => {
                must(state.phase.hold(Holding {
                    session: placeholder(owner.uid),
                    acquire_id: 0,
                    record,
                    written: written.version(),
                    since: Instant::now(),
                    valid_until: self.valid_until(sent, ttl),
                    renewal: Renewal::first(RENEW_RETRY_MIN),
                    max_hold: None,
                    unclaimed: Some(Box::new(owner)),
                }));
                self.tally.held(LockMode::Exclusive, 1);
                self.ctx.restarts.count_kept();
                self.keep_max_hold(myself, state, &kept.lock_id, (NOBODY, 0));
                if !ttl.is_zero() {
                    schedule_renewal(myself, state, first_renewal(ttl));
                }
                tracing::debug!(target = %url, lock_id = %kept.lock_id, "kept a holding of the previous run for its session to resume");
            }
            Ok(Replaced::Changed) => {
                tracing::warn!(target = %url, lock_id = %kept.lock_id, "a holding of the previous run changed in the store while it was read: not kept");
                self.ctx.restarts.count_lost();
                self.ctx.journal_release(&kept.lock_id);
            }
            Err(e) => {
                tracing::warn!(target = %url, error = %e, "cannot renew a holding of the previous run; not kept");
                self.ctx.restarts.count_lost();
            }
        }
    }

    /// Keeps the journaled joint entry `kept` (read in `observed` as `there`) for its members:
    /// renews it, conditional on the version read, keeping every other entry as it is, and
    /// holds it for one placeholder member per kept member.
    async fn adopt_joint(
        &self,
        myself: &ActorRef<LockMessage>,
        state: &mut LockState,
        kept: Kept,
        observed: crate::store::Observed,
        mut there: Joint,
    ) {
        let url = state.target.url.clone();
        let own = kept.lock_id.clone();
        let mode = there.mode;
        let Some(entry) = there.entry_mut(&own).filter(|e| !e.detached) else {
            tracing::warn!(target = %url, lock_id = %own, "a shared holding of the previous run is gone from the lock file: its holders will hear that it is lost");
            return self.ctx.journal_release(&own);
        };
        let mut members = kept.members;
        // A semaphore's entry takes one slot per kept member, never more than it took: the
        // members nobody may resume give theirs back.
        if let JointMode::Slots(_) = mode {
            members.truncate(entry.count as usize);
        }
        let count = match mode {
            JointMode::Shared => entry.count,
            JointMode::Slots(_) => u32::try_from(members.len()).unwrap_or(u32::MAX).max(1),
        };
        let now = self.ctx.now();
        entry.count = count;
        entry.created_at = now;
        entry.daemon_id = self.ctx.instance_id.clone();
        let ttl = entry.ttl;
        let owner_id = entry.owner_id.clone();
        let writer = self.ctx.instance_id.clone();
        let make: crate::store::MakeLock =
            Box::new(move |_| there.to_json(&random_id(), &writer, now));
        let sent = Instant::now();
        let replaced = self
            .within(state.target.store.replace(
                &state.target.lock_path,
                &observed.version(),
                Token::Keep,
                make,
            ))
            .await;
        let written = match replaced {
            Ok(Replaced::Done(written)) => written,
            Ok(Replaced::Changed) => {
                tracing::warn!(target = %url, lock_id = %own, "a shared holding of the previous run changed in the store while it was read: not kept");
                return self.ctx.journal_release(&own);
            }
            Err(e) => {
                tracing::warn!(target = %url, error = %e, "cannot renew a shared holding of the previous run; not kept");
                return;
            }
        };
        let Some(joint) = Joint::parse(&written.bytes) else {
            return;
        };
        let Some(entry) = joint.entry(&own).cloned() else {
            return;
        };
        let kept_members = members.len();
        let members = members
            .into_iter()
            .enumerate()
            .map(|(at, member)| {
                let acquire_id = at as vfslock_proto::RequestId;
                let max_hold = self.cap_timer(myself, &member.lock_id, (NOBODY, acquire_id), None);
                Member {
                    session: placeholder(member.owner.uid),
                    acquire_id,
                    lock_id: member.lock_id,
                    since: Instant::now(),
                    ttl,
                    owner_id: owner_id.clone(),
                    max_hold,
                    unclaimed: Some(Box::new(member.owner)),
                }
            })
            .collect();
        must(state.phase.hold_joint(JointHolding {
            mode: joint.mode,
            entry,
            written: written.version(),
            members,
            valid_until: self.valid_until(sent, ttl),
            renewal: Renewal::first(RENEW_RETRY_MIN),
        }));
        self.tally.held(joint.mode.lock_mode(), kept_members as i64);
        if !ttl.is_zero() {
            schedule_renewal(myself, state, first_renewal(ttl));
        }
        tracing::debug!(target = %url, entry = %own, members = kept_members, mode = %joint.mode.describe(), "kept a shared holding of the previous run for its holders to resume");
    }

    /// Hands the kept share `lock_id` of the joint holding here to `session`, which proved it
    /// is its owner's, after a conditional renewal of the entry.
    async fn resume_member(
        &self,
        myself: &ActorRef<LockMessage>,
        state: &mut LockState,
        session: Arc<SessionLink>,
        id: vfslock_proto::RequestId,
        lock_id: &str,
    ) {
        let url = state.target.url.clone();
        // The entry may have been removed while nobody renewed it: one more renewal,
        // conditional on the version this daemon wrote, decides.
        let sent = Instant::now();
        match self.rewrite_entry(state).await {
            Ok(Changed::Done | Changed::Full) => {
                let joint = state
                    .phase
                    .joint_mut()
                    .expect("rewritten while held jointly");
                joint.valid_until = self.valid_until(sent, joint.entry.ttl);
                let member = joint
                    .members
                    .iter_mut()
                    .find(|m| m.lock_id == lock_id)
                    .expect("found above");
                member.session = session.clone();
                member.acquire_id = id;
                member.since = Instant::now();
                member.unclaimed = None;
                let limit = member.max_hold.as_ref().map(|cap| cap.limit);
                if let Some(cap) = self.cap_timer(myself, lock_id, (session.id, id), limit) {
                    member.max_hold = Some(cap);
                }
                let all_back = joint.members.iter().all(|m| m.unclaimed.is_none());
                let (entry_id, ttl, valid_until) = (
                    joint.entry.lock_id.clone(),
                    joint.entry.ttl,
                    joint.valid_until,
                );
                if all_back {
                    // Every kept share has its holder again: nobody else can believe in one.
                    state.resume_fence = None;
                }
                // The new session's credentials from now on: a second restart hands the share
                // to this connection.
                self.ctx.journal_member(&entry_id, lock_id, &session);
                let joint = state.joint().expect("still held jointly");
                let grant =
                    self.joint_grant(state, &joint.entry, lock_id.to_owned(), valid_until, None);
                session.reply(id, Ok(Response::Granted(grant)));
                if !ttl.is_zero() {
                    let next = first_renewal(ttl).saturating_sub(sent.elapsed());
                    schedule_renewal(myself, state, next);
                }
                tracing::debug!(target = %url, %lock_id, uid = ?session.caller.uid, pid = session.caller.pid, "holding resumed");
                if all_back {
                    self.serve_queue(myself, state).await;
                }
            }
            Ok(Changed::Gone | Changed::Deleted) => {
                let reason = replies::replaced_by_someone_else(&url);
                session.reply(
                    id,
                    Err(WireError::new(ErrorKind::LeaseLost, reason.clone())),
                );
                self.lose_joint(myself, state, (reason, LossCause::StolenOrBroken))
                    .await;
            }
            // Kept as it is: the client may ask again while the window is open.
            Err(e) => session.reply(id, Err(replies::store_error(e))),
        }
    }

    /// A timer that ends `lock_id` (held by `holder`, a session and request id) at the max-hold
    /// deadline the journal has for it, if any: a restart does not lengthen a capped holding.
    /// `limit` is the cap as the holder was granted it, when this daemon knows it.
    fn cap_timer(
        &self,
        myself: &ActorRef<LockMessage>,
        lock_id: &str,
        (session_id, acquire_id): (u64, vfslock_proto::RequestId),
        limit: Option<std::time::Duration>,
    ) -> Option<MaxHold> {
        let until = self.ctx.journal.as_ref()?.cap_of(lock_id)?;
        let left = until
            .duration_since(self.ctx.now())
            .unwrap_or(std::time::Duration::ZERO);
        let timer = Timer(myself.send_after(left, move || LockMessage::HoldExpired {
            session_id,
            acquire_id,
        }));
        Some(MaxHold {
            limit: limit.unwrap_or(left),
            timer,
        })
    }

    /// Gives the exclusive holding here its journaled max-hold deadline, for `holder`.
    fn keep_max_hold(
        &self,
        myself: &ActorRef<LockMessage>,
        state: &mut LockState,
        lock_id: &str,
        holder: (u64, vfslock_proto::RequestId),
    ) {
        let limit = state
            .holding()
            .and_then(|h| h.max_hold.as_ref().map(|cap| cap.limit));
        let Some(cap) = self.cap_timer(myself, lock_id, holder, limit) else {
            return;
        };
        if let Some(holding) = state.phase.holding_mut() {
            // The one it replaces, if any, stops when dropped.
            holding.max_hold = Some(cap);
        }
    }

    /// The record this daemon renews a kept lock file with: the file's own fields, this
    /// daemon's id, and the lease the file's ttl stands for under `locks.peer-ttl-factor`.
    fn record_of(&self, parsed: &lockfile::ParsedLock, lock_id: &str) -> LockRecord {
        let record = LockRecord::renewing(parsed, lock_id, &self.ctx.instance_id, self.ctx.now());
        let factor = self.ctx.settings.locks.peer_ttl_factor.max(1);
        LockRecord {
            ttl: record.ttl / factor,
            peer_ttl: (factor > 1).then_some(record.ttl),
            detached: false,
            ..record
        }
    }

    /// Settles a journaled holding that is not kept, as a restart without resume would.
    async fn settle_unkept(&self, url: &str, lock_id: &str) {
        let left = vec![(lock_id.to_owned(), url.to_owned())];
        let (_, unsettled) = crate::journal::recover(&self.ctx.stores, left).await;
        if unsettled.is_empty() {
            self.ctx.journal_release(lock_id);
        }
    }

    /// Hands the kept holding `lock_id` to `session` if it proves to be `claimed`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn resume(
        &self,
        myself: &ActorRef<LockMessage>,
        state: &mut LockState,
        session: Arc<SessionLink>,
        id: vfslock_proto::RequestId,
        lock_id: &str,
        claimed: &str,
        secret: &Secret,
    ) {
        let url = state.target.url.clone();
        let _turn = self.ctx.restart_work.turn().await;
        // A share of a joint holding here, or the exclusive holding, kept for its session.
        let share = state
            .joint()
            .and_then(|j| j.members.iter().find(|m| m.lock_id == lock_id))
            .map(|m| m.unclaimed.clone());
        let owner = match &share {
            Some(owner) => owner.clone(),
            None => state
                .holding()
                .filter(|holding| holding.record.lock_id == lock_id)
                .and_then(|holding| holding.unclaimed.clone()),
        };
        let Some(owner) = owner else {
            return session.reply(id, Err(replies::not_kept(&url)));
        };
        let proof = (&url[..], "resume");
        if !crate::link::resume::admits_session(&owner, claimed, secret, &session, proof) {
            return session.reply(id, Err(replies::not_the_owner(&url)));
        }
        if share.is_some() {
            return self
                .resume_member(myself, state, session, id, lock_id)
                .await;
        }
        // The lock file may have been broken or stolen while nobody renewed it: one more
        // renewal, conditional on the version this daemon wrote, decides.
        let holding = state.holding().expect("checked above");
        let mut record = holding.record.clone();
        record.created_at = self.ctx.now();
        let ttl = record.ttl;
        let sent = Instant::now();
        let replaced = self
            .within(state.target.store.replace(
                &state.target.lock_path,
                &holding.written,
                Token::Keep,
                maker(Arc::new(record.clone())),
            ))
            .await;
        match replaced {
            Ok(Replaced::Done(written)) => {
                let valid_until = self.valid_until(sent, ttl);
                let grant = self.grant_of(state, &record, valid_until, None);
                let holding = state.phase.holding_mut().expect("checked above");
                holding.record = record;
                holding.written = written.version();
                holding.valid_until = valid_until;
                holding.session = session.clone();
                holding.acquire_id = id;
                holding.unclaimed = None;
                self.keep_max_hold(myself, state, lock_id, (session.id, id));
                // Its holder has it again, so nobody else can believe in it: the target needs
                // no fence any more.
                state.resume_fence = None;
                // The new session's credentials from now on: a second restart hands the
                // holding to this connection.
                self.ctx.journal_acquire(lock_id, &url, &session);
                self.ctx.restarts.count_resumed();
                session.reply(id, Ok(Response::Granted(grant)));
                if !ttl.is_zero() {
                    let next = first_renewal(ttl).saturating_sub(sent.elapsed());
                    schedule_renewal(myself, state, next);
                }
                tracing::debug!(target = %url, %lock_id, uid = ?session.caller.uid, pid = session.caller.pid, "holding resumed");
            }
            Ok(Replaced::Changed) => {
                let reason = replies::replaced_by_someone_else(&url);
                session.reply(
                    id,
                    Err(WireError::new(ErrorKind::LeaseLost, reason.clone())),
                );
                self.lose(myself, state, (reason, LossCause::StolenOrBroken), false)
                    .await;
            }
            // Kept as it is: the client may ask again while the window is open.
            Err(e) => session.reply(id, Err(replies::store_error(e))),
        }
    }

    /// The resume window has closed (or one of several has: the fence is the latest).
    pub(super) async fn window_closed(
        &self,
        myself: &ActorRef<LockMessage>,
        state: &mut LockState,
    ) {
        let places_expired = self.expire_places(state);
        if state.fenced() {
            return;
        }
        state.resume_fence = None;
        let unclaimed: Vec<vfslock_proto::RequestId> = state.joint().map_or_else(Vec::new, |j| {
            j.members
                .iter()
                .filter(|m| m.unclaimed.is_some())
                .map(|m| m.acquire_id)
                .collect()
        });
        if !unclaimed.is_empty() {
            tracing::info!(target = %state.target.url, members = unclaimed.len(), "nobody resumed some shares of a shared holding of the previous run within the resume window; released");
            self.tally
                .lost(LossCause::NotResumed, unclaimed.len() as u64);
            let reason = replies::not_resumed(&state.target.url);
            for acquire_id in unclaimed {
                let ended = Ended::Lost(LossCause::NotResumed, &reason);
                let _ = self
                    .leave_joint(myself, state, (NOBODY, acquire_id), ended)
                    .await;
            }
            self.serve_queue(myself, state).await;
        } else if state.holding().is_some_and(|h| h.unclaimed.is_some()) {
            let reason = replies::not_resumed(&state.target.url);
            tracing::info!(target = %state.target.url, "nobody resumed a holding of the previous run within the resume window; released");
            // Serves the queue once the file is gone.
            self.lose(myself, state, (reason, LossCause::NotResumed), true)
                .await;
        } else if places_expired {
            self.serve_queue(myself, state).await;
        }
    }
}

#[cfg(test)]
#[path = "tests/resume.rs"]
mod tests;

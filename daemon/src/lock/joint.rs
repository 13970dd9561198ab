//! Shared locks and semaphores: a lock held by several holders at once, through one entry per
//! daemon in the lock file's holder list (the format and why one entry per daemon:
//! [`crate::lockfile::joint`]).
//!
//! Every change of the file is conditional on the version read, as a steal is: joining adds
//! this daemon's entry to the version read, renewing rewrites the entry's `createdAt`, leaving
//! removes it (and deletes the file if no entry is left). Another daemon's write in between
//! makes ours fail; the file is then read again and the change made afresh on what is there, as
//! long as our entry is still listed. An entry that is gone (removed by an admin's break, or by
//! another daemon because it had expired) is a lost lease for every local holder.
//!
//! Any writer removes the entries whose lease ran out (the store's stale rule, per entry), so a
//! dead host's entry goes at the next write while the others keep holding.
//!
//! Local holders share the entry: a shared lock's holders join and leave without a store write
//! while the entry exists; a semaphore's entry counts its slots, so each join and leave
//! rewrites it. All of them share the entry's fencing token, committed when the entry was
//! added (greater than every token issued before for the target).
//!
//! This file takes a lock in a shared mode (a new entry, or a local holder joining ours);
//! `joint_lease.rs` keeps the entry: its rewrites, renewal, leaving and loss.
//!
//! Handles [`LockMessage::Acquire`] in the shared modes.

use std::time::{Duration, Instant, SystemTime};

use ractor::ActorRef;
use vfslock_proto::{
    ErrorKind, Grant, LockFileFormat, LockMetadata, LockMode, Response, WireError,
};

use super::acquire::Attempt;
use super::actor::{LockActor, LockMessage};
use super::lifecycle::must;
use super::replies;
use super::state::{JointHolding, LockState, Member, Renewal, Waiter};
use super::timing::first_renewal;
use crate::config::StaleRule;
use crate::context::random_id;
use crate::lockfile::joint::{HolderEntry, Joint, JointMode};
use crate::lockfile::{self, unix_ns};
use crate::metrics::LossCause;
use crate::store::{Created, MakeLock, Observed, Replaced, Token, Written};

use super::lease::RENEW_RETRY_MIN;

/// How often a change of our entry is tried again on a file others keep rewriting.
pub(super) const CHANGE_TRIES: usize = 8;

/// The joint mode of a lock mode; `None` for exclusive.
pub fn joint_mode(mode: LockMode) -> Option<JointMode> {
    match mode {
        LockMode::Exclusive => None,
        LockMode::Shared => Some(JointMode::Shared),
        LockMode::Slots(n) => Some(JointMode::Slots(n)),
    }
}

/// The refusal of `asked` where the lock is held as `held`: shared against a semaphore, or
/// semaphores of different sizes. Waiting would not help, so a wait is refused too.
pub fn mode_conflict(url: &str, asked: JointMode, held: JointMode) -> WireError {
    let message = match (asked, held) {
        (JointMode::Slots(a), JointMode::Slots(h)) => format!(
            "{url} is held as a semaphore of {h} slot{}, and this acquire asked for {a}: every \
             holder of a semaphore must ask for the same number of slots",
            if h == 1 { "" } else { "s" }
        ),
        _ => format!(
            "{url} is held {}, and this acquire asked for {}: shared locks and semaphores do not \
             mix on one target",
            describe_held(held),
            describe_held(asked)
        ),
    };
    WireError::new(ErrorKind::ModeConflict, message)
}

fn describe_held(mode: JointMode) -> String {
    match mode {
        JointMode::Shared => "shared".into(),
        slots => format!("as {}", slots.describe()),
    }
}

/// Whether a request in `asked` may join a joint holding in `held`.
fn compatible(asked: JointMode, held: JointMode) -> bool {
    asked == held
}

/// What a change of the lock file through our entry came to.
pub(super) enum Changed {
    /// Written.
    Done,
    /// No entry is left: the file was deleted.
    Deleted,
    /// Our entry is no longer listed: the lease is lost.
    Gone,
    /// The change does not fit (a semaphore's slots are all taken).
    Full,
}

impl LockActor {
    /// Refuses a shared-mode acquire the target's store cannot serve safely; `None` if it can.
    pub(super) fn refuse_mode(&self, state: &LockState, mode: JointMode) -> Option<WireError> {
        if let JointMode::Slots(0) = mode {
            return Some(WireError::new(
                ErrorKind::InvalidTarget,
                "a semaphore needs at least 1 slot",
            ));
        }
        if !state.target.store.can_replace() {
            return Some(WireError::new(
                ErrorKind::Unsupported,
                format!(
                    "{} cannot be locked {}: its store ({}) has no compare-and-swap, and \
                     holders who share a lock file must rewrite it; only exclusive locks work \
                     there",
                    state.target.url,
                    describe_held(mode),
                    state.target.store.prefix(),
                ),
            ));
        }
        None
    }

    /// Takes the lock in a shared mode on the store for `waiter`: creates the file with our
    /// entry, or adds our entry to the holder list there, or takes over a stale file (after the
    /// waiter's on-stale decision, if it asked for one). Only while no joint holding is here
    /// (or for a detached lease, which gets an entry of its own).
    pub(super) async fn attempt_joint(
        &self,
        myself: &ActorRef<LockMessage>,
        state: &mut LockState,
        waiter: Waiter,
        mode: JointMode,
    ) -> Attempt {
        let mut waiter = waiter;
        let store = state.target.store.clone();
        // A writer elsewhere was seen waiting lately: a free lock is its to take first, so do
        // not create the file for a new reader while its mark is fresh. (Not looked up
        // otherwise: an uncontended shared acquire costs no extra request.)
        let writer_lately = state.recheck.writer_seen.is_some_and(|(at, seen)| {
            seen && at.elapsed() < self.ctx.settings.locks.recheck_max * 3
        });
        if writer_lately && self.writer_waits_elsewhere(state).await {
            let holder = replies::writer_waiting_holder(&state.target.url);
            return Attempt::Held(Box::new(waiter), Box::new(holder));
        }
        for _ in 0..4 {
            let now = self.ctx.now();
            let entry = self.new_entry(&waiter, now);
            self.journal_entry(state, &entry, &waiter.session);
            let sent = Instant::now();
            let first = Joint {
                mode,
                holders: vec![entry.clone()],
            };
            let created = self
                .within(store.create(
                    &state.target.lock_path,
                    self.ctx.token_floor(),
                    self.joint_maker(first, entry.lock_id.clone(), now),
                ))
                .await;
            match created {
                Err(e) => {
                    self.ctx.journal_release(&entry.lock_id);
                    return Attempt::Failed(Box::new(waiter), replies::store_error(e));
                }
                Ok(Created::Won(written)) => {
                    self.grant_joint(myself, state, waiter, mode, entry, written, sent, None);
                    return Attempt::Granted;
                }
                Ok(Created::Exists) => self.ctx.journal_release(&entry.lock_id),
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
            let Some(mut there) = Joint::parse(&observed.bytes) else {
                // An exclusive lock file (ours, a Go peer's, another tool's, a corrupt one):
                // one exclusive holder, judged as a whole, as for an exclusive acquire.
                let (holder, stale) = self.judge(state, &observed);
                if !stale {
                    return Attempt::Held(Box::new(waiter), Box::new(holder));
                }
                if waiter.request.ask_on_stale {
                    return self.ask_on_stale(myself, state, waiter, observed, holder);
                }
                match self
                    .join_judged(myself, state, waiter, mode, observed, Some(holder))
                    .await
                {
                    Ok(()) => return Attempt::Granted,
                    // Someone else wrote after our read: look again.
                    Err(super::acquire::StealLost::Changed(back)) => {
                        waiter = *back;
                        continue;
                    }
                    Err(super::acquire::StealLost::Failed(back, e)) => {
                        return Attempt::Failed(back, e)
                    }
                }
            };
            if !compatible(mode, there.mode) {
                let error = mode_conflict(&state.target.url, mode, there.mode);
                return Attempt::Failed(Box::new(waiter), error);
            }
            let expired = self.expired_entries(state, &observed, &there);
            let live: Vec<&HolderEntry> = there
                .holders
                .iter()
                .filter(|h| !expired.contains(&h.lock_id))
                .collect();
            if let JointMode::Slots(n) = mode {
                let taken = live.iter().map(|h| h.count).fold(0u32, u32::saturating_add);
                if taken >= n {
                    let holder = self.joint_metadata(&observed, &there);
                    return Attempt::Held(Box::new(waiter), Box::new(holder));
                }
            }
            if self.writer_waits_elsewhere(state).await {
                let holder = replies::writer_waiting_holder(&state.target.url);
                return Attempt::Held(Box::new(waiter), Box::new(holder));
            }
            if !expired.is_empty() && waiter.request.ask_on_stale {
                there.holders.retain(|h| expired.contains(&h.lock_id));
                let holder = self.joint_metadata(&observed, &there);
                return self.ask_on_stale(myself, state, waiter, observed, holder);
            }
            match self
                .join_judged(myself, state, waiter, mode, observed, None)
                .await
            {
                Ok(()) => return Attempt::Granted,
                // Someone else wrote meanwhile (a renewal, another join): look again.
                Err(super::acquire::StealLost::Changed(back)) => waiter = *back,
                Err(super::acquire::StealLost::Failed(back, e)) => return Attempt::Failed(back, e),
            }
        }
        let holder = replies::busy_holder(&state.target.url);
        Attempt::Held(Box::new(waiter), Box::new(holder))
    }

    /// Whether another daemon's exclusive request waits for this lock (its waiting mark is
    /// fresh): then no new shared holder or slot is let in here, so that readers here cannot
    /// starve a writer there. On object stores the answer read is trusted for
    /// `MARK_INTERVAL` (one GET at most per interval); on `file://` a "no" for `recheck-min`.
    pub(super) async fn writer_waits_elsewhere(&self, state: &mut LockState) -> bool {
        let store = state.target.store.clone();
        if store.is_private() {
            return false;
        }
        // How long an answer is trusted: a GET on an object store is worth a second; on
        // `file://` a read is cheap, but one per join of a busy reader/writer lock is not, so
        // "no writer waits" is trusted for `recheck-min` (a writer's mark is seen at most that
        // late), and "a writer waits" is read again each time.
        if let Some((at, answer)) = state.recheck.writer_seen {
            let trusted = if store.is_object() {
                crate::store::waiting::MARK_INTERVAL
            } else if !answer {
                self.ctx.settings.locks.recheck_min
            } else {
                Duration::ZERO
            };
            if at.elapsed() < trusted {
                return answer;
            }
        }
        let settings = &self.ctx.settings;
        let answer = store
            .exclusive_waiting_elsewhere(
                &state.target.lock_path,
                &self.ctx.instance_id,
                self.ctx.now(),
                settings.locks.recheck_max * 3,
                settings.locks.skew_allowance,
            )
            .await;
        state.recheck.writer_seen = Some((Instant::now(), answer));
        answer
    }

    /// Replaces exactly the version `judged` with it plus our entry for `waiter`, its expired
    /// entries left out (or, for an exclusive file judged stale, with our entry alone), and
    /// grants. Also the steal of a joint waiter after its on-stale decision.
    pub(super) async fn join_judged(
        &self,
        myself: &ActorRef<LockMessage>,
        state: &mut LockState,
        waiter: Waiter,
        mode: JointMode,
        judged: Observed,
        stole: Option<LockMetadata>,
    ) -> Result<(), super::acquire::StealLost> {
        use super::acquire::StealLost;
        let now = self.ctx.now();
        let entry = self.new_entry(&waiter, now);
        let mut next = match Joint::parse(&judged.bytes) {
            Some(there) if there.mode != mode => {
                let error = mode_conflict(&state.target.url, mode, there.mode);
                return Err(StealLost::Failed(Box::new(waiter), error));
            }
            Some(mut there) => {
                let expired = self.expired_entries(state, &judged, &there);
                there.holders.retain(|h| !expired.contains(&h.lock_id));
                there
            }
            None => Joint {
                mode,
                holders: Vec::new(),
            },
        };
        next.holders.push(entry.clone());
        self.journal_entry(state, &entry, &waiter.session);
        let sent = Instant::now();
        let replaced = self
            .within(state.target.store.replace(
                &state.target.lock_path,
                &judged.version(),
                Token::Fresh {
                    floor: self.ctx.token_floor(),
                },
                self.joint_maker(next, entry.lock_id.clone(), now),
            ))
            .await;
        match replaced {
            Ok(Replaced::Done(written)) => {
                if stole.is_some() {
                    tracing::info!(target = %state.target.url, "took over a stale lock for a shared holder");
                    if let Some(instruments) = self.tally.instruments() {
                        instruments.stole();
                    }
                }
                self.ctx.watched.forget(&state.target.key);
                self.grant_joint(myself, state, waiter, mode, entry, written, sent, stole);
                Ok(())
            }
            Ok(Replaced::Changed) => {
                self.ctx.journal_release(&entry.lock_id);
                Err(StealLost::Changed(Box::new(waiter)))
            }
            Err(e) => {
                self.ctx.journal_release(&entry.lock_id);
                Err(StealLost::Failed(Box::new(waiter), replies::store_error(e)))
            }
        }
    }

    /// The entries of `joint` (as read in `observed`) whose lease ran out, by the store's rule:
    /// past `createdAt + ttl` (with the skew allowance) under the seed rule; under the watched
    /// rule, the whole file unchanged in this daemon's sight for the entry's ttl (any renewal
    /// of any entry changes the file, so this never calls a renewed entry expired). An entry
    /// dated further ahead than the allowance is judged by the watched rule whatever the
    /// store's.
    pub(super) fn expired_entries(
        &self,
        state: &LockState,
        observed: &Observed,
        joint: &Joint,
    ) -> Vec<String> {
        let settings = &self.ctx.settings;
        let now = self.ctx.now();
        let judged_at = now
            .checked_sub(settings.locks.skew_allowance)
            .unwrap_or(now);
        let watched = self
            .ctx
            .watched
            .unchanged_for(&state.target.key, &observed.bytes);
        joint
            .holders
            .iter()
            .filter(|h| {
                if h.ttl.is_zero() {
                    return false;
                }
                let from_future = h.created_at > now + settings.locks.skew_allowance;
                if state.target.store.stale_rule() == StaleRule::Watched || from_future {
                    watched >= h.ttl
                } else {
                    h.expired(judged_at)
                }
            })
            .map(|h| h.lock_id.clone())
            .collect()
    }

    /// The entry a grant to `waiter` adds, without its token (the store issues it).
    fn new_entry(&self, waiter: &Waiter, now: SystemTime) -> HolderEntry {
        HolderEntry {
            lock_id: random_id(),
            daemon_id: self.ctx.instance_id.clone(),
            hostname: self.ctx.host_id.clone(),
            pid: waiter.session.caller.pid,
            owner_id: waiter.request.owner_id.clone().filter(|o| !o.is_empty()),
            uid: waiter.session.caller.uid,
            token: None,
            created_at: now,
            acquired_at: now,
            ttl: waiter.ttl,
            count: 1,
            detached: waiter.request.detached,
        }
    }

    /// Journals a new entry, as a new exclusive holding is (not a detached one, whose entry is
    /// its state; a private store's only in the journal's table).
    fn journal_entry(
        &self,
        state: &LockState,
        entry: &HolderEntry,
        holder: &crate::link::SessionLink,
    ) {
        if !entry.detached {
            self.ctx
                .journal_acquire(&entry.lock_id, &state.target.url, holder);
        }
    }

    /// The bytes of `joint` with the token the store issues given to the entry `fresh` (the
    /// one being added), each time under a fresh file id.
    fn joint_maker(&self, joint: Joint, fresh: String, now: SystemTime) -> MakeLock {
        let writer = self.ctx.instance_id.clone();
        Box::new(move |token| {
            let mut joint = joint.clone();
            if let (Some(token), Some(entry)) = (token, joint.entry_mut(&fresh)) {
                entry.token = Some(token);
            }
            joint.to_json(&random_id(), &writer, now)
        })
    }

    /// Answers `waiter` with its grant in a shared mode, and holds the entry for it (a
    /// detached lease's entry is its own, and not held here).
    #[allow(clippy::too_many_arguments)]
    fn grant_joint(
        &self,
        myself: &ActorRef<LockMessage>,
        state: &mut LockState,
        waiter: Waiter,
        mode: JointMode,
        mut entry: HolderEntry,
        written: Written,
        sent: Instant,
        stole: Option<LockMetadata>,
    ) {
        entry.token = written.token;
        let valid_until = self.valid_until(sent, entry.ttl);
        if entry.detached {
            let grant = self.joint_grant(state, &entry, entry.lock_id.clone(), valid_until, stole);
            waiter
                .session
                .reply(waiter.acquire_id, Ok(Response::Granted(grant)));
            waiter.session.acquire_ended(waiter.acquire_id);
            tracing::info!(target = %state.target.url, uid = ?entry.uid, lock_id = %entry.lock_id, mode = %mode.describe(), "detached lease granted");
            return;
        }
        let ttl = entry.ttl;
        let member = Member {
            session: waiter.session.clone(),
            acquire_id: waiter.acquire_id,
            lock_id: entry.lock_id.clone(),
            since: Instant::now(),
            ttl: waiter.ttl,
            owner_id: entry.owner_id.clone(),
            max_hold: Self::max_hold_timer(myself, &waiter),
            unclaimed: None,
        };
        // Before the holder hears: a restart after this keeps its share for it, and ends it at
        // the same max-hold.
        if !entry.detached {
            self.ctx
                .journal_member(&entry.lock_id, &member.lock_id, &waiter.session);
            if let Some(max_hold) = waiter.max_hold {
                self.ctx
                    .journal_cap(&member.lock_id, self.ctx.now() + max_hold);
            }
        }
        let grant = self.joint_grant(state, &entry, member.lock_id.clone(), valid_until, stole);
        must(state.phase.hold_joint(JointHolding {
            mode,
            entry,
            written: written.version(),
            members: vec![member],
            valid_until,
            renewal: Renewal::first(RENEW_RETRY_MIN),
        }));
        self.tally.held(mode.lock_mode(), 1);
        waiter
            .session
            .reply(waiter.acquire_id, Ok(Response::Granted(grant)));
        state.recheck.delay = self.ctx.settings.locks.recheck_min;
        if !ttl.is_zero() {
            let next = if valid_until.is_some_and(|until| until <= Instant::now()) {
                Duration::ZERO
            } else {
                first_renewal(ttl).saturating_sub(sent.elapsed())
            };
            super::lease::schedule_renewal(myself, state, next);
        }
    }

    /// A grant of a holding through `entry`, named `lock_id`.
    pub(super) fn joint_grant(
        &self,
        state: &LockState,
        entry: &HolderEntry,
        lock_id: String,
        valid_until: Option<Instant>,
        stole: Option<LockMetadata>,
    ) -> Grant {
        // The holding's own id, also in the metadata: a client releases by the metadata's
        // lock id, and local holders share one entry, whose id would name them all.
        let mut metadata = entry_metadata(entry);
        metadata.lock_id = Some(lock_id.clone());
        Grant {
            target: state.target.url.clone(),
            lock_id,
            metadata,
            stole,
            token: entry.token,
            valid_for: valid_until.map(|until| until.saturating_duration_since(Instant::now())),
            valid_until_monotonic_ns: valid_until.and_then(crate::context::monotonic_ns),
        }
    }

    /// The lock file as the wire shows a joint one: its top-level fields (the first holder's
    /// host and pid, the latest expiry).
    fn joint_metadata(&self, observed: &Observed, joint: &Joint) -> LockMetadata {
        let now = self.ctx.now();
        let bytes = joint.to_json("", "", now);
        let mut metadata = lockfile::into_wire(lockfile::parse(&bytes), observed.modified, false);
        metadata.lock_id = None;
        metadata.daemon_id = None;
        metadata
    }

    /// Whether a request in `mode` may join what is held here: `Some(Ok)` joins, `Some(Err)`
    /// is refused at once (a mode that cannot be shared with the held one), `None` waits.
    pub(super) fn joins_here(
        &self,
        state: &LockState,
        mode: LockMode,
    ) -> Option<Result<(), WireError>> {
        let joint = state.joint()?;
        let asked = joint_mode(mode)?;
        if compatible(asked, joint.mode) {
            Some(Ok(()))
        } else {
            Some(Err(mode_conflict(&state.target.url, asked, joint.mode)))
        }
    }

    /// Adds `waiter` to the joint holding here: at once for a shared lock (unless its lease
    /// must grow), through a rewrite of our entry's slot count for a semaphore (which waits if
    /// every slot is taken).
    pub(super) async fn join_local(
        &self,
        myself: &ActorRef<LockMessage>,
        state: &mut LockState,
        waiter: Waiter,
    ) -> Attempt {
        if self.writer_waits_elsewhere(state).await {
            let holder = replies::writer_waiting_holder(&state.target.url);
            return Attempt::Held(Box::new(waiter), Box::new(holder));
        }
        if waiter.request.detached {
            // A detached lease is an entry of its own in the file, not a member of ours.
            let mode = state.joint().expect("joined while held jointly").mode;
            return self.attempt_joint(myself, state, waiter, mode).await;
        }
        let joint = state.phase.joint_mut().expect("joined while held jointly");
        let lock_id = random_id();
        if let Some(max_hold) = waiter.max_hold {
            self.ctx.journal_cap(&lock_id, self.ctx.now() + max_hold);
        }
        joint.members.push(Member {
            session: waiter.session.clone(),
            acquire_id: waiter.acquire_id,
            lock_id,
            since: Instant::now(),
            ttl: waiter.ttl,
            owner_id: waiter.request.owner_id.clone().filter(|o| !o.is_empty()),
            max_hold: Self::max_hold_timer(myself, &waiter),
            unclaimed: None,
        });
        let must_write = joint.wanted_count() != joint.entry.count
            || joint.wanted_ttl() != joint.entry.ttl && !joint.entry.ttl.is_zero();
        if must_write {
            match self.rewrite_entry(state).await {
                Ok(Changed::Done) => {}
                Ok(Changed::Full) => {
                    let joint = state.phase.joint_mut().expect("still held jointly");
                    joint.members.pop();
                    let holder = self.holder_metadata(state).await;
                    return Attempt::Held(
                        Box::new(waiter),
                        Box::new(holder.unwrap_or_else(|| replies::busy_holder(&state.target.url))),
                    );
                }
                Ok(Changed::Gone | Changed::Deleted) => {
                    let joint = state.phase.joint_mut().expect("still held jointly");
                    joint.members.pop();
                    // Every local holder hears of the loss; the caller serves the queue next.
                    let reason = replies::replaced_by_someone_else(&state.target.url);
                    self.end_joint_lost(state, (reason, LossCause::StolenOrBroken));
                    return Attempt::Held(
                        Box::new(waiter),
                        Box::new(replies::busy_holder(&state.target.url)),
                    );
                }
                Err(e) => {
                    let joint = state.phase.joint_mut().expect("still held jointly");
                    joint.members.pop();
                    return Attempt::Failed(Box::new(waiter), replies::store_error(e));
                }
            }
        }
        let joint = state.joint().expect("still held jointly");
        let member = joint.members.last().expect("just added");
        // Before the holder hears: a restart after this keeps its share for it.
        self.ctx
            .journal_member(&joint.entry.lock_id, &member.lock_id, &waiter.session);
        let grant = self.joint_grant(
            state,
            &joint.entry,
            member.lock_id.clone(),
            joint.valid_until,
            None,
        );
        self.tally.held(joint.mode.lock_mode(), 1);
        waiter
            .session
            .reply(waiter.acquire_id, Ok(Response::Granted(grant)));
        Attempt::Granted
    }

    /// What `list` and "held by" messages show of the joint holding here: our entry.
    pub(super) fn joint_holder(&self, state: &LockState) -> Option<LockMetadata> {
        state.joint().map(|j| entry_metadata(&j.entry))
    }
}

/// An entry as the wire shows a holder.
pub(super) fn entry_metadata(entry: &HolderEntry) -> LockMetadata {
    LockMetadata {
        created_at_unix_ns: Some(unix_ns(entry.created_at)),
        acquired_at_unix_ns: Some(unix_ns(entry.acquired_at)),
        modified_unix_ns: None,
        ttl_ns: i64::try_from(entry.ttl.as_nanos()).unwrap_or(i64::MAX),
        hostname: entry.hostname.clone(),
        pid: entry.pid,
        owner_id: entry.owner_id.clone(),
        lock_id: Some(entry.lock_id.clone()),
        daemon_id: Some(entry.daemon_id.clone()),
        token: entry.token,
        uid: entry.uid,
        detached: entry.detached,
        format: LockFileFormat::Vfslock(crate::lockfile::joint::JOINT_FORMAT_VERSION),
        stale: false,
    }
}

#[cfg(test)]
#[path = "tests/joint.rs"]
mod tests;

//! What a lock actor knows, grouped by what it is for: the target and its store, the lifecycle
//! (with the holding and its renewal inside), the wait queue, re-check scheduling, the handoff
//! streak, idle retirement and a lock file whose delete is being retried.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vfslock_proto::{AcquireRequest, LockMetadata, LockMode, RequestId};

use super::lifecycle::Lifecycle;
use super::timing::Timer;
use crate::context::{Context, Stats};
use crate::link::SessionLink;
use crate::lockfile::joint::{HolderEntry, JointMode};
use crate::lockfile::LockRecord;
use crate::metrics::{LossCause, ModeLabel, StoreInstruments};
use crate::store::{Observed, Store, Version};

/// Everything a lock actor knows.
#[derive(Debug)]
pub struct LockState {
    /// What is locked, and where its lock file is.
    pub target: Target,
    /// Free, held here, or a steal awaiting its verdict.
    pub phase: Lifecycle,
    /// Acquires waiting here, first come first served.
    pub queue: WaitQueue,
    /// Looks at a lock file held outside this daemon.
    pub recheck: Recheck,
    /// Handoffs to this daemon's waiters in a row, and the cooldown after a capped streak.
    pub handoff: Handoff,
    /// Whether and since when nothing happens here, for retirement.
    pub idle: Idle,
    /// A lock file of ours whose delete failed, being retried.
    pub leftover: Option<Box<Leftover>>,
    /// Renewals scheduled so far: each holding's renewal carries its own number, so that a
    /// timer message of an ended holding is recognised as out of date.
    pub renewals: u64,
    /// Until when nothing is granted here: the resume window of a holding the previous run
    /// journaled for this target, whether or not it could be kept ([`super::resume`]).
    pub resume_fence: Option<Instant>,
    /// Places of the previous run's waiters, held for them during the resume window
    /// ([`super::requeue`]).
    pub expected: super::requeue::ExpectedWaits,
    /// The last holder seen in the lock file that is not this daemon's client
    /// ([`super::waiting`]).
    pub foreign: Option<SeenForeign>,
    /// The waiters' announcements of where they stand ([`super::waiting`]).
    pub announce: Announce,
    /// Requests waiting for the lock to be released, without taking it ([`super::watch`]).
    pub watchers: super::watch::Watchers,
}

/// A holder of the lock file outside this daemon, as last seen.
#[derive(Debug)]
pub struct SeenForeign {
    /// The lock file as read.
    pub holder: LockMetadata,
    /// What tells this holding from the next one (its lock id, or host and pid).
    pub key: String,
    /// When this holding was first seen.
    pub first_seen: Instant,
    /// When it was last seen.
    pub last_seen: Instant,
}

/// The rounds of [`vfslock_proto::Event::Waiting`] announcements: at most one a second.
#[derive(Debug, Default)]
pub struct Announce {
    /// Whether a round is scheduled.
    pub scheduled: bool,
    /// When the last round went out.
    pub last_round: Option<Instant>,
    /// The holder the waiters were last told of (its key).
    pub holder: Option<String>,
}

/// The target an actor serves.
#[derive(Debug)]
pub struct Target {
    /// Normalized target URL.
    pub url: String,
    /// Registry key.
    pub key: String,
    /// The store that serves it.
    pub store: Arc<Store>,
    /// Where the lock file is in its store.
    pub lock_path: String,
}

impl LockState {
    /// The state of a fresh actor for `target`.
    pub fn new(target: Target, tally: Arc<Tally>, recheck_min: Duration) -> Self {
        LockState {
            target,
            phase: Lifecycle::Free,
            queue: WaitQueue::new(tally),
            recheck: Recheck {
                generation: 0,
                scheduled: false,
                delay: recheck_min,
                marked_generation: 0,
                marked_exclusive: None,
                joint_seen: false,
                writer_seen: None,
            },
            handoff: Handoff::default(),
            idle: Idle {
                since: Some(Instant::now()),
                check_scheduled: false,
                handled: 0,
            },
            leftover: None,
            renewals: 0,
            resume_fence: None,
            expected: Default::default(),
            foreign: None,
            announce: Announce::default(),
            watchers: Default::default(),
        }
    }

    /// Whether nothing is held, queued, watched or pending here.
    pub fn is_idle(&self) -> bool {
        self.is_quiet() && self.watchers.is_empty()
    }

    /// Whether nothing is held, queued or pending here (requests watching for a release may
    /// still wait).
    pub fn is_quiet(&self) -> bool {
        self.phase.is_free()
            && self.queue.is_empty()
            && self.leftover.is_none()
            && self.resume_fence.is_none()
            && self.expected.is_empty()
    }

    /// Whether a resume window still keeps this target from being granted.
    pub fn fenced(&self) -> bool {
        self.resume_fence
            .is_some_and(|until| Instant::now() < until)
    }

    /// The waiter to serve next: the queue's head, once heads whose connection closed are
    /// dropped, unless a waiter of the previous run that may still ask for its place comes
    /// first ([`super::requeue`]): then nobody, until it does or the resume window closes.
    pub fn servable_head(&mut self) -> Option<&Waiter> {
        while self.queue.front()?.session.is_closed() {
            self.queue.pop_front();
        }
        let head = self.queue.front()?;
        (!self.expected.holds_back(head.ordinal)).then_some(head)
    }

    /// The holding, if held here.
    pub fn holding(&self) -> Option<&Holding> {
        self.phase.holding()
    }

    /// The joint holding, if held here in a shared mode.
    pub fn joint(&self) -> Option<&JointHolding> {
        self.phase.joint()
    }
}

/// The lock as held by clients of this daemon in a shared mode (shared, or slots of a
/// semaphore): one entry of the lock file stands for all of them (`lockfile::joint` says why).
#[derive(Debug)]
pub struct JointHolding {
    /// How the lock is shared.
    pub mode: JointMode,
    /// This daemon's entry as last written.
    pub entry: HolderEntry,
    /// The version of the lock file last written or read with our entry in it: the next change
    /// acts on it, or reads the file again.
    pub written: Version,
    /// The local holders, in the order they were granted.
    pub members: Vec<Member>,
    /// Until when the entry's lease is certainly valid (as for [`Holding::valid_until`]).
    pub valid_until: Option<Instant>,
    /// The entry's next renewal.
    pub renewal: Renewal,
}

impl JointHolding {
    /// Slots this daemon's entry should take: one per local holder (semaphores), one for the
    /// whole entry (shared).
    pub fn wanted_count(&self) -> u32 {
        match self.mode {
            JointMode::Shared => 1,
            JointMode::Slots(_) => u32::try_from(self.members.len()).unwrap_or(u32::MAX).max(1),
        }
    }

    /// The lease the entry needs: the longest any local holder asked for (zero, never
    /// expiring, is the longest).
    pub fn wanted_ttl(&self) -> Duration {
        let ttls = self.members.iter().map(|m| m.ttl);
        if self.members.iter().any(|m| m.ttl.is_zero()) {
            Duration::ZERO
        } else {
            ttls.max().unwrap_or(self.entry.ttl)
        }
    }
}

/// One local holder of a joint holding.
#[derive(Debug)]
pub struct Member {
    /// The holder's connection.
    pub session: Arc<SessionLink>,
    /// The acquire that was granted.
    pub acquire_id: RequestId,
    /// The holding's own id, which its release names (the lock file lists the entry's).
    pub lock_id: String,
    /// When it was granted.
    pub since: Instant,
    /// The lease it asked for.
    pub ttl: Duration,
    /// Its owner id, for `list`.
    pub owner_id: Option<String>,
    /// The timer that ends it at its max-hold, stopped with it.
    pub max_hold: Option<MaxHold>,
    /// A share kept after a restart for the session that held it, until that session resumes
    /// it (then `None`) or the resume window closes.
    pub unclaimed: Option<Box<crate::journal::Owner>>,
}

impl Member {
    /// Whether this member is `session_id`'s acquire `acquire_id`.
    pub fn is(&self, session_id: u64, acquire_id: RequestId) -> bool {
        self.session.id == session_id && self.acquire_id == acquire_id
    }
}

/// The lock as held by a client of this daemon.
#[derive(Debug)]
pub struct Holding {
    /// The holder's connection.
    pub session: Arc<SessionLink>,
    /// The acquire that was granted.
    pub acquire_id: RequestId,
    /// What the lock file says.
    pub record: LockRecord,
    /// The version last written: renewal and release act only if the file still is it.
    pub written: Version,
    /// When it was granted, on the monotonic clock.
    pub since: Instant,
    /// Until when the lease is certainly valid: when the last confirmed write was sent, plus
    /// the TTL, minus the safety margin. `None` never expires.
    pub valid_until: Option<Instant>,
    /// The next renewal, stopped with the holding.
    pub renewal: Renewal,
    /// The timer that ends the holding at its max-hold, stopped with it.
    pub max_hold: Option<MaxHold>,
    /// A holding kept after a restart for the session that held it, until that session
    /// resumes it (then `None`) or the resume window closes.
    pub unclaimed: Option<Box<crate::journal::Owner>>,
}

/// A holding's max-hold: how long it may be held, and the timer that ends it then
/// ([`LockMessage::HoldExpired`](super::actor::LockMessage::HoldExpired)).
#[derive(Debug)]
pub struct MaxHold {
    /// The max-hold the holding was granted with.
    pub limit: Duration,
    /// Stopped when the holding ends first.
    pub timer: Timer,
}

impl Holding {
    /// Whether this holding is `session_id`'s acquire `acquire_id`.
    pub fn is(&self, session_id: u64, acquire_id: RequestId) -> bool {
        self.session.id == session_id && self.acquire_id == acquire_id
    }
}

/// A holding's renewal: which one is due, its timer, and the backoff after failures.
#[derive(Debug)]
pub struct Renewal {
    /// The number the due renewal's timer message carries.
    pub generation: u64,
    /// The task that will send it, stopped when replaced or dropped with the holding: a lock
    /// taken and released thousands of times a second would otherwise leave as many timers
    /// asleep for a third of its TTL each.
    pub timer: Option<Timer>,
    /// Delay before the next retry after a failed renewal.
    pub retry_delay: Duration,
}

impl Renewal {
    /// The renewal of a holding just granted: none scheduled yet, retries from `retry_min`.
    pub fn first(retry_min: Duration) -> Renewal {
        Renewal {
            generation: 0,
            timer: None,
            retry_delay: retry_min,
        }
    }
}

/// An acquire that has not been granted yet.
#[derive(Debug)]
pub struct Waiter {
    /// Who asked.
    pub session: Arc<SessionLink>,
    /// The acquire's request id.
    pub acquire_id: RequestId,
    /// What was asked.
    pub request: AcquireRequest,
    /// The lease to give (the request's, or the daemon's default).
    pub ttl: Duration,
    /// How the lock is to be held.
    pub mode: LockMode,
    /// The longest it may be held once granted (the request's, or the daemon's cap).
    pub max_hold: Option<Duration>,
    /// The timer that ends the wait at its timeout, stopped with the waiter.
    pub expiry: Option<Timer>,
    /// Its place: the queue is kept in this order ([`super::requeue`]).
    pub ordinal: u64,
    /// Its place in the journal, while it waits with a session that may resume.
    pub journaled: Option<super::requeue::JournaledPlace>,
    /// When it first queued here (for `list`'s oldest wait).
    pub queued_at: Option<Instant>,
    /// The place and holder it was last told of ([`super::waiting`]).
    pub told: Option<(u32, Option<String>)>,
}

impl Waiter {
    /// Whether this waiter is `acquire_id` of session `session_id`.
    pub fn is(&self, session_id: u64, acquire_id: RequestId) -> bool {
        self.session.id == session_id && self.acquire_id == acquire_id
    }
}

/// A stale lock file whose steal waits for the acquirer's on-stale decision.
#[derive(Debug)]
pub struct PendingSteal {
    /// The acquirer that was asked.
    pub waiter: Waiter,
    /// The file as judged stale; the steal replaces exactly this version or nothing.
    pub judged: Observed,
    /// The same, for messages.
    pub holder: LockMetadata,
}

/// The waiters, first come first served, keeping the daemon's `waiting` gauge in step with
/// every push and pop so that no path can forget it.
#[derive(Debug)]
pub struct WaitQueue {
    waiters: VecDeque<Waiter>,
    tally: Arc<Tally>,
    /// Set by every change of order or membership: the waiters may stand elsewhere now.
    pub moved: bool,
}

impl WaitQueue {
    /// An empty queue counting into `tally`.
    pub fn new(tally: Arc<Tally>) -> Self {
        WaitQueue {
            waiters: VecDeque::new(),
            tally,
            moved: false,
        }
    }

    /// How many wait.
    pub fn len(&self) -> usize {
        self.waiters.len()
    }

    /// Whether nobody waits.
    pub fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    /// Adds a waiter at its place (by ordinal; newcomers have the latest, so this is the end
    /// but for waiters of the previous run that asked again). Returns its 1-based position.
    pub fn insert_in_order(&mut self, waiter: Waiter) -> usize {
        let at = self
            .waiters
            .iter()
            .rposition(|w| w.ordinal < waiter.ordinal)
            .map_or(0, |before| before + 1);
        self.tally.waiting(waiter.mode, 1);
        let mut waiter = waiter;
        waiter.queued_at.get_or_insert_with(Instant::now);
        self.waiters.insert(at, waiter);
        self.moved = true;
        at + 1
    }

    /// Puts a waiter back at the head (its attempt found the lock held).
    pub fn push_front(&mut self, waiter: Waiter) {
        self.tally.waiting(waiter.mode, 1);
        self.waiters.push_front(waiter);
        self.moved = true;
    }

    /// Whether an exclusive request waits.
    pub fn has_exclusive(&self) -> bool {
        self.waiters
            .iter()
            .any(|w| w.mode == LockMode::Exclusive && !w.session.is_closed())
    }

    /// The head, without taking it.
    pub fn front(&self) -> Option<&Waiter> {
        self.waiters.front()
    }

    /// Takes the head.
    pub fn pop_front(&mut self) -> Option<Waiter> {
        let waiter = self.waiters.pop_front()?;
        self.tally.waiting(waiter.mode, -1);
        self.moved = true;
        Some(waiter)
    }

    /// Takes the waiter `acquire_id` of `session_id`, if queued.
    pub fn remove(&mut self, session_id: u64, acquire_id: RequestId) -> Option<Waiter> {
        let at = self
            .waiters
            .iter()
            .position(|w| w.is(session_id, acquire_id))?;
        let waiter = self.waiters.remove(at)?;
        self.tally.waiting(waiter.mode, -1);
        self.moved = true;
        Some(waiter)
    }

    /// Drops every waiter of `session_id` (its connection closed).
    pub fn remove_session(&mut self, session_id: u64) {
        let tally = &self.tally;
        self.moved = true;
        self.waiters.retain(|w| {
            let stays = w.session.id != session_id;
            if !stays {
                tally.waiting(w.mode, -1);
            }
            stays
        });
    }

    /// When the waiter that has waited longest here queued.
    pub fn oldest_queued_at(&self) -> Option<Instant> {
        self.waiters.iter().filter_map(|w| w.queued_at).min()
    }

    /// The waiters in order, to tell them where they stand (order and membership unchanged).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Waiter> {
        self.waiters.iter_mut()
    }

    /// Takes every waiter (shutdown).
    pub fn drain(&mut self) -> Vec<Waiter> {
        for waiter in &self.waiters {
            self.tally.waiting(waiter.mode, -1);
        }
        self.waiters.drain(..).collect()
    }
}

/// Re-checks of a lock file held outside this daemon.
#[derive(Debug)]
pub struct Recheck {
    /// Bumped to invalidate a scheduled re-check.
    pub generation: u64,
    /// Whether a re-check is scheduled.
    pub scheduled: bool,
    /// Next re-check delay (backoff).
    pub delay: Duration,
    /// The re-check generation for which this daemon last marked itself waiting.
    pub marked_generation: u64,
    /// When this daemon last marked an exclusive waiter (object stores write at most one mark
    /// per `MARK_INTERVAL`), and whether the mark it left says exclusive.
    pub marked_exclusive: Option<Instant>,
    /// Whether the lock file last seen held elsewhere was a shared lock or semaphore.
    pub joint_seen: bool,
    /// Another daemon's exclusive waiter, as last read from its mark (object stores read it at
    /// most once per `MARK_INTERVAL`).
    pub writer_seen: Option<(Instant, bool)>,
}

/// Handoff fairness: how many handoffs to this daemon's waiters in a row, and the cooldown
/// that lets other hosts' waiters in after a capped streak.
#[derive(Debug, Default)]
pub struct Handoff {
    /// Consecutive handoffs to local waiters, and since when.
    pub streak: Option<(u32, Instant)>,
    /// After a capped streak, local waiters hold back until then.
    pub cooldown_until: Option<Instant>,
}

/// Idle retirement.
#[derive(Debug)]
pub struct Idle {
    /// Since when the target has had no holder, waiter, steal or leftover.
    pub since: Option<Instant>,
    /// Whether an idle check is scheduled.
    pub check_scheduled: bool,
    /// Routed messages handled, compared with the registry's routed count before retiring.
    pub handled: u64,
}

/// A lock file this daemon wrote and failed to delete at the end of a holding (or, for a shared
/// lock, our entry in it that could not be removed). Left alone it would block every waiter,
/// here and on other hosts, until its TTL runs out; so the delete is retried with backoff (it
/// stays conditional: only these exact bytes are deleted, only our entry removed) until it is
/// gone, is no longer ours, or the TTL has run out anyway.
#[derive(Debug)]
pub struct Leftover {
    /// What we wrote.
    pub version: Version,
    /// Set for a shared lock or semaphore: the id of our entry in the lock file, which is
    /// removed from whatever version is there (the file is deleted only if it was the last
    /// entry), instead of deleting `version`. Journaled until it is gone.
    pub entry: Option<String>,
    /// When the lock would be stale anyway: no point retrying after.
    pub give_up_at: Instant,
    /// The next retry's delay.
    pub delay: Duration,
    /// Whether a retry is scheduled.
    pub scheduled: bool,
}

/// One actor's share of the daemon's gauges (held, waiting, targets; and by store and mode in
/// the metrics), kept outside its state: ractor drops a panicked actor's state without
/// `post_stop`, and the supervisor takes the share back out of the gauges through this
/// ([`Tally::settle`]). It also hands the actor its store's metrics series.
#[derive(Debug)]
pub struct Tally {
    ctx: Arc<Context>,
    /// By mode, in [`ModeLabel`] order.
    held: [AtomicI64; 3],
    waiting: [AtomicI64; 3],
    settled: AtomicBool,
    /// The target's store's series, once the actor knows its store; never when metrics are off.
    instruments: std::sync::OnceLock<Arc<StoreInstruments>>,
}

impl Tally {
    /// A share for a new actor, counted as a live target.
    pub fn new(ctx: Arc<Context>) -> Self {
        Stats::add(&ctx.stats.targets, 1);
        Tally {
            ctx,
            held: Default::default(),
            waiting: Default::default(),
            settled: AtomicBool::new(false),
            instruments: std::sync::OnceLock::new(),
        }
    }

    /// Records into `store`'s metrics series from now on.
    pub fn attach(&self, store: &crate::store::Store) {
        if let Some(instruments) = store.instruments_handle() {
            let _ = self.instruments.set(instruments);
        }
    }

    /// The store's metrics series; `None` when metrics are off.
    pub fn instruments(&self) -> Option<&StoreInstruments> {
        self.instruments.get().map(|i| &**i)
    }

    /// `delta` holdings in `mode` began (positive) or ended.
    pub fn held(&self, mode: LockMode, delta: i64) {
        let mode = ModeLabel::from(mode);
        self.held[mode as usize].fetch_add(delta, Ordering::Relaxed);
        Stats::add(&self.ctx.stats.held, delta);
        if let Some(instruments) = self.instruments() {
            instruments.held(mode, delta);
        }
    }

    /// Waiters in `mode` came or went.
    pub fn waiting(&self, mode: LockMode, delta: i64) {
        let mode = ModeLabel::from(mode);
        self.waiting[mode as usize].fetch_add(delta, Ordering::Relaxed);
        Stats::add(&self.ctx.stats.waiting, delta);
        if let Some(instruments) = self.instruments() {
            instruments.waiting(mode, delta);
        }
    }

    /// A holding granted at `since` ended (released or lost).
    pub fn hold_ended(&self, since: Instant) {
        if let Some(instruments) = self.instruments() {
            instruments.hold_ended(since.elapsed());
        }
    }

    /// `count` leases were lost for `cause`.
    pub fn lost(&self, cause: LossCause, count: u64) {
        if let Some(instruments) = self.instruments() {
            instruments.lost(cause, count);
        }
    }

    /// The actor is gone: takes what it still counted out of the gauges, and the target
    /// itself. Idempotent.
    pub fn settle(&self) {
        for mode in ModeLabel::ALL {
            let held = self.held[mode as usize].swap(0, Ordering::Relaxed);
            let waiting = self.waiting[mode as usize].swap(0, Ordering::Relaxed);
            Stats::add(&self.ctx.stats.held, -held);
            Stats::add(&self.ctx.stats.waiting, -waiting);
            if let Some(instruments) = self.instruments() {
                instruments.held(mode, -held);
                instruments.waiting(mode, -waiting);
            }
        }
        if !self.settled.swap(true, Ordering::Relaxed) {
            Stats::add(&self.ctx.stats.targets, -1);
        }
    }
}

//! What a waiter is told while it waits, and what `list` shows of a queue: so that someone
//! whose job waits for a lock can see where it stands, who holds the lock and for how long,
//! without a store read for each look.
//!
//! Handles [`LockMessage::AnnounceQueue`] and [`LockMessage::Snapshot`].
//!
//! - Every holder the actor reads in the lock file that is not its own client is remembered
//!   ([`LockActor::saw_holder`]), with when it was first and last seen: the store is read for
//!   the lock protocol anyway (attempts, re-checks), never for this.
//! - Waiters of protocol 9 and later are told their place and the holder
//!   ([`vfslock_proto::Event::Waiting`]) when they queue and again as either changes, in rounds
//!   at most a second apart for the whole queue, so that a busy lock's handoffs cost at most one
//!   round of events a second, however fast they go.

use std::time::{Duration, Instant};

use ractor::ActorRef;
use vfslock_proto::{Event, ForeignHolder, LockMetadata, QueuedLock};

use super::actor::{LockActor, LockMessage};
use super::state::{LockState, SeenForeign};
use crate::lockfile;

/// The shortest time between two rounds of announcements.
const ROUND_EVERY: Duration = Duration::from_secs(1);

/// The protocol version that knows [`Event::Waiting`].
const WAITING_SINCE: u32 = 9;

impl LockActor {
    /// Remembers `holder`, read in the lock file while nobody here held it.
    pub(super) fn saw_holder(&self, state: &mut LockState, holder: &LockMetadata) {
        // The notes that stand for a holder the daemon could not pin down are not holders.
        if holder.pid <= 0 && holder.hostname.starts_with('(') {
            return;
        }
        let key = match &holder.lock_id {
            Some(lock_id) => lock_id.clone(),
            None => format!("{}/{}/{:?}", holder.hostname, holder.pid, holder.owner_id),
        };
        let now = Instant::now();
        match &mut state.foreign {
            Some(seen) if seen.key == key => {
                seen.last_seen = now;
                seen.holder = holder.clone();
            }
            seen => {
                *seen = Some(SeenForeign {
                    holder: holder.clone(),
                    key,
                    first_seen: now,
                    last_seen: now,
                });
            }
        }
    }

    /// Who holds the lock as far as this actor knows, a key that tells holdings apart, and for
    /// how long: its own client first, else the last holder seen in the file.
    fn known_holder(&self, state: &LockState) -> Option<(String, LockMetadata, Duration)> {
        if let Some(holding) = state.holding() {
            let metadata = lockfile::into_wire(holding.record.to_parsed(), None, false);
            let key = holding.record.lock_id.clone();
            return Some((key, metadata, holding.since.elapsed()));
        }
        if let Some(joint) = state.joint() {
            let first = joint.members.first()?;
            let mut metadata =
                lockfile::into_wire(lockfile::parse(&joint.written.bytes), None, false);
            metadata.pid = first.session.caller.pid;
            metadata.owner_id.clone_from(&first.owner_id);
            return Some((joint.entry.lock_id.clone(), metadata, first.since.elapsed()));
        }
        let seen = state.foreign.as_ref()?;
        let held_for = held_for(seen, self.ctx.now());
        Some((seen.key.clone(), seen.holder.clone(), held_for))
    }

    /// What tells the holder [`LockActor::known_holder`] names from the next one, without
    /// making its metadata: this runs after every message while anyone waits.
    fn holder_key(state: &LockState) -> Option<&str> {
        if let Some(holding) = state.holding() {
            return Some(&holding.record.lock_id);
        }
        if let Some(joint) = state.joint() {
            return joint.members.first().map(|_| joint.entry.lock_id.as_str());
        }
        state.foreign.as_ref().map(|seen| seen.key.as_str())
    }

    /// After each message: schedules a round of announcements when the waiters may stand
    /// elsewhere or the holder changed. Nothing is done while nobody waits.
    pub(super) fn announce_if_moved(&self, myself: &ActorRef<LockMessage>, state: &mut LockState) {
        if state.queue.is_empty() {
            state.queue.moved = false;
            return;
        }
        let holder = Self::holder_key(state);
        if holder != state.announce.holder.as_deref() {
            state.announce.holder = holder.map(str::to_owned);
            state.queue.moved = true;
        }
        if !state.queue.moved || state.announce.scheduled {
            return;
        }
        state.announce.scheduled = true;
        let due = state.announce.last_round.map_or(Duration::ZERO, |last| {
            ROUND_EVERY.saturating_sub(last.elapsed())
        });
        if due.is_zero() {
            let _ = myself.cast(LockMessage::AnnounceQueue);
        } else {
            myself.send_after(due, || LockMessage::AnnounceQueue);
        }
    }

    /// A round: every waiter that knows [`Event::Waiting`] and stands elsewhere than it was
    /// last told, or under another holder, is told.
    pub(super) fn announce_queue(&self, state: &mut LockState) {
        state.announce.scheduled = false;
        state.announce.last_round = Some(Instant::now());
        state.queue.moved = false;
        let known = self.known_holder(state);
        let key = known.as_ref().map(|(key, ..)| key.clone());
        for (index, waiter) in state.queue.iter_mut().enumerate() {
            if waiter.session.protocol < WAITING_SINCE {
                continue;
            }
            let position = index as u32 + 1;
            let told = Some((position, key.clone()));
            if waiter.told == told {
                continue;
            }
            waiter.told = told;
            waiter.session.event(
                waiter.acquire_id,
                Event::Waiting {
                    position,
                    holder: known
                        .as_ref()
                        .map(|(_, holder, _)| Box::new(holder.clone())),
                    held_for: known.as_ref().map(|(.., held_for)| *held_for),
                },
            );
        }
    }

    /// What `vfslockctl list` shows of this target, if anything happens here.
    pub(super) fn queued_snapshot(&self, state: &LockState) -> Option<QueuedLock> {
        let listed = self.snapshot(state)?;
        Some(QueuedLock {
            listed,
            oldest_wait: state.queue.oldest_queued_at().map(|at| at.elapsed()),
            foreign_holder: state.foreign.as_ref().map(|seen| ForeignHolder {
                holder: seen.holder.clone(),
                seen_for: held_for(seen, self.ctx.now()),
                last_seen: seen.last_seen.elapsed(),
            }),
        })
    }
}

/// How long a foreign holding has been held as far as this daemon can tell, at `now`: since it
/// was first seen, or since the `acquiredAt` its file names, if that is earlier.
fn held_for(seen: &SeenForeign, now: std::time::SystemTime) -> Duration {
    let since_seen = seen.first_seen.elapsed();
    let since_acquired = seen.holder.acquired_at_unix_ns.and_then(|at| {
        let now = lockfile::unix_ns(now);
        u64::try_from(now - at).ok().map(Duration::from_nanos)
    });
    since_acquired.map_or(since_seen, |acquired| acquired.max(since_seen))
}

//! The wire replies of a lock actor: what a client is told, in words that say what happened and
//! what to do, and the read-only answers (the lock file's metadata, `vfslockctl list` entries).
//!
//! Handles [`LockMessage::Metadata`], [`LockMessage::Describe`] and [`LockMessage::Snapshot`].

use std::time::Duration;

use vfslock_proto::{
    ErrorKind, HolderView, ListEntry, ListedLock, LockFileFormat, LockMetadata, LockMode, LockView,
    WireError,
};

use super::actor::LockActor;
#[cfg(doc)]
use super::actor::LockMessage;
use super::state::LockState;
use crate::lockfile;
use crate::lockfile::joint::Joint;
use crate::store::{StoreError, Unreadable};

/// A store's failure, as the client sees it.
pub fn store_error(error: StoreError) -> WireError {
    let kind = if error.unsupported {
        ErrorKind::Unsupported
    } else {
        ErrorKind::Store
    };
    WireError::new(kind, error.message)
}

/// " (held by pid P on HOST, owner O)", what stands for it when the file names no holder, or
/// nothing when the holder is unknown.
pub fn describe_holder(holder: Option<&LockMetadata>) -> String {
    let Some(h) = holder else {
        return String::new();
    };
    let owner = h
        .owner_id
        .as_deref()
        .map(|o| format!(", owner {o}"))
        .unwrap_or_default();
    match (h.pid, h.hostname.as_str(), h.format) {
        // A holder the daemon could not read ([`unreadable_holder`]): its note says it all.
        // A holder the daemon could not name (unreadable, busy, a writer waiting elsewhere):
        // its note says it all.
        (pid, note, _) if pid <= 0 && note.starts_with('(') => format!(" {note}"),
        (0, "", LockFileFormat::Corrupt) => {
            " (by an unknown holder: the lock file is empty or cannot be read as a lock)".into()
        }
        (0, "", LockFileFormat::Foreign) => {
            " (by another tool: the lock file is not the Go library's nor vfslock's)".into()
        }
        (0, "", _) => format!(" (by a holder that wrote no host or pid{owner})"),
        (pid, host, _) => format!(" (held by pid {pid} on {host}{owner})"),
    }
}

/// A try that found the lock held (or others queued here first).
pub fn already_held(url: &str, holder: Option<LockMetadata>, waiting: usize) -> WireError {
    let message = match &holder {
        Some(_) => format!(
            "{url} is already locked{}; run `vfslockctl show {url}` to see who holds it",
            describe_holder(holder.as_ref()),
        ),
        None => format!("{url} is busy: {waiting} acquire(s) wait for it on this daemon"),
    };
    let mut error = WireError::new(ErrorKind::AlreadyHeld, message);
    error.holder = holder.map(Box::new);
    error
}

/// A wait refused because the queue is full.
pub fn too_many_waiters(url: &str, limit: usize) -> WireError {
    WireError::new(
        ErrorKind::LimitExceeded,
        format!(
            "{limit} acquires already wait for {url} (limits.max-waiters-per-target); try again \
             later"
        ),
    )
}

/// A detached lease asked for without a TTL.
pub fn detached_needs_ttl() -> WireError {
    WireError::new(
        ErrorKind::InvalidTarget,
        "a detached lease needs a TTL above zero: nothing renews it",
    )
}

/// A wait whose timeout ran out.
pub fn wait_timed_out(url: &str, timeout: Duration, holder: Option<LockMetadata>) -> WireError {
    let mut error = WireError::new(
        ErrorKind::Timeout,
        format!(
            "timed out after {timeout:?} waiting for {url}{}; run `vfslockctl show {url}` to see \
             who holds it",
            describe_holder(holder.as_ref()),
        ),
    );
    error.holder = holder.map(Box::new);
    error
}

/// The holder of a lock file others keep changing faster than we can read it.
pub fn busy_holder(url: &str) -> LockMetadata {
    let mut holder = lockfile::into_wire(lockfile::parse(b"{}"), None, false);
    holder.hostname = format!("(busy: the lock file of {url} kept changing)");
    holder
}

/// What a shared request is told when it waits (or a try is refused) because another host's
/// exclusive request waits for the lock: no new shared holder is let in meanwhile.
pub fn writer_waiting_holder(url: &str) -> LockMetadata {
    let mut holder = lockfile::into_wire(lockfile::parse(b"{}"), None, false);
    holder.hostname = format!(
        "(shared holders, and an exclusive request on another host waits for {url}: no new \
         shared holder is let in until it has had its turn)"
    );
    holder
}

/// How the hostname of a holder that could not be read starts.
const UNKNOWN_HOLDER: &str = "(held by an unknown holder";

/// The holder of a lock file that exists but that this daemon may not read (another user's
/// 0600 file): held, never stale. No new wire variant says so: the note goes where every
/// client, old ones included, shows the holder, its hostname; the format is `Foreign` (held,
/// never stale by time), the truth about a file nobody here can judge.
pub fn unreadable_holder(file: &Unreadable) -> LockMetadata {
    let mut holder = lockfile::into_wire(lockfile::parse(b"{}"), None, false);
    holder.hostname = format!(
        "{UNKNOWN_HOLDER}: the lock file is unreadable, {file}; held until its owner removes \
         it or makes it readable)"
    );
    holder
}

/// A release that found the lease already lost.
pub fn lease_lost_at_release(url: &str, why: &str) -> WireError {
    WireError::new(
        ErrorKind::LeaseLost,
        format!(
            "the lease on {url} had been lost before the release: {why}; the lock file was left \
             alone"
        ),
    )
}

/// Why a lease was lost: its deadline passed before a renewal succeeded.
pub fn not_renewed_in_time(url: &str) -> String {
    format!("the lease on {url} could not be renewed before its deadline")
}

/// Why a lease ended: it was held for its max-hold.
pub fn max_hold_reached(url: &str, limit: Duration) -> String {
    format!(
        "the lease on {url} was held for its max-hold of {} (the acquire's max-hold, or \
         vfslockd's locks.max-hold), so vfslockd released it; take the lock again if the work \
         must go on, or ask for a longer max-hold",
        crate::duration::format(limit)
    )
}

/// Why a lease was lost: its lock file changed under it.
pub fn replaced_by_someone_else(url: &str) -> String {
    format!("the lock file of {url} was replaced or removed by someone else")
}

/// A resume of a holding this daemon does not keep.
pub fn not_kept(url: &str) -> WireError {
    WireError::new(
        ErrorKind::LeaseLost,
        format!(
            "the lease on {url} was not kept across the restart of vfslockd (lost while it was \
             away, not resumed within its resume window, or resumed already); take the lock \
             again"
        ),
    )
}

/// A resume by a caller that is not the holding's session.
pub fn not_the_owner(url: &str) -> WireError {
    WireError::new(
        ErrorKind::PermissionDenied,
        format!(
            "the holding on {url} belongs to another session: only the process that held it \
             may resume it"
        ),
    )
}

/// Why a kept holding ended: nobody resumed it in time.
pub fn not_resumed(url: &str) -> String {
    format!("the lease on {url} was not resumed within the resume window after vfslockd restarted")
}

/// An action on another uid's detached lease by a caller who is not an admin.
pub fn not_your_detached_lease(url: &str, lock_id: &str, owner: Option<u32>) -> WireError {
    WireError::new(
        ErrorKind::PermissionDenied,
        format!(
            "the detached lease {lock_id} on {url} belongs to uid {}; only that user or an \
             admin may release or renew it",
            owner.map_or("unknown".to_owned(), |u| u.to_string())
        ),
    )
}

/// A renewal of a detached lease that is not there any more.
pub fn no_detached_lease(url: &str, lock_id: &str) -> WireError {
    WireError::new(
        ErrorKind::LeaseLost,
        format!("{url} holds no detached lease {lock_id}: it ran out, was released or was broken"),
    )
}

/// A break that kept losing the race for the lock file.
pub fn kept_changing_while_breaking(url: &str) -> WireError {
    WireError::new(
        ErrorKind::Store,
        format!("the lock file of {url} kept changing while it was being broken; try again"),
    )
}

/// An acquire given up by its client.
pub fn cancelled() -> WireError {
    WireError::new(ErrorKind::Cancelled, "the acquire was cancelled")
}

/// A request that meets the daemon's shutdown.
pub fn shutting_down() -> WireError {
    WireError::new(ErrorKind::ShuttingDown, "vfslockd is shutting down")
}

/// What a holder is told when the daemon stops and releases its lock.
pub const STOPPING: &str = "vfslockd is shutting down and releases this lock";

/// What a holder is told when the actor of its lock failed.
pub fn daemon_failed_holder(url: &str, why: &str) -> String {
    format!(
        "vfslockd failed while serving {url} ({why}): this lease is lost and its lock file was \
         deleted; acquire the lock again, and report the failure from vfslockd's log"
    )
}

/// What an unanswered request is told when the actor of its target failed.
pub fn daemon_failed_request(url: &str, why: &str) -> WireError {
    WireError::new(
        ErrorKind::Internal,
        format!(
            "vfslockd failed while serving {url} ({why}) and dropped this request; send it \
             again, and report the failure from vfslockd's log"
        ),
    )
}

impl LockActor {
    /// The lock file as it is now, judged.
    pub(super) async fn read_metadata(
        &self,
        state: &LockState,
    ) -> Result<Option<LockMetadata>, WireError> {
        match self
            .within(state.target.store.read(&state.target.lock_path))
            .await
        {
            Ok(None) => Ok(None),
            Ok(Some(observed)) => Ok(Some(self.judge(state, &observed).0)),
            Err(StoreError {
                unreadable: Some(file),
                ..
            }) => Ok(Some(unreadable_holder(&file))),
            Err(e) => Err(store_error(e)),
        }
    }

    /// The current holder's lock file: ours from memory, otherwise read from the store.
    pub(super) async fn holder_metadata(&self, state: &LockState) -> Option<LockMetadata> {
        if let Some(holding) = state.holding() {
            return Some(lockfile::into_wire(holding.record.to_parsed(), None, false));
        }
        if let Some(steal) = state.phase.steal() {
            return Some(steal.holder.clone());
        }
        if let Some(holder) = self.joint_holder(state) {
            return Some(holder);
        }
        self.read_metadata(state).await.ok().flatten()
    }

    /// The lock file with every holder it lists: one for an exclusive file (from its
    /// top-level fields), each entry of a joint one, with this daemon's own entry shown as its
    /// local holders.
    pub(super) async fn describe(&self, state: &LockState) -> Result<Option<LockView>, WireError> {
        let observed = match self
            .within(state.target.store.read(&state.target.lock_path))
            .await
        {
            Ok(None) => return Ok(None),
            Ok(Some(observed)) => observed,
            Err(StoreError {
                unreadable: Some(file),
                ..
            }) => {
                let lock = unreadable_holder(&file);
                return Ok(Some(LockView {
                    holders: vec![lock.whole_file_holder(false)],
                    lock,
                    mode: LockMode::Exclusive,
                }));
            }
            Err(e) => return Err(store_error(e)),
        };
        let (lock, stale) = self.judge(state, &observed);
        let Some(joint) = Joint::parse(&observed.bytes) else {
            let local = state
                .holding()
                .is_some_and(|h| Some(&h.record.lock_id) == lock.lock_id.as_ref());
            return Ok(Some(LockView {
                holders: vec![HolderView {
                    expired: stale,
                    ..lock.whole_file_holder(local)
                }],
                lock,
                mode: LockMode::Exclusive,
            }));
        };
        let expired = self.expired_entries(state, &observed, &joint);
        let ours = state.joint().map(|j| &j.entry.lock_id);
        let mut holders = Vec::new();
        for entry in &joint.holders {
            let view = HolderView {
                lock_id: Some(entry.lock_id.clone()),
                hostname: entry.hostname.clone(),
                pid: entry.pid,
                owner_id: entry.owner_id.clone(),
                uid: entry.uid,
                token: entry.token,
                expires_unix_ns: entry.expires_at().map(lockfile::unix_ns),
                count: entry.count,
                detached: entry.detached,
                local: false,
                expired: expired.contains(&entry.lock_id),
            };
            match state.joint() {
                Some(here) if ours == Some(&entry.lock_id) => {
                    for member in &here.members {
                        holders.push(HolderView {
                            lock_id: Some(member.lock_id.clone()),
                            pid: member.session.caller.pid,
                            owner_id: member.owner_id.clone(),
                            uid: member.session.caller.uid,
                            count: 1,
                            local: true,
                            ..view.clone()
                        });
                    }
                }
                _ => holders.push(view),
            }
        }
        Ok(Some(LockView {
            lock,
            mode: joint.mode.lock_mode(),
            holders,
        }))
    }

    /// What `vfslockctl list` shows of this target, if anything happens here.
    pub(super) fn snapshot(&self, state: &LockState) -> Option<ListedLock> {
        if state.is_quiet() {
            return None;
        }
        if let Some(joint) = state.joint() {
            // The first local holder stands for all of them (the entry's token is theirs).
            let first = joint.members.first();
            let entry = ListEntry {
                target: state.target.url.clone(),
                lock_id: first.map(|m| m.lock_id.clone()),
                pid: first.map(|m| m.session.caller.pid),
                uid: first.and_then(|m| m.session.caller.uid),
                owner_id: first.and_then(|m| m.owner_id.clone()),
                held_for: first.map(|m| m.since.elapsed()),
                ttl: joint.entry.ttl,
                token: joint.entry.token,
                waiters: state.queue.len() as u32,
            };
            return Some(ListedLock {
                entry,
                mode: joint.mode.lock_mode(),
                holders: joint.members.len() as u32,
            });
        }
        let holder = state.holding();
        let entry = ListEntry {
            target: state.target.url.clone(),
            lock_id: holder.map(|h| h.record.lock_id.clone()),
            pid: holder.map(|h| h.record.pid),
            uid: holder.and_then(|h| h.session.caller.uid),
            owner_id: holder.and_then(|h| h.record.owner_id.clone()),
            held_for: holder.map(|h| h.since.elapsed()),
            ttl: holder.map(|h| h.record.ttl).unwrap_or_default(),
            token: holder.and_then(|h| h.record.token),
            waiters: state.queue.len() as u32,
        };
        Some(ListedLock {
            entry,
            mode: LockMode::Exclusive,
            holders: u32::from(holder.is_some()),
        })
    }
}

#[cfg(test)]
#[path = "tests/replies.rs"]
mod tests;

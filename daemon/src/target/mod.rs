//! One lock target: who holds it, who waits for it, and what is pending.
//!
//! The state lives inside the target's actor ([`actor`]), which handles one message at a time,
//! so every decision about one lock file is made in one place. A target is, at any moment:
//!
//! | state        | holder | steal  | meaning                                              |
//! |--------------|--------|--------|------------------------------------------------------|
//! | free         | none   | none   | no client of this daemon holds it; waiters, if any, wait for a foreign holder and re-check with backoff |
//! | held         | some   | none   | a client of this daemon holds it; waiters are woken at release without polling |
//! | steal asked  | none   | some   | the file is stale and the head acquirer's on-stale decision is awaited |
//!
//! Holder and steal are never both set: a steal is only asked for when nobody here holds it.

pub mod actor;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vfslock_proto::{
    AcquireRequest, Event, LockMetadata, RequestId, Response, ServerFrame, WireError,
};

use crate::lockfile::LockRecord;
use crate::server::outbound::Outbound;
use crate::store::Observed;

pub use actor::{TargetLock, TargetLockMessage};

use crate::address::{Address, Scheme};

/// Who is on the other end of a session, from the socket's peer credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The client's process id (0 when the platform cannot tell).
    pub pid: i64,
    /// The client's user id, where the platform tells.
    pub uid: Option<u32>,
    /// Root, or a member of the daemon's admin group (supplementary groups included): may
    /// break any lock and end any detached lease.
    pub admin: bool,
}

/// A session as target actors see it: where to send answers and events.
#[derive(Debug)]
pub struct SessionLink {
    /// Unique per daemon run.
    pub id: u64,
    /// The way to the client: straight to its socket, or through its writer task.
    pub out: Outbound,
    /// Who the client is.
    pub peer: Peer,
    /// Acquires of this connection that wait or hold, for the per-session limit: added when
    /// routed, removed when refused or when the holding ends.
    pub open_acquires: std::sync::Mutex<std::collections::HashSet<RequestId>>,
    /// The protocol version the client negotiated: every frame to it is rewritten for that
    /// version here, so nothing else needs to know which version a client speaks.
    pub protocol: u32,
}

impl SessionLink {
    /// A link for session `id`.
    pub fn new(id: u64, out: Outbound, peer: Peer) -> Self {
        SessionLink {
            id,
            out,
            peer,
            open_acquires: Default::default(),
            protocol: vfslock_proto::handshake::PROTOCOL_VERSION,
        }
    }

    /// The same link, to a client that speaks protocol `version`.
    pub fn speaking(mut self, version: u32) -> Self {
        self.protocol = version;
        self
    }

    /// Answers request `id`. A closed session just drops the answer. A refusal ends an
    /// acquire's count against the session's limit.
    pub fn reply(&self, id: RequestId, result: Result<Response, WireError>) {
        if result.is_err() {
            self.acquire_ended(id);
        }
        self.out
            .send(ServerFrame::Response { id, result }.for_version(self.protocol));
    }

    /// The acquire `id` no longer waits or holds.
    pub fn acquire_ended(&self, id: RequestId) {
        self.open_acquires
            .lock()
            .expect("open acquires lock")
            .remove(&id);
    }

    /// Counts the acquire `id` against the limit; `false` if the session is at `limit`.
    pub fn acquire_started(&self, id: RequestId, limit: usize) -> bool {
        let mut open = self.open_acquires.lock().expect("open acquires lock");
        if open.len() >= limit {
            return false;
        }
        open.insert(id);
        true
    }

    /// Announces `event` about request `id`.
    pub fn event(&self, id: RequestId, event: Event) {
        self.out
            .send(ServerFrame::Event { id, event }.for_version(self.protocol));
    }

    /// Whether the client is gone.
    pub fn is_closed(&self) -> bool {
        self.out.is_closed()
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
    /// The timer that ends the wait at its timeout, stopped with the waiter.
    pub expiry: Option<Timer>,
}

impl Waiter {
    /// Whether this waiter is `acquire_id` of session `session_id`.
    pub fn is(&self, session_id: u64, acquire_id: RequestId) -> bool {
        self.session.id == session_id && self.acquire_id == acquire_id
    }
}

/// The lock as held by a client of this daemon.
#[derive(Debug)]
pub struct Holding {
    /// The holder's session.
    pub session: Arc<SessionLink>,
    /// The acquire that was granted.
    pub acquire_id: RequestId,
    /// What the lock file says.
    pub record: LockRecord,
    /// The version last written: renewal and release act only if the file still is it.
    pub written: crate::store::Version,
    /// When it was granted, on the monotonic clock.
    pub since: Instant,
    /// Until when the lease is certainly valid: when the last confirmed write was sent, plus
    /// the TTL, minus the safety margin. `None` never expires.
    pub valid_until: Option<Instant>,
    /// Delay before the next renewal retry after a failure.
    pub retry_delay: Duration,
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

/// Everything a target actor knows.
#[derive(Debug)]
pub struct TargetLockState {
    /// Normalized target URL.
    pub url: String,
    /// The store that serves it.
    pub store: Arc<crate::store::Store>,
    /// Registry key.
    pub key: String,
    /// Where the lock file is in its store.
    pub lock_path: String,
    /// The holder on this daemon, if any.
    pub holder: Option<Holding>,
    /// Acquires waiting, first come first served.
    pub waiters: VecDeque<Waiter>,
    /// A steal awaiting its on-stale decision.
    pub steal: Option<PendingSteal>,
    /// Bumped to invalidate a scheduled renewal.
    pub renew_generation: u64,
    /// The task that will send the next renewal, stopped when the holding ends: a lock taken
    /// and released thousands of times a second would otherwise leave as many timers asleep
    /// for a third of its TTL each.
    pub renewal_timer: Option<Timer>,
    /// Bumped to invalidate a scheduled re-check.
    pub recheck_generation: u64,
    /// Whether a re-check is scheduled.
    pub recheck_scheduled: bool,
    /// Next re-check delay (backoff).
    pub recheck_delay: Duration,
    /// Routed messages handled, compared with the registry's routed count before retiring.
    pub handled: u64,
    /// Since when the target has had no holder, waiter or steal.
    pub idle_since: Option<Instant>,
    /// Whether an idle check is scheduled.
    pub idle_check_scheduled: bool,
    /// Consecutive handoffs to local waiters, and since when.
    pub streak: Option<(u32, Instant)>,
    /// After a capped streak, local waiters hold back until then.
    pub cooldown_until: Option<Instant>,
    /// A lock file of ours whose delete failed, being retried.
    pub leftover: Option<Box<Leftover>>,
    /// The re-check generation for which this daemon last marked itself waiting.
    pub marked_generation: u64,
}

/// A lock file this daemon wrote and failed to delete at the end of a holding. Left alone it
/// would block every waiter, here and on other hosts, until its TTL runs out; so the delete is
/// retried with backoff (it stays conditional: only these exact bytes are deleted) until it is
/// gone, is no longer ours, or the TTL has run out anyway.
#[derive(Debug)]
pub struct Leftover {
    /// What we wrote.
    pub version: crate::store::Version,
    /// When the lock would be stale anyway: no point retrying after.
    pub give_up_at: Instant,
    /// The next retry's delay.
    pub delay: Duration,
    /// Whether a retry is scheduled.
    pub scheduled: bool,
}

/// A timer task that sends the actor a message later (ractor's `send_after`), stopped when
/// this is dropped: the renewal of a holding that ended, the expiry of a wait that was granted.
/// Left to run, each would sleep out its delay, and a lock cycled thousands of times a second
/// piled up as many sleeping tasks.
#[derive(Debug)]
pub struct Timer(
    pub ractor::concurrency::JoinHandle<Result<(), ractor::MessagingErr<actor::TargetLockMessage>>>,
);

impl Drop for Timer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl TargetLockState {
    /// Invalidates the scheduled renewal, if any, and stops its timer.
    pub fn cancel_renewal(&mut self) {
        self.renew_generation += 1;
        self.renewal_timer = None;
    }

    /// Whether nothing is held, queued or pending here.
    pub fn is_idle(&self) -> bool {
        self.holder.is_none()
            && self.waiters.is_empty()
            && self.steal.is_none()
            && self.leftover.is_none()
    }

    /// Removes the waiter `acquire_id` of `session_id`, if queued.
    pub fn remove_waiter(&mut self, session_id: u64, acquire_id: RequestId) -> Option<Waiter> {
        let at = self
            .waiters
            .iter()
            .position(|w| w.is(session_id, acquire_id))?;
        self.waiters.remove(at)
    }
}

/// Where a target's lock file lives inside its store. `mem://` volumes get their own prefix so
/// `mem://vol/x` and `mem:///vol/x` never share a file.
pub fn store_path(address: &Address) -> String {
    match address.scheme() {
        Scheme::File => address.lock_path(),
        Scheme::Mem if address.authority().is_empty() => format!("root{}", address.lock_path()),
        Scheme::Mem => format!("vol/{}{}", address.authority(), address.lock_path()),
        Scheme::S3 | Scheme::Gcs | Scheme::Azblob => address.lock_key(),
        // OpenDAL paths are relative to the operator's root, which is `/`.
        Scheme::Sftp => address.lock_path().trim_start_matches('/').to_owned(),
    }
}

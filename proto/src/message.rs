//! The messages: what a client asks, what the daemon answers, and what it announces unasked.
//!
//! These are wire types only. The lock file's JSON has its own types in the daemon; the two are
//! kept apart so that the file format can follow the Go library while the wire follows us.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Chosen by the client, unique among its connection's requests in flight; echoed by every
/// response and event about that request.
pub type RequestId = u64;

/// Everything a client sends after the handshake.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientFrame {
    /// A request; the daemon answers with exactly one [`ServerFrame::Response`] carrying `id`.
    Request {
        /// Echoed by the response.
        id: RequestId,
        /// What is asked.
        request: Request,
    },
    /// The answer to an [`Event::StaleQuestion`] about the acquire with this `id`. Produces no
    /// response of its own: the acquire's response follows.
    StaleVerdict {
        /// The acquire request that was asked.
        id: RequestId,
        /// The target of that acquire.
        target: String,
        /// Whether the stale lock may be taken.
        allow: bool,
        /// Why not, when `allow` is false (returned to the caller as the acquire's error).
        reason: String,
    },
}

/// A client's request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Take a lock. Answers [`Response::Granted`], or an error of kind
    /// [`ErrorKind::AlreadyHeld`] (try), [`ErrorKind::Timeout`] (wait with a timeout),
    /// [`ErrorKind::StaleVetoed`], [`ErrorKind::InvalidTarget`], [`ErrorKind::Store`] or
    /// [`ErrorKind::Cancelled`]. While waiting, [`Event::QueuePosition`] and
    /// [`Event::StaleQuestion`] may arrive; once granted, [`Event::LeaseRenewed`],
    /// [`Event::Releasing`] and [`Event::LeaseEnded`] ([`Event::LeaseLost`] before protocol
    /// version 2) may.
    Acquire(AcquireRequest),
    /// Give up a pending acquire. Answers [`Response::Cancelled`]; the acquire itself is
    /// answered with an error of kind [`ErrorKind::Cancelled`], or, if it was granted before the
    /// cancel arrived, that grant is released at once.
    Cancel {
        /// The target of that acquire.
        target: String,
        /// The id of the acquire request to cancel.
        acquire_id: RequestId,
    },
    /// Release a lock this connection holds, or a detached lease of the caller's uid (any uid
    /// for an admin). Answers [`Response::Released`]; releasing a lock that is not held is not
    /// an error (`held: false`).
    Release {
        /// The target as given to acquire.
        target: String,
        /// The lock id from [`Grant::lock_id`].
        lock_id: String,
    },
    /// Extend a detached lease by its TTL (or `ttl`) from now. Answers [`Response::Renewed`],
    /// or an error of kind [`ErrorKind::LeaseLost`] (not that lease any more) or
    /// [`ErrorKind::PermissionDenied`] (another uid's lease, caller not an admin).
    Renew {
        /// The target.
        target: String,
        /// The detached lease's lock id.
        lock_id: String,
        /// A new TTL; `None` keeps the lease's.
        ttl: Option<Duration>,
    },
    /// Remove whoever holds the target's lock (an admin's `vfslockctl break`). Only root and
    /// members of the daemon's admin group may; the caller's identity comes from the socket.
    /// Answers [`Response::Broken`] with the lock file removed (`None` if there was none).
    Break {
        /// The target.
        target: String,
        /// Why, for the log.
        reason: String,
    },
    /// Read a target's lock file, whoever wrote it. Answers [`Response::Metadata`].
    Metadata {
        /// The target.
        target: String,
    },
    /// What this daemon holds and queues. Answers [`Response::List`].
    List,
    /// The daemon's status. Answers [`Response::Status`].
    Status,
    /// Answers [`Response::Pong`].
    Ping,
    /// Take a lock in `mode` (protocol version 3). [`LockMode::Exclusive`] is the same as
    /// [`Request::Acquire`]; the shared modes add [`ErrorKind::ModeConflict`] to its errors.
    AcquireIn {
        /// What is asked, as for [`Request::Acquire`].
        request: AcquireRequest,
        /// How the lock is shared.
        mode: LockMode,
    },
    /// Read a target's lock file with every holder it lists (protocol version 3; older
    /// clients use [`Request::Metadata`]). Answers [`Response::Described`].
    Describe {
        /// The target.
        target: String,
    },
    /// What this daemon holds and queues, with each lock's mode and number of holders
    /// (protocol version 3; older clients use [`Request::List`]). Answers
    /// [`Response::ListedModes`].
    ListModes,
    /// Take a lock in `mode`, held for at most `max_hold` (protocol version 4). Without
    /// `max_hold` the daemon's `max-hold` applies, if it has one; a `max_hold` above it is
    /// refused with [`ErrorKind::LimitExceeded`]. When the time is up the daemon stops
    /// renewing, ends the lease with [`Event::LeaseEnded`] of kind
    /// [`ErrorKind::MaxHoldReached`], and releases the lock. Detached leases have no max-hold
    /// (they last their TTL): one asked for is refused with [`ErrorKind::Unsupported`].
    AcquireBounded {
        /// What is asked, as for [`Request::Acquire`].
        request: AcquireRequest,
        /// How the lock is shared.
        mode: LockMode,
        /// The longest the lease may be held; `None` takes the daemon's cap, if any.
        max_hold: Option<Duration>,
    },
    /// The daemon's keys for `targets`, judged as an acquire of each would be (store, access
    /// rules), in the same order (protocol version 4). Answers [`Response::Resolved`]. A
    /// client that takes several targets at once takes them in the order of their keys, so
    /// that two callers asking for overlapping sets cannot deadlock each other.
    Resolve {
        /// The targets, as an acquire would name them.
        targets: Vec<String>,
    },
    /// Take back a holding after the daemon restarted (protocol version 6): the holding
    /// `lock_id` of `target`, granted to `session` ([`Resumable`]) by the daemon before. The
    /// restarted daemon hands it over only to a caller of the same uid that knows the session's
    /// secret, and only after renewing the lock file conditionally on its still carrying
    /// `lock_id`. Answers [`Response::GrantedResumable`] (the same lock id and token, a fresh
    /// validity, and this connection's session from now on), or an error of kind
    /// [`ErrorKind::LeaseLost`] (the holding was not kept: lost while the daemon was away, or
    /// not resumed within the window) or [`ErrorKind::PermissionDenied`] (another session's).
    /// Events about the holding come with this request's id from then on.
    Resume {
        /// The target, as the grant named it.
        target: String,
        /// The holding's lock id.
        lock_id: String,
        /// The session it was granted to.
        session: String,
        /// That session's secret.
        secret: Secret,
    },
    /// How often this daemon restarted and what its latest start kept (protocol version 7).
    /// Answers [`Response::Restarts`].
    Restarts,
    /// An acquire that was waiting when the daemon restarted, asking again for its place in
    /// the previous run's queue (protocol version 7). `place` is what
    /// [`Event::Queued`] told the waiter. While the resume window is open, waiters that ask
    /// again keep their first-come order among themselves and come before every acquire that
    /// first arrived at the restarted daemon. A place the daemon does not know (it did not
    /// restart, or the window has closed) is no error: the acquire queues as a new one. A
    /// place of another session (wrong secret or uid) is refused with
    /// [`ErrorKind::PermissionDenied`]. Answers as the acquire would.
    Requeue {
        /// What is asked, as for [`Request::AcquireBounded`]; the timeout is what is left of
        /// the first one.
        request: AcquireRequest,
        /// How the lock is shared.
        mode: LockMode,
        /// The longest it may be held, as for [`Request::AcquireBounded`].
        max_hold: Option<Duration>,
        /// The place it had.
        place: WaitPlace,
    },
    /// The daemon's metrics in the Prometheus text exposition format, version 0.0.4
    /// (protocol version 8): what its `[metrics] listen` HTTP listener serves, without a port.
    /// Answers [`Response::Metrics`].
    Metrics,
    /// What [`Request::ListModes`] lists, with each target's queue and the last holder seen in
    /// its lock file from elsewhere (protocol version 9). Answers [`Response::ListedQueues`].
    /// Answered from what the daemon knows: no store is read for it.
    ListQueues,
    /// Answer as soon as `target` is not held, without taking it: at once if it is free (no
    /// lock file, or a stale one), else when its holder here releases it or, for a holder
    /// elsewhere, when a re-check finds it gone (protocol version 10). Answers
    /// [`Response::NotHeld`], or [`ErrorKind::Timeout`] once `timeout` has passed. A
    /// [`Request::Cancel`] naming this request's id ends the wait.
    WaitReleased {
        /// The target.
        target: String,
        /// How long to wait; `None`: as long as it takes.
        timeout: Option<Duration>,
    },
}

/// A waiter's place in a daemon's queue, and the proof that it is that waiter's (protocol
/// version 7).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitPlace {
    /// The place: increasing in the order the daemon queued its waiters, across restarts.
    pub ordinal: u64,
    /// The session (connection) that waited.
    pub session: String,
    /// That session's secret, as [`Resumable::secret`].
    pub secret: Secret,
}

/// A session's secret: it proves in [`Request::Resume`] that the caller is the session the
/// holding was granted to. On the wire a plain string; its `Debug` hides it, so that no log
/// line that prints a message shows it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<hidden>)")
    }
}

/// How a lock is held: alone, or together with other holders.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LockMode {
    /// One holder at a time (every lock before protocol version 3).
    #[default]
    Exclusive,
    /// Any number of shared holders at once, and no exclusive one (a reader/writer lock's
    /// read side; the exclusive mode is its write side).
    Shared,
    /// At most this many holders at once (a counting semaphore). Every holder of a target must
    /// ask for the same number.
    Slots(u32),
}

impl std::fmt::Display for LockMode {
    /// "exclusive", "shared", or "a semaphore of N slots".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockMode::Exclusive => f.write_str("exclusive"),
            LockMode::Shared => f.write_str("shared"),
            LockMode::Slots(n) => {
                write!(
                    f,
                    "a semaphore of {n} slot{}",
                    if *n == 1 { "" } else { "s" }
                )
            }
        }
    }
}

/// The parameters of [`Request::Acquire`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcquireRequest {
    /// The target URL or absolute path.
    pub target: String,
    /// Lease length, renewed by the daemon while the connection lives. `None` takes the
    /// daemon's default (30 s unless configured); zero never expires.
    pub ttl: Option<Duration>,
    /// Optional owner identity written into the lock file.
    pub owner_id: Option<String>,
    /// Try once or wait.
    pub wait: WaitMode,
    /// Whether the daemon must ask the client ([`Event::StaleQuestion`]) before taking a stale
    /// lock; without it a stale lock is taken.
    pub ask_on_stale: bool,
    /// A detached lease: it belongs to the caller's uid and its lock id, not to the
    /// connection. It is not released when the connection closes nor at daemon shutdown, is not
    /// renewed, and lasts its TTL (required, non-zero) unless released or renewed by lock id
    /// ([`Request::Release`], [`Request::Renew`]) by the same uid or an admin.
    pub detached: bool,
}

/// How long an acquire may wait for the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WaitMode {
    /// Fail at once with [`ErrorKind::AlreadyHeld`] when the lock is held.
    Try,
    /// Queue until granted, or until `timeout` passes ([`ErrorKind::Timeout`]).
    Wait {
        /// `None` waits for ever.
        timeout: Option<Duration>,
    },
}

/// Everything the daemon sends after the handshake.
///
/// Request id 0 is never used by the client library for requests it waits on: the daemon
/// answers a frame it cannot decode with an error response carrying id 0 before closing, and
/// fire-and-forget requests (a release from `Drop`) use it too.
// Frames live only between the codec and a handler; boxing variants would cost an allocation
// per message to save stack space nobody is short of.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerFrame {
    /// The one answer to the request `id`.
    Response {
        /// The request's id.
        id: RequestId,
        /// The outcome.
        result: Result<Response, WireError>,
    },
    /// Something the daemon announces about the request `id` without being asked.
    Event {
        /// The request (an acquire) the event concerns.
        id: RequestId,
        /// What happened.
        event: Event,
    },
}

/// A successful answer.
#[allow(clippy::large_enum_variant)] // as for `ServerFrame`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The lock is held by the requesting connection.
    Granted(Grant),
    /// A cancel was accepted.
    Cancelled,
    /// A release was carried out; `held` says whether the lock was held by the caller.
    Released {
        /// Whether the caller held the lock.
        held: bool,
    },
    /// The target's lock file, or `None` when there is none.
    Metadata(Option<LockMetadata>),
    /// Locks held and queued through this daemon.
    List(Vec<ListEntry>),
    /// The daemon's status.
    Status(StatusInfo),
    /// A detached lease was extended; its lock file as now written.
    Renewed(LockMetadata),
    /// A lock was broken; the lock file that was removed.
    Broken(Option<LockMetadata>),
    /// Answer to [`Request::Ping`].
    Pong,
    /// Answer to [`Request::Describe`]: the lock file with its holders, or `None` when there
    /// is none (protocol version 3).
    Described(Option<LockView>),
    /// Answer to [`Request::ListModes`] (protocol version 3).
    ListedModes(Vec<ListedLock>),
    /// Answer to [`Request::Resolve`]: for each target in order, its key (the normalized URL
    /// under which the daemon locks it, `file://` directories resolved to the real ones), or
    /// why it cannot be locked (protocol version 4).
    Resolved(Vec<Result<String, WireError>>),
    /// A grant that survives the daemon (protocol version 5): what [`Response::Granted`] says,
    /// and what the holder needs to resume the holding after the daemon restarted. Older
    /// clients get [`Response::Granted`]; detached leases are always plain grants (they belong
    /// to their uid and lock id, not to a session).
    GrantedResumable {
        /// The grant.
        grant: Grant,
        /// How the holding can be resumed.
        resume: Resumable,
    },
    /// The answer to [`Request::Restarts`] (protocol version 7).
    Restarts(RestartInfo),
    /// The answer to [`Request::Metrics`] (protocol version 8): the exposition text.
    Metrics(String),
    /// The answer to [`Request::ListQueues`] (protocol version 9).
    ListedQueues(Vec<QueuedLock>),
    /// The answer to [`Request::WaitReleased`] (protocol version 10): the target is not held.
    NotHeld,
}

/// One line of [`Response::ListedQueues`]: a target held or queued for through this daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedLock {
    /// What [`Response::ListedModes`] says of it.
    pub listed: ListedLock,
    /// How long the acquire that has waited longest here has waited; `None` with no waiter.
    pub oldest_wait: Option<Duration>,
    /// The last holder this daemon saw in the target's lock file that is not one of its own
    /// clients (another host, another tool), while its clients waited or tried.
    pub foreign_holder: Option<ForeignHolder>,
}

/// A holder of a lock file outside this daemon, as the daemon last saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForeignHolder {
    /// The lock file as read.
    pub holder: LockMetadata,
    /// How long this daemon has seen that same holding (at least as long as it has been held).
    pub seen_for: Duration,
    /// How long ago it was last seen.
    pub last_seen: Duration,
}

/// How often the daemon restarted, and what its latest start kept (protocol version 7).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartInfo {
    /// Restarts of this daemon (its host id and socket) since its state directory was made:
    /// starts after a run that crashed or was replaced by a planned restart. A start after an
    /// orderly stop, which released every lock, is none.
    pub restarts: u64,
    /// The latest start, when it was a restart.
    pub last: Option<LastRestart>,
}

/// What the daemon's latest restart kept for the sessions of the run before it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRestart {
    /// Planned (`systemctl reload`, SIGUSR2) rather than after a crash.
    pub planned: bool,
    /// Holdings kept for their sessions to resume.
    pub kept: u64,
    /// Of those, resumed so far.
    pub resumed: u64,
    /// Holdings of the run before that are lost: gone or changed in the store, not resumed
    /// within the window, or already lost when the run before ended.
    pub lost: u64,
    /// Waiters of the run before that asked again for their place.
    pub requeued: u64,
    /// How long the resume window stays open; `None` once it has closed.
    pub window_open_for: Option<Duration>,
}

/// What a holder needs to resume its holding after the daemon restarted (protocol version 5).
///
/// The safety rule: a client that has not resumed within `window` of the last frame it
/// received from the daemon treats the holding as lost (sooner if the lease's validity runs out
/// first). A restarted daemon grants the targets of holdings nobody resumed to no one until
/// `window` has passed since its own start, which is after that last frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resumable {
    /// The session (connection) the holding belongs to.
    pub session: String,
    /// The session's secret, which proves in a resume that the caller is that session. The
    /// daemon keeps only a hash of it; it is never logged.
    pub secret: Secret,
    /// The resume window W.
    pub window: Duration,
}

/// A lock file with every holder it lists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockView {
    /// The file as a whole, as [`Response::Metadata`] has it (what a Go peer reads).
    pub lock: LockMetadata,
    /// How it is held: an exclusive file (ours, a Go peer's, any other) has one holder.
    pub mode: LockMode,
    /// The holders: each entry of a shared lock or semaphore, with this daemon's own entry
    /// shown as its local holders.
    pub holders: Vec<HolderView>,
}

/// One holder of a lock, as [`LockView`] lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderView {
    /// The holding's lock id (for a local holder of this daemon, the one its release names).
    pub lock_id: Option<String>,
    /// The holder's host.
    pub hostname: String,
    /// The holding process (for another daemon's entry: its first holder's).
    pub pid: i64,
    /// The owner id.
    pub owner_id: Option<String>,
    /// The holding user.
    pub uid: Option<u32>,
    /// The fencing token.
    pub token: Option<u64>,
    /// When the holder's lease runs out unless renewed, in nanoseconds since the Unix epoch;
    /// `None` never.
    pub expires_unix_ns: Option<i128>,
    /// Slots taken (semaphores); 1 otherwise.
    pub count: u32,
    /// A detached lease.
    pub detached: bool,
    /// Whether this daemon serves the holder.
    pub local: bool,
    /// Whether its lease had run out when the daemon read the file.
    pub expired: bool,
}

/// One line of [`Response::ListedModes`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedLock {
    /// What [`Response::List`] says of the target (its first local holder).
    pub entry: ListEntry,
    /// How it is held here.
    pub mode: LockMode,
    /// How many clients of this daemon hold it.
    pub holders: u32,
}

/// What the holder of a fresh lock learns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The normalized target URL.
    pub target: String,
    /// The unique id written into the lock file; names this holding in [`Request::Release`].
    pub lock_id: String,
    /// The lock file as written.
    pub metadata: LockMetadata,
    /// The stale lock file that was replaced, if the lock was stolen.
    pub stole: Option<LockMetadata>,
    /// The fencing token of this holding: greater than every token issued before for this
    /// target, by any daemon sharing the store. `None` on a store that cannot stand behind
    /// one (create-only mode, or fencing switched off in the config).
    pub token: Option<u64>,
    /// How long the lease is certainly valid from the moment the daemon sent this grant;
    /// `None` for a lease that never expires.
    pub valid_for: Option<Duration>,
    /// The same deadline as an absolute `CLOCK_MONOTONIC` reading in nanoseconds, where the
    /// platform has one. Daemon and client share the host, hence the clock; a client that
    /// reads this grant late must not count the validity from its late reading.
    pub valid_until_monotonic_ns: Option<u64>,
}

/// Announcements about a request.
///
/// Variants are only ever appended: a variant's index is its tag on the wire. Each one is sent
/// only to clients whose protocol version has it ([`crate::versions`]).
#[allow(clippy::large_enum_variant)] // as for `ServerFrame`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// The acquire waits behind `position - 1` other waiters of this daemon (1 = next).
    QueuePosition {
        /// 1-based place in the queue.
        position: u32,
    },
    /// The lock is stale; may it be taken? Answer with [`ClientFrame::StaleVerdict`]. No answer
    /// within the daemon's deadline counts as a veto.
    StaleQuestion {
        /// The stale lock file.
        holder: LockMetadata,
    },
    /// The lease granted to this acquire was renewed: it is valid for `valid_for` from the
    /// moment the daemon sent this event.
    LeaseRenewed {
        /// Remaining certain validity.
        valid_for: Duration,
        /// The deadline as an absolute `CLOCK_MONOTONIC` reading; see
        /// [`Grant::valid_until_monotonic_ns`].
        valid_until_monotonic_ns: Option<u64>,
    },
    /// The lock granted to this acquire is no longer held. Since protocol version 2 the daemon
    /// sends [`Event::LeaseEnded`] instead; clients of version 1 get this.
    LeaseLost {
        /// What happened.
        reason: String,
    },
    /// The daemon is shutting down and releases this lock now.
    Releasing {
        /// Why.
        reason: String,
    },
    /// Protocol version 2: the lock granted to this acquire is no longer held, and why, as an
    /// error kind a program can branch on. Clients of version 1 get [`Event::LeaseLost`] with
    /// the same reason.
    LeaseEnded {
        /// [`ErrorKind::LeaseLost`] when the lease was lost (stolen, broken, not renewed in
        /// time); [`ErrorKind::Internal`] when the daemon itself failed.
        kind: ErrorKind,
        /// What happened, and what to do.
        reason: String,
    },
    /// Protocol version 7: the acquire was queued, at `position` (as [`Event::QueuePosition`]),
    /// and what it needs to ask for its place again after the daemon restarted
    /// ([`Request::Requeue`]) within `resume.window`. Sent once, when the acquire first queues;
    /// older clients get [`Event::QueuePosition`].
    Queued {
        /// 1-based place in the queue.
        position: u32,
        /// The place to ask for after a restart.
        ordinal: u64,
        /// The session's credentials and the resume window.
        resume: Resumable,
    },
    /// Protocol version 9: where a waiting acquire stands, announced when it queues and again
    /// each time its place or the lock's holder changes, at most once a second. Older versions
    /// never get it (they hear [`Event::QueuePosition`] or [`Event::Queued`] once, on
    /// joining).
    Waiting {
        /// 1-based place in this daemon's queue.
        position: u32,
        /// Who holds the lock, as far as this daemon knows: its own client, or the last holder
        /// seen in the lock file. `None` when nobody is known (the holder left, or the head
        /// is held back after a restart).
        holder: Option<Box<LockMetadata>>,
        /// How long that holder has held it, as far as this daemon knows.
        held_for: Option<Duration>,
    },
}

/// A lock file as the daemon read it, in wire form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockMetadata {
    /// `createdAt`: last write of the lease (refreshed at each renewal), Unix nanoseconds.
    /// `None` when the file has no parseable time.
    pub created_at_unix_ns: Option<i128>,
    /// `acquiredAt`: first write of the lease (vfslock files only), Unix nanoseconds.
    pub acquired_at_unix_ns: Option<i128>,
    /// The store's last-modified time of the file, Unix nanoseconds, if known.
    pub modified_unix_ns: Option<i128>,
    /// `ttl` in nanoseconds: 0 never expires, negative is already stale.
    pub ttl_ns: i64,
    /// `hostname` of the holder.
    pub hostname: String,
    /// `pid` of the holding process.
    pub pid: i64,
    /// `ownerId`, if any.
    pub owner_id: Option<String>,
    /// `lockId` (vfslock files only).
    pub lock_id: Option<String>,
    /// `daemonId`: the instance id of the daemon that wrote it (vfslock files only).
    pub daemon_id: Option<String>,
    /// `token`: the fencing token of the holding (vfslock files only).
    pub token: Option<u64>,
    /// `uid`: the holder's user id (vfslock files only).
    pub uid: Option<u32>,
    /// `detached`: a detached lease, which belongs to its uid and lock id (vfslock files only).
    pub detached: bool,
    /// Who wrote the file, as far as its content tells.
    pub format: LockFileFormat,
    /// Whether the daemon judged the lock stale when it read it.
    pub stale: bool,
}

/// What kind of writer left a lock file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockFileFormat {
    /// Written by vfslock, with this format version.
    Vfslock(u32),
    /// Written by the Go library (either spelling).
    Go,
    /// Valid JSON of some other tool: held, never stale by time.
    Foreign,
    /// Not valid JSON (empty, truncated, binary): held until older than the grace period.
    Corrupt,
}

/// One line of [`Response::List`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListEntry {
    /// Normalized target.
    pub target: String,
    /// The holder's lock id, if this daemon's client holds it.
    pub lock_id: Option<String>,
    /// The holding process.
    pub pid: Option<i64>,
    /// The holding user.
    pub uid: Option<u32>,
    /// The holder's owner id.
    pub owner_id: Option<String>,
    /// How long the lock has been held.
    pub held_for: Option<Duration>,
    /// The holder's TTL.
    pub ttl: Duration,
    /// The holder's fencing token.
    pub token: Option<u64>,
    /// Waiters queued on this daemon.
    pub waiters: u32,
}

/// Answer to [`Request::Status`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusInfo {
    /// Version of the daemon binary.
    pub daemon_version: String,
    /// The newest protocol version the daemon speaks (a connection may speak an older one:
    /// see [`Welcome::protocol_version`]).
    pub protocol_version: u32,
    /// Host identity written into lock files.
    pub hostname: String,
    /// Unique id of this daemon run.
    pub instance_id: String,
    /// The daemon's process id.
    pub pid: u32,
    /// Time since the daemon started.
    pub uptime: Duration,
    /// Configured stores.
    pub stores: Vec<StoreInfo>,
    /// Locks held through this daemon.
    pub held: u64,
    /// Acquires waiting.
    pub waiting: u64,
    /// Client connections.
    pub sessions: u64,
    /// Live target actors.
    pub targets: u64,
}

/// One configured store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreInfo {
    /// URL scheme (or, for object stores, the URL prefix) it serves.
    pub scheme: String,
    /// Human description: kind, mode, stale rule.
    pub description: String,
    /// Requests made, by operation (object stores): `creates`, `reads`, `replaces`, `deletes`,
    /// `fences`, `ambiguous`, `marks` (waiting marks written and read), and `requests` (HTTP
    /// requests or SFTP round trips in all); and on every store `renewals`, the leases
    /// renewed, and `writes`, the lock-file writes asked of it (creates, replaces, deletes).
    pub counters: Vec<(String, u64)>,
}

/// The daemon's first frame after an accepted handshake.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The protocol version of this connection: the one the client's hello named.
    pub protocol_version: u32,
    /// Version of the daemon binary.
    pub daemon_version: String,
    /// Host identity written into lock files.
    pub hostname: String,
    /// Unique id of this daemon run.
    pub instance_id: String,
}

/// A failed request: a machine-readable kind and a message for humans.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// What happened and what to do.
    pub message: String,
    /// With [`ErrorKind::AlreadyHeld`] (and a vetoed steal): the current holder's lock file.
    pub holder: Option<Box<LockMetadata>>,
}

/// Kinds of failure: those the daemon reports, then those a client library reports of its own.
/// New kinds are appended, so that a kind keeps its number on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The lock is held by someone else.
    AlreadyHeld,
    /// A waiting acquire ran out of time.
    Timeout,
    /// The target is not an accepted URL or path.
    InvalidTarget,
    /// The acquirer's on-stale decision refused to take a stale lock, or did not answer.
    StaleVetoed,
    /// The store failed (I/O error, permission, timeout).
    Store,
    /// A malformed or unexpected message.
    Protocol,
    /// The acquire was cancelled by its client.
    Cancelled,
    /// The daemon is shutting down.
    ShuttingDown,
    /// The lease had already been lost (stolen, broken, or not renewed in time).
    LeaseLost,
    /// The store cannot do this in its mode (for example a steal on a create-only store).
    Unsupported,
    /// A configured limit was reached.
    LimitExceeded,
    /// The caller is not allowed to do this.
    PermissionDenied,
    /// A bug in the daemon; the message says more.
    Internal,
    // The kinds below are a client library's own, about its side of the connection: the daemon
    // never sends them. They are here so that a client has one set of kinds to branch on.
    /// No daemon answers at the socket path (client side).
    DaemonUnavailable,
    /// The connection to the daemon was lost (client side).
    ConnectionLost,
    /// There is no lock file for the target (client side: the daemon answers a metadata
    /// request with no file as a success).
    NotFound,
    /// A failure of the client library itself; the message says what (client side).
    Other,
    /// The lock is held in a mode that cannot be shared with the one asked for (shared
    /// against a semaphore, or semaphores of different sizes): waiting would not help
    /// (protocol version 3; older clients never ask for a mode, so never get it).
    ModeConflict,
    /// The lease was held for its max-hold (the request's, or the daemon's `max-hold`) and
    /// the daemon ended it: the lock is released (protocol version 4; older clients hear
    /// [`ErrorKind::LeaseLost`]).
    MaxHoldReached,
}

impl WireError {
    /// An error without holder metadata.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        WireError {
            kind,
            message: message.into(),
            holder: None,
        }
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for WireError {}

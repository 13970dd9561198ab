//! Stores: where lock files live, behind the few operations the lock protocol needs.
//!
//! Every operation is atomic on its own: `create` never overwrites, `replace` and `delete` act
//! only when the file still holds the bytes the caller last saw, and fencing tokens are
//! committed in the same atomic step as the lock file they go into. On the local filesystem
//! the daemon makes its own syscalls ([`fs`]) because OpenDAL's `fs` service fsyncs every write
//! and either truncates in place or, with `atomic_write_dir`, turns create-if-not-exists into
//! check-then-rename. Memory is a plain table ([`memory`]); object stores go through OpenDAL
//! ([`object`]).

#[cfg(feature = "faults")]
pub mod faults;
// O_NOFOLLOW creates and OFD locks: the file store exists on Unix only; elsewhere `file://`
// targets are refused (`Stores::new`).
#[cfg(unix)]
pub mod fs;
pub mod memory;
pub mod object;
pub mod waiting;

use std::time::SystemTime;

use std::sync::Arc;

use crate::address::{Address, Prefix, Scheme};
use crate::config::StaleRule;
use crate::metrics::{FailureKind, Operation, StoreInstruments};

/// Suffix of the companion file beside each lock file (`data.csv.lock.fence`): the OS lock
/// that makes check-and-replace atomic across daemons, and the fencing-token counter. It
/// persists, and is not an orphan.
pub const FENCE_SUFFIX: &str = ".fence";

/// Suffix of the companion file (`data.csv.lock.waiting`, `file://` only) that daemons waiting
/// for a lock held by another host touch at each re-check, with their id in it: the holder's
/// daemon caps its streak of local handoffs only while someone else is waiting. It persists,
/// and is not an orphan.
pub const WAITING_SUFFIX: &str = ".waiting";

/// Where a target's lock file lives inside its store. `mem://` volumes get their own prefix so
/// `mem://vol/x` and `mem:///vol/x` never share a file.
pub fn lock_path(address: &Address) -> String {
    match address.scheme() {
        Scheme::File => address.lock_path(),
        Scheme::Mem if address.authority().is_empty() => format!("root{}", address.lock_path()),
        Scheme::Mem => format!("vol/{}{}", address.authority(), address.lock_path()),
        Scheme::S3 | Scheme::Gcs | Scheme::Azblob => address.lock_key(),
        // OpenDAL paths are relative to the operator's root, which is `/`.
        Scheme::Sftp => address.lock_path().trim_start_matches('/').to_owned(),
    }
}

/// One version of a lock file, as a conditional write names it: its bytes and, where the store
/// has one, its version tag (an ETag, a generation). Stores with tags compare the tag (the
/// server does, atomically); the others compare the bytes. Every lock file carries a unique
/// `lockId`, so equal bytes or tags never mean two different holdings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// The whole file.
    pub bytes: Vec<u8>,
    /// The store's version tag, if it has one.
    pub tag: Option<String>,
}

/// A lock file as read: its bytes, its version tag, and when the store says it was last
/// written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The whole file.
    pub bytes: Vec<u8>,
    /// The store's version tag, if it has one.
    pub tag: Option<String>,
    /// Last-modified time, where the store keeps one.
    pub modified: Option<SystemTime>,
}

impl Observed {
    /// The version a conditional write must find to act.
    pub fn version(&self) -> Version {
        Version {
            bytes: self.bytes.clone(),
            tag: self.tag.clone(),
        }
    }
}

/// A lock file as written by [`Store::create`] or [`Store::replace`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// The exact bytes written.
    pub bytes: Vec<u8>,
    /// The fencing token they carry, if one was issued.
    pub token: Option<u64>,
    /// The store's last-modified time right after the write, where it keeps one (to see the
    /// skew between our clock and the store's).
    pub modified: Option<SystemTime>,
    /// The store's version tag of what was written, if it has one.
    pub tag: Option<String>,
}

impl Written {
    /// The version a later conditional write must find to act.
    pub fn version(&self) -> Version {
        Version {
            bytes: self.bytes.clone(),
            tag: self.tag.clone(),
        }
    }
}

/// The outcome of an atomic create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Created {
    /// The file did not exist and is now ours.
    Won(Written),
    /// A file was already there; nothing was written.
    Exists,
}

/// The outcome of a conditional replace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replaced {
    /// The file held the expected bytes and now holds ours.
    Done(Written),
    /// The file held other bytes (or was gone); nothing was changed.
    Changed,
}

/// The outcome of a conditional delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conditional {
    /// The file held the expected bytes and was deleted.
    Done,
    /// The file held other bytes (or was gone); nothing was changed.
    Changed,
}

/// Whether a write starts a new holding (which gets a fresh fencing token) or continues one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Token {
    /// Issue a token greater than every token issued before for this lock, and at least
    /// `floor` (the current time in microseconds), so that a lost counter cannot make tokens
    /// go backwards.
    Fresh {
        /// The least token to issue.
        floor: u64,
    },
    /// A renewal: no new token.
    Keep,
}

/// Builds the lock file's bytes once the token is known (`None` with [`Token::Keep`]). Called
/// again if a token has to be re-issued.
pub type MakeLock = Box<dyn Fn(Option<u64>) -> Vec<u8> + Send + Sync>;

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    /// What happened and what to do.
    pub message: String,
    /// Whether the store cannot do this at all in its mode (rather than failed this time).
    pub unsupported: bool,
    /// Whether it failed only because others kept changing the lock file meanwhile: busy, not
    /// broken; a waiter should wait on.
    pub contended: bool,
    /// Set when the lock file exists but this daemon may not read it (another user's file, as
    /// the Go library's 0600 ones are): a lock held by someone unknown, never stale, since
    /// bytes that cannot be read cannot be compared, so no exact steal is possible. Carried
    /// on the error, like `contended`, so that every other reader of the file (break, the
    /// crash journal, detached leases) keeps failing with the message that says what to do.
    pub unreadable: Option<Unreadable>,
}

/// A lock file that exists but that this daemon's user may not read: who owns it, and its
/// mode, for the message that says what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreadable {
    /// The file's owner.
    pub uid: u32,
    /// The owner's user name, where this host resolves it.
    pub owner: Option<String>,
    /// The permission bits (`0o600`).
    pub mode: u32,
    /// The uid this daemon runs as (its filesystem uid), which was refused.
    pub reader: u32,
}

impl std::fmt::Display for Unreadable {
    /// "owned by uid 1000 (alice), mode 0600, not readable by uid 65534"
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "owned by uid {}", self.uid)?;
        if let Some(owner) = &self.owner {
            write!(f, " ({owner})")?;
        }
        write!(
            f,
            ", mode {:04o}, not readable by vfslockd's uid {}",
            self.mode & 0o7777,
            self.reader
        )
    }
}

impl StoreError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        StoreError {
            message: message.into(),
            unsupported: false,
            contended: false,
            unreadable: None,
        }
    }

    pub(crate) fn unsupported(message: impl Into<String>) -> Self {
        StoreError {
            unsupported: true,
            ..StoreError::new(message)
        }
    }

    pub(crate) fn contended(message: impl Into<String>) -> Self {
        StoreError {
            contended: true,
            ..StoreError::new(message)
        }
    }

    /// The lock file at `path` exists but `file` says this daemon may not read it. Only the
    /// `file://` store (Unix) can tell.
    #[cfg(unix)]
    pub(crate) fn unreadable(path: &str, file: Unreadable) -> Self {
        StoreError {
            unreadable: Some(file.clone()),
            ..StoreError::new(format!(
                "cannot read lock file {path}: it is {file}; it counts as held by an unknown \
                 holder, never stale, until its owner removes it or makes it readable to \
                 vfslockd (for instance `chmod a+r`, or a group vfslockd is in), or vfslockd \
                 runs as a user that may read it"
            ))
        }
    }
}

/// The next fencing token: above the counter, above the token of the file being replaced, and
/// at least the floor.
pub fn next_token(counter: u64, replaced: Option<u64>, floor: u64) -> u64 {
    counter
        .saturating_add(1)
        .max(replaced.map_or(0, |t| t.saturating_add(1)))
        .max(floor)
}

/// The token a lock file's bytes carry, if any.
pub fn token_in(bytes: &[u8]) -> Option<u64> {
    crate::lockfile::parse(bytes).token
}

/// One configured store.
#[derive(Debug)]
pub struct Store {
    backend: Backend,
    stale_rule: StaleRule,
    /// The URL prefix it serves (`file:///`, `mem://`, `s3://locks/`).
    prefix: String,
    /// Errors and delays injected before each operation (tests only): here, in front of the
    /// backends, so that every store gets the same faults. One layer shared by all stores of
    /// the daemon, so its counters are the daemon's.
    #[cfg(feature = "faults")]
    faults: Option<Arc<faults::StoreFaults>>,
    /// Leases renewed on this store, shown by `status` so that renewal load can be watched.
    renewals: std::sync::atomic::AtomicU64,
    /// Writes of lock files asked of this store (creates, replaces, deletes), shown by
    /// `status` on every store, so that a path meant to cost none can be checked.
    writes: std::sync::atomic::AtomicU64,
    /// This store's metrics series, set once when the daemon's context is made (never when
    /// metrics are off).
    instruments: std::sync::OnceLock<Arc<StoreInstruments>>,
}

#[derive(Debug)]
enum Backend {
    #[cfg(unix)]
    Fs(fs::FsStore),
    Memory(memory::MemoryStore),
    // Boxed: far larger than the other two, and there are few stores.
    Object(Box<object::ObjectStore>),
}

// The file and object backends' futures are boxed: they are large (blocking-pool hand-offs, an
// HTTP client), and every target actor's task would otherwise carry the largest of them inline,
// held or idle, in every actor (bytes per held lock in `tests/bench.sh`). The memory store's
// futures are small and stay inline, so its path does not pay the allocation.
impl Store {
    /// Creates `path` unless it exists, with a fresh token (at least `floor`).
    pub async fn create(
        &self,
        path: &str,
        floor: u64,
        make: MakeLock,
    ) -> Result<Created, StoreError> {
        self.traced(Operation::Create, path, || {
            self.create_here(path, floor, make)
        })
        .await
    }

    async fn create_here(
        &self,
        path: &str,
        floor: u64,
        make: MakeLock,
    ) -> Result<Created, StoreError> {
        let timer = self.timer(Operation::Create);
        if let Err(e) = self.inject("create", path).await {
            return timer.finish(Err(e));
        }
        self.count_write();
        timer.finish(match &self.backend {
            Backend::Memory(s) => s.create(path, floor, make).await,
            #[cfg(unix)]
            Backend::Fs(s) => Box::pin(s.create(path, floor, make)).await,
            Backend::Object(s) => Box::pin(s.create(path, floor, make)).await,
        })
    }

    /// Reads `path`; `None` when it does not exist.
    pub async fn read(&self, path: &str) -> Result<Option<Observed>, StoreError> {
        self.traced(Operation::Read, path, || self.read_here(path))
            .await
    }

    async fn read_here(&self, path: &str) -> Result<Option<Observed>, StoreError> {
        let timer = self.timer(Operation::Read);
        if let Err(e) = self.inject("read", path).await {
            return timer.finish(Err(e));
        }
        timer.finish(match &self.backend {
            Backend::Memory(s) => s.read(path).await,
            #[cfg(unix)]
            Backend::Fs(s) => Box::pin(s.read(path)).await,
            Backend::Object(s) => Box::pin(s.read(path)).await,
        })
    }

    /// Replaces `path` if it still holds `expected`.
    pub async fn replace(
        &self,
        path: &str,
        expected: &Version,
        token: Token,
        make: MakeLock,
    ) -> Result<Replaced, StoreError> {
        let call = || self.replace_here(path, expected, token, make);
        self.traced(Operation::Replace, path, call).await
    }

    async fn replace_here(
        &self,
        path: &str,
        expected: &Version,
        token: Token,
        make: MakeLock,
    ) -> Result<Replaced, StoreError> {
        let timer = self.timer(Operation::Replace);
        if let Err(e) = self.inject("replace", path).await {
            return timer.finish(Err(e));
        }
        self.count_write();
        timer.finish(match &self.backend {
            Backend::Memory(s) => s.replace(path, expected, token, make).await,
            #[cfg(unix)]
            Backend::Fs(s) => Box::pin(s.replace(path, expected, token, make)).await,
            Backend::Object(s) => Box::pin(s.replace(path, expected, token, make)).await,
        })
    }

    /// Deletes `path` if it still holds `expected`.
    pub async fn delete(&self, path: &str, expected: &Version) -> Result<Conditional, StoreError> {
        self.traced(Operation::Delete, path, || self.delete_here(path, expected))
            .await
    }

    async fn delete_here(&self, path: &str, expected: &Version) -> Result<Conditional, StoreError> {
        let timer = self.timer(Operation::Delete);
        if let Err(e) = self.inject("delete", path).await {
            return timer.finish(Err(e));
        }
        self.count_write();
        timer.finish(match &self.backend {
            Backend::Memory(s) => s.delete(path, expected).await,
            #[cfg(unix)]
            Backend::Fs(s) => Box::pin(s.delete(path, expected)).await,
            Backend::Object(s) => Box::pin(s.delete(path, expected)).await,
        })
    }

    /// Removes the temporary copies of the lock file at `path` that carry `lock_id`, left by a
    /// daemon killed mid-write (`file://`; the other stores write in one request and leave
    /// none). Best effort: returns how many went, and a failure is logged.
    pub async fn remove_temporaries(&self, path: &str, lock_id: &str) -> usize {
        match &self.backend {
            #[cfg(unix)]
            Backend::Fs(s) => match s.remove_temporaries(path, lock_id).await {
                Ok(removed) => removed,
                Err(e) => {
                    tracing::warn!(%path, error = %e, "cannot look for temporary copies of a lock file");
                    0
                }
            },
            _ => {
                let _ = (path, lock_id);
                0
            }
        }
    }

    /// Runs one store request as a child span of the request being handled (`debug` level),
    /// which ends with its latency. Below `debug` (the default `info`) the request runs as it
    /// is: it is made here rather than handed in, so that path neither builds a span nor moves
    /// the request's future.
    async fn traced<T, F>(
        &self,
        operation: Operation,
        path: &str,
        call: impl FnOnce() -> F,
    ) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, StoreError>>,
    {
        use tracing::Instrument;
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return call().await;
        }
        let call = call();
        let span = tracing::debug_span!("store", store = self.label(), op = operation.name(), path);
        if span.is_disabled() {
            return call.await;
        }
        let started = std::time::Instant::now();
        let result = call.instrument(span.clone()).await;
        let took_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        span.in_scope(|| tracing::debug!(took_us, ok = result.is_ok(), "store call"));
        result
    }

    /// Times one request (a fault the layer injects counts as the store's failure: to the
    /// daemon it is one).
    fn timer(&self, operation: Operation) -> RequestTimer<'_> {
        RequestTimer::start(self.instruments(), operation)
    }

    /// This store's metrics series; `None` when metrics are off.
    pub fn instruments(&self) -> Option<&StoreInstruments> {
        self.instruments.get().map(|i| &**i)
    }

    /// This store's metrics series, shared; `None` when metrics are off.
    pub fn instruments_handle(&self) -> Option<Arc<StoreInstruments>> {
        self.instruments.get().cloned()
    }

    /// Gives the store its metrics series (once; later calls change nothing).
    pub fn attach(&self, instruments: Arc<StoreInstruments>) {
        let _ = self.instruments.set(instruments);
    }

    /// The `store` label of its metrics: the kind of store, never a bucket or a path.
    pub fn label(&self) -> &'static str {
        match &self.backend {
            #[cfg(unix)]
            Backend::Fs(_) => "file",
            Backend::Memory(_) => "mem",
            Backend::Object(_) => match self.prefix.split("://").next().unwrap_or("") {
                "s3" => "s3",
                "gs" | "gcs" => "gcs",
                "azblob" | "az" => "azblob",
                "sftp" => "sftp",
                _ => "object",
            },
        }
    }

    /// The fault layer's turn before operation `op` on `path` (tests only; nothing without the
    /// `faults` feature or its config).
    async fn inject(&self, op: &str, path: &str) -> Result<(), StoreError> {
        #[cfg(feature = "faults")]
        if let Some(faults) = &self.faults {
            return faults.before(op, path).await;
        }
        let _ = (op, path);
        Ok(())
    }

    /// The fault layer's counters, if it is on.
    fn fault_counters(&self) -> Vec<(String, u64)> {
        #[cfg(feature = "faults")]
        if let Some(faults) = &self.faults {
            return faults.counters();
        }
        Vec::new()
    }

    /// Tells daemons on other hosts that `waiter` (a daemon instance id) waits for the lock at
    /// `path`, and whether an exclusive request does ([`waiting`] has the rules per store).
    /// Best effort: a failure only costs fairness.
    pub async fn mark_waiting(
        &self,
        path: &str,
        waiter: &str,
        exclusive: bool,
        now: SystemTime,
        fresh_for: (std::time::Duration, std::time::Duration),
    ) {
        if !exclusive && !self.has_plain_marks() {
            return;
        }
        if !exclusive {
            // A plain mark never replaces another daemon's fresh exclusive one: that says
            // "someone waits" too, and more. (Read, then write: a mark lost in between is
            // written again at the writer's next re-check.)
            let (within, skew) = fresh_for;
            if self
                .exclusive_waiting_elsewhere(path, waiter, now, within, skew)
                .await
            {
                return;
            }
        }
        let mark = waiting::Mark::encode(waiter, exclusive, now);
        let outcome = match &self.backend {
            #[cfg(unix)]
            Backend::Fs(s) => Box::pin(s.mark_waiting(path, mark)).await,
            Backend::Object(s) if exclusive && s.can_replace() => {
                Box::pin(s.write_mark(path, &mark)).await
            }
            _ => Ok(()),
        };
        if let Err(e) = outcome {
            tracing::debug!(error = %e, "could not mark a waiter");
        }
    }

    /// Whether another daemon than `me` marked that an exclusive request of its own waits for
    /// the lock at `path`, within `within` of `now` (its clock allowed `skew` from ours).
    /// Unreadable counts as no: the mark is a courtesy to writers, and a store that cannot be
    /// read fails the join that asked anyway.
    pub async fn exclusive_waiting_elsewhere(
        &self,
        path: &str,
        me: &str,
        now: SystemTime,
        within: std::time::Duration,
        skew: std::time::Duration,
    ) -> bool {
        let bytes = match &self.backend {
            #[cfg(unix)]
            Backend::Fs(s) => Box::pin(s.read_mark(path)).await,
            Backend::Object(s) if s.can_replace() => Box::pin(s.read_mark(path)).await,
            _ => Ok(None),
        };
        match bytes {
            Ok(Some(bytes)) => {
                waiting::Mark::decode(&bytes).exclusive_elsewhere(me, now, within, skew)
            }
            Ok(None) => false,
            Err(e) => {
                tracing::debug!(error = %e, "could not read the waiting mark");
                false
            }
        }
    }

    /// Whether a daemon other than `me` marked itself waiting for the lock at `path` within the
    /// last `within`. Stores without marks answer yes where other hosts may wait (object
    /// stores, so that their waiters, which poll, get their turn) and no where none can
    /// (`mem://`).
    pub async fn others_waiting(&self, path: &str, within: std::time::Duration, me: &str) -> bool {
        #[cfg(not(unix))]
        let _ = (path, within, me);
        match &self.backend {
            #[cfg(unix)]
            Backend::Fs(s) => Box::pin(s.others_waiting(path, within, me)).await,
            Backend::Memory(_) => false,
            Backend::Object(_) => true,
        }
    }

    /// Whether plain waiting marks (any waiter, for the handoff cap) are kept here: on
    /// `file://` only; object stores mark exclusive waiters alone ([`waiting`]).
    fn has_plain_marks(&self) -> bool {
        #[cfg(unix)]
        if let Backend::Fs(_) = self.backend {
            return true;
        }
        false
    }

    /// Whether the store is an object store (or SFTP server).
    pub fn is_object(&self) -> bool {
        matches!(self.backend, Backend::Object(_))
    }

    /// A `mem://` store's table, copied for the next image of a planned restart, after which
    /// the store fails every operation (`None` for other stores).
    pub fn seal_memory(&self) -> Option<memory::Handover> {
        match &self.backend {
            Backend::Memory(s) => Some(s.seal_and_copy()),
            _ => None,
        }
    }

    /// Undoes [`Store::seal_memory`]: the planned restart could not go ahead.
    pub fn unseal_memory(&self) {
        if let Backend::Memory(s) = &self.backend {
            s.unseal();
        }
    }

    /// Loads what the previous image of a planned restart handed over into a `mem://` store;
    /// how many lock files.
    pub fn load_memory(&self, handed: memory::Handover) -> usize {
        match &self.backend {
            Backend::Memory(s) => s.load(handed),
            _ => 0,
        }
    }

    /// Whether only this daemon can see the store's lock files (`mem://`): nobody outside it can
    /// wait for them, and they end with the daemon, so a crash leaves nothing to clean up.
    pub fn is_private(&self) -> bool {
        matches!(self.backend, Backend::Memory(_))
    }

    fn count_write(&self) {
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn writes(&self) -> (String, u64) {
        let writes = self.writes.load(std::sync::atomic::Ordering::Relaxed);
        ("writes".to_owned(), writes)
    }

    /// Counts one confirmed renewal.
    pub fn count_renewal(&self) {
        self.renewals
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(instruments) = self.instruments() {
            instruments.renewed();
        }
    }

    /// Counts one failed renewal (retried until the lease's deadline).
    pub fn count_renewal_failure(&self) {
        if let Some(instruments) = self.instruments() {
            instruments.renewal_failed();
        }
    }

    fn renewals(&self) -> (String, u64) {
        let renewed = self.renewals.load(std::sync::atomic::Ordering::Relaxed);
        ("renewals".to_owned(), renewed)
    }

    /// How this store judges a lock stale.
    pub fn stale_rule(&self) -> StaleRule {
        self.stale_rule
    }

    /// Whether a lock file can be replaced by another holder (steal, handoff). False on a
    /// create-only store.
    pub fn can_replace(&self) -> bool {
        match &self.backend {
            Backend::Object(s) => s.can_replace(),
            _ => true,
        }
    }

    /// The URL prefix this store serves.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// What `vfslockctl status` shows about this store.
    pub fn describe(&self) -> vfslock_proto::StoreInfo {
        let rule = match self.stale_rule {
            StaleRule::Seed => "stale rule: createdAt + ttl (+ skew allowance)",
            StaleRule::Watched => "stale rule: watched unchanged for a whole ttl",
        };
        let (scheme, what) = match &self.backend {
            Backend::Object(s) => {
                let mode = match s.mode() {
                    object::Mode::Full => "conditional create, overwrite and delete verified at \
                                           startup; steals, handoff and fencing tokens"
                        .to_owned(),
                    object::Mode::CreateOnly => "create-only mode (no compare-and-swap): no \
                                                 steals, handoff or fencing tokens"
                        .to_owned(),
                    object::Mode::Weak(missing) => format!(
                        "WEAK mode accepted by the config: {missing}; mutual exclusion is NOT \
                         guaranteed"
                    ),
                };
                let fencing = if s.fencing() {
                    ""
                } else {
                    "; fencing tokens off"
                };
                let mut counters = s.counter_snapshot();
                counters.extend(self.fault_counters());
                counters.push(self.renewals());
                counters.push(self.writes());
                return vfslock_proto::StoreInfo {
                    scheme: self.prefix.clone(),
                    description: format!("{mode}{fencing}; {rule}"),
                    counters,
                };
            }
            #[cfg(unix)]
            Backend::Fs(_) => (
                "file",
                "local filesystem: a whole file moved in unless one is there (no empty lock \
                 file after a crash); replace and delete under an OFD lock on <lock>.fence; \
                 fencing tokens strictly increase across daemons, hosts and \
                 restarts (counter in the fence file, floor: the time in microseconds)",
            ),
            Backend::Memory(_) => (
                "mem",
                "this daemon's memory: if-not-exists create; fencing tokens strictly \
                 increase, also across restarts (floor: the time in microseconds)",
            ),
        };
        vfslock_proto::StoreInfo {
            scheme: scheme.into(),
            description: format!("{what}; {rule}"),
            counters: {
                let mut counters = vec![self.renewals(), self.writes()];
                counters.extend(self.fault_counters());
                counters
            },
        }
    }
}

/// The stores this daemon serves: `file://`, `mem://`, and object stores by URL prefix.
#[derive(Debug, Default)]
pub struct Stores {
    fs: Option<Arc<Store>>,
    memory: Option<Arc<Store>>,
    objects: Vec<(Prefix, Arc<Store>)>,
}

impl Stores {
    /// The stores enabled by the settings. Each object store is probed first: a store that
    /// does not enforce what the lock protocol needs is refused, unless the config accepts the
    /// weaker mode.
    pub async fn new(settings: &crate::config::Settings) -> Result<Stores, StoreError> {
        #[cfg(feature = "faults")]
        let faults = settings.faults.operations.as_ref().map(|f| {
            Arc::new(faults::StoreFaults::new(
                f.error_rate,
                f.delay_rate,
                f.delay,
                f.switch_file.clone(),
            ))
        });
        let store = |backend: Backend, stale_rule: StaleRule, prefix: String| {
            Arc::new(Store {
                backend,
                stale_rule,
                prefix,
                renewals: Default::default(),
                writes: Default::default(),
                instruments: Default::default(),
                #[cfg(feature = "faults")]
                faults: faults.clone(),
            })
        };
        #[cfg(unix)]
        let fs = settings
            .stores
            .file
            .served
            .map(|stale_rule| store(Backend::Fs(fs::FsStore), stale_rule, "file://".into()));
        #[cfg(not(unix))]
        let fs = {
            if settings.stores.file.served.is_some() {
                tracing::warn!(
                    "[stores.file] is enabled, but the file:// store exists only on Unix: \
                     file:// targets are refused; set [stores.file] enabled = false to silence this"
                );
            }
            None
        };
        let mut stores = Stores {
            fs,
            memory: match settings.stores.mem.served {
                Some(stale_rule) => Some(store(
                    Backend::Memory(memory::MemoryStore::new()?),
                    stale_rule,
                    "mem://".into(),
                )),
                None => None,
            },
            objects: Vec::new(),
        };
        for config in &settings.stores.object {
            let backend = Backend::Object(Box::new(object::open(config, settings).await?));
            stores.objects.push((
                config.parsed.clone(),
                store(backend, config.stale_rule, config.prefix.clone()),
            ));
        }
        // The longest prefix wins when several cover a target.
        stores
            .objects
            .sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.2.len()));
        Ok(stores)
    }

    /// The store serving `address`, if one is configured.
    pub fn for_address(&self, address: &Address) -> Option<Arc<Store>> {
        match address.scheme() {
            Scheme::File => self.fs.clone(),
            Scheme::Mem => self.memory.clone(),
            _ => self
                .objects
                .iter()
                .find(|(prefix, _)| address.has_prefix(prefix))
                .map(|(_, store)| store.clone()),
        }
    }

    /// The `mem://` store, if served.
    pub fn memory(&self) -> Option<&Arc<Store>> {
        self.memory.as_ref()
    }

    /// The configured prefixes, for the error that refuses an unserved target.
    pub fn prefixes(&self) -> Vec<String> {
        self.all().map(|s| s.prefix.clone()).collect()
    }

    /// Every configured store.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Store>> {
        self.fs
            .iter()
            .chain(self.memory.iter())
            .chain(self.objects.iter().map(|(_, store)| store))
    }
}

/// Times one store request from its start; dropped before [`RequestTimer::finish`] (the
/// caller's deadline passed and the request was abandoned), it counts as a timeout.
#[derive(Debug)]
pub struct RequestTimer<'a> {
    /// Nothing is read or recorded without instruments (metrics off).
    started: Option<(&'a StoreInstruments, std::time::Instant)>,
    operation: Operation,
}

impl<'a> RequestTimer<'a> {
    /// Starts timing `operation`.
    pub fn start(instruments: Option<&'a StoreInstruments>, operation: Operation) -> Self {
        RequestTimer {
            started: instruments.map(|i| (i, std::time::Instant::now())),
            operation,
        }
    }

    /// Records the request's latency and, if it failed, its failure; returns `result`.
    pub fn finish<T>(mut self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Some((instruments, started)) = self.started.take() {
            let failure = result.as_ref().err().map(failure_kind);
            instruments.request(self.operation, started.elapsed(), failure);
        }
        result
    }
}

impl Drop for RequestTimer<'_> {
    fn drop(&mut self) {
        if let Some((instruments, started)) = self.started {
            instruments.request(
                self.operation,
                started.elapsed(),
                Some(FailureKind::Timeout),
            );
        }
    }
}

/// The metrics' kind of a store failure.
fn failure_kind(error: &StoreError) -> FailureKind {
    if error.unreadable.is_some() {
        FailureKind::Unreadable
    } else if error.unsupported {
        FailureKind::Unsupported
    } else if error.contended {
        FailureKind::Contended
    } else {
        FailureKind::Failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_exceed_the_counter_the_replaced_token_and_the_floor() {
        assert_eq!(next_token(5, None, 0), 6);
        assert_eq!(next_token(5, Some(9), 0), 10);
        assert_eq!(next_token(5, Some(9), 100), 100);
        assert_eq!(next_token(u64::MAX, None, 0), u64::MAX);
    }

    #[test]
    fn lock_paths_keep_mem_volumes_apart_and_sit_where_go_peers_look() {
        let at = |target: &str| lock_path(&Address::parse(target).unwrap());
        assert_eq!(at("/srv/data.csv"), "/srv/data.csv.lock");
        assert_eq!(at("file:///srv/data.csv"), "/srv/data.csv.lock");
        assert_eq!(at("mem:///vol/x"), "root/vol/x.lock");
        assert_eq!(at("mem://vol/x"), "vol/vol/x.lock");
        assert_ne!(at("mem:///vol/x"), at("mem://vol/x"));
        // Object keys as a Go peer names its lock: the key plus `.lock`, `//` kept.
        assert_eq!(at("s3://bucket/inbox//data.csv"), "inbox//data.csv.lock");
        assert_eq!(at("gs://bucket/x"), "x.lock");
        assert_eq!(at("azblob://container/x"), "x.lock");
        // SFTP paths are relative to the operator's root.
        assert_eq!(at("sftp://host/srv/x"), "srv/x.lock");
    }
}

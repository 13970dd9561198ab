//! What every part of a running daemon shares: settings, stores, identity, counters, the live
//! connections, the crash journal, the restart figures and the audit log. It sits below the
//! lock actors and the server, which both hold it; the registry of lock actors is the lock
//! layer's own ([`crate::lock::Registry`]).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::config::Settings;
use crate::store::Stores;

/// Live counts shown by `vfslockctl status`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Locks held through this daemon.
    pub held: AtomicI64,
    /// Acquires waiting in queues.
    pub waiting: AtomicI64,
    /// Open client connections.
    pub sessions: AtomicI64,
    /// Live target actors.
    pub targets: AtomicI64,
    /// Client connections ever accepted (session ids).
    pub connections: AtomicU64,
}

impl Stats {
    /// Adds `delta` to a counter.
    pub fn add(counter: &AtomicI64, delta: i64) {
        counter.fetch_add(delta, Ordering::Relaxed);
    }

    /// Reads a counter, never below zero.
    pub fn get(counter: &AtomicI64) -> u64 {
        counter.load(Ordering::Relaxed).max(0) as u64
    }
}

/// The daemon's shared state.
#[derive(Debug)]
pub struct Context {
    /// Validated settings.
    pub settings: Settings,
    /// Configured stores.
    pub stores: Stores,
    /// Host identity written into lock files.
    pub host_id: String,
    /// Unique id of this daemon run, written into lock files as `daemonId`.
    pub instance_id: String,
    /// When the daemon started.
    pub started: Instant,
    /// Counters.
    pub stats: Stats,
    /// The live connections, for the cleanup after a failed lock actor.
    pub sessions: crate::link::Sessions,
    /// Connections and open acquires of each non-admin uid, for the per-uid limits.
    pub uids: Arc<crate::link::UidUsage>,
    /// Set once shutdown has begun: new acquires are refused.
    shutting_down: AtomicBool,
    /// What the watched stale rule has seen, kept here so it outlives idle target actors.
    pub watched: Watched,
    /// The admin group's id, resolved at startup.
    pub admin_gid: Option<u32>,
    /// Who may lock what (`[[access]]` rules, `file://` roots), resolved at startup.
    pub access: crate::access::Access,
    /// The crash journal; `None` only where a daemon runs without one (tests of parts).
    pub journal: Option<crate::journal::Journal>,
    /// The next waiter's place (`crate::lock::requeue`): above every place a previous run
    /// left in the journal, so that newcomers queue behind the waiters that ask again.
    next_wait_ordinal: AtomicU64,
    /// Turns for the store work of a restart ([`RestartWork`]).
    pub restart_work: RestartWork,
    /// How often the daemon restarted and what this start kept of the run before; no restart
    /// where a daemon runs without a journal.
    pub restarts: crate::restarts::RestartFigures,
    /// The metrics registry; `None` when `[metrics] enabled = false`.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// The audit log; `None` without `[audit] path` (and in tests of parts). Opened by the
    /// daemon's start, not here: opening it is a side effect a context of a test must not
    /// have.
    pub audit: Option<crate::audit::AuditLog>,
}

/// For the watched stale rule: each lock file's content as last seen, and since when it has
/// been seen unchanged, on the monotonic clock.
#[derive(Debug, Default)]
pub struct Watched {
    seen: std::sync::Mutex<std::collections::HashMap<String, (u64, Instant)>>,
}

/// More entries than this and the table starts afresh: forgetting only delays a steal.
const WATCHED_CAPACITY: usize = 100_000;

impl Watched {
    /// Records a sighting of `bytes` at `key`; returns how long that exact content has been
    /// seen there without a change.
    pub fn unchanged_for(&self, key: &str, bytes: &[u8]) -> std::time::Duration {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        bytes.hash(&mut hasher);
        let digest = hasher.finish();
        let now = Instant::now();
        let mut seen = self.seen.lock().expect("watched lock");
        if seen.len() >= WATCHED_CAPACITY && !seen.contains_key(key) {
            seen.clear();
        }
        let entry = seen.entry(key.to_owned()).or_insert((digest, now));
        if entry.0 != digest {
            *entry = (digest, now);
        }
        now - entry.1
    }

    /// Forgets `key` (the file is gone or ours).
    pub fn forget(&self, key: &str) {
        self.seen.lock().expect("watched lock").remove(key);
    }
}

/// The store work of a restart (keeping the previous run's holdings, handing them back) takes
/// turns, a few at a time. A restart with thousands of holdings would otherwise make every one
/// of their actors runnable at once, and each request of everyone else (a new lock, a ping)
/// would wait behind all of them in the runtime's queues: with turns, it waits behind a few.
/// The work itself takes as long either way; the targets are fenced before they wait.
#[derive(Debug)]
pub struct RestartWork(tokio::sync::Semaphore);

/// How many targets do restart work at once: enough to keep a store's round trips overlapping.
const RESTART_TURNS: usize = 4;

impl Default for RestartWork {
    fn default() -> Self {
        RestartWork(tokio::sync::Semaphore::new(RESTART_TURNS))
    }
}

impl RestartWork {
    /// Waits for a turn; the turn ends when the guard is dropped.
    pub async fn turn(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        // Never closed: an error cannot happen, and would only mean no waiting.
        self.0.acquire().await.ok()
    }
}

impl Context {
    /// A context for a daemon with these settings.
    pub fn new(settings: Settings, stores: Stores, host_id: String) -> Self {
        // A group that does not exist is warned about at startup (`startup::warnings`).
        let admin_gid = settings
            .daemon
            .admin_group
            .as_deref()
            .and_then(crate::access::group_id);
        let metrics = settings
            .metrics
            .enabled
            .then(|| Arc::new(crate::metrics::Metrics::new()));
        if let Some(metrics) = &metrics {
            for store in stores.all() {
                store.attach(metrics.store(store.label()));
            }
        }
        Context {
            metrics,
            audit: None,
            admin_gid,
            access: crate::access::Access::default(),
            journal: None,
            restarts: crate::restarts::RestartFigures::default(),
            settings,
            stores,
            host_id,
            instance_id: random_id(),
            started: Instant::now(),
            stats: Stats::default(),
            sessions: crate::link::Sessions::default(),
            uids: Arc::default(),
            shutting_down: AtomicBool::new(false),
            watched: Watched::default(),
            next_wait_ordinal: AtomicU64::new(1),
            restart_work: RestartWork::default(),
        }
    }

    /// A place for a new waiter, later than every place handed out before.
    pub fn next_wait_ordinal(&self) -> u64 {
        self.next_wait_ordinal.fetch_add(1, Ordering::Relaxed)
    }

    /// Makes every later place come after `ordinal`.
    pub fn wait_ordinals_after(&self, ordinal: u64) {
        self.next_wait_ordinal
            .fetch_max(ordinal.saturating_add(1), Ordering::Relaxed);
    }

    /// Records that a waiter of `holder`'s session queues for `target` at `ordinal`, when the
    /// session may resume (else nobody could ask for the place again).
    pub fn journal_wait(&self, ordinal: u64, target: &str, holder: &crate::link::SessionLink) {
        let (Some(journal), Some((secret, _))) = (&self.journal, &holder.resume) else {
            return;
        };
        let owner = crate::journal::Owner {
            session: secret.session.clone(),
            secret_sha256: secret.hash.clone(),
            uid: holder.caller.uid,
        };
        journal.wait(ordinal, target, owner);
    }

    /// Records that the waiter at `ordinal` left the queue.
    pub fn journal_waited(&self, ordinal: u64) {
        if let Some(journal) = &self.journal {
            journal.waited(ordinal);
        }
    }

    /// Records, before the store write, that a lock file with `lock_id` may be written.
    pub fn journal_acquire(&self, lock_id: &str, target: &str, holder: &crate::link::SessionLink) {
        if let Some(journal) = &self.journal {
            let owner = holder
                .resume
                .as_ref()
                .map(|(secret, _)| crate::journal::Owner {
                    session: secret.session.clone(),
                    secret_sha256: secret.hash.clone(),
                    uid: holder.caller.uid,
                });
            journal.acquire(lock_id, target, owner);
        }
    }

    /// A planned restart is about to replace the process: copies the `mem://` store's contents
    /// (sealing it, so that nothing changes after the copy) to a file beside the journal (mode
    /// 0600), and writes the `mem://` holdings, kept in the journal's table only, to its file.
    /// Returns the file for the next image (`None` without a `mem://` store or a journal). On
    /// an error the store serves on.
    pub fn hand_over_memory(&self) -> std::io::Result<Option<std::path::PathBuf>> {
        let (Some(journal), Some(store)) = (&self.journal, self.stores.memory()) else {
            return Ok(None);
        };
        let Some(handed) = store.seal_memory() else {
            return Ok(None);
        };
        let files = handed
            .slots
            .iter()
            .filter(|s| s.file.is_some() || s.file_hex.is_some())
            .count();
        let path = journal.memory_path();
        let bytes = serde_json::to_vec(&handed).map_err(std::io::Error::other);
        if let Err(e) = bytes.and_then(|bytes| crate::journal::write_private(&path, &bytes)) {
            store.unseal_memory();
            return Err(e);
        }
        let holdings = journal.hand_over_private();
        tracing::info!(files, holdings, path = %path.display(), "handed the mem:// store to the next image");
        Ok(Some(path))
    }

    /// Records that `member` (its own lock id) holds a share of the joint entry `entry`, for
    /// `holder`'s session to resume after a restart (nothing when the session cannot resume).
    pub fn journal_member(&self, entry: &str, member: &str, holder: &crate::link::SessionLink) {
        if let (Some(journal), Some((secret, _))) = (&self.journal, holder.resume.as_ref()) {
            let owner = crate::journal::Owner {
                session: secret.session.clone(),
                secret_sha256: secret.hash.clone(),
                uid: holder.caller.uid,
            };
            journal.member(entry, member, owner);
        }
    }

    /// Records that `member` no longer holds a share of the joint entry `entry`.
    pub fn journal_member_left(&self, entry: &str, member: &str) {
        if let Some(journal) = &self.journal {
            journal.member_left(entry, member);
        }
    }

    /// Records that the holding `lock_id` ends at its max-hold at `until`.
    pub fn journal_cap(&self, lock_id: &str, until: SystemTime) {
        if let Some(journal) = &self.journal {
            journal.cap(lock_id, until);
        }
    }

    /// Records that the holder of `lock_id` is being told its lease is lost: no restart keeps
    /// the holding for it.
    pub fn journal_lost(&self, lock_id: &str) {
        if let Some(journal) = &self.journal {
            journal.lost(lock_id);
        }
    }

    /// Records that the holding `lock_id` is over.
    pub fn journal_release(&self, lock_id: &str) {
        if let Some(journal) = &self.journal {
            journal.release(lock_id);
        }
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Where a connection of `caller` counts its acquires by uid: `None` for root and the
    /// admin group (exempt) and for a caller without a uid (`crate::link::uids`).
    pub fn lock_share(&self, caller: &crate::link::Caller) -> Option<crate::link::LockShare> {
        let uid = caller.uid.filter(|_| !caller.admin)?;
        let limit = self.settings.limits.max_locks_per_uid;
        Some(crate::link::LockShare::new(&self.uids, uid, limit))
    }

    /// Marks the start of shutdown.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// The wall clock, moved by the configured offset (tests of clock skew only).
    pub fn now(&self) -> SystemTime {
        let now = SystemTime::now();
        let offset = self.settings.faults.clock_offset_ns;
        let shift = std::time::Duration::from_nanos(offset.unsigned_abs());
        if offset >= 0 {
            now + shift
        } else {
            now - shift
        }
    }

    /// The least fencing token to issue now: the wall clock in microseconds, so that tokens
    /// keep increasing even where a counter was lost (`mem://` after a restart).
    pub fn token_floor(&self) -> u64 {
        u64::try_from(crate::lockfile::unix_ns(self.now()) / 1000).unwrap_or(0)
    }
}

/// 128 random bits in hex: lock ids and instance ids.
pub fn random_id() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = os_random_16();
    // By hand: one `format!` per byte was a tenth of a `mem://` cycle's instructions.
    let mut id = String::with_capacity(32);
    for b in bytes {
        id.push(char::from(HEX[usize::from(b >> 4)]));
        id.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    id
}

/// 16 bytes from the OS's random source, fetched 32 ids at a time: a `getrandom` system call
/// per grant was a visible part of a `mem://` cycle. The bytes are the kernel's CSPRNG output
/// either way, only read ahead; each is handed out once.
fn os_random_16() -> [u8; 16] {
    use std::cell::RefCell;
    const POOL: usize = 512;
    thread_local! {
        static AHEAD: RefCell<([u8; POOL], usize)> = const { RefCell::new(([0; POOL], POOL)) };
    }
    AHEAD.with(|ahead| {
        let (pool, used) = &mut *ahead.borrow_mut();
        if *used + 16 > POOL {
            getrandom::fill(pool).expect("the OS random source works");
            *used = 0;
        }
        let mut out = [0u8; 16];
        out.copy_from_slice(&pool[*used..*used + 16]);
        // Handed out once: the copy left behind is not kept.
        pool[*used..*used + 16].fill(0);
        *used += 16;
        out
    })
}

/// The machine's hostname.
#[cfg(unix)]
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or
    // truncates, and we read only up to the first NUL.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".to_owned();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The machine's name: `%COMPUTERNAME%`, which Windows sets for every process.
#[cfg(not(unix))]
pub fn hostname() -> String {
    std::env::var("COMPUTERNAME")
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// This host's `CLOCK_MONOTONIC` reading for `instant`, in nanoseconds: sent with lease
/// deadlines so that a client on the same host measures them on the same clock, however late it
/// reads the frame. `None` where there is no such shared clock.
pub fn monotonic_ns(instant: Instant) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let taken = Instant::now();
        // SAFETY: a valid pointer to a timespec; CLOCK_MONOTONIC always exists on Linux.
        if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } != 0 {
            return None;
        }
        let now_ns = now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64;
        // `Instant` reads CLOCK_MONOTONIC on Linux; only the offset to `instant` is converted.
        Some(match instant.checked_duration_since(taken) {
            Some(ahead) => now_ns.saturating_add(ahead.as_nanos() as u64),
            None => now_ns.saturating_sub(taken.duration_since(instant).as_nanos() as u64),
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = instant;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_are_32_hex_digits_and_never_repeat_across_refills_of_the_pool() {
        // 100 ids take the read-ahead pool through three refills.
        let ids: std::collections::HashSet<String> = (0..100).map(|_| random_id()).collect();
        assert_eq!(ids.len(), 100, "an id repeated");
        for id in &ids {
            assert_eq!(id.len(), 32, "{id}");
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
            assert_ne!(
                id,
                &"0".repeat(32),
                "a zeroed slot of the pool was handed out"
            );
        }
    }
}

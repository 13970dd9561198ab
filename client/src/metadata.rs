//! A lock file's metadata as callers see it: real times and durations instead of wire integers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use vfslock_proto::LockFileFormat;

/// What a lock file says about its holder (the Go library's `Metadata`, plus vfslock's own
/// fields).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockMetadata {
    /// `createdAt`: when the lease was last written (renewals refresh it).
    pub created_at: Option<SystemTime>,
    /// `acquiredAt`: when the lock was first taken (vfslock files only).
    pub acquired_at: Option<SystemTime>,
    /// The store's last-modified time of the file.
    pub modified: Option<SystemTime>,
    /// The lease; `None` never expires (Go's `ttl: 0`).
    pub ttl: Option<Duration>,
    /// The raw `ttl` in nanoseconds (negative: already stale, as in Go).
    pub ttl_ns: i64,
    /// Host of the holder.
    pub hostname: String,
    /// Process id of the holder.
    pub pid: i64,
    /// Owner id, if set.
    pub owner_id: Option<String>,
    /// vfslock's unique id of this holding.
    pub lock_id: Option<String>,
    /// Instance id of the daemon that wrote the file.
    pub daemon_id: Option<String>,
    /// Fencing token of the holding (vfslock files only).
    pub token: Option<u64>,
    /// User id of the holder (vfslock files only).
    pub uid: Option<u32>,
    /// Whether it is a detached lease (vfslock files only).
    pub detached: bool,
    /// Who wrote the file.
    pub format: LockFileFormat,
    /// Whether the daemon judged the lock stale when it read it.
    pub stale: bool,
}

fn time_from_ns(ns: i128) -> Option<SystemTime> {
    if ns >= 0 {
        let ns = u64::try_from(ns).ok()?;
        UNIX_EPOCH.checked_add(Duration::from_nanos(ns))
    } else {
        let ns = u64::try_from(-ns).ok()?;
        UNIX_EPOCH.checked_sub(Duration::from_nanos(ns))
    }
}

impl LockMetadata {
    pub(crate) fn from_wire(wire: vfslock_proto::LockMetadata) -> Self {
        LockMetadata {
            created_at: wire.created_at_unix_ns.and_then(time_from_ns),
            acquired_at: wire.acquired_at_unix_ns.and_then(time_from_ns),
            modified: wire.modified_unix_ns.and_then(time_from_ns),
            ttl: u64::try_from(wire.ttl_ns)
                .ok()
                .filter(|&ns| ns > 0)
                .map(Duration::from_nanos),
            ttl_ns: wire.ttl_ns,
            hostname: wire.hostname,
            pid: wire.pid,
            owner_id: wire.owner_id,
            lock_id: wire.lock_id,
            daemon_id: wire.daemon_id,
            token: wire.token,
            uid: wire.uid,
            detached: wire.detached,
            format: wire.format,
            stale: wire.stale,
        }
    }

    /// Time since `createdAt` by this process's clock; zero if `createdAt` is in the future,
    /// `None` if the file has no time.
    pub fn age(&self) -> Option<Duration> {
        let created = self.created_at?;
        Some(
            SystemTime::now()
                .duration_since(created)
                .unwrap_or_default(),
        )
    }

    /// When the lease runs out (`createdAt + ttl`), if it ever does.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.created_at?.checked_add(self.ttl?)
    }
}

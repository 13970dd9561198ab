//! When a lock is stale: as the Go library decides for Go and vfslock files, by the store's
//! clock plus a grace period for a file that cannot be dated, and never for another tool's.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vfslock_proto::LockFileFormat;

use super::ParsedLock;

/// How a lock ages; [`is_stale`] and [`stale_at`] both derive from it so they cannot disagree.
enum Staleness {
    Never,
    Already,
    After(SystemTime),
}

fn staleness(lock: &ParsedLock, modified: Option<SystemTime>, grace: Duration) -> Staleness {
    // Content we cannot date is judged by the store's clock: a writer that crashed mid-write
    // gets the grace period to finish or clean up before its file is taken over.
    let by_modified = || match modified.and_then(|m| m.checked_add(grace)) {
        Some(t) => Staleness::After(t),
        None => Staleness::Never,
    };
    match lock.format {
        LockFileFormat::Corrupt => by_modified(),
        // Another tool's lock has no lease we understand; only its owner may remove it.
        LockFileFormat::Foreign => Staleness::Never,
        LockFileFormat::Go | LockFileFormat::Vfslock(_) => match lock.ttl_ns {
            0 => Staleness::Never,
            ttl if ttl < 0 => Staleness::Already,
            ttl => match lock.created_at() {
                Some(created) => {
                    match created.checked_add(Duration::from_nanos(ttl.unsigned_abs())) {
                        Some(t) => Staleness::After(t),
                        None => Staleness::Never,
                    }
                }
                None => by_modified(),
            },
        },
    }
}

/// Whether the lock is stale at `now`: for Go and vfslock files, as the Go library decides
/// (`ttl != 0 && now > createdAt + ttl`); a corrupt file (or one with a TTL but no readable
/// `createdAt`) once `now` is past `modified + corrupt_grace`; a foreign file never.
pub fn is_stale(
    lock: &ParsedLock,
    modified: Option<SystemTime>,
    now: SystemTime,
    corrupt_grace: Duration,
) -> bool {
    match staleness(lock, modified, corrupt_grace) {
        Staleness::Never => false,
        Staleness::Already => true,
        Staleness::After(t) => now > t,
    }
}

/// The instant after which the lock is stale (see [`is_stale`]); `None` when it never becomes
/// stale by time or cannot be told. A lock that is stale already (negative TTL) gives
/// `UNIX_EPOCH`.
pub fn stale_at(
    lock: &ParsedLock,
    modified: Option<SystemTime>,
    corrupt_grace: Duration,
) -> Option<SystemTime> {
    match staleness(lock, modified, corrupt_grace) {
        Staleness::Never => None,
        Staleness::Already => Some(UNIX_EPOCH),
        Staleness::After(t) => Some(t),
    }
}

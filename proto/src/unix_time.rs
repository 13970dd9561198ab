//! Times as the wire carries them, signed nanoseconds since the Unix epoch, and as programs use
//! them, [`SystemTime`]: the one conversion both ends (and the daemon's lock files) share.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::LockMetadata;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Signed nanoseconds since the Unix epoch; negative before 1970.
pub fn unix_ns(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_nanos() as i128,
        Err(before) => -(before.duration().as_nanos() as i128),
    }
}

/// The inverse of [`unix_ns`]; `None` outside what `SystemTime` can hold.
pub fn from_unix_ns(ns: i128) -> Option<SystemTime> {
    let magnitude = ns.unsigned_abs();
    let secs = u64::try_from(magnitude / NANOS_PER_SEC).ok()?;
    let offset = Duration::new(secs, (magnitude % NANOS_PER_SEC) as u32);
    if ns >= 0 {
        UNIX_EPOCH.checked_add(offset)
    } else {
        UNIX_EPOCH.checked_sub(offset)
    }
}

/// The lock file's times and lease as `SystemTime` and `Duration`.
impl LockMetadata {
    /// `createdAt`: when the lease was last written (renewals refresh it); `None` when the file
    /// has no time this platform can hold.
    pub fn created_at(&self) -> Option<SystemTime> {
        self.created_at_unix_ns.and_then(from_unix_ns)
    }

    /// `acquiredAt`: when the lock was first taken (vfslock files only).
    pub fn acquired_at(&self) -> Option<SystemTime> {
        self.acquired_at_unix_ns.and_then(from_unix_ns)
    }

    /// The store's last-modified time of the file, if known.
    pub fn modified(&self) -> Option<SystemTime> {
        self.modified_unix_ns.and_then(from_unix_ns)
    }

    /// The lease; `None` never expires (Go's `ttl: 0`), and a negative `ttl_ns` (stale
    /// already, as in Go) has none either.
    pub fn ttl(&self) -> Option<Duration> {
        u64::try_from(self.ttl_ns)
            .ok()
            .filter(|&ns| ns > 0)
            .map(Duration::from_nanos)
    }

    /// Time since `createdAt` by this process's clock; zero if `createdAt` is in the future,
    /// `None` if the file has no time.
    pub fn age(&self) -> Option<Duration> {
        let created = self.created_at()?;
        Some(
            SystemTime::now()
                .duration_since(created)
                .unwrap_or_default(),
        )
    }

    /// When the lease runs out (`createdAt + ttl`), if it ever does.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.created_at()?.checked_add(self.ttl()?)
    }

    /// The one holder of this lock file read as a whole (an exclusive one, a Go peer's, any
    /// other tool's), as [`LockView`](crate::LockView) lists holders; `local` when this
    /// daemon serves it.
    pub fn whole_file_holder(&self, local: bool) -> crate::HolderView {
        crate::HolderView {
            lock_id: self.lock_id.clone(),
            hostname: self.hostname.clone(),
            pid: self.pid,
            owner_id: self.owner_id.clone(),
            uid: self.uid,
            token: self.token,
            expires_unix_ns: self.expires_at().map(unix_ns),
            count: 1,
            detached: self.detached,
            local,
            expired: self.stale,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_ns_round_trips_before_and_after_epoch() {
        for ns in [
            0,
            1,
            -1,
            1_754_299_812_345_678_901,
            -62_135_596_800_000_000_000,
        ] {
            assert_eq!(unix_ns(from_unix_ns(ns).unwrap()), ns);
        }
    }

    #[test]
    fn the_times_of_a_lock_file_read_as_system_times() {
        let meta = LockMetadata {
            created_at_unix_ns: Some(1_754_299_812_345_678_901),
            acquired_at_unix_ns: Some(-1_000_000_000),
            modified_unix_ns: None,
            ttl_ns: 30_000_000_000,
            hostname: "ingest-7".into(),
            pid: 4242,
            owner_id: None,
            lock_id: None,
            daemon_id: None,
            token: None,
            uid: None,
            detached: false,
            format: crate::LockFileFormat::Go,
            stale: false,
        };
        let created = UNIX_EPOCH + Duration::new(1_754_299_812, 345_678_901);
        assert_eq!(meta.created_at(), Some(created));
        assert_eq!(
            meta.acquired_at(),
            UNIX_EPOCH.checked_sub(Duration::from_secs(1))
        );
        assert_eq!(meta.modified(), None);
        assert_eq!(meta.ttl(), Some(Duration::from_secs(30)));
        assert_eq!(meta.expires_at(), Some(created + Duration::from_secs(30)));
        assert!(meta.age().is_some_and(|age| age > Duration::ZERO));
        for (ttl_ns, ttl) in [(0, None), (-5, None), (1, Some(Duration::from_nanos(1)))] {
            let meta = LockMetadata {
                ttl_ns,
                ..meta.clone()
            };
            assert_eq!(meta.ttl(), ttl, "ttl_ns {ttl_ns}");
            assert_eq!(
                meta.expires_at(),
                ttl.map(|ttl| created + ttl),
                "ttl_ns {ttl_ns}"
            );
        }
    }
}

//! Lock files held by several holders at once: shared (reader/writer) locks and semaphores.
//!
//! There is still one lock file per target, in the Go library's place, and it still exists
//! exactly while someone holds the lock. What changes is who "someone" is: the file lists its
//! holders, each with its own lease, and says how they share it (`"mode": "shared"`, or
//! `"mode": "slots"` with `"slots": N`).
//!
//! The top-level fields stay the Go library's and keep its meaning for the file as a whole, so
//! that a Go peer, or a daemon of a release without modes, judges the file exactly as it judges
//! any lock file and never half-understands it:
//! - `createdAt` is the time of the last write, and `ttl` reaches to the latest expiry among the
//!   listed holders (0 if any never expires): by the Go rule `createdAt + ttl` the file is live
//!   exactly while some holder is;
//! - `hostname`, `pid` and `ownerId` are the first holder's, for the messages peers print;
//! - `lockId` is fresh at every write, so a join followed by a leave never writes earlier bytes
//!   again (S3's ETag is the MD5 of the body; a conditional write must never mistake an old
//!   version for the current one); `token` is the largest of the holders' tokens, so a writer
//!   of an older release that replaces the whole file still issues a greater one.
//!
//! Each entry of `holders` is one daemon's holders of the lock, not one process: a daemon adds
//! one entry for all its local holders of a target and removes it when the last of them lets
//! go. Joining and leaving while the entry exists then cost no store write for shared locks (a
//! reader/writer lock is mostly read-locked, and a write to S3 costs milliseconds); for
//! semaphores the entry's `count` (the slots it takes) is rewritten at each join and leave,
//! because other hosts must see how many slots are taken. A detached lease gets an entry of its
//! own (`"detached": true`), since it belongs to its uid and lock id, not to the daemon's
//! connections.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::{format_go_time, parse_go_time, unix_ns};

/// Written as `vfslock` by files with a holder list (exclusive ones keep writing 1).
pub const JOINT_FORMAT_VERSION: u32 = 2;

/// How the holders of a joint lock file share it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JointMode {
    /// Any number of holders.
    Shared,
    /// At most this many slots taken at once.
    Slots(u32),
}

impl JointMode {
    /// The wire's name for this mode.
    pub fn lock_mode(self) -> vfslock_proto::LockMode {
        match self {
            JointMode::Shared => vfslock_proto::LockMode::Shared,
            JointMode::Slots(n) => vfslock_proto::LockMode::Slots(n),
        }
    }

    /// As the file and the messages name it: "shared", or "a semaphore of N slots".
    pub fn describe(self) -> String {
        match self {
            JointMode::Shared => "shared".to_owned(),
            JointMode::Slots(n) => format!("a semaphore of {n} slot{}", plural(n)),
        }
    }
}

fn plural(n: u32) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// One entry of a joint lock file: one daemon's holders of the lock (or one detached lease).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HolderEntry {
    /// Unique id of the entry, kept while it lives (renewals keep it).
    pub lock_id: String,
    /// The daemon that wrote the entry and renews it.
    pub daemon_id: String,
    /// Host of the holders.
    pub hostname: String,
    /// The first holder's process id.
    pub pid: i64,
    /// The first holder's owner identity.
    pub owner_id: Option<String>,
    /// The first holder's uid.
    pub uid: Option<u32>,
    /// Fencing token issued when the entry was added.
    pub token: Option<u64>,
    /// The entry's last renewal: its lease runs `ttl` from here.
    pub created_at: SystemTime,
    /// When the entry was added.
    pub acquired_at: SystemTime,
    /// The entry's lease; zero never expires.
    pub ttl: Duration,
    /// Slots the entry takes (semaphores); 1 for a shared entry.
    pub count: u32,
    /// A detached lease: the entry belongs to `uid` and `lock_id`.
    pub detached: bool,
}

impl HolderEntry {
    /// When the entry's lease runs out; `None` never.
    pub fn expires_at(&self) -> Option<SystemTime> {
        if self.ttl.is_zero() {
            return None;
        }
        self.created_at.checked_add(self.ttl)
    }

    /// Whether the entry's lease ran out before `now`.
    pub fn expired(&self, now: SystemTime) -> bool {
        self.expires_at().is_some_and(|at| now > at)
    }
}

/// The holder list of a joint lock file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Joint {
    /// How the holders share the lock.
    pub mode: JointMode,
    /// Who holds it, in the order they came.
    pub holders: Vec<HolderEntry>,
}

impl Joint {
    /// Slots taken by all entries (semaphores), or the number of entries (shared).
    pub fn taken(&self) -> u32 {
        self.holders
            .iter()
            .map(|h| h.count)
            .fold(0u32, u32::saturating_add)
    }

    /// The entry `lock_id`, if listed.
    pub fn entry(&self, lock_id: &str) -> Option<&HolderEntry> {
        self.holders.iter().find(|h| h.lock_id == lock_id)
    }

    /// The entry `lock_id`, to change it.
    pub fn entry_mut(&mut self, lock_id: &str) -> Option<&mut HolderEntry> {
        self.holders.iter_mut().find(|h| h.lock_id == lock_id)
    }

    /// Removes the entry `lock_id`; whether it was listed.
    pub fn remove(&mut self, lock_id: &str) -> bool {
        let before = self.holders.len();
        self.holders.retain(|h| h.lock_id != lock_id);
        self.holders.len() != before
    }

    /// Removes the entries whose lease ran out before `now`; returns them.
    pub fn remove_expired(&mut self, now: SystemTime) -> Vec<HolderEntry> {
        let (expired, live) = std::mem::take(&mut self.holders)
            .into_iter()
            .partition(|h| h.expired(now));
        self.holders = live;
        expired
    }

    /// The largest token among the entries.
    pub fn max_token(&self) -> Option<u64> {
        self.holders.iter().filter_map(|h| h.token).max()
    }

    /// The file's bytes, written at `now` by daemon `writer` under the fresh id `file_id`. The
    /// top-level fields follow the rules in the module doc. Never called with no holders: the
    /// last one out deletes the file.
    pub fn to_json(&self, file_id: &str, writer: &str, now: SystemTime) -> Vec<u8> {
        let first = self.holders.first();
        // The latest expiry, as a ttl from now; 0 (never) if some entry never expires. An entry
        // already past its expiry still counts until a writer removes it: the file must not look
        // stale while it lists a holder we have not judged.
        let ttl_ns = if self.holders.iter().any(|h| h.ttl.is_zero()) {
            0
        } else {
            let latest = self
                .holders
                .iter()
                .filter_map(HolderEntry::expires_at)
                .max()
                .unwrap_or(now);
            let left = latest.duration_since(now).unwrap_or(Duration::ZERO);
            // At least 1 ns: 0 would mean "never expires" to every reader.
            i64::try_from(left.as_nanos()).unwrap_or(i64::MAX).max(1)
        };
        let wire = JointFile {
            created_at: format_go_time(now),
            ttl: ttl_ns,
            hostname: first.map(|h| h.hostname.clone()).unwrap_or_default(),
            pid: first.map_or(0, |h| h.pid),
            owner_id: first.and_then(|h| h.owner_id.clone()),
            created_at_v10: format_go_time(now),
            owner_id_v10: first.and_then(|h| h.owner_id.clone()),
            vfslock: JOINT_FORMAT_VERSION,
            lock_id: file_id.to_owned(),
            daemon_id: writer.to_owned(),
            acquired_at: format_go_time(now),
            token: self.max_token(),
            mode: match self.mode {
                JointMode::Shared => "shared".to_owned(),
                JointMode::Slots(_) => "slots".to_owned(),
            },
            slots: match self.mode {
                JointMode::Shared => None,
                JointMode::Slots(n) => Some(n),
            },
            holders: self.holders.iter().map(EntryFile::from).collect(),
        };
        serde_json::to_vec_pretty(&wire).expect("strings and integers always serialize")
    }

    /// The holder list of a lock file, if it is a joint one this release understands: `None`
    /// for an exclusive lock file, a Go peer's, another tool's, a corrupt one, and a joint one
    /// whose list cannot be read (each of those is one exclusive holder, judged as a whole).
    pub fn parse(bytes: &[u8]) -> Option<Joint> {
        // Most lock files are exclusive: skip the second decode unless a mode may be there.
        if !contains(bytes, b"\"holders\"") {
            return None;
        }
        let file: JointFileIn = serde_json::from_slice(bytes).ok()?;
        let mode = match (file.mode.as_str(), file.slots) {
            ("shared", None) => JointMode::Shared,
            ("slots", Some(n)) if n > 0 => JointMode::Slots(n),
            _ => return None,
        };
        let holders = file
            .holders
            .into_iter()
            .map(HolderEntry::try_from)
            .collect::<Result<Vec<_>, ()>>()
            .ok()?;
        if holders.is_empty() {
            return None;
        }
        Some(Joint { mode, holders })
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The file as written: the Go library's names first, then the 1.0.x spellings, then ours (the
/// order of an exclusive file), then the holder list.
#[derive(Serialize)]
struct JointFile {
    #[serde(rename = "createdAt")]
    created_at: String,
    ttl: i64,
    hostname: String,
    pid: i64,
    #[serde(rename = "ownerId", skip_serializing_if = "Option::is_none")]
    owner_id: Option<String>,
    #[serde(rename = "created_at")]
    created_at_v10: String,
    #[serde(rename = "owner_id", skip_serializing_if = "Option::is_none")]
    owner_id_v10: Option<String>,
    vfslock: u32,
    #[serde(rename = "lockId")]
    lock_id: String,
    #[serde(rename = "daemonId")]
    daemon_id: String,
    #[serde(rename = "acquiredAt")]
    acquired_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<u64>,
    mode: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    slots: Option<u32>,
    holders: Vec<EntryFile>,
}

/// What is read back: only the holder list and the mode; the top-level fields are read by
/// [`parse`](super::parse) like any lock file's.
#[derive(Deserialize)]
struct JointFileIn {
    mode: String,
    #[serde(default)]
    slots: Option<u32>,
    holders: Vec<EntryFile>,
}

#[derive(Serialize, Deserialize)]
struct EntryFile {
    #[serde(rename = "lockId")]
    lock_id: String,
    #[serde(rename = "daemonId")]
    daemon_id: String,
    hostname: String,
    pid: i64,
    #[serde(rename = "ownerId", default, skip_serializing_if = "Option::is_none")]
    owner_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<u64>,
    #[serde(rename = "createdAt")]
    created_at: String,
    #[serde(rename = "acquiredAt")]
    acquired_at: String,
    ttl: i64,
    count: u32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    detached: bool,
}

impl From<&HolderEntry> for EntryFile {
    fn from(h: &HolderEntry) -> Self {
        EntryFile {
            lock_id: h.lock_id.clone(),
            daemon_id: h.daemon_id.clone(),
            hostname: h.hostname.clone(),
            pid: h.pid,
            owner_id: h.owner_id.clone().filter(|o| !o.is_empty()),
            uid: h.uid,
            token: h.token,
            created_at: format_go_time(h.created_at),
            acquired_at: format_go_time(h.acquired_at),
            ttl: i64::try_from(h.ttl.as_nanos()).unwrap_or(i64::MAX),
            count: h.count,
            detached: h.detached,
        }
    }
}

impl TryFrom<EntryFile> for HolderEntry {
    type Error = ();

    /// An entry we cannot date or whose lease is negative is not understood: the whole file is
    /// then judged as one holder (see [`Joint::parse`]).
    fn try_from(e: EntryFile) -> Result<Self, ()> {
        let created_at = parse_go_time(&e.created_at).ok_or(())?;
        let acquired_at = parse_go_time(&e.acquired_at).unwrap_or(created_at);
        let ttl = u64::try_from(e.ttl).map_err(|_| ())?;
        if e.lock_id.is_empty() || e.count == 0 {
            return Err(());
        }
        Ok(HolderEntry {
            lock_id: e.lock_id,
            daemon_id: e.daemon_id,
            hostname: e.hostname,
            pid: e.pid,
            owner_id: e.owner_id.filter(|o| !o.is_empty()),
            uid: e.uid,
            token: e.token,
            created_at,
            acquired_at,
            ttl: Duration::from_nanos(ttl),
            count: e.count,
            detached: e.detached,
        })
    }
}

/// Nanoseconds since the epoch of an entry's expiry, for the wire (`None`: never).
pub fn expiry_unix_ns(entry: &HolderEntry) -> Option<i128> {
    entry.expires_at().map(unix_ns)
}

#[cfg(test)]
#[path = "tests/joint.rs"]
mod tests;

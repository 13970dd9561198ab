//! Writing a lock file: [`LockRecord`], what this daemon puts in one, and its JSON, a superset
//! of the Go library's written field by field in the Go library's layout.

use std::time::{Duration, SystemTime};

use vfslock_proto::{LockFileFormat, LockMetadata};

use super::{format_go_time, unix_ns, ParsedLock, FORMAT_VERSION};

/// What this daemon writes into a lock file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockRecord {
    /// Last write of the lease; refreshed at each renewal, as the Go library measures the TTL
    /// from it.
    pub created_at: SystemTime,
    /// First write of the lease; unlike `created_at` it survives renewals.
    pub acquired_at: SystemTime,
    /// Lease length; zero never expires.
    pub ttl: Duration,
    /// Host of the holder.
    pub hostname: String,
    /// Process id of the holder.
    pub pid: i64,
    /// Optional owner identity; `None` (or an empty string) is not written.
    pub owner_id: Option<String>,
    /// Unique id of this holding.
    pub lock_id: String,
    /// Instance id of the daemon writing the file.
    pub daemon_id: String,
    /// Fencing token of this holding; `None` on a store that cannot stand behind one.
    pub token: Option<u64>,
    /// User id of the holder, where the platform tells.
    pub uid: Option<u32>,
    /// A detached lease: it belongs to `uid` and `lock_id`, not to a connection.
    pub detached: bool,
    /// The ttl written into the file when it is longer than the lease (`[locks]
    /// peer-ttl-factor`): what every reader judges staleness by, while this daemon still renews
    /// and bounds the lease by `ttl`.
    pub peer_ttl: Option<Duration>,
}

impl LockRecord {
    /// The record that renews the lock file `parsed` (holding `lock_id`) at `now`, written by
    /// the daemon `daemon_id`: the file's holder, token and first write, with the lease the
    /// file's ttl says. Callers that know the lease better set `ttl` and `peer_ttl`.
    pub fn renewing(parsed: &ParsedLock, lock_id: &str, daemon_id: &str, now: SystemTime) -> Self {
        LockRecord {
            created_at: now,
            acquired_at: parsed.acquired_at().unwrap_or(now),
            ttl: Duration::from_nanos(u64::try_from(parsed.ttl_ns).unwrap_or(0)),
            hostname: parsed.hostname.clone(),
            pid: parsed.pid,
            owner_id: parsed.owner_id.clone(),
            lock_id: lock_id.to_owned(),
            daemon_id: daemon_id.to_owned(),
            token: parsed.token,
            uid: parsed.uid,
            detached: parsed.detached,
            peer_ttl: None,
        }
    }

    /// The ttl the file says: [`LockRecord::peer_ttl`], or the lease's.
    pub fn written_ttl(&self) -> Duration {
        self.peer_ttl.unwrap_or(self.ttl)
    }

    /// The file content: indented like Go's `json.MarshalIndent(meta, "", "  ")`, without a
    /// trailing newline (the Go library writes none).
    pub fn to_json(&self) -> Vec<u8> {
        self.to_json_with_token(self.token)
    }

    /// [`LockRecord::to_json`] with `token` in place of the record's own.
    pub fn to_json_with_token(&self, token: Option<u64>) -> Vec<u8> {
        // Written field by field in `WireRecord`'s order rather than through serde_json's
        // pretty printer, which was a sixth of a `mem://` cycle's instructions; strings still go
        // through serde_json, so their escaping is the same. A test holds the two to the same
        // bytes.
        let created_at = format_go_time(self.created_at);
        let acquired_at = format_go_time(self.acquired_at);
        // Go's `omitempty` drops an empty owner, so an empty one must not be written either.
        let owner_id = self.owner_id.as_deref().filter(|o| !o.is_empty());
        // A lease longer than Go's Duration can express (~292 years) is as good as never
        // expiring, but 0 would say exactly that; the largest finite value is closer.
        let ttl = i64::try_from(self.written_ttl().as_nanos()).unwrap_or(i64::MAX);
        let mut out = JsonObject::new();
        out.string("createdAt", &created_at);
        out.number("ttl", ttl);
        out.string("hostname", &self.hostname);
        out.number("pid", self.pid);
        if let Some(owner) = owner_id {
            out.string("ownerId", owner);
        }
        out.string("created_at", &created_at);
        if let Some(owner) = owner_id {
            out.string("owner_id", owner);
        }
        out.number("vfslock", FORMAT_VERSION);
        out.string("lockId", &self.lock_id);
        out.string("daemonId", &self.daemon_id);
        out.string("acquiredAt", &acquired_at);
        if let Some(token) = token {
            out.number("token", token);
        }
        if let Some(uid) = self.uid {
            out.number("uid", uid);
        }
        if self.detached {
            out.raw("detached", "true");
        }
        out.finish()
    }

    /// What [`parse`](super::parse) reads back from [`LockRecord::to_json`], without writing
    /// and parsing the JSON: a grant describes the file it just wrote from the record it wrote
    /// it from.
    pub fn to_parsed(&self) -> ParsedLock {
        LockMetadata {
            created_at_unix_ns: Some(unix_ns(self.created_at)),
            acquired_at_unix_ns: Some(unix_ns(self.acquired_at)),
            modified_unix_ns: None,
            ttl_ns: i64::try_from(self.written_ttl().as_nanos()).unwrap_or(i64::MAX),
            hostname: self.hostname.clone(),
            pid: self.pid,
            owner_id: self.owner_id.clone().filter(|o| !o.is_empty()),
            lock_id: Some(self.lock_id.clone()),
            daemon_id: Some(self.daemon_id.clone()),
            token: self.token,
            uid: self.uid,
            detached: self.detached,
            format: LockFileFormat::Vfslock(FORMAT_VERSION),
            stale: false,
        }
    }
}

/// A JSON object written as `json.MarshalIndent(v, "", "  ")` writes one: a member per line,
/// two spaces in, no trailing newline.
struct JsonObject {
    out: Vec<u8>,
    members: usize,
}

impl JsonObject {
    fn new() -> Self {
        let mut out = Vec::with_capacity(512);
        out.push(b'{');
        JsonObject { out, members: 0 }
    }

    fn key(&mut self, key: &str) {
        if self.members > 0 {
            self.out.push(b',');
        }
        self.members += 1;
        self.out.extend_from_slice(b"\n  \"");
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\": ");
    }

    fn string(&mut self, key: &str, value: &str) {
        self.key(key);
        // What serde_json would escape: quote, backslash and control characters. Ids, host
        // names and times have none, and are copied as they are.
        if value.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
            self.out.push(b'"');
            self.out.extend_from_slice(value.as_bytes());
            self.out.push(b'"');
        } else {
            serde_json::to_writer(&mut self.out, value).expect("writing to memory cannot fail");
        }
    }

    fn number(&mut self, key: &str, value: impl Into<i128>) {
        self.key(key);
        let value: i128 = value.into();
        if value < 0 {
            self.out.push(b'-');
        }
        let mut digits = [0u8; 40];
        let mut at = digits.len();
        let mut rest = value.unsigned_abs();
        loop {
            at -= 1;
            digits[at] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        self.out.extend_from_slice(&digits[at..]);
    }

    fn raw(&mut self, key: &str, value: &str) {
        self.key(key);
        self.out.extend_from_slice(value.as_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        self.out
            .extend_from_slice(if self.members > 0 { b"\n}" } else { b"}" });
        self.out
    }
}

/// The on-disk shape. Field order is part of the format: the Go names first, so the file reads
/// like one the Go library wrote, then the 1.0.x spellings, then ours. [`LockRecord::to_json`]
/// writes it by hand; this serde shape is the reference its test compares with.
#[cfg(test)]
#[derive(serde::Serialize)]
struct WireRecord<'a> {
    #[serde(rename = "createdAt")]
    created_at: &'a str,
    ttl: i64,
    hostname: &'a str,
    pid: i64,
    #[serde(rename = "ownerId", skip_serializing_if = "Option::is_none")]
    owner_id: Option<&'a str>,
    #[serde(rename = "created_at")]
    created_at_v10: &'a str,
    #[serde(rename = "owner_id", skip_serializing_if = "Option::is_none")]
    owner_id_v10: Option<&'a str>,
    vfslock: u32,
    #[serde(rename = "lockId")]
    lock_id: &'a str,
    #[serde(rename = "daemonId")]
    daemon_id: &'a str,
    #[serde(rename = "acquiredAt")]
    acquired_at: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<u32>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    detached: bool,
}

#[cfg(test)]
impl LockRecord {
    /// The same bytes as [`LockRecord::to_json`], through serde_json's pretty printer: the
    /// reference the hand-written one is tested against.
    pub(super) fn to_json_by_serde(&self) -> Vec<u8> {
        let created_at = format_go_time(self.created_at);
        let acquired_at = format_go_time(self.acquired_at);
        let owner_id = self.owner_id.as_deref().filter(|o| !o.is_empty());
        let wire = WireRecord {
            created_at: &created_at,
            ttl: i64::try_from(self.written_ttl().as_nanos()).unwrap_or(i64::MAX),
            hostname: &self.hostname,
            pid: self.pid,
            owner_id,
            created_at_v10: &created_at,
            owner_id_v10: owner_id,
            vfslock: FORMAT_VERSION,
            lock_id: &self.lock_id,
            daemon_id: &self.daemon_id,
            acquired_at: &acquired_at,
            token: self.token,
            uid: self.uid,
            detached: self.detached,
        };
        serde_json::to_vec_pretty(&wire).expect("strings and integers always serialize")
    }
}

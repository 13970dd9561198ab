//! The lock file's JSON: what this daemon writes and how it reads what anyone wrote.
//!
//! A lock file is shared with processes that do not talk to this daemon: programs using the Go
//! library `github.com/c2fo/vfs/contrib/lockfile` (both its 1.0.x and 1.1+ spellings), other
//! daemons, and unrelated tools that happen to use the same name. The format written here is a
//! superset of the Go library's, so the Go library honours our locks, and the reader mirrors
//! Go's `encoding/json` decoder, so we honour theirs exactly as they would. Anything we cannot
//! read is still treated as held (see [`is_stale`]) rather than silently overwritten.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
use vfslock_proto::unix_time::from_unix_ns;
pub use vfslock_proto::unix_time::unix_ns;
use vfslock_proto::{LockFileFormat, LockMetadata};

/// Version of the vfslock additions to the Go format, written as `vfslock`.
pub const FORMAT_VERSION: u32 = 1;

const NANOS_PER_SEC: i128 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;

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

impl LockRecord {
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
        let ttl = i64::try_from(self.ttl.as_nanos()).unwrap_or(i64::MAX);
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

    /// The same bytes as [`LockRecord::to_json`], through serde_json's pretty printer: the
    /// reference the hand-written one is tested against.
    #[cfg(test)]
    fn to_json_by_serde(&self) -> Vec<u8> {
        let created_at = format_go_time(self.created_at);
        let acquired_at = format_go_time(self.acquired_at);
        let owner_id = self.owner_id.as_deref().filter(|o| !o.is_empty());
        let wire = WireRecord {
            created_at: &created_at,
            ttl: i64::try_from(self.ttl.as_nanos()).unwrap_or(i64::MAX),
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

    /// What [`parse`] reads back from [`LockRecord::to_json`], without writing and parsing the
    /// JSON: a grant describes the file it just wrote from the record it wrote it from.
    pub fn to_parsed(&self) -> ParsedLock {
        LockMetadata {
            created_at_unix_ns: Some(unix_ns(self.created_at)),
            acquired_at_unix_ns: Some(unix_ns(self.acquired_at)),
            modified_unix_ns: None,
            ttl_ns: i64::try_from(self.ttl.as_nanos()).unwrap_or(i64::MAX),
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

/// A lock file as read, whoever wrote it: the wire's [`LockMetadata`], one shape for both, of
/// which the content sets every field but `modified_unix_ns` and `stale` (the store and the
/// caller tell those; see [`into_wire`]). Reading never fails: unreadable content becomes
/// [`LockFileFormat::Corrupt`] with default fields. The file's own JSON shape is
/// [`LockRecord`] and the reader's key table, kept apart from the wire.
pub type ParsedLock = LockMetadata;

/// A lock file of `format` whose content tells nothing.
fn empty(format: LockFileFormat) -> ParsedLock {
    LockMetadata {
        created_at_unix_ns: None,
        acquired_at_unix_ns: None,
        modified_unix_ns: None,
        ttl_ns: 0,
        hostname: String::new(),
        pid: 0,
        owner_id: None,
        lock_id: None,
        daemon_id: None,
        token: None,
        uid: None,
        detached: false,
        format,
        stale: false,
    }
}

/// Every key the reader knows. Go's decoder maps each JSON key to at most one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    CreatedAt,
    CreatedAtV10,
    Ttl,
    Hostname,
    Pid,
    OwnerId,
    OwnerIdV10,
    Vfslock,
    LockId,
    DaemonId,
    AcquiredAt,
    Token,
    Uid,
    Detached,
}

const FIELDS: [(&str, Field); 14] = [
    ("createdAt", Field::CreatedAt),
    ("created_at", Field::CreatedAtV10),
    ("ttl", Field::Ttl),
    ("hostname", Field::Hostname),
    ("pid", Field::Pid),
    ("ownerId", Field::OwnerId),
    ("owner_id", Field::OwnerIdV10),
    ("vfslock", Field::Vfslock),
    ("lockId", Field::LockId),
    ("daemonId", Field::DaemonId),
    ("acquiredAt", Field::AcquiredAt),
    ("token", Field::Token),
    ("uid", Field::Uid),
    ("detached", Field::Detached),
];

impl Field {
    fn index(self) -> usize {
        FIELDS
            .iter()
            .position(|(_, f)| *f == self)
            .expect("every field is listed")
    }

    /// Fields the Go library decodes into typed struct members: a value of the wrong JSON type
    /// makes its decoder fail, so such a file is corrupt for it and for us.
    fn is_go_field(self) -> bool {
        !matches!(
            self,
            Field::Vfslock
                | Field::LockId
                | Field::DaemonId
                | Field::AcquiredAt
                | Field::Token
                | Field::Uid
                | Field::Detached
        )
    }

    /// As Go's decoder: an exact name wins, otherwise a case-insensitive match.
    fn for_key(key: &str) -> Option<Field> {
        FIELDS
            .iter()
            .find(|(name, _)| *name == key)
            .or_else(|| FIELDS.iter().find(|(name, _)| go_fold_eq(key, name)))
            .map(|(_, f)| *f)
    }
}

/// Go compares names with Unicode simple folding, under which the Kelvin sign folds to `k` and
/// the long s to `s`; every other non-ASCII character differs from our ASCII names.
fn go_fold_eq(key: &str, name: &str) -> bool {
    let mut key_chars = key.chars();
    for n in name.chars() {
        let n = n.to_ascii_lowercase();
        let matches = match key_chars.next() {
            None => return false,
            Some('\u{212A}') => n == 'k',
            Some('\u{17F}') => n == 's',
            Some(k) => k.to_ascii_lowercase() == n,
        };
        if !matches {
            return false;
        }
    }
    key_chars.next().is_none()
}

/// The members of a JSON object in file order, duplicates included: Go assigns each in turn, so
/// the last one wins and a wrong type in any of them is an error.
struct Members(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, Value>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor)
    }
}

/// Reads a lock file's bytes as Go's `encoding/json` would decode them into the Go library's
/// struct, plus the vfslock fields. Never fails: see [`ParsedLock`].
pub fn parse(bytes: &[u8]) -> ParsedLock {
    // Go replaces invalid UTF-8 inside strings instead of failing; outside strings the
    // replacement character is still invalid JSON, so garbage stays garbage.
    let text = String::from_utf8_lossy(bytes);
    let Ok(Members(members)) = serde_json::from_str::<Members>(&text) else {
        return empty(LockFileFormat::Corrupt);
    };

    let mut values: [Option<Value>; FIELDS.len()] = Default::default();
    for (key, value) in members {
        let Some(field) = Field::for_key(&key) else {
            continue;
        };
        // Go leaves a field untouched when given null, even if an earlier key set it.
        if value.is_null() {
            continue;
        }
        if field.is_go_field() && !go_type_ok(field, &value) {
            return empty(LockFileFormat::Corrupt);
        }
        values[field.index()] = Some(value);
    }
    let get = |f: Field| values[f.index()].as_ref();
    let string = |f: Field| get(f).and_then(Value::as_str).map(str::to_owned);
    let non_empty = |f: Field| string(f).filter(|s| !s.is_empty());
    let time = |f: Field| get(f).and_then(Value::as_str).and_then(parse_go_time);

    let vfslock = get(Field::Vfslock)
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok());
    let format = if let Some(version) = vfslock {
        LockFileFormat::Vfslock(version)
    } else if [
        Field::CreatedAt,
        Field::CreatedAtV10,
        Field::Ttl,
        Field::Hostname,
        Field::Pid,
    ]
    .into_iter()
    .any(|f| get(f).is_some())
    {
        LockFileFormat::Go
    } else {
        LockFileFormat::Foreign
    };

    LockMetadata {
        created_at_unix_ns: time(Field::CreatedAt)
            .or_else(|| time(Field::CreatedAtV10))
            .map(unix_ns),
        acquired_at_unix_ns: time(Field::AcquiredAt).map(unix_ns),
        modified_unix_ns: None,
        ttl_ns: get(Field::Ttl).and_then(Value::as_i64).unwrap_or(0),
        hostname: string(Field::Hostname).unwrap_or_default(),
        pid: get(Field::Pid).and_then(Value::as_i64).unwrap_or(0),
        owner_id: non_empty(Field::OwnerId).or_else(|| non_empty(Field::OwnerIdV10)),
        lock_id: non_empty(Field::LockId),
        daemon_id: non_empty(Field::DaemonId),
        token: get(Field::Token).and_then(Value::as_u64),
        uid: get(Field::Uid)
            .and_then(Value::as_u64)
            .and_then(|u| u32::try_from(u).ok()),
        detached: get(Field::Detached)
            .and_then(Value::as_bool)
            .unwrap_or(false),
        format,
        stale: false,
    }
}

/// Whether Go's decoder accepts `value` (not null) for `field`. Go reads integers with
/// `strconv.ParseInt`, so `1.5`, `1e3` and out-of-range numbers fail; serde_json reads those as
/// floats or `u64`, which `as_i64` refuses. A time must be a JSON string, but one that does not
/// parse only costs the file its date (see [`is_stale`]): the holder's identity stays readable.
fn go_type_ok(field: Field, value: &Value) -> bool {
    match field {
        Field::Ttl | Field::Pid => value.as_i64().is_some(),
        _ => value.is_string(),
    }
}

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

/// The lock in wire form, with the store's modification time and the caller's staleness verdict.
pub fn to_wire(lock: &ParsedLock, modified: Option<SystemTime>, stale: bool) -> LockMetadata {
    into_wire(lock.clone(), modified, stale)
}

/// [`to_wire`] of a lock no longer needed: its strings move instead of being copied.
pub fn into_wire(lock: ParsedLock, modified: Option<SystemTime>, stale: bool) -> LockMetadata {
    LockMetadata {
        modified_unix_ns: modified.map(unix_ns),
        stale,
        ..lock
    }
}

/// Formats like Go's `t.UTC().Format(time.RFC3339Nano)`, which is what the Go library's
/// `time.Time` fields marshal to: fraction trimmed of trailing zeros (none when zero), `Z`.
pub fn format_go_time(t: SystemTime) -> String {
    let ns = unix_ns(t);
    let secs = ns.div_euclid(NANOS_PER_SEC) as i64;
    let nanos = ns.rem_euclid(NANOS_PER_SEC) as u32;
    let (year, month, day) = civil_from_days(secs.div_euclid(SECS_PER_DAY));
    let of_day = secs.rem_euclid(SECS_PER_DAY);

    // Digit by digit rather than through `format!`: every lock file written carries two of
    // these, and the formatting machinery was a tenth of a `mem://` cycle's instructions.
    let mut out = String::with_capacity(32);
    // Go pads the year's magnitude to four digits and puts the sign in front.
    if year < 0 {
        out.push('-');
    }
    let year = year.unsigned_abs();
    if year > 9999 {
        let _ = write!(out, "{year}");
    } else {
        push_digits(&mut out, year, 4);
    }
    for (separator, value) in [
        ('-', month as u64),
        ('-', day as u64),
        ('T', (of_day / 3600) as u64),
        (':', (of_day / 60 % 60) as u64),
        (':', (of_day % 60) as u64),
    ] {
        out.push(separator);
        push_digits(&mut out, value, 2);
    }
    if nanos != 0 {
        let mut fraction = nanos;
        let mut width = 9;
        while fraction.is_multiple_of(10) {
            fraction /= 10;
            width -= 1;
        }
        out.push('.');
        push_digits(&mut out, u64::from(fraction), width);
    }
    out.push('Z');
    out
}

/// Appends `value` as exactly `width` decimal digits, zero-padded (`value` must fit).
fn push_digits(out: &mut String, value: u64, width: u32) {
    let mut divisor = 10u64.pow(width.saturating_sub(1));
    for _ in 0..width {
        out.push(char::from(b'0' + (value / divisor % 10) as u8));
        divisor /= 10;
    }
}

/// Parses a time as Go's `time.Time.UnmarshalJSON` does (given the string's content): RFC 3339
/// with an optional fraction of any length (digits past the ninth are dropped, as Go does), and
/// `Z` or a `±hh:mm` offset. Go retries a failed strict parse with its lenient layout parser
/// (accepting e.g. one-digit hours); that leniency is not reproduced.
pub fn parse_go_time(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 19 {
        return None;
    }
    let seps = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if seps.iter().any(|&(i, c)| b[i] != c) {
        return None;
    }
    let year = digits(&b[0..4], 0, 9999)?;
    let month = digits(&b[5..7], 1, 12)?;
    let day = digits(&b[8..10], 1, days_in_month(year, month))?;
    let hour = digits(&b[11..13], 0, 23)?;
    let minute = digits(&b[14..16], 0, 59)?;
    let second = digits(&b[17..19], 0, 59)?;
    let mut rest = &b[19..];

    let mut nanos: i64 = 0;
    if rest.len() >= 2 && rest[0] == b'.' && rest[1].is_ascii_digit() {
        let len = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        let kept = &rest[1..1 + len.min(9)];
        nanos = digits(kept, 0, 999_999_999)?;
        for _ in kept.len()..9 {
            nanos *= 10;
        }
        rest = &rest[1 + len..];
    }

    let offset_secs = match rest {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours = digits(&[*h1, *h2], 0, 23)?;
            let minutes = digits(&[*m1, *m2], 0, 59)?;
            let magnitude = hours * 3600 + minutes * 60;
            if *sign == b'-' {
                -magnitude
            } else {
                magnitude
            }
        }
        _ => return None,
    };

    let secs =
        days_from_civil(year, month, day) * SECS_PER_DAY + hour * 3600 + minute * 60 + second
            - offset_secs;
    from_unix_ns(i128::from(secs) * NANOS_PER_SEC + i128::from(nanos))
}

/// A run of ASCII digits as a number within `min..=max`.
fn digits(b: &[u8], min: i64, max: i64) -> Option<i64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = b.iter().fold(0i64, |n, &c| n * 10 + i64::from(c - b'0'));
    (min..=max).contains(&n).then_some(n)
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// The two conversions below count in 400-year cycles of the proleptic Gregorian calendar
// (146097 days each) over years starting in March, so that the leap day falls at a year's end
// and needs no special case. 719468 is the number of days from 0000-03-01 to 1970-01-01.

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let march_month = (month + 9) % 12;
    let day_of_year = (153 * march_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian date (year, month, day) of a day counted from 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let march_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * march_month + 2) / 5 + 1;
    let month = if march_month < 10 {
        march_month + 3
    } else {
        march_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! fixture {
        ($name:literal) => {
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tests/fixtures/",
                $name
            ))
        };
    }

    const GRACE: Duration = Duration::from_secs(60);

    fn at(odt: time::OffsetDateTime) -> SystemTime {
        from_unix_ns(odt.unix_timestamp_nanos()).unwrap()
    }

    fn now_2026() -> SystemTime {
        at(time::macros::datetime!(2026-03-01 12:00 UTC))
    }

    fn t_345678901() -> SystemTime {
        at(time::macros::datetime!(2025-08-04 09:30:12.345678901 UTC))
    }

    #[test]
    fn go_expired_fixture_reads_every_field_and_is_stale() {
        let lock = parse(fixture!("go-lockfile-expired-ttl.lock"));
        assert_eq!(lock.format, LockFileFormat::Go);
        assert_eq!(lock.created_at(), Some(t_345678901()));
        assert_eq!(
            unix_ns(lock.created_at().unwrap()),
            1_754_299_812_345_678_901
        );
        assert_eq!(lock.ttl_ns, 300_000_000_000);
        assert_eq!(lock.hostname, "ingest-7");
        assert_eq!(lock.pid, 4242);
        assert_eq!(lock.owner_id.as_deref(), Some("ingestion-service-1"));
        assert_eq!((lock.lock_id.clone(), lock.daemon_id.clone()), (None, None));
        assert_eq!(lock.acquired_at(), None);
        assert!(is_stale(&lock, None, now_2026(), GRACE));
        let expiry = t_345678901() + Duration::from_secs(300);
        assert_eq!(stale_at(&lock, None, GRACE), Some(expiry));
        // Strictly after: not stale at the expiry instant itself, stale one nanosecond later.
        assert!(!is_stale(&lock, None, expiry, GRACE));
        assert!(is_stale(
            &lock,
            None,
            expiry + Duration::from_nanos(1),
            GRACE
        ));
    }

    #[test]
    fn go_v10_expired_fixture_reads_old_spelling() {
        let lock = parse(fixture!("go-v1.0-lockfile-expired-ttl.lock"));
        assert_eq!(lock.format, LockFileFormat::Go);
        assert_eq!(lock.created_at(), Some(t_345678901()));
        assert_eq!(lock.ttl_ns, 300_000_000_000);
        assert_eq!(lock.hostname, "etl-3");
        assert_eq!(lock.pid, 9001);
        assert_eq!(lock.owner_id.as_deref(), Some("nightly-import"));
        assert!(is_stale(&lock, None, now_2026(), GRACE));
    }

    #[test]
    fn go_short_ttl_fixture() {
        let lock = parse(fixture!("go-lockfile-short-ttl.lock"));
        let created = at(time::macros::datetime!(2025-08-04 09:30:12.5 UTC));
        assert_eq!(lock.format, LockFileFormat::Go);
        assert_eq!(lock.created_at(), Some(created));
        assert_eq!(lock.ttl_ns, 100_000_000);
        assert_eq!(lock.hostname, "web-2");
        assert_eq!(lock.pid, 31337);
        assert_eq!(lock.owner_id.as_deref(), Some("test-owner"));
        assert_eq!(
            stale_at(&lock, None, GRACE),
            Some(created + Duration::from_millis(100))
        );
        assert!(is_stale(&lock, None, now_2026(), GRACE));
        assert!(!is_stale(&lock, None, created, GRACE));
    }

    #[test]
    fn no_ttl_fixtures_are_never_stale() {
        let created = at(time::macros::datetime!(2025-08-04 09:30:12 UTC));
        for (bytes, host, pid) in [
            (&fixture!("go-lockfile-no-ttl.lock")[..], "batch-host", 77),
            (&fixture!("go-v1.0-lockfile-no-ttl.lock")[..], "etl-4", 9002),
        ] {
            let lock = parse(bytes);
            assert_eq!(lock.format, LockFileFormat::Go);
            assert_eq!(lock.created_at(), Some(created));
            assert_eq!(lock.ttl_ns, 0);
            assert_eq!(lock.hostname, host);
            assert_eq!(lock.pid, pid);
            assert_eq!(lock.owner_id, None);
            let far = now_2026() + Duration::from_secs(1_000 * 365 * 86_400);
            assert!(!is_stale(&lock, Some(created), far, GRACE));
            assert_eq!(stale_at(&lock, Some(created), GRACE), None);
        }
    }

    #[test]
    fn corrupt_fixtures_are_stale_only_after_grace() {
        let modified = now_2026() - Duration::from_secs(30);
        for bytes in [
            &fixture!("corrupt-empty.lock")[..],
            &fixture!("corrupt-truncated.lock")[..],
            &fixture!("corrupt-binary.lock")[..],
        ] {
            let lock = parse(bytes);
            assert_eq!(lock, empty(LockFileFormat::Corrupt));
            assert!(!is_stale(&lock, Some(modified), now_2026(), GRACE));
            assert_eq!(
                stale_at(&lock, Some(modified), GRACE),
                Some(modified + GRACE)
            );
            assert!(!is_stale(&lock, Some(modified), modified + GRACE, GRACE));
            let later = modified + GRACE + Duration::from_nanos(1);
            assert!(is_stale(&lock, Some(modified), later, GRACE));
            // Without a modification time there is nothing to judge by.
            assert!(!is_stale(&lock, None, later, GRACE));
            assert_eq!(stale_at(&lock, None, GRACE), None);
        }
    }

    #[test]
    fn non_objects_and_wrong_types_are_corrupt() {
        for text in [
            "null",
            "[]",
            "42",
            "\"createdAt\"",
            r#"{"ttl": "30s"}"#,
            r#"{"pid": 1.5}"#,
            r#"{"pid": 1e3}"#,
            r#"{"ttl": 9223372036854775808}"#,
            r#"{"createdAt": 5}"#,
            r#"{"created_at": true}"#,
            r#"{"hostname": 7}"#,
            r#"{"ownerId": ["a"]}"#,
            r#"{"owner_id": {}}"#,
            // A wrong type in an earlier duplicate fails Go's decoder even if a later one is fine.
            r#"{"pid": "1", "pid": 1}"#,
            r#"{"ttl": 1} trailing"#,
        ] {
            assert_eq!(
                parse(text.as_bytes()).format,
                LockFileFormat::Corrupt,
                "{text}"
            );
        }
    }

    #[test]
    fn terraform_lock_is_foreign_and_never_stale() {
        let tflock = br#"{"ID":"7b9c","Operation":"OperationTypeApply","Info":"","Who":"me@host","Version":"1.9.0","Created":"2020-01-01T00:00:00Z","Path":"x"}"#;
        let lock = parse(tflock);
        assert_eq!(lock, empty(LockFileFormat::Foreign));
        let modified = Some(UNIX_EPOCH);
        assert!(!is_stale(&lock, modified, now_2026(), Duration::ZERO));
        assert_eq!(stale_at(&lock, modified, Duration::ZERO), None);
        assert_eq!(parse(b"{}").format, LockFileFormat::Foreign);
    }

    fn record() -> LockRecord {
        LockRecord {
            created_at: t_345678901(),
            acquired_at: at(time::macros::datetime!(2025-08-04 09:00 UTC)),
            ttl: Duration::from_secs(30),
            hostname: "host-a".into(),
            pid: 1234,
            owner_id: Some("svc".into()),
            lock_id: "lock-1".into(),
            daemon_id: "daemon-1".into(),
            token: Some(1_754_299_812_345_679),
            uid: Some(1000),
            detached: false,
        }
    }

    /// What [`parse`] reads from `record()`'s file.
    fn parsed_record() -> LockMetadata {
        LockMetadata {
            created_at_unix_ns: Some(1_754_299_812_345_678_901),
            acquired_at_unix_ns: Some(unix_ns(record().acquired_at)),
            modified_unix_ns: None,
            ttl_ns: 30_000_000_000,
            hostname: "host-a".into(),
            pid: 1234,
            owner_id: Some("svc".into()),
            lock_id: Some("lock-1".into()),
            daemon_id: Some("daemon-1".into()),
            token: Some(1_754_299_812_345_679),
            uid: Some(1000),
            detached: false,
            format: LockFileFormat::Vfslock(FORMAT_VERSION),
            stale: false,
        }
    }

    #[test]
    fn to_json_round_trips_every_field() {
        let rec = record();
        let lock = parse(&rec.to_json());
        assert_eq!(lock, parsed_record());
        assert_eq!(lock.created_at(), Some(rec.created_at));
        assert_eq!(lock.acquired_at(), Some(rec.acquired_at));
    }

    #[test]
    fn hand_written_json_is_serde_jsons_pretty_output() {
        let mut rec = record();
        assert_eq!(rec.to_json(), rec.to_json_by_serde());
        rec.hostname = "h\"o\\st\n\u{1}é".into();
        rec.owner_id = Some("ünïcode \"quoted\"".into());
        rec.detached = true;
        rec.ttl = Duration::MAX;
        assert_eq!(rec.to_json(), rec.to_json_by_serde());
        rec.owner_id = Some(String::new());
        rec.token = None;
        rec.uid = None;
        rec.detached = false;
        rec.pid = -5;
        assert_eq!(rec.to_json(), rec.to_json_by_serde());
        // Nothing to escape, but not ASCII: copied as it is, as serde_json does.
        rec.hostname = "hôte-é \u{7f}~".into();
        rec.pid = 0;
        rec.token = Some(u64::MAX);
        assert_eq!(rec.to_json(), rec.to_json_by_serde());
    }

    #[test]
    fn to_parsed_is_what_parse_reads_back() {
        let mut rec = record();
        assert_eq!(rec.to_parsed(), parse(&rec.to_json()));
        rec.owner_id = Some(String::new());
        rec.token = None;
        rec.uid = None;
        rec.detached = true;
        rec.ttl = Duration::ZERO;
        rec.created_at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(rec.to_parsed(), parse(&rec.to_json()));
    }

    #[test]
    fn go_times_have_no_trailing_fraction_zeros() {
        for (ns, text) in [
            (0, "1970-01-01T00:00:00Z"),
            (1, "1970-01-01T00:00:00.000000001Z"),
            (120_000_000, "1970-01-01T00:00:00.12Z"),
            (1_754_299_812_345_678_901, "2025-08-04T09:30:12.345678901Z"),
        ] {
            let t = UNIX_EPOCH + Duration::from_nanos(ns);
            assert_eq!(format_go_time(t), text);
            assert_eq!(parse_go_time(text), Some(t));
        }
    }

    #[test]
    fn to_json_layout_matches_go_and_carries_both_spellings() {
        let json = String::from_utf8(record().to_json()).unwrap();
        let expected = r#"{
  "createdAt": "2025-08-04T09:30:12.345678901Z",
  "ttl": 30000000000,
  "hostname": "host-a",
  "pid": 1234,
  "ownerId": "svc",
  "created_at": "2025-08-04T09:30:12.345678901Z",
  "owner_id": "svc",
  "vfslock": 1,
  "lockId": "lock-1",
  "daemonId": "daemon-1",
  "acquiredAt": "2025-08-04T09:00:00Z",
  "token": 1754299812345679,
  "uid": 1000
}"#;
        assert_eq!(json, expected);
        assert!(!json.ends_with('\n'));
    }

    #[test]
    fn to_json_omits_absent_or_empty_owner() {
        for owner in [None, Some(String::new())] {
            let rec = LockRecord {
                owner_id: owner,
                ..record()
            };
            let json = String::from_utf8(rec.to_json()).unwrap();
            assert!(
                !json.contains("ownerId") && !json.contains("owner_id"),
                "{json}"
            );
            assert_eq!(parse(json.as_bytes()).owner_id, None);
        }
    }

    #[test]
    fn go_time_formatting_trims_like_go() {
        let base = at(time::macros::datetime!(2025-08-04 09:30:12 UTC));
        assert_eq!(format_go_time(base), "2025-08-04T09:30:12Z");
        assert_eq!(
            format_go_time(base + Duration::from_millis(500)),
            "2025-08-04T09:30:12.5Z"
        );
        assert_eq!(
            format_go_time(base + Duration::from_nanos(345_678_901)),
            "2025-08-04T09:30:12.345678901Z"
        );
        assert_eq!(
            format_go_time(base + Duration::from_nanos(10)),
            "2025-08-04T09:30:12.00000001Z"
        );
        assert_eq!(format_go_time(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_go_time(UNIX_EPOCH - Duration::from_nanos(1)),
            "1969-12-31T23:59:59.999999999Z"
        );
        assert_eq!(
            format_go_time(at(time::macros::datetime!(2024-02-29 23:59:59 UTC))),
            "2024-02-29T23:59:59Z"
        );
    }

    #[test]
    fn go_zero_time_parses_and_formats() {
        let zero = parse_go_time("0001-01-01T00:00:00Z").unwrap();
        assert_eq!(unix_ns(zero), -62_135_596_800 * NANOS_PER_SEC);
        assert_eq!(format_go_time(zero), "0001-01-01T00:00:00Z");
        // Go's zero time with a TTL is long expired, as the Go library would judge it.
        let lock = parse(br#"{"createdAt": "0001-01-01T00:00:00Z", "ttl": 1}"#);
        assert_eq!(lock.created_at(), Some(zero));
        assert!(is_stale(&lock, None, UNIX_EPOCH, GRACE));
    }

    #[test]
    fn parse_go_time_accepts_offsets_and_fraction_lengths() {
        let utc = at(time::macros::datetime!(2025-08-04 04:00:12.5 UTC));
        assert_eq!(parse_go_time("2025-08-04T09:30:12.5+05:30"), Some(utc));
        assert_eq!(
            parse_go_time("2025-08-03T23:00:12.5-05:00"),
            Some(utc),
            "negative offsets cross the date line"
        );
        assert_eq!(parse_go_time("2025-08-04T04:00:12.5-00:00"), Some(utc));
        assert_eq!(parse_go_time("2025-08-04T04:00:12.500000000Z"), Some(utc));
        // Go keeps the first nine digits and drops the rest.
        assert_eq!(
            parse_go_time("2025-08-04T09:30:12.3456789019Z"),
            Some(t_345678901())
        );
        assert_eq!(
            parse_go_time("2024-02-29T00:00:00Z"),
            Some(at(time::macros::datetime!(2024-02-29 0:00 UTC)))
        );
    }

    #[test]
    fn parse_go_time_refuses_what_go_refuses() {
        for s in [
            "",
            "2025-08-04",
            "2025-08-04T09:30:12",
            "2025-08-04 09:30:12Z",
            "2025-08-04t09:30:12Z",
            "2025-08-04T09:30:12z",
            "2025-08-04T09:30:12.Z",
            "2025-08-04T09:30:12+0530",
            "2025-08-04T09:30:12+24:00",
            "2025-08-04T24:00:00Z",
            "2025-08-04T09:60:00Z",
            "2025-08-04T09:30:60Z",
            "2025-02-29T09:30:12Z",
            "2025-13-04T09:30:12Z",
            "2025-00-04T09:30:12Z",
            "+025-08-04T09:30:12Z",
            "2025-08-04T09:30:12ZZ",
            "30s",
        ] {
            assert_eq!(parse_go_time(s), None, "{s}");
        }
    }

    #[test]
    fn keys_match_case_insensitively_exact_first() {
        let lock = parse(
            br#"{"CreatedAt": "2025-08-04T09:30:12.345678901Z", "TTL": 5, "HOSTNAME": "h", "Pid": 3, "OwnerID": "o"}"#,
        );
        assert_eq!(lock.format, LockFileFormat::Go);
        assert_eq!(lock.created_at(), Some(t_345678901()));
        assert_eq!(lock.ttl_ns, 5);
        assert_eq!(lock.hostname, "h");
        assert_eq!(lock.pid, 3);
        assert_eq!(lock.owner_id.as_deref(), Some("o"));

        // The last assignment wins, whichever spelling of the key it used.
        assert_eq!(parse(br#"{"ttl": 1, "TTL": 2}"#).ttl_ns, 2);
        assert_eq!(parse(br#"{"TTL": 2, "ttl": 1}"#).ttl_ns, 1);
        // Unicode folding as Go does it: the Kelvin sign and the long s.
        let folded = parse(
            "{\"hostname\": \"a\", \"ho\u{17F}tname\": \"b\", \"VFSLOC\u{212A}\": 1}".as_bytes(),
        );
        assert_eq!(folded.hostname, "b");
        assert_eq!(folded.format, LockFileFormat::Vfslock(1));
    }

    #[test]
    fn nulls_empty_owner_and_unknown_fields_are_ignored() {
        let lock = parse(
            br#"{"ttl": 7, "ttl": null, "pid": null, "ownerId": "", "owner_id": "old", "extra": {"nested": [1, 2.5, "x"]}}"#,
        );
        assert_eq!(lock.format, LockFileFormat::Go);
        assert_eq!(lock.ttl_ns, 7);
        assert_eq!(lock.pid, 0);
        assert_eq!(lock.hostname, "");
        assert_eq!(lock.owner_id.as_deref(), Some("old"));
        assert_eq!(parse(br#"{"ownerId": ""}"#).owner_id, None);
    }

    #[test]
    fn missing_ttl_reads_as_never_expiring() {
        let lock = parse(br#"{"createdAt": "2000-01-01T00:00:00Z", "hostname": "h"}"#);
        assert_eq!(lock.format, LockFileFormat::Go);
        assert_eq!(lock.ttl_ns, 0);
        assert!(!is_stale(&lock, None, now_2026(), GRACE));
    }

    #[test]
    fn negative_ttl_is_already_stale() {
        let lock = parse(br#"{"createdAt": "2999-01-01T00:00:00Z", "ttl": -1}"#);
        assert_eq!(lock.ttl_ns, -1);
        assert!(is_stale(&lock, None, now_2026(), GRACE));
        assert!(is_stale(&lock, None, UNIX_EPOCH, GRACE));
        assert!(stale_at(&lock, None, GRACE).unwrap() <= now_2026());
    }

    #[test]
    fn unparseable_created_at_with_ttl_uses_grace_rule() {
        let lock = parse(br#"{"createdAt": "yesterday", "ttl": 1000, "hostname": "h"}"#);
        assert_eq!(lock.format, LockFileFormat::Go);
        assert_eq!(lock.created_at(), None);
        assert_eq!(lock.hostname, "h");
        let modified = now_2026() - Duration::from_secs(30);
        assert!(!is_stale(&lock, Some(modified), now_2026(), GRACE));
        assert!(is_stale(&lock, Some(modified), now_2026() + GRACE, GRACE));
        assert!(!is_stale(&lock, None, now_2026() + GRACE, GRACE));
        assert_eq!(
            stale_at(&lock, Some(modified), GRACE),
            Some(modified + GRACE)
        );
    }

    #[test]
    fn overflowing_expiry_never_goes_stale() {
        let lock = parse(br#"{"createdAt": "9999-12-31T23:59:59Z", "ttl": 9223372036854775807}"#);
        let expiry = stale_at(&lock, None, GRACE);
        // Whether the sum fits depends on SystemTime's range; either way nothing panics and a
        // lock that far out is not stale in 2026.
        assert!(expiry.is_none_or(|t| t > now_2026()));
        assert!(!is_stale(&lock, None, now_2026(), GRACE));
        let corrupt = empty(LockFileFormat::Corrupt);
        let far = UNIX_EPOCH + Duration::from_secs(i64::MAX as u64 / 2);
        assert!(!is_stale(&corrupt, Some(far), now_2026(), Duration::MAX));
    }

    #[test]
    fn vfslock_field_sets_format_and_bad_values_are_ignored() {
        assert_eq!(
            parse(br#"{"vfslock": 7}"#).format,
            LockFileFormat::Vfslock(7)
        );
        for text in [
            r#"{"vfslock": "1", "ttl": 0}"#,
            r#"{"vfslock": 1.5, "ttl": 0}"#,
            r#"{"vfslock": -1, "ttl": 0}"#,
        ] {
            assert_eq!(parse(text.as_bytes()).format, LockFileFormat::Go, "{text}");
        }
    }

    #[test]
    fn invalid_utf8_inside_strings_is_tolerated_like_go() {
        let lock = parse(b"{\"hostname\": \"h\xff\", \"ttl\": 1}");
        assert_eq!(lock.format, LockFileFormat::Go);
        assert_eq!(lock.hostname, "h\u{fffd}");
    }

    #[test]
    fn to_wire_copies_fields() {
        let rec = record();
        let lock = parse(&rec.to_json());
        let modified = UNIX_EPOCH - Duration::from_secs(1);
        let wire = to_wire(&lock, Some(modified), true);
        assert_eq!(
            wire,
            LockMetadata {
                modified_unix_ns: Some(-1_000_000_000),
                stale: true,
                ..parsed_record()
            }
        );
        let corrupt = to_wire(&parse(b""), None, false);
        assert_eq!(corrupt.created_at_unix_ns, None);
        assert_eq!(corrupt.modified_unix_ns, None);
        assert_eq!(corrupt.format, LockFileFormat::Corrupt);
    }

    #[test]
    fn calendar_agrees_with_the_time_crate() {
        // Every day over several 400-year cycles, including year 0 and pre-epoch dates.
        let mut date = time::macros::date!(0000 - 01 - 01);
        let end = time::macros::date!(2500 - 01 - 01);
        while date < end {
            let days = (date - time::macros::date!(1970 - 01 - 01)).whole_days();
            let expected = (
                i64::from(date.year()),
                date.month() as i64,
                i64::from(date.day()),
            );
            assert_eq!(civil_from_days(days), expected);
            assert_eq!(days_from_civil(expected.0, expected.1, expected.2), days);
            date = date.next_day().unwrap();
        }
    }
}

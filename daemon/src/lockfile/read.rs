//! Reading a lock file, whoever wrote it: [`parse`] mirrors Go's `encoding/json` decoding into
//! the Go library's struct (key matching, duplicates, nulls, type errors), plus the vfslock
//! fields, and never fails: what cannot be read is [`LockFileFormat::Corrupt`].

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
use vfslock_proto::{LockFileFormat, LockMetadata};

use super::{parse_go_time, unix_ns};

/// A lock file as read, whoever wrote it: the wire's [`LockMetadata`], one shape for both, of
/// which the content sets every field but `modified_unix_ns` and `stale` (the store and the
/// caller tell those; see [`into_wire`](super::into_wire)). Reading never fails: unreadable
/// content becomes [`LockFileFormat::Corrupt`] with default fields. The file's own JSON shape is
/// [`LockRecord`](super::LockRecord) and the reader's key table, kept apart from the wire.
pub type ParsedLock = LockMetadata;

/// A lock file of `format` whose content tells nothing.
pub(super) fn empty(format: LockFileFormat) -> ParsedLock {
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
/// parse only costs the file its date (see [`is_stale`](super::is_stale)): the holder's identity stays readable.
fn go_type_ok(field: Field, value: &Value) -> bool {
    match field {
        Field::Ttl | Field::Pid => value.as_i64().is_some(),
        _ => value.is_string(),
    }
}

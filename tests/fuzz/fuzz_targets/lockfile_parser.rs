//! Bytes from a store into the lock-file reader, then the staleness rules with arbitrary times.
//!
//! Input layout (a short input is padded with zeros; see `examples/seed_corpus.rs`):
//!
//! | bytes  | content                                                        |
//! |--------|----------------------------------------------------------------|
//! | 0      | bit 0: the store reports a modification time                   |
//! | 1..13  | modification time: `i64` seconds from the epoch, `u32` nanos    |
//! | 13..25 | now: the same layout                                           |
//! | 25..37 | corrupt grace: `u64` seconds, `u32` nanos                       |
//! | 37..   | the lock file's bytes                                          |
#![no_main]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use vfslock_proto::LockFileFormat;
use vfslockd::lockfile::{self, ParsedLock};

const HEADER: usize = 37;

fn be<const N: usize>(bytes: &[u8]) -> [u8; N] {
    bytes.try_into().expect("sliced to size")
}

fn duration(secs: u64, nanos: [u8; 4]) -> Duration {
    Duration::new(secs, u32::from_be_bytes(nanos) % 1_000_000_000)
}

/// Any instant `SystemTime` can hold, from the whole `i64` range of seconds (clamped to the epoch
/// when it cannot hold it).
fn instant(bytes: &[u8]) -> SystemTime {
    let secs = i64::from_be_bytes(be(&bytes[..8]));
    let offset = duration(secs.unsigned_abs(), be(&bytes[8..12]));
    let t = if secs >= 0 {
        UNIX_EPOCH.checked_add(offset)
    } else {
        UNIX_EPOCH.checked_sub(offset)
    };
    t.unwrap_or(UNIX_EPOCH)
}

fuzz_target!(|data: &[u8]| {
    let mut header = [0u8; HEADER];
    let split = data.len().min(HEADER);
    header[..split].copy_from_slice(&data[..split]);
    let file = &data[split..];

    let modified = (header[0] & 1 == 1).then(|| instant(&header[1..13]));
    let now = instant(&header[13..25]);
    let grace = duration(u64::from_be_bytes(be(&header[25..33])), be(&header[33..37]));

    let lock: ParsedLock = lockfile::parse(file);
    if lock.format == LockFileFormat::Corrupt {
        assert!(lock.created_at_unix_ns.is_none() && lock.hostname.is_empty() && lock.ttl_ns == 0);
    }

    let stale = lockfile::is_stale(&lock, modified, now, grace);
    let at = lockfile::stale_at(&lock, modified, grace);
    // The two derive from one rule; `stale_at` gives the epoch for "stale already", which only
    // disagrees with `is_stale` for a `now` at or before the epoch.
    if now > UNIX_EPOCH {
        assert_eq!(stale, at.is_some_and(|t| now > t), "{lock:?} at {now:?}");
    }
    if lock.format == LockFileFormat::Foreign {
        assert!(!stale && at.is_none(), "a foreign lock never goes stale");
    }

    let wire = lockfile::to_wire(&lock, modified, stale);
    assert_eq!(wire.format, lock.format);
    assert_eq!(wire.ttl_ns, lock.ttl_ns);
    assert_eq!(wire.stale, stale);
    assert_eq!(
        wire.created_at_unix_ns,
        lock.created_at().map(lockfile::unix_ns)
    );
    assert_eq!(wire.modified_unix_ns, modified.map(lockfile::unix_ns));
    // The wire form must go through the codec like any other message.
    let bytes = vfslock_proto::codec::encode(&wire).expect("metadata encodes");
    let back: vfslock_proto::LockMetadata =
        vfslock_proto::codec::decode(&bytes).expect("metadata decodes");
    assert_eq!(back, wire);
});

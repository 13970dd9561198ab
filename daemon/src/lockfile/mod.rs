//! The lock file's JSON: what this daemon writes and how it reads what anyone wrote.
//!
//! A lock file is shared with processes that do not talk to this daemon: programs using the Go
//! library `github.com/c2fo/vfs/contrib/lockfile` (both its 1.0.x and 1.1+ spellings), other
//! daemons, and unrelated tools that happen to use the same name. The format written here is a
//! superset of the Go library's, so the Go library honours our locks, and the reader mirrors
//! Go's `encoding/json` decoder, so we honour theirs exactly as they would. Anything we cannot
//! read is still treated as held (see [`is_stale`]) rather than silently overwritten.
//!
//! # Layout
//!
//! - `write.rs`: [`LockRecord`], what this daemon writes, and its JSON written by hand;
//! - `read.rs`: [`parse`], which reads any lock file as Go's decoder would, into [`ParsedLock`];
//! - `stale.rs`: when a lock is stale ([`is_stale`], [`stale_at`]);
//! - `joint.rs`: lock files with a holder list (shared locks, semaphores): [`joint::Joint`];
//! - `go_time.rs`: times as Go formats and parses them, and the calendar arithmetic under them;
//! - `mod.rs`: the format version, and a lock as the wire protocol carries it ([`to_wire`]).

mod go_time;
pub mod joint;
mod read;
mod stale;
#[cfg(test)]
mod tests;
mod write;

pub use go_time::{format_go_time, parse_go_time, unix_ns};
pub use read::{parse, ParsedLock};
pub use stale::{is_stale, stale_at};
pub use write::LockRecord;

use std::time::SystemTime;

use vfslock_proto::LockMetadata;

/// Version of the vfslock additions to the Go format, written as `vfslock`.
pub const FORMAT_VERSION: u32 = 1;

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

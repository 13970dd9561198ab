//! Stores: where lock files live, behind the few operations the lock protocol needs.
//!
//! Every operation is atomic on its own: `create` never overwrites, `replace` and `delete` act
//! only when the file still holds the bytes the caller last saw, and fencing tokens are
//! committed in the same atomic step as the lock file they go into. On the local filesystem
//! the daemon makes its own syscalls ([`fs`]) because OpenDAL's `fs` service fsyncs every write
//! and either truncates in place or, with `atomic_write_dir`, turns create-if-not-exists into
//! check-then-rename. Memory goes through OpenDAL ([`memory`]), as the object stores will.

pub mod fs;
pub mod memory;

use std::time::SystemTime;

use crate::address::Scheme;
use crate::config::StaleRule;

/// Suffix of the companion file beside each lock file (`data.csv.lock.fence`): the OS lock
/// that makes check-and-replace atomic across daemons, and the fencing-token counter. It
/// persists, and is not an orphan.
pub const FENCE_SUFFIX: &str = ".fence";

/// A lock file as read: its bytes, and when the store says it was last written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The whole file.
    pub bytes: Vec<u8>,
    /// Last-modified time, where the store keeps one.
    pub modified: Option<SystemTime>,
}

/// A lock file as written by [`Store::create`] or [`Store::replace`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// The exact bytes written.
    pub bytes: Vec<u8>,
    /// The fencing token they carry, if one was issued.
    pub token: Option<u64>,
    /// The store's last-modified time right after the write, where it keeps one (to see the
    /// skew between our clock and the store's).
    pub modified: Option<SystemTime>,
}

/// The outcome of an atomic create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Created {
    /// The file did not exist and is now ours.
    Won(Written),
    /// A file was already there; nothing was written.
    Exists,
}

/// The outcome of a conditional replace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replaced {
    /// The file held the expected bytes and now holds ours.
    Done(Written),
    /// The file held other bytes (or was gone); nothing was changed.
    Changed,
}

/// The outcome of a conditional delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conditional {
    /// The file held the expected bytes and was deleted.
    Done,
    /// The file held other bytes (or was gone); nothing was changed.
    Changed,
}

/// Whether a write starts a new holding (which gets a fresh fencing token) or continues one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Token {
    /// Issue a token greater than every token issued before for this lock, and at least
    /// `floor` (the current time in microseconds), so that a lost counter cannot make tokens
    /// go backwards.
    Fresh {
        /// The least token to issue.
        floor: u64,
    },
    /// A renewal: no new token.
    Keep,
}

/// Builds the lock file's bytes once the token is known (`None` with [`Token::Keep`]).
pub type MakeLock = Box<dyn FnOnce(Option<u64>) -> Vec<u8> + Send>;

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    /// What happened and what to do.
    pub message: String,
}

impl StoreError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        StoreError {
            message: message.into(),
        }
    }
}

/// The next fencing token: above the counter, above the token of the file being replaced, and
/// at least the floor.
pub fn next_token(counter: u64, replaced: Option<u64>, floor: u64) -> u64 {
    counter
        .saturating_add(1)
        .max(replaced.map_or(0, |t| t.saturating_add(1)))
        .max(floor)
}

/// The token a lock file's bytes carry, if any.
pub fn token_in(bytes: &[u8]) -> Option<u64> {
    crate::lockfile::parse(bytes).token
}

/// One configured store.
#[derive(Debug)]
pub struct Store {
    backend: Backend,
    stale_rule: StaleRule,
}

#[derive(Debug)]
enum Backend {
    Fs(fs::FsStore),
    Memory(memory::MemoryStore),
}

impl Store {
    /// Creates `path` unless it exists, with a fresh token (at least `floor`).
    pub async fn create(
        &self,
        path: &str,
        floor: u64,
        make: MakeLock,
    ) -> Result<Created, StoreError> {
        match &self.backend {
            Backend::Fs(s) => s.create(path, floor, make).await,
            Backend::Memory(s) => s.create(path, floor, make).await,
        }
    }

    /// Reads `path`; `None` when it does not exist.
    pub async fn read(&self, path: &str) -> Result<Option<Observed>, StoreError> {
        match &self.backend {
            Backend::Fs(s) => s.read(path).await,
            Backend::Memory(s) => s.read(path).await,
        }
    }

    /// Replaces `path` if it still holds `expected`.
    pub async fn replace(
        &self,
        path: &str,
        expected: &[u8],
        token: Token,
        make: MakeLock,
    ) -> Result<Replaced, StoreError> {
        match &self.backend {
            Backend::Fs(s) => s.replace(path, expected, token, make).await,
            Backend::Memory(s) => s.replace(path, expected, token, make).await,
        }
    }

    /// Deletes `path` if it still holds `expected`.
    pub async fn delete(&self, path: &str, expected: &[u8]) -> Result<Conditional, StoreError> {
        match &self.backend {
            Backend::Fs(s) => s.delete(path, expected).await,
            Backend::Memory(s) => s.delete(path, expected).await,
        }
    }

    /// How this store judges a lock stale.
    pub fn stale_rule(&self) -> StaleRule {
        self.stale_rule
    }

    /// What `vfslockctl status` shows about this store.
    pub fn describe(&self) -> vfslock_proto::StoreInfo {
        let rule = match self.stale_rule {
            StaleRule::Seed => "stale rule: createdAt + ttl (+ skew allowance)",
            StaleRule::Watched => "stale rule: watched unchanged for a whole ttl",
        };
        let (scheme, what) = match &self.backend {
            Backend::Fs(_) => (
                "file",
                "local filesystem: O_EXCL create; replace and delete under an OFD lock on \
                 <lock>.fence; fencing tokens strictly increase across daemons, hosts and \
                 restarts (counter in the fence file, floor: the time in microseconds)",
            ),
            Backend::Memory(_) => (
                "mem",
                "this daemon's memory (OpenDAL): if-not-exists create; fencing tokens strictly \
                 increase, also across restarts (floor: the time in microseconds)",
            ),
        };
        vfslock_proto::StoreInfo {
            scheme: scheme.into(),
            description: format!("{what}; {rule}"),
        }
    }
}

/// The stores this daemon serves, by scheme.
#[derive(Debug, Default)]
pub struct Stores {
    fs: Option<Store>,
    memory: Option<Store>,
}

impl Stores {
    /// The stores enabled by the settings.
    pub fn new(settings: &crate::config::Settings) -> Result<Stores, StoreError> {
        Ok(Stores {
            fs: settings.file_store.map(|stale_rule| Store {
                backend: Backend::Fs(fs::FsStore),
                stale_rule,
            }),
            memory: match settings.mem_store {
                Some(stale_rule) => Some(Store {
                    backend: Backend::Memory(memory::MemoryStore::new()?),
                    stale_rule,
                }),
                None => None,
            },
        })
    }

    /// The store serving `scheme`, if it is configured.
    pub fn get(&self, scheme: Scheme) -> Option<&Store> {
        match scheme {
            Scheme::File => self.fs.as_ref(),
            Scheme::Mem => self.memory.as_ref(),
        }
    }

    /// Every configured store.
    pub fn all(&self) -> impl Iterator<Item = &Store> {
        self.fs.iter().chain(self.memory.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_exceed_the_counter_the_replaced_token_and_the_floor() {
        assert_eq!(next_token(5, None, 0), 6);
        assert_eq!(next_token(5, Some(9), 0), 10);
        assert_eq!(next_token(5, Some(9), 100), 100);
        assert_eq!(next_token(u64::MAX, None, 0), u64::MAX);
    }
}

//! Stores: where lock files live, behind the four operations the lock protocol needs.
//!
//! Every operation is atomic on its own: `create` never overwrites, `replace` and `delete` act
//! only when the file still holds the bytes the caller last saw. On the local filesystem the
//! daemon makes its own syscalls ([`fs`]) because OpenDAL's `fs` service fsyncs every write and
//! either truncates in place or, with `atomic_write_dir`, turns create-if-not-exists into
//! check-then-rename. Memory goes through OpenDAL ([`memory`]), as the object stores will.

pub mod fs;
pub mod memory;

use std::time::SystemTime;

use crate::address::Scheme;

/// A lock file as read: its bytes, and when the store says it was last written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The whole file.
    pub bytes: Vec<u8>,
    /// Last-modified time, where the store keeps one.
    pub modified: Option<SystemTime>,
}

/// The outcome of an atomic create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    /// The file did not exist and is now ours.
    Won,
    /// A file was already there; nothing was written.
    Exists,
}

/// The outcome of a conditional replace or delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conditional {
    /// The file held the expected bytes and was replaced or deleted.
    Done,
    /// The file held other bytes (or was gone); nothing was changed.
    Changed,
}

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

/// One configured store.
#[derive(Debug)]
pub enum Store {
    /// Local filesystem by direct syscalls.
    Fs(fs::FsStore),
    /// This daemon's memory, through OpenDAL.
    Memory(memory::MemoryStore),
}

impl Store {
    /// Creates `path` with `bytes` unless it exists.
    pub async fn create(&self, path: &str, bytes: Vec<u8>) -> Result<Created, StoreError> {
        match self {
            Store::Fs(s) => s.create(path, bytes).await,
            Store::Memory(s) => s.create(path, bytes).await,
        }
    }

    /// Reads `path`; `None` when it does not exist.
    pub async fn read(&self, path: &str) -> Result<Option<Observed>, StoreError> {
        match self {
            Store::Fs(s) => s.read(path).await,
            Store::Memory(s) => s.read(path).await,
        }
    }

    /// Replaces `path` with `bytes` if it still holds `expected`.
    pub async fn replace(
        &self,
        path: &str,
        bytes: Vec<u8>,
        expected: &[u8],
    ) -> Result<Conditional, StoreError> {
        match self {
            Store::Fs(s) => s.replace(path, bytes, expected).await,
            Store::Memory(s) => s.replace(path, bytes, expected).await,
        }
    }

    /// Deletes `path` if it still holds `expected`.
    pub async fn delete(&self, path: &str, expected: &[u8]) -> Result<Conditional, StoreError> {
        match self {
            Store::Fs(s) => s.delete(path, expected).await,
            Store::Memory(s) => s.delete(path, expected).await,
        }
    }

    /// What `vfslockctl status` shows about this store.
    pub fn describe(&self) -> vfslock_proto::StoreInfo {
        match self {
            Store::Fs(_) => vfslock_proto::StoreInfo {
                scheme: "file".into(),
                description: "local filesystem (O_EXCL create, rename replace, no fsync)".into(),
            },
            Store::Memory(_) => vfslock_proto::StoreInfo {
                scheme: "mem".into(),
                description: "this daemon's memory (OpenDAL memory, if-not-exists create)".into(),
            },
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
    pub fn new(file: bool, mem: bool) -> Result<Stores, StoreError> {
        Ok(Stores {
            fs: file.then(|| Store::Fs(fs::FsStore)),
            memory: if mem {
                Some(Store::Memory(memory::MemoryStore::new()?))
            } else {
                None
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

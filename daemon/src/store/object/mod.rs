//! Lock files in object stores (S3, GCS, Azure Blob) and on SFTP servers, through OpenDAL.
//!
//! # Compare-and-swap
//!
//! - create: `write_with(..).if_not_exists(true)` (`If-None-Match: *`, GCS `ifGenerationMatch=0`).
//! - replace: `write_with(..).if_match(etag)`, on GCS `if_version_match(generation)`.
//! - delete: `delete_with(..).if_match(etag)` / `if_version_match(generation)`.
//!
//! Every lock body carries a unique `lockId`, so an ETag (the MD5 of the body on S3) never
//! names two holdings (no ABA). No OpenDAL retry layer is used: a retried conditional write
//! whose first attempt landed would report "condition not met" for our own success. Instead a
//! conditional write that failed in transit, timed out or answered a server error is
//! *ambiguous*, and is resolved by reading the object back and comparing it with what we sent.
//!
//! # Fencing tokens
//!
//! The counter lives in a companion object `<lock key>.fence` (body and user metadata
//! `vfslocktoken`: the last token committed). A token is committed only once the lock is won,
//! by a conditional write on the fence's version read before the lock was created: a holder
//! can thus never hand out a token smaller than a holder before it, and if the commit finds the
//! fence moved on, a larger token is issued and the (still ours) lock file rewritten with it
//! before the client hears of the grant.
//!
//! # SFTP: create-only
//!
//! SFTP creates exclusively (`SSH_FXF_EXCL`) but has no compare-and-swap. It runs in a
//! create-only mode: acquire, renewal and release (read, compare `lockId`, delete) work because
//! only the holder ever writes an existing lock file; stealing, handoff and fencing tokens are
//! refused, since each would need an atomic check-and-replace.
//!
//! # Layout
//!
//! One concern a file, each an `impl ObjectStore` block of its own:
//! - `mod.rs`: the services spoken, the guarantees a store was found to give ([`Mode`]), the
//!   request counters and the [`ObjectStore`] itself;
//! - `request.rs`: one request to the store, with its timeout and retries, and the read-back
//!   that settles a conditional write whose outcome was lost;
//! - `fence.rs`: the fencing-token counter in `<lock key>.fence`, and committing a fresh token
//!   once a lock is won;
//! - `lock.rs`: the lock-file operations the [`Store`](super::Store) calls (create, read,
//!   replace, delete), SFTP's create-only variants included;
//! - `wire.rs`: the HTTP requests each store sends, counted where they are sent;
//! - `startup.rs`: the OpenDAL operator built from the config, and the startup probe that checks
//!   the store enforces the conditions the lock protocol needs;
//! - `mark.rs`: the waiting mark `<lock key>.waiting` (see [`crate::store::waiting`]);
//! - `ssh.rs`: the SFTP store's `ssh` control masters, ended at exit and, after a SIGKILL, at
//!   the next start.

mod fence;
mod lock;
mod mark;
mod request;
#[cfg(unix)]
pub mod ssh;
mod startup;
mod wire;

pub use startup::open;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opendal::{ErrorKind, Operator};

use super::{StoreError, Version};

/// The object-store services vfslock speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// Amazon S3 and compatible stores.
    S3,
    /// Google Cloud Storage.
    Gcs,
    /// Azure Blob Storage.
    Azblob,
    /// An SFTP server (create-only mode).
    Sftp,
}

impl Service {
    /// Whether versions are generations (GCS) rather than ETags.
    fn uses_generations(self) -> bool {
        self == Service::Gcs
    }
}

/// Which guarantees a store was found to give by its startup probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Conditional create, overwrite and delete all enforced: steals, handoff and fencing.
    Full,
    /// Only exclusive create (SFTP): no steals, handoff or tokens.
    CreateOnly,
    /// The probe found a missing capability and the config accepted it: conditions are still
    /// sent but the server may not enforce them, so mutual exclusion is not guaranteed.
    Weak(String),
}

/// Store requests made, by operation, and what they cost the network.
#[derive(Debug, Default)]
pub struct Counters {
    /// Conditional creates of lock files.
    pub creates: AtomicU64,
    /// Reads of lock files (stat and body).
    pub reads: AtomicU64,
    /// Conditional overwrites of lock files (renewal, steal, handoff).
    pub replaces: AtomicU64,
    /// Conditional deletes of lock files.
    pub deletes: AtomicU64,
    /// Reads and commits of fence (token counter) objects.
    pub fences: AtomicU64,
    /// Ambiguous writes resolved by reading back.
    pub ambiguous: AtomicU64,
    /// Writes and reads of the waiting mark (`<lock key>.waiting`).
    pub marks: AtomicU64,
    /// HTTP requests in all, counted as they are sent (`wire.rs`); SFTP round trips.
    pub requests: Arc<AtomicU64>,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters as name/value pairs, for `vfslockctl status`.
    fn snapshot(&self) -> Vec<(String, u64)> {
        [
            ("creates", &self.creates),
            ("reads", &self.reads),
            ("replaces", &self.replaces),
            ("deletes", &self.deletes),
            ("fences", &self.fences),
            ("ambiguous", &self.ambiguous),
            ("marks", &self.marks),
            ("requests", &*self.requests),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.load(Ordering::Relaxed)))
        .collect()
    }
}

/// One object store (or SFTP server) serving a URL prefix.
#[derive(Debug)]
pub struct ObjectStore {
    operator: Operator,
    service: Service,
    mode: Mode,
    fencing: bool,
    request_timeout: Duration,
    /// Requests made, shown by `vfslockctl status`.
    pub counters: Counters,
    /// The fence version and counter this daemon last committed, per lock key: the expected
    /// version of the next commit, which saves reading the fence first. If another daemon
    /// committed since, the commit's compare-and-swap fails and the fence is read afresh.
    fences: std::sync::Mutex<std::collections::HashMap<String, (Option<Version>, u64)>>,
    #[cfg(feature = "faults")]
    faults: Option<super::faults::Faults>,
}

const ATTEMPTS: usize = 4;

fn failed(action: &str, key: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::new(format!("cannot {action} {key}: {e}"))
}

/// Whether an error says the condition was not met (someone else's version is there).
fn lost_condition(e: &opendal::Error) -> bool {
    // Real S3 may answer a lost race with 409 ConditionalRequestConflict, which OpenDAL reports
    // as a temporary `Conflict`: it means this request did not apply.
    matches!(e.kind(), ErrorKind::ConditionNotMatch | ErrorKind::Conflict)
}

impl ObjectStore {
    /// A store over `operator`; `probe` it before use.
    pub fn new(
        operator: Operator,
        service: Service,
        fencing: bool,
        request_timeout: Duration,
    ) -> Self {
        let counters = Counters::default();
        let operator = if service == Service::Sftp {
            operator
        } else {
            wire::counted(operator, counters.requests.clone())
        };
        ObjectStore {
            operator,
            service,
            mode: if service == Service::Sftp {
                Mode::CreateOnly
            } else {
                Mode::Full
            },
            fencing: fencing && service != Service::Sftp,
            request_timeout,
            counters,
            fences: Default::default(),
            #[cfg(feature = "faults")]
            faults: None,
        }
    }

    /// Injects faults (tests only).
    #[cfg(feature = "faults")]
    pub fn with_faults(mut self, faults: super::faults::Faults) -> Self {
        self.faults = Some(faults);
        self
    }

    /// The guarantees in force.
    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    /// The request counters (and, with the `faults` feature, faults injected), for
    /// `vfslockctl status`.
    pub fn counter_snapshot(&self) -> Vec<(String, u64)> {
        #[allow(unused_mut)]
        let mut counters = self.counters.snapshot();
        #[cfg(feature = "faults")]
        if let Some(faults) = &self.faults {
            counters.push((
                "injected".to_owned(),
                faults.injected.load(Ordering::Relaxed),
            ));
        }
        counters
    }

    /// Whether fresh fencing tokens are issued.
    pub fn fencing(&self) -> bool {
        self.fencing
    }

    /// Whether a lock file can be replaced conditionally (steal, handoff).
    pub fn can_replace(&self) -> bool {
        self.mode != Mode::CreateOnly
    }

    /// Counts one SFTP round trip; HTTP requests are counted as they are sent (`wire.rs`).
    fn round_trip(&self) {
        if self.service == Service::Sftp {
            Counters::bump(&self.counters.requests);
        }
    }

    /// Accepts a missing capability (the config's `accept-weak`).
    pub fn accept_weak(&mut self, missing: String) {
        self.mode = Mode::Weak(missing);
    }
}

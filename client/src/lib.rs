//! Advisory locks on files anywhere (local disk, memory, later object stores), held through the
//! per-host daemon `vfslockd`.
//!
//! A lock on `data.csv` is the companion file `data.csv.lock`, in the format of the Go library
//! `c2fo/vfs contrib/lockfile`. The daemon creates it atomically, renews its lease while this
//! process lives, deletes it when this process releases the lock, exits or crashes, and queues
//! waiters first come first served. This crate only talks to the daemon over its local socket;
//! it never touches a store itself.
//!
//! The names follow the Go library: [`Client::new_lock`] ≈ `NewLock`, [`Lock::acquire`] ≈
//! `Acquire`, [`Client::with_lock`] ≈ `WithLock`, [`LockOptions`] ≈ `WithTTL`, `WithOwnerID`,
//! `OnStale`, and [`Error::is_already_held`] ≈ `errors.Is(err, ErrLockAlreadyHeld)`.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use vfslock::{Client, LockOptions};
//!
//! # async fn example() -> Result<(), vfslock::Error> {
//! let client = Client::connect_default().await?;
//!
//! // Try once, as the Go library's Acquire does.
//! let mut lock = client.new_lock("file:///srv/inbox/data.csv", LockOptions::default());
//! match lock.acquire().await {
//!     Ok(()) => { /* process the file */ lock.release().await?; }
//!     Err(e) if e.is_already_held() => println!("busy: held by {:?}", e.holder()),
//!     Err(e) => return Err(e),
//! }
//!
//! // Or wait in line (no retry loop), run, and release on every path.
//! let options = LockOptions::default()
//!     .ttl(Duration::from_secs(300))
//!     .owner_id("ingestion-service-1")
//!     .wait_timeout(Duration::from_secs(60))
//!     .on_stale(|meta| {
//!         println!("taking over a stale lock of {} (pid {})", meta.hostname, meta.pid);
//!         Ok::<(), String>(())
//!     });
//! let rows = client
//!     .with_lock("mem:///inbox/data.csv", options, async |_lock| Ok::<_, std::io::Error>(42))
//!     .await
//!     .map_err(|e| e.to_string());
//! # let _ = rows;
//! # Ok(())
//! # }
//! ```
//!
//! Several targets are taken together, all or none, with [`Client::lock_all`] (in an order
//! that cannot deadlock), and [`LockOptions::max_hold`] caps how long a lease may be held.
//!
//! Programs without an async runtime use [`blocking`], with the same names.
//!
//! # When the daemon restarts
//!
//! Locks outlive a crash or a planned restart of `vfslockd` if it is back within its resume
//! window: the client reconnects and takes each back by itself, and one not back in time is
//! reported by [`Lock::lost`]. [`Client::events`] tells the application that it happened and
//! what came through:
//!
//! ```no_run
//! use vfslock::{Client, ClientEvent};
//!
//! # async fn example(client: Client) {
//! let mut events = client.events();
//! while let Some(event) = events.next().await {
//!     match event {
//!         ClientEvent::DaemonGone { resuming, .. } => {
//!             eprintln!("vfslockd went away; resuming {resuming:?}")
//!         }
//!         ClientEvent::DaemonRestarted { resumed, lost } => {
//!             eprintln!("vfslockd restarted; resumed {resumed:?}, lost {lost:?}")
//!         }
//!         other => eprintln!("{other:?}"),
//!     }
//! }
//! # }
//! ```

pub mod blocking;
mod client;
mod connection;
mod error;
mod events;
mod link;
mod lock;
mod released;
mod set;
pub mod socket;
mod spin;
mod target;
pub mod transport;

pub use client::Client;
pub use error::{Error, ErrorKind, WithLockError};
pub use events::{ClientEvent, Events, LockRef, LostLock};
pub use lock::{Lock, LockOptions, Waiting, DEFAULT_TTL};
pub use set::LockSet;
pub use target::resolve_target;
/// A lock file's metadata, as the daemon read it: the protocol's own type, with its times as
/// `SystemTime` through [`LockMetadata::created_at`], [`LockMetadata::ttl`],
/// [`LockMetadata::expires_at`] and the like.
pub use vfslock_proto::LockMetadata;
pub use vfslock_proto::{
    ForeignHolder, HolderView, LastRestart, ListEntry, ListedLock, LockFileFormat, LockMode,
    LockView, QueuedLock, RestartInfo, StatusInfo, StoreInfo, Welcome,
};

/// A detached lease: held by a uid and a lock id rather than a connection; see
/// [`Client::acquire_detached`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetachedLease {
    /// The normalized target.
    pub target: String,
    /// The lease's lock id, which releases and renews it.
    pub lock_id: String,
    /// Its fencing token, where the store gives one.
    pub token: Option<u64>,
    /// The lock file as written.
    pub metadata: LockMetadata,
}

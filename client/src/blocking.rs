//! The same API for programs without an async runtime.
//!
//! A [`Client`] here owns a small Tokio runtime (one worker thread) that runs the connection in
//! the background, so events such as a lost lease are heard while the program does its work.
//!
//! ```no_run
//! use vfslock::{blocking::Client, LockOptions};
//!
//! let client = Client::connect_default()?;
//! let mut lock = client.new_lock("/srv/inbox/data.csv", LockOptions::default());
//! lock.acquire()?;
//! // ... work on the file ...
//! lock.release()?;
//! # Ok::<(), vfslock::Error>(())
//! ```

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Runtime;
use vfslock_proto::{ListEntry, StatusInfo, WaitMode};

use crate::error::{Error, ErrorKind, WithLockError};
use crate::{ClientEvent, LockMetadata, LockOptions};

/// A blocking connection to the local `vfslockd`; see [`crate::Client`].
#[derive(Clone, Debug)]
pub struct Client {
    inner: crate::Client,
    runtime: Arc<Runtime>,
}

/// A blocking lock; see [`crate::Lock`]. Dropping a held lock releases it.
#[derive(Debug)]
pub struct Lock {
    inner: crate::Lock,
    runtime: Arc<Runtime>,
}

impl Client {
    /// Connects to the daemon listening at `path`.
    pub fn connect(path: impl AsRef<Path>) -> Result<Client, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("vfslock-client")
            .enable_all()
            .build()
            .map_err(|e| Error::new(ErrorKind::Other, format!("cannot start a runtime: {e}")))?;
        let inner = runtime.block_on(crate::Client::connect(path))?;
        Ok(Client {
            inner,
            runtime: Arc::new(runtime),
        })
    }

    /// Connects to the default socket; see [`crate::Client::connect_default`].
    pub fn connect_default() -> Result<Client, Error> {
        Client::connect(crate::socket::client_default_socket_path())
    }

    /// A lock on `target`, not yet taken.
    pub fn new_lock(&self, target: impl Into<String>, options: LockOptions) -> Lock {
        Lock {
            inner: self.inner.new_lock(target, options),
            runtime: self.runtime.clone(),
        }
    }

    /// Takes the lock, runs `run`, and releases the lock on every path; see
    /// [`crate::Client::with_lock`]. A blocking closure cannot be stopped from outside: if the
    /// lease is lost while it runs, it runs to its end and the result is then a lock error of
    /// kind [`ErrorKind::LeaseLost`] ([`ErrorKind::MaxHoldReached`] when it was held for its
    /// max-hold; check [`Lock::is_held`] inside long work).
    pub fn with_lock<T, E>(
        &self,
        target: impl Into<String>,
        options: LockOptions,
        run: impl FnOnce(&Lock) -> Result<T, E>,
    ) -> Result<T, WithLockError<E>> {
        let wait = match options.wait {
            None => WaitMode::Try,
            Some(timeout) => WaitMode::Wait { timeout },
        };
        let mut lock = self.new_lock(target, options);
        self.runtime
            .block_on(lock.inner.acquire_with(wait))
            .map_err(WithLockError::Lock)?;
        let outcome = run(&lock);
        let released = lock.release();
        settle(outcome, released)
    }

    /// Returns as soon as `target` is not held, without taking it; see
    /// [`crate::Client::wait_released`].
    pub fn wait_released(&self, target: &str, timeout: Option<Duration>) -> Result<(), Error> {
        self.runtime
            .block_on(self.inner.wait_released(target, timeout))
    }

    /// Reads the lock file of `target`; `None` when there is none.
    pub fn metadata(&self, target: &str) -> Result<Option<LockMetadata>, Error> {
        self.runtime.block_on(self.inner.metadata(target))
    }

    /// Locks held and queued through this daemon.
    pub fn list(&self) -> Result<Vec<ListEntry>, Error> {
        self.runtime.block_on(self.inner.list())
    }

    /// The daemon's status.
    pub fn status(&self) -> Result<StatusInfo, Error> {
        self.runtime.block_on(self.inner.status())
    }

    /// The daemon's metrics in the Prometheus text format; see [`crate::Client::metrics`].
    pub fn metrics(&self) -> Result<String, Error> {
        self.runtime.block_on(self.inner.metrics())
    }

    /// One round trip to the daemon.
    pub fn ping(&self) -> Result<Duration, Error> {
        self.runtime.block_on(self.inner.ping())
    }

    /// Subscribes to what happens to the connection to the daemon; see
    /// [`crate::Client::events`].
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use vfslock::{blocking::Client, ClientEvent};
    ///
    /// let client = Client::connect_default()?;
    /// let mut events = client.events();
    /// std::thread::spawn(move || {
    ///     for event in events {
    ///         if let ClientEvent::DaemonRestarted { resumed, lost } = event {
    ///             eprintln!("vfslockd restarted: {resumed:?} resumed, {lost:?} lost");
    ///         }
    ///     }
    /// });
    /// # Ok::<(), vfslock::Error>(())
    /// ```
    pub fn events(&self) -> Events {
        Events {
            inner: self.inner.events(),
            runtime: self.runtime.clone(),
        }
    }
}

/// A blocking subscription to a client's events; see [`crate::Events`]. As an iterator it
/// waits for each event and ends once the client is gone.
#[derive(Debug)]
pub struct Events {
    inner: crate::Events,
    runtime: Arc<Runtime>,
}

impl Events {
    /// The next event, waiting at most `timeout` for it; `None` when none came in time or the
    /// client is gone.
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<ClientEvent> {
        let next = tokio::time::timeout(timeout, self.inner.next());
        self.runtime.block_on(next).ok().flatten()
    }

    /// The next event if one is queued now, without waiting.
    pub fn try_next(&mut self) -> Option<ClientEvent> {
        self.inner.try_next()
    }
}

impl Iterator for Events {
    type Item = ClientEvent;

    /// Waits for the next event; `None` once the client is gone.
    fn next(&mut self) -> Option<ClientEvent> {
        self.runtime.block_on(self.inner.next())
    }
}

/// The result of a blocking `with_lock`-style helper, whose closure ran to its end: a lease
/// lost meanwhile wins over the closure's own outcome.
fn settle<T, E>(outcome: Result<T, E>, released: Result<(), Error>) -> Result<T, WithLockError<E>> {
    match (outcome, released) {
        (_, Err(e)) if e.is_lease_lost() => Err(WithLockError::Lock(e)),
        (Err(e), _) => Err(WithLockError::Closure(e)),
        (Ok(value), released) => released.map(|()| value).map_err(WithLockError::Lock),
    }
}

impl Lock {
    /// Tries once; see [`crate::Lock::acquire`].
    pub fn acquire(&mut self) -> Result<(), Error> {
        self.runtime.block_on(self.inner.acquire())
    }

    /// Waits up to `timeout`; see [`crate::Lock::acquire_timeout`].
    pub fn acquire_timeout(&mut self, timeout: Duration) -> Result<(), Error> {
        self.runtime.block_on(self.inner.acquire_timeout(timeout))
    }

    /// Waits as long as it takes; see [`crate::Lock::acquire_wait`].
    pub fn acquire_wait(&mut self) -> Result<(), Error> {
        self.runtime.block_on(self.inner.acquire_wait())
    }

    /// Releases the lock; releasing an unheld lock is not an error.
    pub fn release(&mut self) -> Result<(), Error> {
        self.runtime.block_on(self.inner.release())
    }

    /// Whether the lock is held and its lease not known to be lost.
    pub fn is_held(&self) -> bool {
        self.inner.is_held()
    }

    /// The unique id of this holding, while held.
    pub fn lock_id(&self) -> Option<&str> {
        self.inner.lock_id()
    }

    /// The fencing token of this holding; see [`crate::Lock::token`].
    pub fn token(&self) -> Option<u64> {
        self.inner.token()
    }

    /// How long this holding outlives its daemon; see [`crate::Lock::resume_window`].
    pub fn resume_window(&self) -> Option<Duration> {
        self.inner.resume_window()
    }

    /// Waits until the lease is lost; see [`crate::Lock::lost`].
    pub fn lost(&self) -> String {
        self.runtime.block_on(self.inner.lost())
    }

    /// The target's lock file now; see [`crate::Lock::metadata`].
    pub fn metadata(&self) -> Result<LockMetadata, Error> {
        self.runtime.block_on(self.inner.metadata())
    }

    /// Time since the lock file's `createdAt`.
    pub fn age(&self) -> Result<Duration, Error> {
        self.runtime.block_on(self.inner.age())
    }

    /// Whether the target's lock file is stale now.
    pub fn is_stale(&self) -> Result<bool, Error> {
        self.runtime.block_on(self.inner.is_stale())
    }
}

/// Blocking locks on several targets held together; see [`crate::LockSet`]. Dropping it
/// releases every lock of the set.
#[derive(Debug)]
pub struct LockSet {
    inner: crate::LockSet,
    runtime: Arc<Runtime>,
}

impl Client {
    /// Takes every lock of `targets` or none; see [`crate::Client::lock_all`].
    pub fn lock_all<I, T>(&self, targets: I, options: LockOptions) -> Result<LockSet, Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let inner = self
            .runtime
            .block_on(self.inner.lock_all(targets, options))?;
        Ok(LockSet {
            inner,
            runtime: self.runtime.clone(),
        })
    }

    /// Takes every lock of `targets`, runs `run`, and releases them all on every path; see
    /// [`crate::Client::with_lock_all`]. As with [`Client::with_lock`], a blocking closure
    /// cannot be stopped from outside: a lease lost while it runs is reported when it returns
    /// (check [`LockSet::is_held`] inside long work).
    pub fn with_lock_all<I, T, R, E>(
        &self,
        targets: I,
        options: LockOptions,
        run: impl FnOnce(&LockSet) -> Result<R, E>,
    ) -> Result<R, WithLockError<E>>
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let mut set = self
            .lock_all(targets, options)
            .map_err(WithLockError::Lock)?;
        let outcome = run(&set);
        let released = set.release();
        settle(outcome, released)
    }
}

impl LockSet {
    /// The locks, in the order they were taken; see [`crate::LockSet::locks`].
    pub fn locks(&self) -> &[crate::Lock] {
        self.inner.locks()
    }

    /// The lock on `target` as given; see [`crate::LockSet::get`].
    pub fn get(&self, target: &str) -> Option<&crate::Lock> {
        self.inner.get(target)
    }

    /// Whether every lock of the set is held.
    pub fn is_held(&self) -> bool {
        self.inner.is_held()
    }

    /// Waits until the lease on any lock of the set is lost; see [`crate::LockSet::lost`].
    pub fn lost(&self) -> String {
        self.runtime.block_on(self.inner.lost())
    }

    /// Releases every lock of the set; see [`crate::LockSet::release`].
    pub fn release(&mut self) -> Result<(), Error> {
        self.runtime.block_on(self.inner.release())
    }
}

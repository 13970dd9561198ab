//! The handle applications hold: one connection to `vfslockd`, shared by all its locks.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vfslock_proto::{
    ListEntry, ListedLock, LockMode, LockView, QueuedLock, Request, Response, RestartInfo,
    StatusInfo, WaitMode, Welcome,
};

use crate::connection::Connection;
use crate::error::{Error, ErrorKind, WithLockError};
use crate::link::Link;
use crate::{socket, DetachedLease, Lock, LockMetadata, LockOptions};

/// A connection to the local `vfslockd`. Cheap to clone; every clone and every [`Lock`] made
/// from it share one socket, and the daemon releases everything held through it when the last
/// of them is dropped (or the process dies).
///
/// When the daemon goes away (a restart, a crash), the `Client` reconnects to the same socket
/// by itself: each lock held through it is taken back, with its lock id and token, if the
/// daemon is back within its resume window ([`Lock::resume_window`]), and is lost otherwise
/// ([`Lock::lost`] says so); an acquire still waiting carries on at the restarted daemon, in its
/// place. [`Client::events`] tells what happened. A long-lived service keeps working once the
/// daemon is back.
#[derive(Clone)]
pub struct Client {
    pub(crate) link: Arc<Link>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("socket", &self.link.path())
            .finish()
    }
}

fn unexpected(what: &str, response: Response) -> Error {
    Error::new(
        ErrorKind::Protocol,
        format!("vfslockd answered {what} with {response:?}"),
    )
}

impl Client {
    /// Connects to the daemon listening at `path`.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Client, Error> {
        Ok(Client {
            link: Link::open(path.as_ref()).await?,
        })
    }

    /// Connects to `$VFSLOCK_SOCKET`, else the system daemon's socket if it exists, else the
    /// user's (`$XDG_RUNTIME_DIR/vfslock/vfslockd.sock`).
    pub async fn connect_default() -> Result<Client, Error> {
        Client::connect(socket::client_default_socket_path()).await
    }

    /// The socket this client is connected to.
    pub fn socket_path(&self) -> &Path {
        self.link.path()
    }

    /// What the daemon said about itself when the current connection opened.
    pub fn daemon(&self) -> Welcome {
        self.link.current().welcome().clone()
    }

    /// The current connection's file descriptor, for handing the connection (and with it the
    /// locks it holds) to a child process, as `vfslockctl run` does.
    #[cfg(unix)]
    pub fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.link.current().raw_fd()
    }

    /// The connection a new request goes on (see [`Link::live`]).
    pub(crate) async fn conn(&self) -> Result<Arc<Connection>, Error> {
        self.link.live().await
    }

    /// A connection to the daemon, trying again with backoff while none answers, for at most
    /// `within` (a daemon that restarts comes back within its resume window).
    pub(crate) async fn reconnect_within(
        &self,
        within: Duration,
    ) -> Result<Arc<Connection>, Error> {
        self.link.live_within(within).await
    }

    /// A lock on `target` (a URL such as `file:///srv/data.csv`, `mem:///jobs/a` or
    /// `s3://bucket/key`, or a local path, which may be relative to the working directory:
    /// [`crate::resolve_target`]), not yet taken.
    pub fn new_lock(&self, target: impl Into<String>, options: LockOptions) -> Lock {
        Lock::new(self.clone(), target.into(), options)
    }

    /// Takes the lock on `target`, runs `run`, and releases the lock on every path: success,
    /// error and panic (the Go library's `WithLock`).
    ///
    /// Without [`LockOptions::wait_timeout`] or [`LockOptions::wait_forever`] it tries once and
    /// fails with an already-held error. If the lease is lost while the closure runs, the
    /// closure is stopped (its future dropped) and the result is a lock error of kind
    /// [`ErrorKind::LeaseLost`]. The closure's own error comes back as
    /// [`WithLockError::Closure`], lock failures as [`WithLockError::Lock`].
    pub async fn with_lock<T, E, F>(
        &self,
        target: impl Into<String>,
        options: LockOptions,
        run: F,
    ) -> Result<T, WithLockError<E>>
    where
        F: AsyncFnOnce(&Lock) -> Result<T, E>,
    {
        let wait = match options.wait {
            None => WaitMode::Try,
            Some(timeout) => WaitMode::Wait { timeout },
        };
        let mut lock = self.new_lock(target, options);
        lock.acquire_with(wait).await.map_err(WithLockError::Lock)?;
        // A panic in `run` unwinds through `lock`, whose `Drop` releases it. A lost lease
        // stops the closure: its future is dropped at its next await point.
        let outcome = tokio::select! {
            outcome = run(&lock) => Some(outcome),
            _ = lock.lost() => None,
        };
        let released = lock.release().await;
        WithLockError::settle(
            outcome,
            released,
            "the lease was lost while the closure ran",
        )
    }

    /// Takes a detached lease on `target`: it belongs to this process's uid and the returned
    /// lock id, not to this connection, so it outlives the connection and the daemon's restart.
    /// It is not renewed: it lasts `ttl` (required, above zero) unless
    /// [`renew_detached`](Client::renew_detached) extends it or
    /// [`release_detached`](Client::release_detached) ends it. With `wait`, waits up to that long
    /// (`Some(None)`: for ever) instead of failing at once when the lock is held.
    pub async fn acquire_detached(
        &self,
        target: impl Into<String>,
        ttl: Duration,
        owner_id: Option<String>,
        wait: Option<Option<Duration>>,
    ) -> Result<DetachedLease, Error> {
        self.acquire_detached_in(target, ttl, owner_id, wait, LockMode::Exclusive)
            .await
    }

    /// [`Client::acquire_detached`] in `mode`: a detached lease that is shared, or takes one
    /// slot of a semaphore (see [`LockOptions::shared`] and [`LockOptions::slots`]). It is an
    /// entry of its own in the lock file, released or renewed by its lock id like any
    /// detached lease.
    pub async fn acquire_detached_in(
        &self,
        target: impl Into<String>,
        ttl: Duration,
        owner_id: Option<String>,
        wait: Option<Option<Duration>>,
        mode: LockMode,
    ) -> Result<DetachedLease, Error> {
        if ttl.is_zero() {
            return Err(Error::new(
                ErrorKind::Other,
                "a detached lease needs a TTL above zero: nothing renews it",
            ));
        }
        let mut options = LockOptions::default().ttl(ttl);
        options.owner_id = owner_id;
        options.detached = true;
        options.mode = mode;
        let mut lock = self.new_lock(target, options);
        let wait = match wait {
            None => WaitMode::Try,
            Some(timeout) => WaitMode::Wait { timeout },
        };
        lock.acquire_with(wait).await?;
        lock.into_detached()
            .ok_or_else(|| Error::new(ErrorKind::Protocol, "granted without a holding"))
    }

    /// Ends a detached lease by its lock id (this uid's, or any for an admin). Ending one that
    /// is gone already is not an error.
    pub async fn release_detached(&self, target: &str, lock_id: &str) -> Result<bool, Error> {
        match self
            .conn()
            .await?
            .request(Request::Release {
                target: crate::resolve_target(target)?.into_owned(),
                lock_id: lock_id.to_owned(),
            })
            .await?
        {
            Response::Released { held } => Ok(held),
            other => Err(unexpected("a release", other)),
        }
    }

    /// Extends a detached lease by its TTL (or `ttl`) from now; returns the lock file as now
    /// written.
    pub async fn renew_detached(
        &self,
        target: &str,
        lock_id: &str,
        ttl: Option<Duration>,
    ) -> Result<LockMetadata, Error> {
        match self
            .conn()
            .await?
            .request(Request::Renew {
                target: crate::resolve_target(target)?.into_owned(),
                lock_id: lock_id.to_owned(),
                ttl,
            })
            .await?
        {
            Response::Renewed(meta) => Ok(meta),
            other => Err(unexpected("a renewal", other)),
        }
    }

    /// Removes whoever holds `target`'s lock (like `terraform force-unlock`). Only root and
    /// members of the daemon's admin group may; `reason` goes to the daemon's log. Returns the
    /// lock file that was removed.
    pub async fn break_lock(
        &self,
        target: &str,
        reason: &str,
    ) -> Result<Option<LockMetadata>, Error> {
        match self
            .conn()
            .await?
            .request(Request::Break {
                target: crate::resolve_target(target)?.into_owned(),
                reason: reason.to_owned(),
            })
            .await?
        {
            Response::Broken(meta) => Ok(meta),
            other => Err(unexpected("a break", other)),
        }
    }

    /// Reads the lock file of `target`, whoever wrote it; `None` when there is none.
    pub async fn metadata(&self, target: &str) -> Result<Option<LockMetadata>, Error> {
        match self
            .conn()
            .await?
            .request(Request::Metadata {
                target: crate::resolve_target(target)?.into_owned(),
            })
            .await?
        {
            Response::Metadata(meta) => Ok(meta),
            other => Err(unexpected("a metadata request", other)),
        }
    }

    /// The target's lock file with every holder it lists (a shared lock's or semaphore's
    /// entries; one holder for an exclusive file), or `None` when it is not locked. A daemon of
    /// protocol 2 or older has no such request: then every holder is the file's one, from
    /// [`Client::metadata`].
    pub async fn describe(&self, target: &str) -> Result<Option<LockView>, Error> {
        // One connection for the question and the request: a reconnect in between could
        // reach an older daemon.
        let conn = self.conn().await?;
        if conn.welcome().protocol_version < 3 {
            return Ok(self.metadata(target).await?.map(|lock| LockView {
                holders: vec![lock.whole_file_holder(false)],
                lock,
                mode: LockMode::Exclusive,
            }));
        }
        match conn
            .request(Request::Describe {
                target: crate::resolve_target(target)?.into_owned(),
            })
            .await?
        {
            Response::Described(view) => Ok(view),
            other => Err(unexpected("a describe request", other)),
        }
    }

    /// Locks held and queued through this daemon, with their modes and number of holders
    /// (exclusive, one holder each, from a daemon of protocol 2 or older).
    pub async fn list_modes(&self) -> Result<Vec<ListedLock>, Error> {
        let conn = self.conn().await?;
        if conn.welcome().protocol_version < 3 {
            return Ok(self
                .list()
                .await?
                .into_iter()
                .map(|entry| ListedLock {
                    holders: u32::from(entry.lock_id.is_some()),
                    entry,
                    mode: LockMode::Exclusive,
                })
                .collect());
        }
        match conn.request(Request::ListModes).await? {
            Response::ListedModes(listed) => Ok(listed),
            other => Err(unexpected("a list request", other)),
        }
    }

    /// Locks held and queued through this daemon.
    pub async fn list(&self) -> Result<Vec<ListEntry>, Error> {
        match self.conn().await?.request(Request::List).await? {
            Response::List(entries) => Ok(entries),
            other => Err(unexpected("a list request", other)),
        }
    }

    /// The daemon's status.
    pub async fn status(&self) -> Result<StatusInfo, Error> {
        match self.conn().await?.request(Request::Status).await? {
            Response::Status(status) => Ok(status),
            other => Err(unexpected("a status request", other)),
        }
    }

    /// How often the daemon restarted and what its latest restart kept of the locks held
    /// through the run before it. A daemon older than protocol 7 has no such figures: then an
    /// error of kind [`ErrorKind::Unsupported`].
    pub async fn restarts(&self) -> Result<RestartInfo, Error> {
        // One connection for the question and the request: a reconnect in between could
        // reach an older daemon.
        let conn = self.conn().await?;
        if conn.welcome().protocol_version < 7 {
            return Err(conn.too_old("the restart figures", 7));
        }
        match conn.request(Request::Restarts).await? {
            Response::Restarts(info) => Ok(info),
            other => Err(unexpected("a restarts request", other)),
        }
    }

    /// What [`Client::list_modes`] lists, with each target's oldest waiter and the last holder
    /// the daemon saw in its lock file from elsewhere. A daemon older than protocol 9 knows
    /// neither: its list comes back with both `None`.
    pub async fn list_queues(&self) -> Result<Vec<QueuedLock>, Error> {
        let conn = self.conn().await?;
        if conn.welcome().protocol_version < 9 {
            drop(conn);
            let listed = self.list_modes().await?;
            return Ok(listed
                .into_iter()
                .map(|listed| QueuedLock {
                    listed,
                    oldest_wait: None,
                    foreign_holder: None,
                })
                .collect());
        }
        match conn.request(Request::ListQueues).await? {
            Response::ListedQueues(listed) => Ok(listed),
            other => Err(unexpected("a list request", other)),
        }
    }

    /// The daemon's metrics, in the Prometheus text exposition format (version 0.0.4): what
    /// its HTTP listener serves a scraper, for a textfile collector or a look. A daemon older
    /// than protocol 8 has none: an error of kind [`ErrorKind::Unsupported`]; a daemon whose
    /// config turned metrics off answers with the same kind, saying so.
    pub async fn metrics(&self) -> Result<String, Error> {
        let conn = self.conn().await?;
        if conn.welcome().protocol_version < 8 {
            return Err(conn.too_old("metrics", 8));
        }
        match conn.request(Request::Metrics).await? {
            Response::Metrics(text) => Ok(text),
            other => Err(unexpected("a metrics request", other)),
        }
    }

    /// One round trip to the daemon; returns how long it took.
    pub async fn ping(&self) -> Result<Duration, Error> {
        let start = Instant::now();
        match self.conn().await?.request(Request::Ping).await? {
            Response::Pong => Ok(start.elapsed()),
            other => Err(unexpected("a ping", other)),
        }
    }
}

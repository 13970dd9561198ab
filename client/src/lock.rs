//! A lock on one target, and the options it is taken with.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use vfslock_proto::{
    AcquireRequest, ClientFrame, LockMode, Request, RequestId, WaitMode, WaitPlace,
};

use crate::connection::{AcquireUpdate, CancelOnDrop, Connection, LeaseWatch};
use crate::error::{Error, ErrorKind};
use crate::{Client, LockMetadata};

/// The lease the daemon gives when none is asked for, unless its config says otherwise. It is
/// renewed while the holder's connection lives, so it only matters when the holder's host dies.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

type StaleHandler = Arc<dyn Fn(&LockMetadata) -> Result<(), String> + Send + Sync>;
type PositionHandler = Arc<dyn Fn(u32) + Send + Sync>;
type WaitingHandler = Arc<dyn Fn(&Waiting) + Send + Sync>;

/// Where a waiting acquire stands, as the daemon announces it ([`LockOptions::on_waiting`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    /// The lock's target, as the [`Lock`] names it.
    pub target: String,
    /// 1-based place in the daemon's queue (1: next).
    pub position: u32,
    /// Who holds the lock as far as the daemon knows: one of its own clients, or the last
    /// holder it read in the lock file (another host, another tool). `None` when it knows of
    /// nobody.
    pub holder: Option<LockMetadata>,
    /// How long that holder has held it, as far as the daemon knows (for a holder on another
    /// host: at least since the daemon first saw it), when the announcement was sent.
    pub held_for: Option<Duration>,
}

/// How a [`Lock`] is taken: the Go library's `WithTTL`, `WithOwnerID` and `OnStale`, plus how
/// long [`Client::with_lock`] waits.
#[derive(Clone, Default)]
pub struct LockOptions {
    pub(crate) ttl: Option<Duration>,
    pub(crate) owner_id: Option<String>,
    pub(crate) on_stale: Option<StaleHandler>,
    pub(crate) on_queue_position: Option<PositionHandler>,
    pub(crate) on_waiting: Option<WaitingHandler>,
    pub(crate) wait: Option<Option<Duration>>,
    pub(crate) detached: bool,
    pub(crate) mode: LockMode,
    pub(crate) max_hold: Option<Duration>,
}

impl fmt::Debug for LockOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockOptions")
            .field("ttl", &self.ttl)
            .field("owner_id", &self.owner_id)
            .field("on_stale", &self.on_stale.is_some())
            .field("on_waiting", &self.on_waiting.is_some())
            .field("wait", &self.wait)
            .field("mode", &self.mode)
            .field("max_hold", &self.max_hold)
            .finish()
    }
}

impl LockOptions {
    /// The lease length (default: the daemon's, 30 s unless configured). `Duration::ZERO` asks for a lock that never expires
    /// (the Go library's `ttl: 0`), which a crashed host then blocks for ever.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// An owner identity written into the lock file.
    pub fn owner_id(mut self, owner_id: impl Into<String>) -> Self {
        self.owner_id = Some(owner_id.into());
        self
    }

    /// Decides whether a stale lock may be taken. The daemon asks this callback (in the
    /// calling process) before it replaces a stale lock file; an `Err` vetoes the steal and
    /// becomes the acquire's error ([`ErrorKind::StaleVetoed`]). Without a callback stale
    /// locks are taken, as in the Go library.
    pub fn on_stale<F, E>(mut self, decide: F) -> Self
    where
        F: Fn(&LockMetadata) -> Result<(), E> + Send + Sync + 'static,
        E: fmt::Display,
    {
        self.on_stale = Some(Arc::new(move |meta| {
            decide(meta).map_err(|e| e.to_string())
        }));
        self
    }

    /// Called with the acquire's 1-based place in the daemon's queue when it starts waiting,
    /// and, with a daemon of protocol 9 or later, again each time the place changes (at most
    /// once a second; before protocol 9, only when it starts waiting).
    pub fn on_queue_position(mut self, observe: impl Fn(u32) + Send + Sync + 'static) -> Self {
        self.on_queue_position = Some(Arc::new(observe));
        self
    }

    /// Called while the acquire waits with where it stands and who holds the lock, each time
    /// either changes (at most once a second), from a daemon of protocol 9 or later; older
    /// daemons never call it. For a progress line (`vfslockctl run -w` shows one on a
    /// terminal). Every call comes with a place, so [`LockOptions::on_queue_position`] is not
    /// needed beside it.
    ///
    /// ```no_run
    /// # async fn example(client: vfslock::Client) -> Result<(), vfslock::Error> {
    /// use vfslock::LockOptions;
    /// let options = LockOptions::default().on_waiting(|waiting| {
    ///     let who = waiting.holder.as_ref().map_or("nobody known".to_owned(), |h| {
    ///         format!("pid {} on {}", h.pid, h.hostname)
    ///     });
    ///     eprintln!("place {} in line; held by {who}", waiting.position);
    /// });
    /// let mut lock = client.new_lock("/srv/data.csv", options);
    /// lock.acquire_wait().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn on_waiting(mut self, observe: impl Fn(&Waiting) + Send + Sync + 'static) -> Self {
        self.on_waiting = Some(Arc::new(observe));
        self
    }

    /// Takes the lock shared (the read side of a reader/writer lock, `flock -s`): any number
    /// of shared holders at once, on every host, and no exclusive holder meanwhile. A shared
    /// request queues behind an exclusive one that waits before it, so writers are not starved;
    /// so a holder asking again for a shared lock it already holds waits behind a waiting
    /// writer (locks are not re-entrant). Refused with [`ErrorKind::ModeConflict`] where the
    /// lock is held as a semaphore, and with [`ErrorKind::Unsupported`] on a store without
    /// compare-and-swap (SFTP).
    ///
    /// ```no_run
    /// # async fn example(client: vfslock::Client) -> Result<(), vfslock::Error> {
    /// use vfslock::LockOptions;
    /// let mut reader = client.new_lock("/srv/data.csv", LockOptions::default().shared());
    /// reader.acquire_wait().await?;
    /// // ... read /srv/data.csv while no writer holds it ...
    /// reader.release().await
    /// # }
    /// ```
    pub fn shared(mut self) -> Self {
        self.mode = LockMode::Shared;
        self
    }

    /// Takes one of `n` slots (a counting semaphore): at most `n` holders at once, on every
    /// host. Every holder of a target must ask for the same `n`: another number, or a shared
    /// lock, is refused with [`ErrorKind::ModeConflict`] naming both. `slots(1)` is a
    /// semaphore of one, which excludes like an exclusive lock but does not mix with one's
    /// callers. Refused on a store without compare-and-swap (SFTP), and `n` must be at least 1.
    pub fn slots(mut self, n: u32) -> Self {
        self.mode = LockMode::Slots(n);
        self
    }

    /// The mode the lock is taken in: exclusive unless [`LockOptions::shared`] or
    /// [`LockOptions::slots`] said otherwise.
    pub fn mode(&self) -> LockMode {
        self.mode
    }

    /// The longest the lock may be held: when the time is up the daemon stops renewing the
    /// lease, tells this holder ([`Lock::lost`] returns, and [`Lock::release`] reports
    /// [`ErrorKind::MaxHoldReached`] with a message that names the cap) and releases the lock,
    /// so that a hung job cannot keep it for ever. Without it the daemon's own `max-hold`
    /// applies, if its config sets one; asking for more than that is refused with
    /// [`ErrorKind::LimitExceeded`] naming the cap. Needs a daemon of protocol 4.
    ///
    /// ```no_run
    /// # async fn example(client: vfslock::Client) -> Result<(), vfslock::Error> {
    /// use std::time::Duration;
    /// use vfslock::LockOptions;
    /// let options = LockOptions::default().max_hold(Duration::from_secs(3600));
    /// let mut lock = client.new_lock("/srv/nightly.lock-target", options);
    /// lock.acquire_wait().await?;
    /// tokio::select! {
    ///     _ = async { /* the nightly job */ } => {}
    ///     why = lock.lost() => eprintln!("stopped: {why}"),
    /// }
    /// lock.release().await
    /// # }
    /// ```
    pub fn max_hold(mut self, max_hold: Duration) -> Self {
        self.max_hold = Some(max_hold);
        self
    }

    /// Makes [`Client::with_lock`] wait up to `timeout` for the lock instead of failing at once.
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait = Some(Some(timeout));
        self
    }

    /// Makes [`Client::with_lock`] wait for the lock as long as it takes.
    pub fn wait_forever(mut self) -> Self {
        self.wait = Some(None);
        self
    }
}

struct Held {
    /// The connection it was granted on: its release goes there, and its lease lives there.
    conn: Arc<Connection>,
    acquire_id: RequestId,
    target: String,
    metadata: LockMetadata,
    token: Option<u64>,
    lease: LeaseWatch,
}

impl Held {
    /// The connection and request the holding lives on now: where it was granted, or where it
    /// was resumed after the daemon restarted.
    fn binding(&self) -> (Arc<Connection>, RequestId) {
        let rebound = self.lease.borrow().rebound.clone();
        match rebound.and_then(|(conn, id)| Some((conn.upgrade()?, id))) {
            Some(bound) => bound,
            None => (self.conn.clone(), self.acquire_id),
        }
    }
}

/// A lock on one target. Locks are not re-entrant: two `Lock`s on one target exclude each
/// other even within one process.
///
/// Dropping a held `Lock` releases it; dropping a pending acquire cancels it.
pub struct Lock {
    client: Client,
    target: String,
    /// Why a relative `target` could not be made absolute, told by the first acquire.
    unresolvable: Option<Box<Error>>,
    options: LockOptions,
    held: Option<Held>,
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock")
            .field("target", &self.target)
            .field("held", &self.held.as_ref().map(|h| &h.metadata.lock_id))
            .finish()
    }
}

impl Lock {
    pub(crate) fn new(client: Client, target: String, options: LockOptions) -> Self {
        // Resolved now, as `open(2)` would: a later change of directory does not move the lock.
        let (target, unresolvable) = match crate::target::resolve_owned(target) {
            Ok(target) => (target, None),
            Err((target, e)) => (target, Some(Box::new(e))),
        };
        Lock {
            client,
            target,
            unresolvable,
            options,
            held: None,
        }
    }

    /// The target as given, a relative path made absolute against the working directory
    /// ([`crate::resolve_target`]).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Tries once to take the lock (the Go library's `Acquire`): fails with
    /// [`ErrorKind::AlreadyHeld`] when someone holds it.
    pub async fn acquire(&mut self) -> Result<(), Error> {
        self.acquire_with(WaitMode::Try).await
    }

    /// Waits up to `timeout` for the lock, served first come first served among the waiters
    /// of this daemon; fails with [`ErrorKind::Timeout`].
    pub async fn acquire_timeout(&mut self, timeout: Duration) -> Result<(), Error> {
        self.acquire_with(WaitMode::Wait {
            timeout: Some(timeout),
        })
        .await
    }

    /// Waits for the lock as long as it takes.
    pub async fn acquire_wait(&mut self) -> Result<(), Error> {
        self.acquire_with(WaitMode::Wait { timeout: None }).await
    }

    /// Takes the lock, waiting as `wait` says. A wait whose daemon went away (restarted,
    /// crashed, upgraded) carries on at the restarted daemon with what is left of its timeout,
    /// asking for its place in the queue again (protocol 7), for as long as the daemon's resume
    /// window after the connection ended; then it fails as the connection did.
    pub(crate) async fn acquire_with(&mut self, wait: WaitMode) -> Result<(), Error> {
        if let Some(e) = &self.unresolvable {
            return Err((**e).clone());
        }
        let started = Instant::now();
        let mut conn = self.client.conn().await?;
        let mut place = None;
        loop {
            let wait_now = match wait {
                WaitMode::Wait {
                    timeout: Some(timeout),
                } => {
                    let left = timeout.saturating_sub(started.elapsed());
                    if left.is_zero() {
                        return Err(Error::new(
                            ErrorKind::Timeout,
                            format!(
                                "{} was not granted within {timeout:?}, across a restart of \
                                 vfslockd",
                                self.target
                            ),
                        ));
                    }
                    WaitMode::Wait {
                        timeout: Some(left),
                    }
                }
                other => other,
            };
            let error = match self.acquire_on(&conn, wait_now, &mut place).await {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            let Some((_, window)) = place.as_ref().filter(|_| {
                error.kind() == ErrorKind::ConnectionLost && matches!(wait, WaitMode::Wait { .. })
            }) else {
                return Err(error);
            };
            conn = self
                .client
                .reconnect_within(*window)
                .await
                .map_err(|_| error)?;
        }
    }

    /// One acquire on `conn`, asking for `place` if the previous connection had one; `place`
    /// is updated whenever the daemon names a new one.
    async fn acquire_on(
        &mut self,
        conn: &Arc<Connection>,
        wait: WaitMode,
        place: &mut Option<(WaitPlace, Duration)>,
    ) -> Result<(), Error> {
        let _in_flight = crate::spin::InFlight::begin();
        let sent = std::time::Instant::now();
        let (id, mut updates) = conn.start_acquire(
            AcquireRequest {
                target: self.target.clone(),
                ttl: self.options.ttl,
                owner_id: self.options.owner_id.clone(),
                wait,
                ask_on_stale: self.options.on_stale.is_some(),
                detached: self.options.detached,
            },
            self.options.mode,
            self.options.max_hold,
            place.as_ref().map(|(place, _)| place.clone()),
        )?;
        let mut pending = CancelOnDrop {
            conn,
            target: &self.target,
            id,
            finished: false,
        };
        // The place as last reported: announcements that repeat it (a new holder) are not.
        let mut reported = None;
        let report = |position: u32, reported: &mut Option<u32>| {
            if *reported != Some(position) {
                *reported = Some(position);
                if let Some(observe) = &self.options.on_queue_position {
                    observe(position);
                }
            }
        };
        let outcome = loop {
            match updates.recv().await {
                Some(AcquireUpdate::Position(position)) => report(position, &mut reported),
                Some(AcquireUpdate::Queued(position, at, window)) => {
                    *place = Some((at, window));
                    report(position, &mut reported);
                }
                Some(AcquireUpdate::Waiting(mut waiting)) => {
                    waiting.target.clone_from(&self.target);
                    report(waiting.position, &mut reported);
                    if let Some(observe) = &self.options.on_waiting {
                        observe(&waiting);
                    }
                }
                Some(AcquireUpdate::StaleQuestion(holder)) => {
                    let verdict = match &self.options.on_stale {
                        Some(decide) => decide(&holder),
                        None => Ok(()),
                    };
                    let _ = conn.send(&ClientFrame::StaleVerdict {
                        id,
                        target: self.target.clone(),
                        allow: verdict.is_ok(),
                        reason: verdict.err().unwrap_or_default(),
                    });
                }
                Some(AcquireUpdate::Granted(grant, lease)) => break Ok((grant, lease)),
                Some(AcquireUpdate::Done(result)) => {
                    break Err(result.err().unwrap_or_else(|| {
                        Error::new(
                            ErrorKind::Protocol,
                            "vfslockd answered an acquire with something other than a grant",
                        )
                    }))
                }
                None => break Err(Error::connection_lost()),
            }
        };
        pending.finished = true;
        conn.answered(sent.elapsed());
        let (grant, lease) = outcome?;
        // A second acquire of a held `Lock` cannot be granted (locks are not re-entrant), so
        // there is never an old holding to overwrite here.
        self.held = Some(Held {
            conn: conn.clone(),
            acquire_id: id,
            target: grant.target,
            metadata: grant.metadata,
            token: grant.token,
            lease,
        });
        Ok(())
    }

    /// Turns a granted detached acquire into its lease, without releasing anything.
    pub(crate) fn into_detached(mut self) -> Option<crate::DetachedLease> {
        let held = self.held.take()?;
        held.conn.unwatch_lease(held.acquire_id);
        Some(crate::DetachedLease {
            target: held.target,
            lock_id: held.metadata.lock_id.clone().unwrap_or_default(),
            token: held.token,
            metadata: held.metadata,
        })
    }

    /// Releases the lock. Releasing a lock that is not held does nothing and is not an error,
    /// as with the Go library's `Release`; but if the lease had already been lost (stolen,
    /// broken, not renewed in time), the release reports it with [`ErrorKind::LeaseLost`] (or
    /// [`ErrorKind::Other`] when the daemon said that it failed itself).
    pub async fn release(&mut self) -> Result<(), Error> {
        let Some(held) = self.held.take() else {
            return Ok(());
        };
        let loss = held.lease.borrow().loss();
        let (conn, id) = held.binding();
        conn.unwatch_lease(id);
        let lock_id = held.metadata.lock_id.clone().unwrap_or_default();
        // Even after a loss the daemon is told: it deletes the lock file if, and only if, it
        // is still the one it wrote.
        let answer = conn
            .request(Request::Release {
                target: held.target.clone(),
                lock_id,
            })
            .await;
        if let Some((kind, reason)) = loss {
            return Err(Error::lease_lost(kind, &held.target, &reason));
        }
        match answer {
            Ok(_) => Ok(()),
            // The daemon releases everything of a closed connection by itself.
            Err(e) if e.kind() == ErrorKind::ConnectionLost => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Whether this `Lock` holds its lock: granted, not told that the lease was lost, and
    /// within the validity the daemon last confirmed, measured on this process's own
    /// monotonic clock (so a frozen daemon cannot keep it true).
    pub fn is_held(&self) -> bool {
        self.held
            .as_ref()
            .is_some_and(|held| held.lease.borrow().loss().is_none())
    }

    /// Waits until the held lease is lost and says why: the daemon says so (lock file stolen
    /// or broken, renewal failed until the deadline, shutdown), the connection drops, or the
    /// lease's confirmed validity runs out. Returns at once if nothing is held.
    pub async fn lost(&self) -> String {
        let Some(held) = self.held.as_ref() else {
            return "the lock is not held".to_owned();
        };
        let mut lease = held.lease.clone();
        loop {
            let state = lease.borrow_and_update().clone();
            if let Some((_, reason)) = state.loss() {
                return reason;
            }
            let expiry = async {
                match state.valid_until {
                    Some(until) => tokio::time::sleep_until(until.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = lease.changed() => if changed.is_err() {
                    return Error::connection_lost().message().to_owned();
                },
                _ = expiry => {}
            }
        }
    }

    /// The fencing token of the current holding: greater than every token issued before for
    /// this target, by any daemon sharing the store. Pass it to the resource the lock
    /// protects, so that it can refuse the late writes of a holder whose lease ran out.
    ///
    /// `None` when the store cannot stand behind tokens (an SFTP store in create-only mode, or
    /// fencing switched off for the store).
    pub fn token(&self) -> Option<u64> {
        self.held.as_ref().and_then(|held| held.token)
    }

    /// The lock file as this `Lock` wrote it when it took the lock.
    pub fn held_metadata(&self) -> Option<&LockMetadata> {
        self.held.as_ref().map(|held| &held.metadata)
    }

    /// The resume window W of the current holding: how long the holding outlives its daemon.
    /// A holding that has not been resumed within W of the last word the client heard from the
    /// daemon counts as lost. `None` while nothing is held, for a detached lease, when the
    /// daemon's `locks.resume-window` is zero, and with a daemon older than protocol 5: then
    /// the holding ends with the daemon.
    pub fn resume_window(&self) -> Option<Duration> {
        let held = self.held.as_ref()?;
        let window = held.lease.borrow().resume.as_ref().map(|r| r.ticket.window);
        window
    }

    /// The unique id of this holding, while held.
    pub fn lock_id(&self) -> Option<&str> {
        self.held_metadata()?.lock_id.as_deref()
    }

    /// Reads the target's lock file now, whoever holds it (the Go library's `Metadata`).
    /// Fails with [`ErrorKind::NotFound`] when there is no lock file.
    pub async fn metadata(&self) -> Result<LockMetadata, Error> {
        self.client.metadata(&self.target).await?.ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("{} is not locked: it has no lock file", self.target),
            )
        })
    }

    /// Time since the lock file's `createdAt` (the Go library's `Age`).
    pub async fn age(&self) -> Result<Duration, Error> {
        let meta = self.metadata().await?;
        let created = meta.created_at().ok_or_else(|| {
            Error::new(
                ErrorKind::Other,
                format!("the lock file of {} carries no creation time", self.target),
            )
        })?;
        Ok(SystemTime::now()
            .duration_since(created)
            .unwrap_or_default())
    }

    /// Whether the target's lock file is stale now.
    pub async fn is_stale(&self) -> Result<bool, Error> {
        Ok(self.metadata().await?.stale)
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            let (conn, id) = held.binding();
            conn.unwatch_lease(id);
            let _ = conn.send(&ClientFrame::Request {
                id: 0,
                request: Request::Release {
                    target: held.target,
                    lock_id: held.metadata.lock_id.unwrap_or_default(),
                },
            });
        }
    }
}

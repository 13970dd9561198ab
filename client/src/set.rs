//! Several targets held at once, all or nothing.
//!
//! Taking locks one by one deadlocks as soon as two callers ask for overlapping sets in
//! different orders: each holds what the other waits for. [`Client::lock_all`] therefore asks
//! the daemon for each target's key (the normalized URL it locks it under), takes the targets
//! in the order of those keys, whatever order they were given in, and runs one deadline for the
//! whole set. When one of them cannot be taken (held and not waited for, the deadline passed,
//! refused), everything already taken is released, each release awaited, before the call
//! returns: a failed `lock_all` leaves no lock file of the set behind.
//!
//! The keys are the same on every host for object stores and `mem://`; a `file://` target's
//! key is its real path on the daemon's host, so hosts that mount a share at different paths
//! order its targets differently and can still deadlock each other until a wait times out.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Instant;

use vfslock_proto::{Request, Response, WaitMode};

use crate::error::{Error, ErrorKind, WithLockError};
use crate::{Client, Lock, LockOptions};

/// Locks on several targets, held together; see [`Client::lock_all`]. Dropping it releases
/// every lock of the set.
#[derive(Debug)]
pub struct LockSet {
    /// In the order they were taken (the daemon's key order).
    locks: Vec<Lock>,
}

impl Client {
    /// Takes the locks on every one of `targets`, or on none: each target is taken in the
    /// daemon's key order, so that callers asking for overlapping sets in different orders do
    /// not deadlock each other (on `file://`, hosts whose mount paths differ order targets
    /// differently: see the module docs).
    ///
    /// `options` apply to every target (TTL, owner, mode, max-hold, stale decision). As with
    /// [`Client::with_lock`], without [`LockOptions::wait_timeout`] or
    /// [`LockOptions::wait_forever`] it fails at once with [`ErrorKind::AlreadyHeld`] when any
    /// target is held; a wait timeout covers the whole set. On any failure every lock already
    /// taken is released, and its release answered, before this returns the failure, which
    /// names the target that could not be taken. A target given twice (or two targets that name
    /// one lock) is refused with [`ErrorKind::InvalidTarget`]: locks are not re-entrant.
    ///
    /// Each target keeps its own lock id and fencing token ([`LockSet::get`]). Several
    /// targets need a daemon of protocol 4; a single one works with any.
    ///
    /// ```no_run
    /// # async fn example(client: vfslock::Client) -> Result<(), vfslock::Error> {
    /// use std::time::Duration;
    /// use vfslock::LockOptions;
    /// let options = LockOptions::default().wait_timeout(Duration::from_secs(30));
    /// let mut set = client
    ///     .lock_all(["s3://ledger/accounts.csv", "s3://ledger/journal.csv"], options)
    ///     .await?;
    /// let token = set.get("s3://ledger/journal.csv").and_then(|lock| lock.token());
    /// // ... move money between the two files, passing `token` along ...
    /// set.release().await
    /// # }
    /// ```
    pub async fn lock_all<I, T>(&self, targets: I, options: LockOptions) -> Result<LockSet, Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let targets = targets
            .into_iter()
            .map(|target| crate::target::resolve_owned(target.into()).map_err(|(_, e)| e))
            .collect::<Result<Vec<String>, Error>>()?;
        let order = self.canonical_order(&targets).await?;
        let deadline = options
            .wait
            .flatten()
            .map(|timeout| Instant::now() + timeout);
        let mut locks: Vec<Lock> = Vec::with_capacity(targets.len());
        for index in order {
            let mut lock = self.new_lock(targets[index].clone(), options.clone());
            let wait = match (options.wait, deadline) {
                (None, _) => WaitMode::Try,
                (Some(_), None) => WaitMode::Wait { timeout: None },
                (Some(_), Some(deadline)) => WaitMode::Wait {
                    timeout: Some(deadline.saturating_duration_since(Instant::now())),
                },
            };
            if let Err(e) = lock.acquire_with(wait).await {
                let taken = locks.len();
                // A release that fails reports a lease lost meanwhile (nothing of ours is left)
                // or a broken connection (the daemon releases everything of a closed one).
                let _ = release_all(&mut locks).await;
                if taken == 0 && targets.len() == 1 {
                    return Err(e);
                }
                return Err(e.with_note(&format!(
                    "(taking {} targets at once: none of them is held now)",
                    targets.len()
                )));
            }
            locks.push(lock);
        }
        Ok(LockSet { locks })
    }

    /// Takes every lock of `targets` ([`Client::lock_all`]), runs `run`, and releases them all
    /// on every path. If the lease on any of them is lost while the closure runs, the closure
    /// is stopped (its future dropped) and the result is that loss.
    pub async fn with_lock_all<I, T, R, E, F>(
        &self,
        targets: I,
        options: LockOptions,
        run: F,
    ) -> Result<R, WithLockError<E>>
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
        F: AsyncFnOnce(&LockSet) -> Result<R, E>,
    {
        let mut set = self
            .lock_all(targets, options)
            .await
            .map_err(WithLockError::Lock)?;
        let outcome = tokio::select! {
            outcome = run(&set) => Some(outcome),
            _ = set.lost() => None,
        };
        let released = set.release().await;
        WithLockError::settle(
            outcome,
            released,
            "a lease of the set was lost while the closure ran",
        )
    }

    /// The indices of `targets` in the daemon's key order; refuses an empty set, a target
    /// the daemon would refuse, and two targets with one key.
    async fn canonical_order(&self, targets: &[String]) -> Result<Vec<usize>, Error> {
        match targets.len() {
            0 => {
                return Err(Error::new(
                    ErrorKind::InvalidTarget,
                    "lock_all was given no target: name at least one",
                ))
            }
            1 => return Ok(vec![0]),
            _ => {}
        }
        let conn = self.conn().await?;
        if conn.welcome().protocol_version < 4 {
            return Err(conn.too_old("taking several targets at once", 4));
        }
        let resolved = match conn
            .request(Request::Resolve {
                targets: targets.to_vec(),
            })
            .await?
        {
            Response::Resolved(resolved) if resolved.len() == targets.len() => resolved,
            other => {
                return Err(Error::new(
                    ErrorKind::Protocol,
                    format!("vfslockd answered a resolve request with {other:?}"),
                ))
            }
        };
        let mut keys = Vec::with_capacity(targets.len());
        for result in resolved {
            keys.push(result.map_err(Error::from)?);
        }
        let mut order: Vec<usize> = (0..targets.len()).collect();
        order.sort_by(|&a, &b| keys[a].cmp(&keys[b]));
        for pair in order.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if keys[a] == keys[b] {
                return Err(Error::new(
                    ErrorKind::InvalidTarget,
                    format!(
                        "{} and {} name the same lock ({}): give each target once (locks are \
                         not re-entrant)",
                        targets[a.min(b)],
                        targets[a.max(b)],
                        keys[a]
                    ),
                ));
            }
        }
        Ok(order)
    }
}

/// Releases every lock, awaiting each answer; returns the first failure.
async fn release_all(locks: &mut [Lock]) -> Result<(), Error> {
    let mut first = Ok(());
    for lock in locks.iter_mut() {
        let released = lock.release().await;
        if first.is_ok() {
            first = released;
        }
    }
    first
}

impl LockSet {
    /// The locks, in the order they were taken (the daemon's key order).
    pub fn locks(&self) -> &[Lock] {
        &self.locks
    }

    /// The lock on `target`, named as it was given to [`Client::lock_all`].
    pub fn get(&self, target: &str) -> Option<&Lock> {
        let target = crate::resolve_target(target).unwrap_or(std::borrow::Cow::Borrowed(target));
        self.locks.iter().find(|lock| lock.target() == target)
    }

    /// Whether every lock of the set is held (none was lost).
    pub fn is_held(&self) -> bool {
        !self.locks.is_empty() && self.locks.iter().all(Lock::is_held)
    }

    /// Waits until the lease on any lock of the set is lost, and says which and why (for a
    /// set of one, as [`Lock::lost`] says it). Returns at once if the set holds nothing.
    pub async fn lost(&self) -> String {
        if self.locks.is_empty() {
            return "the set holds no lock".to_owned();
        }
        let count = self.locks.len();
        let mut waits: Vec<Pin<Box<dyn Future<Output = String> + Send + '_>>> = self
            .locks
            .iter()
            .map(|lock| {
                Box::pin(async move {
                    let reason = lock.lost().await;
                    if count == 1 {
                        return reason;
                    }
                    format!(
                        "the lock on {} (one of {count} held together) was lost: {reason}",
                        lock.target()
                    )
                }) as Pin<Box<dyn Future<Output = String> + Send + '_>>
            })
            .collect();
        std::future::poll_fn(|cx| {
            for wait in waits.iter_mut() {
                if let Poll::Ready(reason) = wait.as_mut().poll(cx) {
                    return Poll::Ready(reason);
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Releases every lock of the set, each release answered before this returns. Every lock
    /// is released even when one fails; the first failure is returned (a lease lost on any of
    /// them, as [`Lock::release`] reports it).
    pub async fn release(&mut self) -> Result<(), Error> {
        let outcome = release_all(&mut self.locks).await;
        self.locks.clear();
        outcome
    }
}

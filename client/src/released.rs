//! Waiting for a release without taking the lock: for a job that must run after another one,
//! and for scripts that would otherwise poll `vfslockctl show`.
//!
//! A daemon of protocol 10 does the waiting: it answers when its own holder lets go, and
//! re-checks a holder elsewhere as its waiting acquires do. An older daemon cannot, so this
//! side asks it for the lock file with backoff instead: the same answer, later.

use std::time::{Duration, Instant};

use vfslock_proto::{LockView, Request, Response};

use crate::connection::CancelOnDrop;
use crate::{Client, Error, ErrorKind};

/// How long a wait with no timeout gives a daemon that went away to come back.
const RECONNECT_FOR: Duration = Duration::from_secs(30);

/// The longest pause between two looks at an older daemon's lock file.
const POLL_MAX: Duration = Duration::from_secs(1);

impl Client {
    /// Returns as soon as `target` is not held (at once if it is free), without taking it.
    /// Not held means no lock file, or a stale one; a lock handed straight to a waiter is
    /// still held. Fails with [`ErrorKind::Timeout`] (naming the holder) once `timeout` has
    /// passed; `None` waits as long as it takes. A daemon that restarts meanwhile is asked
    /// again.
    ///
    /// ```no_run
    /// # async fn demo(client: vfslock::Client) -> Result<(), vfslock::Error> {
    /// use std::time::Duration;
    /// // Run after the nightly import, whoever runs it, on whichever host.
    /// client
    ///     .wait_released("s3://jobs/import", Some(Duration::from_secs(3600)))
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn wait_released(
        &self,
        target: &str,
        timeout: Option<Duration>,
    ) -> Result<(), Error> {
        let target = crate::resolve_target(target)?.into_owned();
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut conn = self.conn().await?;
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if conn.welcome().protocol_version < 10 {
                return self.poll_released(&target, deadline).await;
            }
            let request = Request::WaitReleased {
                target: target.clone(),
                timeout: left,
            };
            let (id, answer) = conn.start_request(request)?;
            let answer = {
                let mut pending = CancelOnDrop {
                    conn: &conn,
                    target: &target,
                    id,
                    finished: false,
                };
                let answer = answer
                    .await
                    .unwrap_or_else(|_| Err(Error::connection_lost()));
                pending.finished = true;
                answer
            };
            match answer {
                Ok(Response::NotHeld) => return Ok(()),
                Ok(other) => {
                    return Err(Error::new(
                        ErrorKind::Protocol,
                        format!("vfslockd answered a wait for a release with {other:?}"),
                    ))
                }
                Err(e) if e.kind() == ErrorKind::ConnectionLost => {
                    let within = left.unwrap_or(RECONNECT_FOR);
                    conn = self.reconnect_within(within).await.map_err(|_| e)?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// [`Client::wait_released`] against a daemon older than protocol 10: looks at the lock
    /// file with backoff.
    async fn poll_released(&self, target: &str, deadline: Option<Instant>) -> Result<(), Error> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            let view = self.describe(target).await?;
            let Some(view) = view.filter(|v| !holds_nobody(v)) else {
                return Ok(());
            };
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                let error = Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "{target} was still held after {:.1?} of waiting for its release",
                        started.elapsed()
                    ),
                );
                return Err(error.with_holder(view.lock));
            }
            let next = deadline.map_or(pause, |d| pause.min(d - now));
            tokio::time::sleep(next).await;
            pause = (pause * 2).min(POLL_MAX);
        }
    }
}

/// Whether a lock file holds nobody: every holder it lists has expired.
fn holds_nobody(view: &LockView) -> bool {
    view.holders.iter().all(|holder| holder.expired)
}

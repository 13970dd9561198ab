//! The client's way to its daemon: the current connection, replaced by a fresh one when the
//! daemon went away (restarted, crashed, upgraded).
//!
//! A connection that closed stays closed: what it held is released by the daemon (or was lost
//! with it), and every lock granted on it says so. But the [`Client`](crate::Client) that made
//! it lives on in the application, often for the whole life of a service, so a new request
//! after the daemon came back must not fail for ever: the next request that finds the current
//! connection closed opens a new one to the same socket (speaking whatever protocol version the
//! daemon now speaks), and every later request uses it. Locks remember the connection they were
//! granted on, so that their release goes there and nowhere else.
//!
//! Holdings that can outlive the daemon (a grant of protocol 5 or later carries a resume
//! ticket) are not given up when their connection closes: the connection hands them to the
//! link, which reconnects with backoff and asks for each back (`Request::Resume`) until its
//! deadline, W after the last frame the daemon sent or sooner if its lease runs out. A holding
//! not resumed by then is lost (the safety rule: the restarted daemon gives nobody its target
//! until W has passed since it started, which is later).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::connection::{not_resumed_in_time, Connection, Heir, Orphan};
use crate::error::Error;

/// The first wait between reconnection attempts while resuming, doubled up to
/// [`RESUME_BACKOFF_MAX`].
const RESUME_BACKOFF_MIN: Duration = Duration::from_millis(20);
const RESUME_BACKOFF_MAX: Duration = Duration::from_millis(500);

/// The current connection to the daemon at one socket, and who may replace it.
pub(crate) struct Link {
    path: PathBuf,
    current: RwLock<Arc<Connection>>,
    /// Held while a new connection is being opened, so that requests that all find the old
    /// one closed open one new connection, not one each.
    redialing: tokio::sync::Mutex<()>,
    /// Where each connection hands the holdings to resume when it closes.
    heir: Heir,
}

impl Link {
    /// Connects to the daemon at `path`.
    pub(crate) async fn open(path: &Path) -> Result<Arc<Link>, Error> {
        let (heir, orphans) = mpsc::unbounded_channel();
        let first = Connection::open_for(path, Some(heir.clone())).await?;
        let link = Arc::new(Link {
            path: path.to_owned(),
            current: RwLock::new(first),
            redialing: tokio::sync::Mutex::new(()),
            heir,
        });
        tokio::spawn(resume_orphans(Arc::downgrade(&link), orphans));
        Ok(link)
    }

    /// The socket.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The current connection, open or not.
    pub(crate) fn current(&self) -> Arc<Connection> {
        self.current.read().expect("link lock").clone()
    }

    /// The current connection if it is open, else a new one to the same socket (an error when
    /// no daemon answers there now: the next request tries again).
    pub(crate) async fn live(&self) -> Result<Arc<Connection>, Error> {
        let current = self.current();
        if !current.is_closed() {
            return Ok(current);
        }
        let _one = self.redialing.lock().await;
        let current = self.current();
        if !current.is_closed() {
            // Another request opened it meanwhile.
            return Ok(current);
        }
        let fresh = Connection::open_for(&self.path, Some(self.heir.clone())).await?;
        *self.current.write().expect("link lock") = fresh.clone();
        Ok(fresh)
    }

    /// [`Link::live`], trying again with backoff while no daemon answers, for at most `within`.
    pub(crate) async fn live_within(&self, within: Duration) -> Result<Arc<Connection>, Error> {
        let give_up = Instant::now() + within;
        let mut backoff = RESUME_BACKOFF_MIN;
        loop {
            match self.live().await {
                Ok(conn) => return Ok(conn),
                Err(e) if Instant::now() + backoff >= give_up => return Err(e),
                Err(_) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RESUME_BACKOFF_MAX);
                }
            }
        }
    }

    /// Reconnects (with backoff while no daemon answers) and asks for each of `orphans` back
    /// until its deadline; one past it is lost.
    async fn resume(&self, mut orphans: Vec<Orphan>) {
        let mut backoff = RESUME_BACKOFF_MIN;
        loop {
            let now = Instant::now();
            let mut waiting = Vec::with_capacity(orphans.len());
            for orphan in orphans {
                if orphan.is_abandoned() {
                    continue;
                }
                if now >= orphan.deadline {
                    orphan.lose(not_resumed_in_time());
                    continue;
                }
                waiting.push(orphan);
            }
            orphans = waiting;
            let Some(earliest) = orphans.iter().map(|o| o.deadline).min() else {
                return;
            };
            match self.live().await {
                Ok(conn) => {
                    // All at once: each is one round trip. One whose new connection closes
                    // again comes back here through the heir.
                    for orphan in orphans {
                        let conn = conn.clone();
                        tokio::spawn(async move {
                            let _ = conn.resume(orphan).await;
                        });
                    }
                    return;
                }
                Err(_) => {
                    let left = earliest.saturating_duration_since(Instant::now());
                    tokio::time::sleep(backoff.min(left)).await;
                    backoff = (backoff * 2).min(RESUME_BACKOFF_MAX);
                }
            }
        }
    }
}

/// Resumes the holdings each closed connection hands over, for as long as the link lives.
async fn resume_orphans(link: Weak<Link>, mut batches: mpsc::UnboundedReceiver<Vec<Orphan>>) {
    while let Some(orphans) = batches.recv().await {
        match link.upgrade() {
            Some(link) => link.resume(orphans).await,
            None => {
                for orphan in orphans {
                    orphan.lose(Error::connection_lost().message().to_owned());
                }
            }
        }
    }
}

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
//!
//! Every closed connection hands the link a batch, empty when nothing was held, so that the
//! link can tell the application ([`crate::events`]): the daemon went away, then, once the
//! batch is settled and a connection is open again, what was resumed and what was lost.
//! Batches are settled one at a time, so one outage's events never interleave with the next's.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::connection::{not_resumed_in_time, Connection, Heir, LeaseState, Orphan};
use crate::error::Error;
use crate::events::{Announcer, LockRef, LostLock};

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
    /// Tells subscribers what happened to the connection.
    pub(crate) announcer: Announcer,
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
            announcer: Announcer::new(),
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
        self.announcer.redialed();
        Ok(fresh)
    }

    /// [`Link::live`], trying again with backoff while no daemon answers, for at most `within`.
    pub(crate) async fn live_within(&self, within: Duration) -> Result<Arc<Connection>, Error> {
        let give_up = Instant::now() + within;
        let mut backoff = RESUME_BACKOFF_MIN;
        loop {
            // Bounded: a daemon that accepts but never answers the hello must not hold the
            // caller past `within`.
            let attempt = tokio::time::timeout_at(give_up.into(), self.live()).await;
            match attempt.unwrap_or_else(|_| Err(Error::connection_lost())) {
                Ok(conn) => return Ok(conn),
                Err(e) if Instant::now() + backoff >= give_up => return Err(e),
                Err(_) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RESUME_BACKOFF_MAX);
                }
            }
        }
    }

    /// Tells subscribers that the daemon went away, naming the holdings that wait to be
    /// resumed.
    fn announce_gone(&self, orphans: &[Orphan]) {
        let waiting = orphans.iter().filter(|o| !o.is_abandoned());
        let resuming = waiting.clone().map(lock_ref).collect();
        let deadline = waiting.map(|o| o.deadline).max();
        self.announcer.daemon_gone(resuming, deadline);
    }

    /// An outage that left nothing to resume (nothing was held, or every holding was lost or
    /// released before a daemon answered) owes its restart event to the next connection.
    async fn settle_without_resuming(&self) {
        // Under the redial lock: a request that reconnects meanwhile announces it, not both.
        let _one = self.redialing.lock().await;
        let connected = !self.current().is_closed();
        self.announcer.nothing_left_to_resume(connected);
    }

    /// Reconnects (with backoff while no daemon answers) and asks for each of `orphans` back
    /// until its deadline; one past it is lost. Returns once each was resumed or given up (or
    /// handed on again because the new connection closed too), and tells subscribers which.
    async fn resume(&self, mut orphans: Vec<Orphan>) {
        let mut lost = Vec::new();
        let mut backoff = RESUME_BACKOFF_MIN;
        loop {
            let now = Instant::now();
            let mut waiting = Vec::with_capacity(orphans.len());
            for orphan in orphans {
                if orphan.is_abandoned() {
                    continue;
                }
                if now >= orphan.deadline {
                    lost.push(LostLock {
                        lock: lock_ref(&orphan),
                        reason: not_resumed_in_time(),
                    });
                    orphan.lose(not_resumed_in_time());
                    continue;
                }
                waiting.push(orphan);
            }
            orphans = waiting;
            let Some(earliest) = orphans.iter().map(|o| o.deadline).min() else {
                if !lost.is_empty() {
                    self.announcer.not_restarted_in_time(lost);
                }
                self.settle_without_resuming().await;
                return;
            };
            // Bounded: a daemon that accepts but never answers the hello (frozen, stopped)
            // must not keep the holdings from being given up at their deadlines.
            match tokio::time::timeout_at(earliest.into(), self.live()).await {
                Ok(Ok(conn)) => {
                    let (resumed, mut lost_there) = resume_all(&conn, orphans).await;
                    lost.append(&mut lost_there);
                    self.announcer.restarted(resumed, lost);
                    return;
                }
                Ok(Err(_)) => {
                    let left = earliest.saturating_duration_since(Instant::now());
                    tokio::time::sleep(backoff.min(left)).await;
                    backoff = (backoff * 2).min(RESUME_BACKOFF_MAX);
                }
                // The earliest deadline passed: the next round gives that holding up.
                Err(_) => {}
            }
        }
    }
}

/// Asks `conn` for every orphan back at once (each is one round trip) and waits for every
/// answer: the holdings resumed, and those lost with why. One whose new connection closed
/// again before it was answered is in neither: it comes back to the link through the heir.
/// One still unanswered at the last deadline is lost, as its `Lock` says by then; its late
/// grant is released when it comes.
async fn resume_all(conn: &Arc<Connection>, orphans: Vec<Orphan>) -> (Vec<LockRef>, Vec<LostLock>) {
    let last_deadline = orphans.iter().map(|o| o.deadline).max();
    let mut unanswered: Vec<Option<LockRef>> = Vec::with_capacity(orphans.len());
    let mut answers = JoinSet::new();
    for (index, orphan) in orphans.into_iter().enumerate() {
        let conn = conn.clone();
        unanswered.push(Some(lock_ref(&orphan)));
        // A second sender: it keeps the outcome readable after the orphan moved on, and does
        // not count as a holder (abandoning is about receivers).
        let lease: watch::Sender<LeaseState> = orphan.lease.clone();
        answers.spawn(async move {
            let resumed = conn.resume(orphan).await.is_ok();
            (index, lease, resumed)
        });
    }
    let (mut resumed, mut lost) = (Vec::new(), Vec::new());
    let deadline = last_deadline.unwrap_or_else(Instant::now);
    while let Ok(Some(answer)) = tokio::time::timeout_at(deadline.into(), answers.join_next()).await
    {
        let Ok((index, lease, was_resumed)) = answer else {
            continue;
        };
        let Some(lock) = unanswered[index].take() else {
            continue;
        };
        if was_resumed {
            resumed.push(lock);
        } else if let Some((_, reason)) = lease.borrow().lost.clone() {
            lost.push(LostLock { lock, reason });
        }
    }
    // Whatever is still unanswered finishes on its own: the reader gives a grant that comes
    // after the deadline back at once.
    answers.detach_all();
    lost.extend(unanswered.into_iter().flatten().map(|lock| LostLock {
        lock,
        reason: not_resumed_in_time(),
    }));
    (resumed, lost)
}

fn lock_ref(orphan: &Orphan) -> LockRef {
    LockRef {
        target: orphan.ticket.target.clone(),
        lock_id: orphan.ticket.lock_id.clone(),
    }
}

/// Resumes the holdings each closed connection hands over, for as long as the link lives.
async fn resume_orphans(link: Weak<Link>, mut batches: mpsc::UnboundedReceiver<Vec<Orphan>>) {
    while let Some(orphans) = batches.recv().await {
        match link.upgrade() {
            Some(link) => {
                link.announce_gone(&orphans);
                link.resume(orphans).await;
            }
            None => {
                for orphan in orphans {
                    orphan.lose(Error::connection_lost().message().to_owned());
                }
            }
        }
    }
}

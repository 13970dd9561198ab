//! What happened to the client's way to its daemon: the daemon went away, came back, and
//! which holdings were resumed or lost meanwhile.
//!
//! The library reconnects and resumes holdings by itself ([`crate::link`]), so without these
//! events an application would never learn that its daemon restarted, nor which of its locks
//! came through: a lost one says so through [`Lock::lost`](crate::Lock::lost), but a resumed
//! one is silent by design. Services log these, and `vfslockctl run` tells its user.
//!
//! One outage reads, in order: [`ClientEvent::DaemonGone`]; then, when holdings were waiting
//! and no daemon answered in time, [`ClientEvent::NotRestartedInTime`]; then, once a new
//! connection is open, [`ClientEvent::DaemonRestarted`]. Events are broadcast: every
//! subscriber hears every event from its subscription on; without subscribers an event costs
//! one small allocation per outage and is dropped.

use std::fmt;
use std::sync::Mutex;
use std::time::Instant;

use tokio::sync::broadcast;

use crate::Client;

/// How far a subscriber may fall behind before it misses events. An outage makes two or three,
/// so only a subscriber that stopped reading falls this far behind.
const BACKLOG: usize = 64;

/// A holding an event is about: its target and lock id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LockRef {
    /// The target as the daemon named it in the grant (normalized: `file:///srv/a`, even when
    /// the lock was asked for as `/srv/a`).
    pub target: String,
    /// The holding's lock id ([`Lock::lock_id`](crate::Lock::lock_id)), which a resume keeps.
    pub lock_id: String,
}

impl fmt::Display for LockRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (lock id {})", self.target, self.lock_id)
    }
}

/// A holding that was given up, and why (the same reason [`Lock::lost`](crate::Lock::lost)
/// returns).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostLock {
    /// Which holding.
    pub lock: LockRef,
    /// Why it is lost.
    pub reason: String,
}

/// What happened to a [`Client`]'s connection to its daemon; see [`Client::events`].
///
/// ```no_run
/// use vfslock::{Client, ClientEvent};
///
/// # async fn example() -> Result<(), vfslock::Error> {
/// let client = Client::connect_default().await?;
/// let mut events = client.events();
/// tokio::spawn(async move {
///     while let Some(event) = events.next().await {
///         match event {
///             ClientEvent::DaemonGone { resuming, .. } => {
///                 eprintln!("vfslockd went away; resuming {} lock(s)", resuming.len())
///             }
///             ClientEvent::DaemonRestarted { resumed, lost } => {
///                 eprintln!("vfslockd is back: {} resumed, {} lost", resumed.len(), lost.len())
///             }
///             other => eprintln!("{other:?}"),
///         }
///     }
/// });
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// The connection to the daemon closed unexpectedly (the daemon crashed, was killed, or
    /// restarts). The holdings in `resuming` are being resumed: each stays held, and the client
    /// reconnects with backoff and asks for it back until its own deadline, the latest of which
    /// is `deadline`. Holdings that cannot be resumed (granted by a daemon without a resume
    /// window, `mem://` targets of an older daemon) are reported lost through their
    /// [`Lock`](crate::Lock) at once and are not named here.
    DaemonGone {
        /// The holdings waiting to be resumed; empty when nothing was held.
        resuming: Vec<LockRef>,
        /// The last moment any of them can still be resumed; `None` when `resuming` is empty.
        deadline: Option<Instant>,
    },
    /// A new connection to the daemon is open, and every holding that waited to be resumed
    /// was resumed or given up. Sent once per [`ClientEvent::DaemonGone`], when the connection
    /// after it opens: right away when holdings wait, else at the next request (the client does
    /// not dial an idle daemon by itself, so a `Client` that holds nothing and asks nothing hears
    /// of the restart only when it next asks).
    ///
    /// A holding its application released while it waited is in neither list; one that waited
    /// when the new daemon went away too is named by the next `DaemonGone` instead.
    DaemonRestarted {
        /// Held on as before: same lock id, same fencing token.
        resumed: Vec<LockRef>,
        /// Given up, each with its reason (the daemon did not keep it, or it answered after the
        /// holding's deadline).
        lost: Vec<LostLock>,
    },
    /// No daemon answered before the last holding's deadline: every holding that waited is lost
    /// (the safety rule: the daemon may give it to someone else from then on). A
    /// [`ClientEvent::DaemonRestarted`] follows when a connection opens again.
    NotRestartedInTime {
        /// The holdings given up, each with its reason.
        lost: Vec<LostLock>,
    },
    /// This subscriber fell behind and `count` events were dropped for it (the link never
    /// waits for a subscriber). The events after them follow as usual.
    Missed {
        /// How many events were dropped.
        count: u64,
    },
}

/// A subscription to a [`Client`]'s events; see [`Client::events`].
#[derive(Debug)]
pub struct Events {
    receiver: broadcast::Receiver<ClientEvent>,
}

impl Events {
    /// The next event; `None` once the client is gone (every `Client` clone and `Lock` made
    /// from it dropped), after the events still queued.
    pub async fn next(&mut self) -> Option<ClientEvent> {
        match self.receiver.recv().await {
            Ok(event) => Some(event),
            Err(broadcast::error::RecvError::Lagged(count)) => Some(ClientEvent::Missed { count }),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// The next event if one is queued now, without waiting.
    pub fn try_next(&mut self) -> Option<ClientEvent> {
        match self.receiver.try_recv() {
            Ok(event) => Some(event),
            Err(broadcast::error::TryRecvError::Lagged(count)) => {
                Some(ClientEvent::Missed { count })
            }
            Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed) => {
                None
            }
        }
    }
}

impl Client {
    /// Subscribes to what happens to this client's connection to its daemon: that the daemon
    /// went away, came back, and which holdings were resumed or lost ([`ClientEvent`]). Every
    /// subscription hears every event sent after it was made; one that falls more than 64
    /// events behind hears [`ClientEvent::Missed`] instead of the oldest.
    pub fn events(&self) -> Events {
        Events {
            receiver: self.link.announcer.sender.subscribe(),
        }
    }
}

/// The link's side: sends the events, and remembers which outage still owes its
/// [`ClientEvent::DaemonRestarted`].
pub(crate) struct Announcer {
    sender: broadcast::Sender<ClientEvent>,
    /// Whether an outage ended with nothing left to resume and no connection open yet: then
    /// the next redial, whoever makes it, announces the restart.
    owed_on_redial: Mutex<bool>,
}

impl Announcer {
    pub(crate) fn new() -> Announcer {
        Announcer {
            sender: broadcast::channel(BACKLOG).0,
            owed_on_redial: Mutex::new(false),
        }
    }

    fn send(&self, event: ClientEvent) {
        // No subscriber is not an error: nobody asked.
        let _ = self.sender.send(event);
    }

    pub(crate) fn daemon_gone(&self, resuming: Vec<LockRef>, deadline: Option<Instant>) {
        self.send(ClientEvent::DaemonGone { resuming, deadline });
    }

    pub(crate) fn restarted(&self, resumed: Vec<LockRef>, lost: Vec<LostLock>) {
        self.send(ClientEvent::DaemonRestarted { resumed, lost });
    }

    pub(crate) fn not_restarted_in_time(&self, lost: Vec<LostLock>) {
        self.send(ClientEvent::NotRestartedInTime { lost });
    }

    /// An outage ended with nothing to resume: announce the restart now if a connection is
    /// open already, else at the next redial. The caller holds the link's redial lock, so no
    /// redial slips between the check and the promise.
    pub(crate) fn nothing_left_to_resume(&self, connected: bool) {
        if connected {
            self.restarted(Vec::new(), Vec::new());
        } else {
            *self.owed_on_redial.lock().expect("announcer lock") = true;
        }
    }

    /// A new connection opened (under the link's redial lock): announces the restart an
    /// outage with nothing to resume still owes.
    pub(crate) fn redialed(&self) {
        let owed = std::mem::take(&mut *self.owed_on_redial.lock().expect("announcer lock"));
        if owed {
            self.restarted(Vec::new(), Vec::new());
        }
    }
}

#[cfg(test)]
mod tests {
    //! A subscriber that stops reading does not hold the link up: it hears how many events it
    //! missed, then the newest ones.

    use super::*;

    #[test]
    fn a_subscriber_that_falls_behind_hears_how_many_events_it_missed() {
        let announcer = Announcer::new();
        let mut events = Events {
            receiver: announcer.sender.subscribe(),
        };
        let overflow = 3;
        for _ in 0..BACKLOG + overflow {
            announcer.daemon_gone(Vec::new(), None);
        }
        assert_eq!(
            events.try_next(),
            Some(ClientEvent::Missed {
                count: overflow as u64
            })
        );
        let mut rest = 0;
        while let Some(event) = events.try_next() {
            assert!(matches!(event, ClientEvent::DaemonGone { .. }), "{event:?}");
            rest += 1;
        }
        assert_eq!(rest, BACKLOG);
    }

    #[test]
    fn a_restart_owed_by_an_idle_outage_is_announced_by_the_next_redial_only() {
        let announcer = Announcer::new();
        let mut events = Events {
            receiver: announcer.sender.subscribe(),
        };
        announcer.nothing_left_to_resume(false);
        assert_eq!(events.try_next(), None, "not before a connection opens");
        announcer.redialed();
        announcer.redialed();
        assert_eq!(
            events.try_next(),
            Some(ClientEvent::DaemonRestarted {
                resumed: Vec::new(),
                lost: Vec::new(),
            })
        );
        assert_eq!(events.try_next(), None, "once");
    }
}

//! What a connection and the lock actors share: the caller's identity, the way back to the
//! client, and the requests of the connection that are still open.
//!
//! It sits below both the server (which creates a [`SessionLink`] per connection) and the lock
//! actors (which answer through it), so that neither has to import the other. It also keeps,
//! outside every actor, what a failed actor's cleanup needs: which requests each connection has
//! routed to which actor and not yet had answered ([`SessionLink::open_at`]), and the live
//! connections themselves ([`Sessions`]). Every start and end of an acquire passes through
//! that bookkeeping, so it also keeps the caller's per-uid lock count ([`uids`]), counts how
//! each acquire ended for the metrics and records it in the audit log (its grant, the steal
//! that came with it, or its refusal): every answer to an acquire passes through
//! [`SessionLink::reply`], whichever path of the lock actor gave it.

pub mod outbound;
pub mod resume;
pub mod uids;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use ractor::ActorId;
use vfslock_proto::{Event, RequestId, Response, ServerFrame, WireError};

use crate::audit::{self, AuditLog, Details, Subject};
use crate::metrics::{LossCause, Outcome, StoreInstruments};

pub use outbound::{Outbound, Outgoing};
pub use resume::SessionSecret;
pub use uids::{ConnectionSlot, LockShare, UidUsage};

/// Who is on the other end of a connection, from the socket's peer credentials: never from
/// what the client says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    /// The client's process id (0 when the platform cannot tell).
    pub pid: i64,
    /// Effective uid; `None` where the platform does not tell (Windows).
    pub uid: Option<u32>,
    /// Effective gid and supplementary groups.
    pub groups: Vec<u32>,
    /// Root, or a member of the daemon's admin group (supplementary groups included): may
    /// break any lock and end any detached lease.
    pub admin: bool,
}

impl Caller {
    /// "uid N", for messages.
    pub fn describe(&self) -> String {
        match self.uid {
            Some(uid) => format!("uid {uid}"),
            None => "a caller of unknown uid".into(),
        }
    }
}

/// A connection as lock actors see it: where to send answers and events, who the client is,
/// and what it has asked that is not over yet.
#[derive(Debug)]
pub struct SessionLink {
    /// Unique per daemon run.
    pub id: u64,
    /// The way to the client: straight to its socket, or through its writer task.
    pub out: Outbound,
    /// Who the client is.
    pub caller: Caller,
    /// The protocol version the client negotiated: every frame to it is rewritten for that
    /// version here, so nothing else needs to know which version a client speaks.
    pub protocol: u32,
    open: Mutex<OpenRequests>,
    /// The caller's uid's count of acquires, which this connection's acquires are part of;
    /// `None` for a caller not counted by uid (root, the admin group, no uid).
    share: Option<LockShare>,
    /// The session's resume credentials and the resume window, told with every grant that is
    /// not a detached lease; `None` for a client older than protocol 5, or when the daemon's
    /// `locks.resume-window` is zero.
    pub resume: Option<(SessionSecret, std::time::Duration)>,
    /// Where the answers to this connection's acquires are recorded; `None` without an audit
    /// log.
    audit: Option<AuditLog>,
}

/// Which limit an acquire would pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// The connection's own (`limits.max-locks-per-session`).
    Session,
    /// Its uid's, over all of that uid's connections (`limits.max-locks-per-uid`).
    Uid {
        /// The uid.
        uid: u32,
        /// Its limit.
        limit: usize,
    },
}

/// The requests of one connection that were routed to a lock actor and are not over: each
/// acquire until its holding or wait ends, every other request until it is answered.
#[derive(Debug, Default)]
struct OpenRequests {
    by_id: HashMap<RequestId, Open>,
    /// How many of them are acquires, for the per-connection limit.
    acquires: usize,
}

/// An acquire on its way to an answer, for the metrics and the audit log.
#[derive(Debug)]
struct Measured {
    /// The store's series; `None` when metrics are off, or once a failed actor's cleanup
    /// counted the acquire.
    instruments: Option<Arc<StoreInstruments>>,
    /// Who asked for what, for the audit log; `None` without one.
    asked: Option<Box<Subject>>,
    arrived: Instant,
    queued: bool,
}

/// A granted acquire, as the audit log knows it.
#[derive(Debug)]
struct Held {
    subject: Box<Subject>,
    since: Instant,
}

/// One open request. What is known of it lives in its one entry, so that answering it costs
/// one lookup.
#[derive(Debug, Default)]
struct Open {
    /// Whether it is an acquire (counted against the limit).
    acquire: bool,
    /// Whether it is an acquire that was granted and is held.
    granted: bool,
    /// The actor it was routed to, once routed.
    actor: Option<ActorId>,
    /// An acquire being measured for the metrics or the audit log, until it is answered.
    measured: Option<Box<Measured>>,
    /// The audit log's view of a granted acquire still held, for the loss a failed actor can
    /// no longer record itself ([`SessionLink::open_at`]).
    held: Option<Box<Held>>,
    /// The request's span, until it is answered (debug logging only): the actor handling it
    /// enters it, so that what the actor logs and the store calls it makes are the request's.
    span: Option<tracing::Span>,
}

/// What a connection had open at an actor that failed, for the cleanup to answer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Orphans {
    /// Acquires granted and held: their holders are told the lease is lost.
    pub held: Vec<RequestId>,
    /// Every other request (waiting acquires included): answered with an error.
    pub pending: Vec<RequestId>,
}

impl SessionLink {
    /// A link for connection `id`.
    pub fn new(id: u64, out: Outbound, caller: Caller) -> Self {
        SessionLink {
            id,
            out,
            caller,
            protocol: vfslock_proto::handshake::PROTOCOL_VERSION,
            open: Mutex::default(),
            share: None,
            resume: None,
            audit: None,
        }
    }

    /// The same link, with the answers to its acquires recorded in `audit`.
    pub fn audited(mut self, audit: Option<AuditLog>) -> Self {
        self.audit = audit;
        self
    }

    /// Whether this connection's acquires are recorded in an audit log.
    pub fn is_audited(&self) -> bool {
        self.audit.is_some()
    }

    /// The same link, whose grants can be resumed with `secret` within `window` of a restart.
    pub fn resumable(mut self, secret: SessionSecret, window: std::time::Duration) -> Self {
        self.resume = Some((secret, window));
        self
    }

    /// The same link, with its acquires also counted in its uid's `share`.
    pub fn sharing(mut self, share: LockShare) -> Self {
        self.share = Some(share);
        self
    }

    /// The same link, to a client that speaks protocol `version`.
    pub fn speaking(mut self, version: u32) -> Self {
        self.protocol = version;
        self
    }

    fn open(&self) -> std::sync::MutexGuard<'_, OpenRequests> {
        self.open.lock().expect("open requests lock")
    }

    /// Answers request `id`, and ends it unless it is an acquire now held.
    pub fn reply(&self, id: RequestId, result: Result<Response, WireError>) {
        let held = matches!(&result, Ok(Response::Granted(_)));
        self.settle(id, held, Some(&result));
        let result = match (result, &self.resume) {
            (Ok(Response::Granted(grant)), Some((secret, window))) if !grant.metadata.detached => {
                Ok(Response::GrantedResumable {
                    grant,
                    resume: secret.ticket(*window),
                })
            }
            (result, _) => result,
        };
        self.out
            .send(ServerFrame::Response { id, result }.for_version(self.protocol));
    }

    /// Counts the acquire `id` against the connection's `limit` and its uid's share; refused
    /// (and not counted anywhere) if either is full.
    pub fn acquire_started(&self, id: RequestId, limit: usize) -> Result<(), Overflow> {
        let mut open = self.open();
        if open.acquires >= limit {
            return Err(Overflow::Session);
        }
        // An id reused while its acquire is open was counted already.
        let counted = open.by_id.get(&id).is_some_and(|o| o.acquire);
        if !counted {
            if let Some(share) = self.share.as_ref().filter(|share| !share.take()) {
                return Err(Overflow::Uid {
                    uid: share.uid(),
                    limit: share.limit(),
                });
            }
            open.acquires += 1;
        }
        open.by_id.insert(
            id,
            Open {
                acquire: true,
                ..Open::default()
            },
        );
        Ok(())
    }

    /// `count` acquires of this connection ended: uncounted here and in the uid's share.
    fn acquires_ended(&self, open: &mut OpenRequests, count: usize) {
        open.acquires -= count;
        if let Some(share) = &self.share {
            share.give_back(count);
        }
    }

    /// Records that request `id` was routed to `actor` (an acquire counted before, or any
    /// other request, which is open until answered).
    ///
    /// The span current here (the request's, in the session that routes it) goes with it.
    pub fn routed(&self, id: RequestId, actor: ActorId) {
        let mut open = self.open();
        let span = tracing::Span::current();
        let entry = open.by_id.entry(id).or_default();
        entry.actor = Some(actor);
        entry.span = (!span.is_disabled()).then_some(span);
    }

    /// Measures the acquire `id`, counted since [`SessionLink::acquire_started`], until it is
    /// answered: its outcome and how long it waited into `instruments`, and its answer into
    /// the audit log as `asked` (who asked for what). Nothing when neither is given.
    pub fn measure(
        &self,
        id: RequestId,
        instruments: Option<Arc<StoreInstruments>>,
        asked: Option<Subject>,
    ) {
        if instruments.is_none() && asked.is_none() {
            return;
        }
        let measured = Measured {
            instruments,
            asked: asked.map(Box::new),
            arrived: Instant::now(),
            queued: false,
        };
        if let Some(entry) = self.open().by_id.get_mut(&id) {
            entry.measured = Some(Box::new(measured));
        }
    }

    /// The span of request `id`, routed and not yet answered; a disabled span otherwise.
    pub fn span_of(&self, id: RequestId) -> tracing::Span {
        self.open()
            .by_id
            .get(&id)
            .and_then(|entry| entry.span.clone())
            .unwrap_or_else(tracing::Span::none)
    }

    /// The acquire `id` no longer waits or holds.
    pub fn acquire_ended(&self, id: RequestId) {
        self.settle(id, false, None);
    }

    /// Ends request `id`, or, with `held`, marks the acquire `id` as held; counts the outcome
    /// of a measured acquire answered with `answer`.
    fn settle(&self, id: RequestId, held: bool, answer: Option<&Result<Response, WireError>>) {
        let mut open = self.open();
        let Some(entry) = open.by_id.get_mut(&id) else {
            return;
        };
        // Answered or ended: a holding does not keep its acquire's span alive. A grant's lock
        // id goes into it first.
        if let Some(span) = entry.span.take() {
            if let Some(Ok(Response::Granted(grant))) = answer {
                span.record("lock_id", grant.lock_id.as_str());
            }
            if let Some(answer) = answer {
                let error = answer.as_ref().err().map(|e| e.kind);
                span.in_scope(|| tracing::debug!(?error, "answered"));
            }
        }
        if let Some(measured) = entry.measured.take() {
            if let Some(answer) = answer {
                if let Some(instruments) = &measured.instruments {
                    let (outcome, waited) = match answer {
                        Ok(_) if measured.queued => (Outcome::GrantedAfterWait, true),
                        Ok(_) => (Outcome::GrantedAtOnce, true),
                        Err(e) => {
                            let outcome = Outcome::of_error(e.kind);
                            (outcome, outcome == Outcome::TimedOut)
                        }
                    };
                    let waited = waited.then(|| measured.arrived.elapsed());
                    instruments.acquisition(outcome, waited);
                }
                if let Some(holding) = self.record_answer(&measured, answer) {
                    entry.held = Some(Box::new(holding));
                }
            }
        }
        if held && entry.acquire {
            entry.granted = true;
            return;
        }
        if open.by_id.remove(&id).is_some_and(|o| o.acquire) {
            self.acquires_ended(&mut open, 1);
        }
    }

    /// Records the answer to an acquire in the audit log: its grant (after its steal, if it
    /// took over a stale lock) or its refusal. Returns what the log knows of a holding that
    /// this connection now holds.
    fn record_answer(
        &self,
        measured: &Measured,
        answer: &Result<Response, WireError>,
    ) -> Option<Held> {
        let (Some(audit), Some(asked)) = (&self.audit, &measured.asked) else {
            return None;
        };
        let waited = measured.arrived.elapsed();
        let grant = match answer {
            Ok(Response::Granted(grant)) => grant,
            Ok(_) => return None,
            Err(error) => {
                audit.record((**asked).clone(), Details::refused(error, Some(waited)));
                return None;
            }
        };
        let subject = Subject {
            target: grant.target.clone(),
            lock_id: Some(grant.lock_id.clone()),
            token: grant.token,
            ..(**asked).clone()
        };
        if let Some(stale) = &grant.stole {
            let stolen_from = stale.into();
            audit.record(subject.clone(), Details::Steal { stolen_from });
        }
        let waited_ms = audit::millis(waited);
        audit.record(subject.clone(), Details::Grant { waited_ms });
        // A detached lease is not this connection's to lose.
        (!grant.metadata.detached).then(|| Held {
            subject: Box::new(subject),
            since: Instant::now(),
        })
    }

    /// How many acquires of this connection wait or hold.
    pub fn open_acquires(&self) -> usize {
        self.open().acquires
    }

    /// Takes out every request routed to `actor`, sorted into held acquires and the rest.
    pub fn open_at(&self, actor: ActorId) -> Orphans {
        let mut open = self.open();
        let mut orphans = Orphans::default();
        let mut acquires = 0;
        open.by_id.retain(|&id, entry| {
            if entry.actor != Some(actor) {
                return true;
            }
            if entry.granted {
                orphans.held.push(id);
            } else {
                orphans.pending.push(id);
            }
            acquires += usize::from(entry.acquire);
            if let Some(pending) = &mut entry.measured {
                // Answered by the cleanup as the daemon's failure; the audit log records the
                // answer when it goes out.
                if let Some(instruments) = pending.instruments.take() {
                    instruments.acquisition(Outcome::Error, None);
                }
            }
            if let (Some(lost), Some(audit)) = (entry.held.take(), &self.audit) {
                // The failed actor's state is gone: this is all that is left of the holding.
                let details = Details::Lost {
                    cause: LossCause::DaemonFailed.name(),
                    message: "the lock actor of its target failed".into(),
                    held_ms: Some(audit::millis(lost.since.elapsed())),
                };
                audit.record(*lost.subject, details);
            }
            // An audited acquire stays, no longer counted nor routed, until the cleanup's
            // answer is recorded.
            let answer_to_record = entry.measured.as_ref().is_some_and(|m| m.asked.is_some());
            if answer_to_record {
                entry.acquire = false;
                entry.actor = None;
                entry.span = None;
            }
            answer_to_record
        });
        self.acquires_ended(&mut open, acquires);
        orphans.held.sort_unstable();
        orphans.pending.sort_unstable();
        orphans
    }

    /// Announces `event` about request `id`.
    pub fn event(&self, id: RequestId, event: Event) {
        if matches!(event, Event::Queued { .. } | Event::QueuePosition { .. }) {
            let mut open = self.open();
            if let Some(measured) = open.by_id.get_mut(&id).and_then(|e| e.measured.as_mut()) {
                measured.queued = true;
            }
        }
        self.out
            .send(ServerFrame::Event { id, event }.for_version(self.protocol));
    }

    /// Whether the client is gone.
    pub fn is_closed(&self) -> bool {
        self.out.is_closed()
    }
}

impl Drop for SessionLink {
    /// The connection is closed and every actor has let go of it: what is still counted ends
    /// here, and goes back to the uid. This is how a closed connection's waits end: its
    /// targets drop its waiters without answering them (there is no one to answer), and with
    /// them their references to this link. (Holdings are released, and counted down, as
    /// they end.)
    fn drop(&mut self) {
        let open = self.open.get_mut().unwrap_or_else(|e| e.into_inner());
        if let (Some(share), count @ 1..) = (&self.share, open.acquires) {
            share.give_back(count);
        }
    }
}

/// The live connections, so that the cleanup of a failed actor can find what they had open at
/// it. Entries are weak: a connection's link is owned by its session and the actors it asked.
#[derive(Debug, Default)]
pub struct Sessions {
    live: Mutex<HashMap<u64, Weak<SessionLink>>>,
}

impl Sessions {
    /// Adds a connection.
    pub fn register(&self, link: &Arc<SessionLink>) {
        let mut live = self.live.lock().expect("sessions lock");
        live.insert(link.id, Arc::downgrade(link));
    }

    /// Removes a closed connection.
    pub fn unregister(&self, id: u64) {
        self.live.lock().expect("sessions lock").remove(&id);
    }

    /// Every live connection.
    pub fn all(&self) -> Vec<Arc<SessionLink>> {
        let live = self.live.lock().expect("sessions lock");
        live.values().filter_map(Weak::upgrade).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vfslock_proto::ErrorKind;

    fn link() -> SessionLink {
        let (out, _frames) = Outbound::queued();
        SessionLink::new(1, out, Caller::default())
    }

    fn actor(n: u64) -> ActorId {
        ActorId::Local(n)
    }

    #[test]
    fn the_acquire_limit_counts_acquires_until_they_end_and_nothing_else() {
        let link = link();
        assert!(link.acquire_started(1, 2).is_ok());
        assert!(link.acquire_started(2, 2).is_ok());
        assert_eq!(
            link.acquire_started(3, 2),
            Err(Overflow::Session),
            "a third acquire passed a limit of 2"
        );
        link.routed(4, actor(7)); // a release: not an acquire
        assert_eq!(link.open_acquires(), 2);
        link.reply(1, Err(WireError::new(ErrorKind::Timeout, "no")));
        assert_eq!(link.open_acquires(), 1, "a refused acquire still counts");
        link.acquire_ended(2);
        assert_eq!(link.open_acquires(), 0);
    }

    #[test]
    fn a_failed_actors_requests_are_taken_out_as_held_or_pending() {
        let link = link();
        for id in [1, 2] {
            assert!(link.acquire_started(id, 10).is_ok());
            link.routed(id, actor(7));
        }
        assert!(link.acquire_started(3, 10).is_ok());
        link.routed(3, actor(8)); // another actor: untouched
        link.routed(4, actor(7)); // a metadata request in the failed actor's mailbox
        link.settle(1, true, None); // granted
        let orphans = link.open_at(actor(7));
        assert_eq!(
            orphans,
            Orphans {
                held: vec![1],
                pending: vec![2, 4],
            }
        );
        assert_eq!(
            link.open_acquires(),
            1,
            "only the other actor's acquire is left"
        );
        assert_eq!(link.open_at(actor(7)), Orphans::default());
    }

    /// Two connections of uid 1000 sharing a limit of 3 acquires.
    fn links_of_one_uid(usage: &Arc<UidUsage>) -> (SessionLink, SessionLink) {
        let of_uid = |id| {
            let (out, _frames) = Outbound::queued();
            SessionLink::new(id, out, Caller::default()).sharing(LockShare::new(usage, 1000, 3))
        };
        (of_uid(1), of_uid(2))
    }

    #[test]
    fn a_uids_acquires_are_counted_over_its_connections_until_each_ends() {
        let usage = Arc::new(UidUsage::default());
        let (first, second) = links_of_one_uid(&usage);
        for id in [1, 2] {
            assert!(first.acquire_started(id, 100).is_ok());
        }
        assert!(second.acquire_started(1, 100).is_ok());
        assert_eq!(
            second.acquire_started(2, 100),
            Err(Overflow::Uid {
                uid: 1000,
                limit: 3
            }),
            "a fourth acquire of the uid passed its limit of 3"
        );
        assert_eq!(
            second.open_acquires(),
            1,
            "the refused acquire is not counted"
        );
        assert!(
            first.acquire_started(1, 100).is_ok(),
            "an id already counted is not counted twice"
        );
        assert_eq!(usage.usage(1000).locks, 3);
        // Each way an acquire ends gives its place back: refused, ended, and held then
        // released.
        first.reply(1, Err(WireError::new(ErrorKind::Timeout, "no")));
        assert_eq!(usage.usage(1000).locks, 2);
        first.acquire_ended(2);
        assert_eq!(usage.usage(1000).locks, 1);
        assert!(second.acquire_started(2, 100).is_ok());
        second.settle(2, true, None); // granted
        assert_eq!(usage.usage(1000).locks, 2, "a held lock still counts");
        second.acquire_ended(2);
        assert_eq!(usage.usage(1000).locks, 1);
        // A failed actor's cleanup takes out what was open at it.
        second.routed(1, actor(7));
        second.open_at(actor(7));
        assert_eq!(usage.usage(1000), uids::Usage::default());
    }

    #[test]
    fn a_closed_connection_gives_back_what_it_still_counted() {
        let usage = Arc::new(UidUsage::default());
        let (first, second) = links_of_one_uid(&usage);
        for id in [1, 2] {
            assert!(first.acquire_started(id, 100).is_ok());
        }
        assert!(second.acquire_started(1, 100).is_ok());
        drop(first);
        assert_eq!(usage.usage(1000).locks, 1);
        assert!(second.acquire_started(2, 100).is_ok(), "a place was freed");
    }

    #[test]
    fn a_caller_without_a_share_is_limited_by_its_connection_only() {
        let link = link();
        for id in 0..10 {
            assert!(link.acquire_started(id, 10).is_ok());
        }
        assert_eq!(link.acquire_started(10, 10), Err(Overflow::Session));
    }
}

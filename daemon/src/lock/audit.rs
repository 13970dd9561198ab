//! What a lock actor records in the audit log ([`crate::audit`]): the end of every holding,
//! released or lost, an admin's break, and the release of a detached lease. Each record is
//! built here, so that each place in the lock code where a holding ends records it in one line.
//!
//! Grants, steals and refusals are recorded where every answer to an acquire passes
//! ([`crate::link::SessionLink::reply`]), and so is the loss a failed actor, whose state is
//! gone, can no longer record.

use std::time::{Instant, SystemTime};

use vfslock_proto::{LockMetadata, LockMode};

use super::actor::LockActor;
use super::state::{Holding, Member};
use crate::audit::{self, By, Details, Subject};
use crate::link::Caller;
use crate::lockfile::joint::HolderEntry;
use crate::metrics::LossCause;

/// How a holding ended, as the audit log says it.
#[derive(Clone, Copy, Debug)]
pub enum Ended<'a> {
    /// Its holder released it.
    Released,
    /// Its holder's connection closed while it held it.
    ConnectionClosed,
    /// Its grant crossed its cancel, and it was given back at once.
    Cancelled,
    /// It was lost, for this cause; the text is what its holder was told.
    Lost(LossCause, &'a str),
}

impl Ended<'_> {
    /// The record of a holding granted at `since` that ended this way.
    fn details(self, since: Instant) -> Details {
        let held_ms = Some(audit::millis(since.elapsed()));
        let released = |cause| Details::Release {
            cause,
            held_ms,
            by: None,
        };
        match self {
            Ended::Released => released("released"),
            Ended::ConnectionClosed => released("connection_closed"),
            Ended::Cancelled => released("cancelled"),
            Ended::Lost(cause, message) => Details::Lost {
                cause: cause.name(),
                message: message.to_owned(),
                held_ms,
            },
        }
    }
}

/// Who asked, as a break or a detached release records it.
fn by(caller: &Caller) -> By {
    By {
        pid: audit::known_pid(caller.pid),
        uid: caller.uid,
    }
}

impl LockActor {
    /// The exclusive `holding` of `url` ended as `ended` says.
    pub(super) fn audit_ended(&self, url: &str, holding: &Holding, ended: Ended<'_>) {
        if let Some(log) = &self.ctx.audit {
            log.record(holding_subject(url, holding), ended.details(holding.since));
        }
    }

    /// `member`'s share of `url`, held in `mode` through our `entry`, ended as `ended` says.
    pub(super) fn audit_member_ended(
        &self,
        url: &str,
        (mode, entry): (LockMode, &HolderEntry),
        member: &Member,
        ended: Ended<'_>,
    ) {
        let Some(log) = &self.ctx.audit else {
            return;
        };
        let caller = &member.session.caller;
        // A share kept across a restart for a session that has not come back: the kernel's
        // word about its holder is in the journal's owner.
        let uid = member
            .unclaimed
            .as_ref()
            .map_or(caller.uid, |owner| owner.uid);
        let subject = Subject {
            target: url.to_owned(),
            lock_id: Some(member.lock_id.clone()),
            token: entry.token,
            pid: audit::known_pid(caller.pid),
            uid,
            host: Some(entry.hostname.clone()),
            owner: member.owner_id.clone(),
            ..Subject::default()
        }
        .in_mode(mode);
        log.record(subject, ended.details(member.since));
    }

    /// An admin (`caller`) broke `url`'s lock, held by this daemon's `holding`.
    pub(super) fn audit_broken_holding(
        &self,
        url: &str,
        holding: &Holding,
        caller: &Caller,
        reason: &str,
    ) {
        self.audit_break(holding_subject(url, holding), caller, reason);
    }

    /// An admin (`caller`) broke `url`'s lock, whose file said `holder`, held in `mode`.
    pub(super) fn audit_broken_file(
        &self,
        url: &str,
        (holder, mode): (&LockMetadata, LockMode),
        caller: &Caller,
        reason: &str,
    ) {
        self.audit_break(Subject::holder(url, holder, mode), caller, reason);
    }

    fn audit_break(&self, subject: Subject, caller: &Caller, reason: &str) {
        if let Some(log) = &self.ctx.audit {
            let details = Details::Break {
                by: by(caller),
                reason: reason.to_owned(),
            };
            log.record(subject, details);
        }
    }

    /// `caller` released the detached lease of `url` whose file said `holder`, held in `mode`.
    pub(super) fn audit_detached_released(
        &self,
        url: &str,
        (holder, mode): (&LockMetadata, LockMode),
        caller: &Caller,
    ) {
        let Some(log) = &self.ctx.audit else {
            return;
        };
        // Its grant may have been another daemon's, or before a restart: the file's first
        // write is what tells how long it was held.
        let held_ms = holder
            .acquired_at()
            .and_then(|at| SystemTime::now().duration_since(at).ok())
            .map(audit::millis);
        let details = Details::Release {
            cause: "released",
            held_ms,
            by: Some(by(caller)),
        };
        log.record(Subject::holder(url, holder, mode), details);
    }
}

/// Who holds `url` through this daemon's exclusive `holding`: as its lock file says.
fn holding_subject(url: &str, holding: &Holding) -> Subject {
    let record = &holding.record;
    Subject {
        target: url.to_owned(),
        lock_id: Some(record.lock_id.clone()),
        token: record.token,
        pid: audit::known_pid(record.pid),
        uid: record.uid,
        host: Some(record.hostname.clone()),
        owner: record.owner_id.clone(),
        ..Subject::default()
    }
    .in_mode(LockMode::Exclusive)
}

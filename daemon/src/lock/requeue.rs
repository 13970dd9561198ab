//! Waiters that outlive the daemon: a waiter keeps its place in the queue across a restart.
//!
//! Every waiter gets a place when it arrives, an ordinal that grows across restarts
//! ([`crate::context::Context::next_wait_ordinal`]); the queue is kept in that order. A waiter
//! whose session may resume is journaled while it waits, and told its place and the session's
//! credentials ([`vfslock_proto::Event::Queued`]). After a restart the daemon sends each target
//! the places its predecessor left open ([`LockMessage::AdoptWaits`]); a waiter that asks again
//! ([`vfslock_proto::Request::Requeue`]) and proves its session takes its old place back. While
//! the resume window is open, a place not yet claimed holds back every waiter behind it, so
//! that the waiters that ask again keep their first-come order among themselves and come
//! before every newcomer, whichever reconnects first. When the window closes, the places nobody
//! claimed are forgotten and the queue is served.
//!
//! Order is fairness, not safety: a waiter that never comes back only delays the others, by
//! at most the window.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use ractor::ActorRef;
use vfslock_proto::{ErrorKind, WaitPlace, WireError};

use super::actor::{LockActor, LockMessage};
use super::state::LockState;
use crate::context::Context;
use crate::journal::Owner;
use crate::link::SessionLink;

/// A waiter's place as the journal has it: the line is closed (`{"waited": ...}`) when the
/// waiter is dropped, whichever way it leaves the queue, so that no path can forget it.
#[derive(Debug)]
pub struct JournaledPlace {
    ordinal: u64,
    ctx: Arc<Context>,
}

impl JournaledPlace {
    /// Journals that `session`'s waiter waits for `target` at `ordinal`.
    pub fn write(ctx: &Arc<Context>, ordinal: u64, target: &str, session: &SessionLink) -> Self {
        ctx.journal_wait(ordinal, target, session);
        JournaledPlace {
            ordinal,
            ctx: ctx.clone(),
        }
    }

    /// A place the journal already has open (written by the previous run).
    fn inherited(ctx: &Arc<Context>, ordinal: u64) -> Self {
        JournaledPlace {
            ordinal,
            ctx: ctx.clone(),
        }
    }
}

impl Drop for JournaledPlace {
    fn drop(&mut self) {
        self.ctx.journal_waited(self.ordinal);
    }
}

/// The places of the previous run's waiters that have not asked again yet.
#[derive(Debug, Default)]
pub struct ExpectedWaits {
    places: BTreeMap<u64, Owner>,
    until: Option<Instant>,
}

impl ExpectedWaits {
    /// Whether places are still held for waiters that may ask again.
    pub fn active(&self) -> bool {
        !self.places.is_empty() && self.until.is_some_and(|until| Instant::now() < until)
    }

    /// Whether a waiter at `ordinal` must let an earlier waiter of the previous run go first.
    pub fn holds_back(&self, ordinal: u64) -> bool {
        self.active()
            && self
                .places
                .first_key_value()
                .is_some_and(|(&first, _)| first < ordinal)
    }

    /// Whether no place is held.
    pub fn is_empty(&self) -> bool {
        self.places.is_empty()
    }
}

/// Why a claimed place is not given.
pub fn not_your_place(url: &str) -> WireError {
    WireError::new(
        ErrorKind::PermissionDenied,
        format!(
            "the place in the queue of {url} that this acquire asks for belongs to another \
             session; acquire without it"
        ),
    )
}

impl LockActor {
    /// Holds the places `waits` (ordinals and owners, of this target) for their sessions until
    /// `until`.
    pub(super) fn adopt_waits(
        &self,
        myself: &ActorRef<LockMessage>,
        state: &mut LockState,
        waits: Vec<(u64, Owner)>,
        until: Instant,
    ) {
        if waits.is_empty() {
            return;
        }
        state.expected.places.extend(waits);
        state.expected.until = Some(state.expected.until.map_or(until, |u| u.max(until)));
        myself.send_after(until.saturating_duration_since(Instant::now()), || {
            LockMessage::WindowClosed
        });
    }

    /// The place an acquire of `session` takes: the one it claims, if the previous run left it
    /// open and `session` proves it is the owner's; a new one if the place is not known here
    /// (the daemon did not restart, or the window closed). The place's journal line is taken
    /// over, to be closed when the waiter leaves.
    pub(super) fn claim_place(
        &self,
        state: &mut LockState,
        session: &SessionLink,
        place: Option<&WaitPlace>,
    ) -> Result<(u64, Option<JournaledPlace>), WireError> {
        let fresh = || Ok((self.ctx.next_wait_ordinal(), None));
        let Some(place) = place else {
            return fresh();
        };
        let Some(owner) = state.expected.places.get(&place.ordinal) else {
            return fresh();
        };
        let url = &state.target.url;
        let (claimed, secret) = (&place.session, &place.secret);
        if !crate::link::resume::admits_session(owner, claimed, secret, session, (url, "requeue")) {
            return Err(not_your_place(url));
        }
        state.expected.places.remove(&place.ordinal);
        self.ctx.restarts.count_requeued();
        tracing::debug!(target = %url, ordinal = place.ordinal, "a waiter of the previous run took its place back");
        let journaled = JournaledPlace::inherited(&self.ctx, place.ordinal);
        Ok((place.ordinal, Some(journaled)))
    }

    /// Forgets the places nobody claimed once the window has closed; whether it has.
    pub(super) fn expire_places(&self, state: &mut LockState) -> bool {
        if state
            .expected
            .until
            .is_some_and(|until| Instant::now() < until)
        {
            return false;
        }
        let forgotten = std::mem::take(&mut state.expected.places);
        state.expected.until = None;
        if !forgotten.is_empty() {
            tracing::info!(target = %state.target.url, waiters = forgotten.len(), "waiters of the previous run did not ask again within the resume window; their places are given up");
        }
        for ordinal in forgotten.into_keys() {
            self.ctx.journal_waited(ordinal);
        }
        true
    }
}

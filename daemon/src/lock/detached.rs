//! Detached leases and an admin's break.
//!
//! A detached lease belongs to a uid and a lock id, not to a connection: its lock file is its
//! whole state, so every action on it reads the file first and acts only on that exact version.
//! Handles [`LockMessage::Release`] and [`LockMessage::RenewDetached`] for detached leases, and
//! [`LockMessage::Break`].

use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use vfslock_proto::{ErrorKind, LockMode, Response, WireError};

use super::acquire::maker;
use super::actor::{LockActor, LockMessage};
use super::replies;
use super::state::LockState;
use crate::link::SessionLink;
use crate::lockfile::joint::Joint;
use crate::lockfile::{self, LockRecord};
use crate::metrics::LossCause;
use crate::store::{Conditional, Observed, Replaced, Token};

impl LockActor {
    /// Reads the lock file and checks that it is the detached lease `lock_id` and that
    /// `session` may act on it.
    async fn detached_lease(
        &self,
        state: &LockState,
        session: &SessionLink,
        lock_id: &str,
    ) -> Result<Option<(Observed, lockfile::ParsedLock)>, WireError> {
        let Some(observed) = self
            .within(state.target.store.read(&state.target.lock_path))
            .await
            .map_err(replies::store_error)?
        else {
            return Ok(None);
        };
        let parsed = lockfile::parse(&observed.bytes);
        if !parsed.detached || parsed.lock_id.as_deref() != Some(lock_id) {
            return Ok(None);
        }
        let caller = &session.caller;
        if !(caller.admin || (caller.uid.is_some() && caller.uid == parsed.uid)) {
            tracing::warn!(target = %state.target.url, uid = ?caller.uid, owner = ?parsed.uid, "refused an action on another user's detached lease");
            return Err(replies::not_your_detached_lease(
                &state.target.url,
                lock_id,
                parsed.uid,
            ));
        }
        Ok(Some((observed, parsed)))
    }

    /// Releases the detached lease `lock_id`, if it still is the lock file.
    pub(super) async fn release_detached(
        &self,
        state: &LockState,
        session: &SessionLink,
        lock_id: &str,
    ) -> Result<Response, WireError> {
        let Some((observed, parsed)) = self.detached_lease(state, session, lock_id).await? else {
            // Perhaps a shared one: an entry of a joint lock file.
            let removed = self
                .change_detached_entry(state, session, lock_id, None)
                .await?;
            if let Some((mode, entry)) = &removed {
                tracing::info!(target = %state.target.url, %lock_id, "detached shared lease released");
                let holder = (&super::joint::entry_metadata(entry), mode.lock_mode());
                self.audit_detached_released(&state.target.url, holder, &session.caller);
            }
            return Ok(Response::Released {
                held: removed.is_some(),
            });
        };
        match self.delete_if_ours(state, &observed.version()).await {
            Some(Conditional::Done) => {
                tracing::info!(target = %state.target.url, %lock_id, "detached lease released");
                let holder = (&parsed, LockMode::Exclusive);
                self.audit_detached_released(&state.target.url, holder, &session.caller);
                Ok(Response::Released { held: true })
            }
            _ => Ok(Response::Released { held: false }),
        }
    }

    /// Extends the detached lease `lock_id` by its TTL (or `ttl`) from now.
    pub(super) async fn renew_detached(
        &self,
        state: &LockState,
        session: &SessionLink,
        lock_id: &str,
        ttl: Option<Duration>,
    ) -> Result<Response, WireError> {
        let gone = || replies::no_detached_lease(&state.target.url, lock_id);
        let Some((observed, parsed)) = self.detached_lease(state, session, lock_id).await? else {
            return match self
                .change_detached_entry(state, session, lock_id, Some(ttl))
                .await?
            {
                Some((_, entry)) => Ok(Response::Renewed(super::joint::entry_metadata(&entry))),
                None => Err(gone()),
            };
        };
        let now = self.ctx.now();
        let record = LockRecord {
            ttl: ttl.unwrap_or(Duration::from_nanos(parsed.ttl_ns.max(1) as u64)),
            hostname: self.ctx.host_id.clone(),
            detached: true,
            ..LockRecord::renewing(&parsed, lock_id, &self.ctx.instance_id, now)
        };
        if record.ttl.is_zero() {
            return Err(WireError::new(
                ErrorKind::InvalidTarget,
                "a detached lease needs a TTL above zero",
            ));
        }
        let (_, stale) = self.judge(state, &observed);
        if stale {
            return Err(gone());
        }
        match self
            .within(state.target.store.replace(
                &state.target.lock_path,
                &observed.version(),
                Token::Keep,
                maker(Arc::new(record)),
            ))
            .await
        {
            Ok(Replaced::Done(written)) => Ok(Response::Renewed(lockfile::to_wire(
                &lockfile::parse(&written.bytes),
                written.modified,
                false,
            ))),
            Ok(Replaced::Changed) => Err(gone()),
            Err(e) => Err(replies::store_error(e)),
        }
    }

    /// An admin's break: the holder of this daemon is told its lease is lost; any other
    /// holder's file (another host's, a Go peer's, a detached lease) is deleted if it is still
    /// the version read, and its holder, if a vfslockd serves it, learns at its next renewal.
    pub(super) async fn break_lock(
        &self,
        myself: &ActorRef<LockMessage>,
        state: &mut LockState,
        session: &SessionLink,
        reason: &str,
    ) -> Result<Response, WireError> {
        let caller = &session.caller;
        let uid = caller.uid.map_or("unknown".to_owned(), |u| u.to_string());
        let who = format!("uid {uid} (pid {})", caller.pid);
        if let Some(holding) = state.holding() {
            let broken = lockfile::into_wire(lockfile::parse(&holding.written.bytes), None, false);
            tracing::warn!(target = %state.target.url, by = %who, %reason, holder_pid = broken.pid, "lock broken by an admin");
            self.audit_broken_holding(&state.target.url, holding, caller, reason);
            let why = format!(
                "the lock on {} was broken by {who}: {reason}",
                state.target.url
            );
            self.lose(myself, state, (why, LossCause::StolenOrBroken), true)
                .await;
            return Ok(Response::Broken(Some(broken)));
        }
        // Recorded once: when our holders lose it, or else when the file goes.
        let mut recorded = false;
        if let Some(joint) = state.joint() {
            // Our holders of a shared lock are told first; the file, with every other
            // holder's entry, goes below.
            tracing::warn!(target = %state.target.url, by = %who, %reason, "shared lock broken by an admin");
            let ours = super::joint::entry_metadata(&joint.entry);
            let holder = (&ours, joint.mode.lock_mode());
            self.audit_broken_file(&state.target.url, holder, caller, reason);
            recorded = true;
            let why = format!(
                "the lock on {} was broken by {who}: {reason}",
                state.target.url
            );
            self.end_joint_lost(state, (why, LossCause::StolenOrBroken));
        }
        for _ in 0..4 {
            let observed = self
                .within(state.target.store.read(&state.target.lock_path))
                .await
                .map_err(replies::store_error)?;
            let Some(observed) = observed else {
                return Ok(Response::Broken(None));
            };
            match self
                .delete_exactly(state, &observed.version())
                .await
                .map_err(replies::store_error)?
            {
                Conditional::Done => {
                    let (broken, _) = self.judge(state, &observed);
                    tracing::warn!(target = %state.target.url, by = %who, %reason, holder_pid = broken.pid, holder_host = %broken.hostname, "lock broken by an admin");
                    if !recorded {
                        let mode = Joint::parse(&observed.bytes)
                            .map_or(LockMode::Exclusive, |joint| joint.mode.lock_mode());
                        self.audit_broken_file(&state.target.url, (&broken, mode), caller, reason);
                    }
                    return Ok(Response::Broken(Some(broken)));
                }
                Conditional::Changed => continue,
            }
        }
        Err(replies::kept_changing_while_breaking(&state.target.url))
    }
}

#[cfg(test)]
#[path = "tests/detached.rs"]
mod tests;

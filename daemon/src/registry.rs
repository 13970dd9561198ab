//! Which actor owns which target: starts one on first use, and lets it stop when idle without
//! losing a message on its way to it.
//!
//! Every routed message is counted per target under the registry's lock, at the moment it is
//! sent. An idle actor asks to retire with the number of routed messages it has handled; the
//! registry agrees only if the two counts are equal, removing the entry in the same critical
//! section. So a message is either handled by the old actor (counts differ, it stays) or routed
//! to a fresh one (the entry is gone) — never sent to an actor that is stopping.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ractor::{Actor, ActorId, ActorRef};

use crate::address::Address;
use crate::context::Context;
use crate::target::{TargetLock, TargetLockMessage};

#[derive(Debug)]
struct Entry {
    actor: ActorRef<TargetLockMessage>,
    routed: u64,
}

/// Target actors by target key.
#[derive(Debug, Default)]
pub struct Registry {
    entries: Mutex<HashMap<String, Entry>>,
}

/// A message that could not be delivered because the daemon could not start an actor.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the actor for {target}: {reason}")]
pub struct RouteError {
    target: String,
    reason: String,
}

impl Registry {
    /// Sends `message` to the actor of `address`, starting it if needed.
    pub async fn route(
        ctx: &Arc<Context>,
        address: &Address,
        mut message: TargetLockMessage,
    ) -> Result<(), RouteError> {
        let key = address.key();
        let registry = &ctx.registry;
        loop {
            message = match registry.send_existing(key, message) {
                Ok(()) => return Ok(()),
                Err(back) => back,
            };
            let (actor, _) = Actor::spawn(None, TargetLock { ctx: ctx.clone() }, address.clone())
                .await
                .map_err(|e| RouteError {
                    target: address.url(),
                    reason: e.to_string(),
                })?;
            let mut entries = registry.entries.lock().expect("registry lock");
            if entries.contains_key(key) {
                // Another session started one first; ours was never routed anything.
                actor.stop(None);
                continue;
            }
            entries.insert(key.to_owned(), Entry { actor, routed: 0 });
        }
    }

    /// Sends `message` to the live actor of `key`; gives it back when there is none.
    pub fn send_existing(
        &self,
        key: &str,
        message: TargetLockMessage,
    ) -> Result<(), TargetLockMessage> {
        let mut entries = self.entries.lock().expect("registry lock");
        let Some(entry) = entries.get_mut(key) else {
            return Err(message);
        };
        match entry.actor.cast(message) {
            Ok(()) => {
                entry.routed += 1;
                Ok(())
            }
            Err(e) => {
                // The actor died (a panic in a handler): forget it, let a fresh one serve.
                tracing::error!(target = key, "target actor is gone; starting a fresh one");
                entries.remove(key);
                match e {
                    ractor::MessagingErr::SendErr(message) => Err(message),
                    _ => unreachable!("cast only fails with SendErr carrying the message"),
                }
            }
        }
    }

    /// Agrees to retire the actor `id` of `key` if it has handled every message routed to it.
    pub fn try_retire(&self, key: &str, id: ActorId, handled: u64) -> bool {
        let mut entries = self.entries.lock().expect("registry lock");
        match entries.get(key) {
            Some(entry) if entry.actor.get_id() == id && entry.routed == handled => {
                entries.remove(key);
                true
            }
            _ => false,
        }
    }

    /// Removes and returns every actor (at shutdown): nothing more is routed to them.
    pub fn drain(&self) -> Vec<ActorRef<TargetLockMessage>> {
        let mut entries = self.entries.lock().expect("registry lock");
        entries.drain().map(|(_, e)| e.actor).collect()
    }

    /// Every live actor.
    pub fn actors(&self) -> Vec<ActorRef<TargetLockMessage>> {
        let entries = self.entries.lock().expect("registry lock");
        entries.values().map(|e| e.actor.clone()).collect()
    }
}

//! Which actor owns which target: starts one on first use, lets it stop when idle without
//! losing a message on its way to it, and puts a fresh one in place of one that failed.
//!
//! Every routed message is counted per target under the registry's lock, at the moment it is
//! sent. An idle actor asks to retire with the number of routed messages it has handled; the
//! registry agrees only if the two counts are equal, removing the entry in the same critical
//! section. So a message is either handled by the old actor (counts differ, it stays) or routed
//! to a fresh one (the entry is gone) — never sent to an actor that is stopping.
//!
//! Every request routed is also recorded, in the same critical section and before it is sent,
//! as open at that actor in its connection's link ([`SessionLink::routed`]). When an actor
//! fails, [`Registry::replace_failed`] swaps in a successor and sends it
//! [`LockMessage::Recover`] under the same lock: every request stamped with the failed actor is
//! stamped before the swap, and the successor's cleanup runs before anything routed to it.
//!
//! A restart owes targets their startup messages (the previous run's holdings and waiters'
//! places to keep, [`Registry::owe`]). Starting thousands of actors at once would fill the
//! runtime's queues ahead of every request of everyone else, so they are started one by one in
//! the background ([`Registry::deliver_owed`]); a target asked for before its turn gets its
//! actor at once. Either way the owed messages are put in the actor's mailbox when its entry is
//! inserted, under the registry's lock: nothing routed to it can come before them, so the
//! target is fenced before anyone can ask for it.
//!
//! [`SessionLink::routed`]: crate::link::SessionLink::routed

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use ractor::{Actor, ActorCell, ActorId, ActorRef, SpawnErr};

use super::actor::{LockActor, LockMessage};
use super::state::Tally;
use super::supervisor::Supervisor;
use crate::address::Address;
use crate::context::Context;

#[derive(Debug)]
struct Entry {
    actor: ActorRef<LockMessage>,
    routed: u64,
    /// What the actor serves, for a successor if it fails (shared with the sessions that
    /// named it: a held lock on a target of its own must not pay for a second copy).
    address: Arc<Address>,
    /// Its share of the gauges, taken out if it fails.
    tally: Arc<Tally>,
}

/// What a target without an actor yet is owed: its address, and the startup messages.
type Owed = (Arc<Address>, Vec<LockMessage>);

/// Lock actors by target key, under one supervisor.
#[derive(Debug)]
pub struct Registry {
    ctx: Arc<Context>,
    entries: Mutex<HashMap<String, Entry>>,
    /// Startup messages owed to targets without an actor yet (locked after `entries`).
    owed: Mutex<HashMap<String, Owed>>,
    supervisor: OnceLock<ActorCell>,
}

/// A message that could not be delivered because the daemon could not start an actor.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the lock actor for {target}: {reason}")]
pub struct RouteError {
    target: String,
    reason: String,
}

impl Registry {
    /// An empty registry and its supervisor.
    pub async fn start(ctx: Arc<Context>) -> Result<Arc<Registry>, SpawnErr> {
        let registry = Arc::new(Registry {
            ctx,
            entries: Mutex::default(),
            owed: Mutex::default(),
            supervisor: OnceLock::new(),
        });
        let (supervisor, _) = Actor::spawn(
            None,
            Supervisor {
                registry: Arc::downgrade(&registry),
            },
            (),
        )
        .await?;
        let _ = registry.supervisor.set(supervisor.get_cell());
        Ok(registry)
    }

    /// Stops the supervisor (after [`Registry::drain`], at shutdown).
    pub fn stop(&self) {
        if let Some(supervisor) = self.supervisor.get() {
            supervisor.stop(None);
        }
    }

    /// Starts an actor for `address`, linked to the supervisor. Not yet routed to.
    pub(super) async fn spawn(
        self: &Arc<Self>,
        address: &Address,
    ) -> Result<(ActorRef<LockMessage>, Arc<Tally>), SpawnErr> {
        let tally = Arc::new(Tally::new(self.ctx.clone()));
        let actor = LockActor {
            ctx: self.ctx.clone(),
            registry: self.clone(),
            tally: tally.clone(),
        };
        let supervisor = self.supervisor.get().expect("started").clone();
        let spawned = Actor::spawn_linked(None, actor, address.clone(), supervisor).await;
        match spawned {
            Ok((actor, _)) => Ok((actor, tally)),
            Err(e) => {
                tally.settle();
                Err(e)
            }
        }
    }

    /// Sends `message` to the actor of `address`, starting it if needed.
    pub async fn route(
        self: &Arc<Self>,
        address: &Arc<Address>,
        mut message: LockMessage,
    ) -> Result<(), RouteError> {
        let key = address.key();
        loop {
            message = match self.send_existing(key, message) {
                Ok(()) => return Ok(()),
                Err(back) => *back,
            };
            let (actor, tally) = self.spawn(address).await.map_err(|e| RouteError {
                target: address.url(),
                reason: e.to_string(),
            })?;
            self.insert(address, actor, tally);
        }
    }

    /// Makes `actor` the one of `address`, first giving it what the target is owed, unless
    /// another was inserted meanwhile (then `actor`, never routed anything, stops).
    fn insert(&self, address: &Arc<Address>, actor: ActorRef<LockMessage>, tally: Arc<Tally>) {
        let key = address.key();
        let mut entries = self.entries.lock().expect("registry lock");
        if entries.contains_key(key) {
            // Another session started one first; ours was never routed anything.
            actor.stop(None);
            return;
        }
        let owed = self.owed.lock().expect("owed lock").remove(key);
        for message in owed.into_iter().flat_map(|(_, messages)| messages) {
            // Not counted as routed: startup messages are not requests (`is_routed`).
            let _ = actor.cast(message);
        }
        entries.insert(
            key.to_owned(),
            Entry {
                actor,
                routed: 0,
                address: address.clone(),
                tally,
            },
        );
    }

    /// Owes the target of `address` the startup message `message`: its actor gets it before
    /// anything routed to it.
    pub fn owe(&self, address: Arc<Address>, message: LockMessage) {
        let entries = self.entries.lock().expect("registry lock");
        if let Some(entry) = entries.get(address.key()) {
            let _ = entry.actor.cast(message);
            return;
        }
        let mut owed = self.owed.lock().expect("owed lock");
        let key = address.key().to_owned();
        owed.entry(key)
            .or_insert_with(|| (address, Vec::new()))
            .1
            .push(message);
    }

    /// Starts the actor of every target still owed its startup messages, one at a time;
    /// returns how many it started. A target that fails to start keeps what it is owed for its
    /// first request.
    pub async fn deliver_owed(self: &Arc<Self>) -> usize {
        let mut started = 0;
        loop {
            let next = {
                let owed = self.owed.lock().expect("owed lock");
                owed.values().next().map(|(address, _)| address.clone())
            };
            let Some(address) = next else {
                return started;
            };
            match self.spawn(&address).await {
                Ok((actor, tally)) => {
                    self.insert(&address, actor, tally);
                    started += 1;
                    // A start may complete without ever waiting: let every other task run
                    // between two, or thousands of them would hold a runtime thread.
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    // What is owed stays owed: the first request that names a target starts
                    // its actor and delivers it first.
                    tracing::warn!(target = %address.url(), error = %e, "cannot start the lock actors of the previous run's holdings now; each is started by its first request");
                    return started;
                }
            }
        }
    }

    /// Sends `message` to the live actor of `key`; gives it back when there is none (boxed:
    /// only the first message to a target comes back, and the actor it then starts costs far
    /// more than the box).
    ///
    /// A request is recorded as open at the actor before it is sent. If the actor has just
    /// failed, the send fails (or the message dies in its mailbox): the request stays recorded
    /// at the failed actor, and its successor answers it ([`LockMessage::Recover`]).
    pub fn send_existing(&self, key: &str, message: LockMessage) -> Result<(), Box<LockMessage>> {
        let mut entries = self.entries.lock().expect("registry lock");
        let Some(entry) = entries.get_mut(key) else {
            return Err(Box::new(message));
        };
        if let Some((session, id)) = message.request() {
            session.routed(id, entry.actor.get_id());
        }
        if entry.actor.cast(message).is_err() {
            tracing::debug!(
                target = key,
                "the lock actor has failed; its successor answers this request"
            );
        }
        entry.routed += 1;
        Ok(())
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
    pub fn drain(&self) -> Vec<ActorRef<LockMessage>> {
        let mut entries = self.entries.lock().expect("registry lock");
        entries.drain().map(|(_, e)| e.actor).collect()
    }

    /// Every live actor.
    pub fn actors(&self) -> Vec<ActorRef<LockMessage>> {
        let entries = self.entries.lock().expect("registry lock");
        entries.values().map(|e| e.actor.clone()).collect()
    }

    /// The supervisor saw the actor `failed` die with `why`: a successor takes its place, and
    /// cleans up after it before it serves anything ([`LockMessage::Recover`]).
    pub(super) async fn replace_failed(self: &Arc<Self>, failed: ActorId, why: String) {
        let found = {
            let entries = self.entries.lock().expect("registry lock");
            entries
                .iter()
                .find(|(_, e)| e.actor.get_id() == failed)
                .map(|(key, e)| (key.clone(), e.address.clone(), e.tally.clone()))
        };
        let Some((key, address, tally)) = found else {
            tracing::error!(actor = %failed, panic = %why, "a lock actor failed after it was retired or drained");
            return;
        };
        tracing::error!(target = %address.url(), panic = %why, "the lock actor failed; a fresh one cleans up after it and takes over");
        tally.settle();
        let successor = self.spawn(&address).await;
        let mut entries = self.entries.lock().expect("registry lock");
        let still_failed = entries
            .get(&key)
            .is_some_and(|e| e.actor.get_id() == failed);
        match successor {
            Ok((actor, tally)) if still_failed => {
                // Under the lock, before any routed message: the cleanup comes first.
                let recover = LockMessage::Recover {
                    failed,
                    why: why.clone(),
                };
                if actor.cast(recover).is_err() {
                    tracing::error!(target = %address.url(), "the successor of a failed lock actor stopped at once");
                }
                entries.insert(
                    key,
                    Entry {
                        actor,
                        routed: 0,
                        address,
                        tally,
                    },
                );
            }
            Ok((actor, _)) => actor.stop(None),
            Err(e) => {
                // Nothing to route to: the next request starts an actor, whose first job is
                // not this cleanup; the failed actor's lock files then wait for their TTL or the
                // next start's journal recovery.
                tracing::error!(target = %address.url(), error = %e, "cannot start a successor for the failed lock actor");
                entries.remove(&key);
            }
        }
    }
}

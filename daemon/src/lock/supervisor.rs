//! The supervisor of every lock actor: a failed actor (a panic in a handler) is replaced at
//! once by a fresh one that cleans up after it, instead of being noticed only at the next
//! message to its target.
//!
//! ractor's default supervisor stops itself when any child exits; this one only acts on
//! failures and leaves idle retirement and shutdown (clean exits) to the registry.

use std::sync::Weak;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

use super::registry::Registry;

/// The supervising actor. It receives no messages of its own, only its children's events.
pub struct Supervisor {
    /// The registry whose actors it supervises.
    pub registry: Weak<Registry>,
}

/// The supervisor takes no requests.
#[derive(Debug)]
pub enum SupervisorMessage {}

impl Actor for Supervisor {
    type Msg = SupervisorMessage;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _args: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(actor, why) = event {
            if let Some(registry) = self.registry.upgrade() {
                registry
                    .replace_failed(actor.get_id(), why.to_string())
                    .await;
            }
        }
        Ok(())
    }
}

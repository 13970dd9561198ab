//! A target's lifecycle as one enum, changed only through methods that refuse an edge that is
//! not allowed.
//!
//! ```text
//!            hold                         ask_steal
//!   ┌──────────────────┐      ┌─────────────────────────────┐
//!   │                  ▼      │                             ▼
//! Free ◄──end_holding── Held  Free ◄──────end_steal────── Stealing
//!   │
//!   └──retire──► Retired (final)
//! ```
//!
//! Held and Stealing never follow each other directly: a steal that is allowed ends first
//! (`end_steal`), and the lock is then held through `hold` from `Free`; a handoff ends the
//! holding (`end_holding`) before the next one is held. So "held here" and "a steal is
//! pending" can never be true at once, and nothing is done by an actor that has retired.
//!
//! A lock held here in a shared mode (shared, or a semaphore) is `Joint`, entered from `Free`
//! (`hold_joint`) and left to `Free` (`end_joint`) when the last local holder is gone:
//!
//! ```text
//!            hold_joint
//!   Free ◄────end_joint──── Joint
//! ```

use super::state::{Holding, JointHolding, PendingSteal};

/// Where a target is in its life.
#[derive(Debug, Default)]
pub enum Lifecycle {
    /// No client of this daemon holds it; waiters, if any, wait for a holder elsewhere and
    /// re-check with backoff.
    #[default]
    Free,
    /// A client of this daemon holds it; waiters are woken at release without polling.
    Held(Box<Holding>),
    /// The lock file is stale and the head acquirer's on-stale decision is awaited.
    Stealing(Box<PendingSteal>),
    /// Clients of this daemon hold it in a shared mode, through one entry of the lock file.
    Joint(Box<JointHolding>),
    /// The actor stopped (idle, or the daemon shut down): nothing more happens.
    Retired,
}

/// An edge the lifecycle does not allow, and where it was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("lock lifecycle: `{edge}` is not allowed from {from}")]
pub struct Refused {
    /// The transition asked for.
    pub edge: &'static str,
    /// The state it was asked in.
    pub from: &'static str,
}

impl Lifecycle {
    /// The state's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Lifecycle::Free => "free",
            Lifecycle::Held(_) => "held",
            Lifecycle::Stealing(_) => "stealing",
            Lifecycle::Joint(_) => "held jointly",
            Lifecycle::Retired => "retired",
        }
    }

    fn refuse(&self, edge: &'static str) -> Refused {
        Refused {
            edge,
            from: self.name(),
        }
    }

    /// Free → Held: a grant to a client of this daemon.
    pub fn hold(&mut self, holding: Holding) -> Result<(), Refused> {
        match self {
            Lifecycle::Free => {
                *self = Lifecycle::Held(Box::new(holding));
                Ok(())
            }
            other => Err(other.refuse("hold")),
        }
    }

    /// Held → Free: the holding ends (release, loss, handoff, shutdown); returns it.
    pub fn end_holding(&mut self) -> Result<Holding, Refused> {
        match std::mem::take(self) {
            Lifecycle::Held(holding) => Ok(*holding),
            other => {
                let refused = other.refuse("end_holding");
                *self = other;
                Err(refused)
            }
        }
    }

    /// Free → Stealing: the head acquirer is asked whether a stale lock may be taken.
    pub fn ask_steal(&mut self, pending: PendingSteal) -> Result<(), Refused> {
        match self {
            Lifecycle::Free => {
                *self = Lifecycle::Stealing(Box::new(pending));
                Ok(())
            }
            other => Err(other.refuse("ask_steal")),
        }
    }

    /// Stealing → Free: the verdict came, timed out, or the acquirer left; returns the steal.
    pub fn end_steal(&mut self) -> Result<PendingSteal, Refused> {
        match std::mem::take(self) {
            Lifecycle::Stealing(pending) => Ok(*pending),
            other => {
                let refused = other.refuse("end_steal");
                *self = other;
                Err(refused)
            }
        }
    }

    /// Free → Joint: the first local holder in a shared mode.
    pub fn hold_joint(&mut self, joint: JointHolding) -> Result<(), Refused> {
        match self {
            Lifecycle::Free => {
                *self = Lifecycle::Joint(Box::new(joint));
                Ok(())
            }
            other => Err(other.refuse("hold_joint")),
        }
    }

    /// Joint → Free: the last local holder in a shared mode is gone, or the entry was lost;
    /// returns the joint holding.
    pub fn end_joint(&mut self) -> Result<JointHolding, Refused> {
        match std::mem::take(self) {
            Lifecycle::Joint(joint) => Ok(*joint),
            other => {
                let refused = other.refuse("end_joint");
                *self = other;
                Err(refused)
            }
        }
    }

    /// The joint holding, if held here in a shared mode.
    pub fn joint(&self) -> Option<&JointHolding> {
        match self {
            Lifecycle::Joint(joint) => Some(joint),
            _ => None,
        }
    }

    /// The joint holding, to change it in place.
    pub fn joint_mut(&mut self) -> Option<&mut JointHolding> {
        match self {
            Lifecycle::Joint(joint) => Some(joint),
            _ => None,
        }
    }

    /// Free → Retired: the actor stops.
    pub fn retire(&mut self) -> Result<(), Refused> {
        match self {
            Lifecycle::Free => {
                *self = Lifecycle::Retired;
                Ok(())
            }
            other => Err(other.refuse("retire")),
        }
    }

    /// The holding, if held here.
    pub fn holding(&self) -> Option<&Holding> {
        match self {
            Lifecycle::Held(holding) => Some(holding),
            _ => None,
        }
    }

    /// The holding, to change it in place (a renewal).
    pub fn holding_mut(&mut self) -> Option<&mut Holding> {
        match self {
            Lifecycle::Held(holding) => Some(holding),
            _ => None,
        }
    }

    /// The renewal of the holding here, exclusive or joint.
    pub fn renewal_mut(&mut self) -> Option<&mut super::state::Renewal> {
        match self {
            Lifecycle::Held(holding) => Some(&mut holding.renewal),
            Lifecycle::Joint(joint) => Some(&mut joint.renewal),
            _ => None,
        }
    }

    /// The pending steal, if one is asked.
    pub fn steal(&self) -> Option<&PendingSteal> {
        match self {
            Lifecycle::Stealing(pending) => Some(pending),
            _ => None,
        }
    }

    /// Whether nobody here holds it and no steal is pending: the queue may be served.
    pub fn is_free(&self) -> bool {
        matches!(self, Lifecycle::Free)
    }
}

/// The result of a transition the actor has checked is allowed: a refusal here is a bug in the
/// actor, and panicking hands the target to the supervisor, which cleans up after it.
pub fn must<T>(transition: Result<T, Refused>) -> T {
    transition.unwrap_or_else(|refused| panic!("{refused}"))
}

#[cfg(test)]
#[path = "tests/lifecycle.rs"]
mod tests;

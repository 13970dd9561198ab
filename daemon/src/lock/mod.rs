//! Lock targets: one actor per target, the only writer of that target's lock file in this
//! daemon, so that every decision about one lock is made in one place, one message at a time.
//!
//! A target is free, held by a client of this daemon (alone, or jointly with other holders in a
//! shared mode), or waiting for an acquirer's verdict on a stale lock file ([`lifecycle`]). The actor's work is split by concern, each a module with
//! its own `impl LockActor` block and its own unit tests (in `tests/`):
//!
//! | module         | concern                                                                  |
//! |----------------|--------------------------------------------------------------------------|
//! | [`actor`]      | the messages, start and stop, and the dispatch of each message           |
//! | [`state`]      | what the actor knows, grouped: holding, queue, re-checks, handoff, idle  |
//! | [`lifecycle`]  | free / held / held jointly / stealing / retired, checked transitions     |
//! | [`acquire`]    | attempt, judge, steal, queue, re-check, cancel, wait timeout             |
//! | [`lease`]      | grant, renew, lose, release                                              |
//! | [`joint`]      | shared locks and semaphores: modes, conflicts, adding our entry, joining |
//! | [`joint_lease`]| our entry once taken: rewrites, renewal, leaving, loss, shutdown         |
//! | [`max_hold`]   | the cap on how long a lease may be held, and its end                     |
//! | [`handoff`]    | fairness between this daemon's waiters and other hosts', waiting marks   |
//! | [`detached`]   | detached leases, and an admin's break                                    |
//! | [`audit`]      | the audit log's records of holdings that end, breaks, detached releases  |
//! | [`cleanup`]    | retried deletes, closed connections, idle retirement, shutdown, recovery |
//! | [`replies`]    | what clients are told, and the read-only answers                         |
//! | [`timing`]     | timers that stop with their holding or wait, deadlines, random spread    |
//! | [`resume`]     | holdings of the previous run kept for their sessions, and handed back    |
//! | [`requeue`]    | waiters' places, kept across a restart in first-come order               |
//! | [`waiting`]    | what waiters are told while they wait, and what `list` shows of a queue  |
//! | [`watch`]      | requests that wait for a release without taking the lock                 |
//! | [`registry`]   | which actor serves which target; starting, retiring, replacing          |
//! | [`supervisor`] | the actors' supervisor: a failed actor is replaced at once               |

pub mod acquire;
pub mod actor;
pub mod audit;
pub mod cleanup;
pub mod detached;
#[cfg(feature = "faults")]
pub mod faults;
pub mod handoff;
pub mod joint;
pub mod joint_lease;
pub mod lease;
pub mod lifecycle;
pub mod max_hold;
pub mod registry;
pub mod replies;
pub mod requeue;
pub mod resume;
pub mod state;
pub mod supervisor;
pub mod timing;
pub mod waiting;
pub mod watch;

#[cfg(test)]
mod tests;

pub use actor::{LockActor, LockMessage};
pub use lifecycle::Lifecycle;
pub use registry::{Registry, RouteError};
pub use state::LockState;

use std::sync::Arc;
use std::time::{Duration, Instant};

use vfslock_proto::WaitMode;

use super::*;
use crate::link::{Caller, Outbound, SessionLink};
use crate::lock::state::{Renewal, Waiter};
use crate::lock::tests::{foreign_record, request, some_holder};
use crate::store::{Observed, Version};

fn link() -> Arc<SessionLink> {
    let (out, _frames) = Outbound::queued();
    Arc::new(SessionLink::new(1, out, Caller::default()))
}

fn holding() -> Holding {
    Holding {
        session: link(),
        acquire_id: 1,
        record: foreign_record(Duration::ZERO, Duration::from_secs(30)),
        written: Version {
            bytes: b"{}".to_vec(),
            tag: None,
        },
        since: Instant::now(),
        valid_until: None,
        renewal: Renewal {
            generation: 0,
            timer: None,
            retry_delay: Duration::ZERO,
        },
        max_hold: None,
        unclaimed: None,
    }
}

fn joint() -> JointHolding {
    JointHolding {
        mode: crate::lockfile::joint::JointMode::Shared,
        entry: crate::lock::tests::some_entry(),
        written: Version {
            bytes: b"{}".to_vec(),
            tag: None,
        },
        members: Vec::new(),
        valid_until: None,
        renewal: Renewal {
            generation: 0,
            timer: None,
            retry_delay: Duration::ZERO,
        },
    }
}

fn steal() -> PendingSteal {
    PendingSteal {
        waiter: Waiter {
            session: link(),
            acquire_id: 2,
            request: request("mem:///walk", WaitMode::Try),
            ttl: Duration::from_secs(30),
            mode: vfslock_proto::LockMode::Exclusive,
            max_hold: None,
            expiry: None,
            ordinal: 1,
            journaled: None,
            queued_at: None,
            told: None,
        },
        judged: Observed {
            bytes: b"{}".to_vec(),
            tag: None,
            modified: None,
        },
        holder: some_holder(),
    }
}

/// One state of each kind, fresh.
fn every_state() -> Vec<Lifecycle> {
    vec![
        Lifecycle::Free,
        Lifecycle::Held(Box::new(holding())),
        Lifecycle::Stealing(Box::new(steal())),
        Lifecycle::Joint(Box::new(joint())),
        Lifecycle::Retired,
    ]
}

/// Every edge by name, applied to `state`.
fn apply(state: &mut Lifecycle, edge: &str) -> Result<(), Refused> {
    match edge {
        "hold" => state.hold(holding()),
        "end_holding" => state.end_holding().map(|_| ()),
        "ask_steal" => state.ask_steal(steal()),
        "end_steal" => state.end_steal().map(|_| ()),
        "retire" => state.retire(),
        "hold_joint" => state.hold_joint(joint()),
        "end_joint" => state.end_joint().map(|_| ()),
        other => unreachable!("{other}"),
    }
}

const EDGES: [&str; 7] = [
    "hold",
    "end_holding",
    "ask_steal",
    "end_steal",
    "retire",
    "hold_joint",
    "end_joint",
];

/// The allowed edges: (from, edge, to). Everything else is refused.
const ALLOWED: [(&str, &str, &str); 7] = [
    ("free", "hold", "held"),
    ("free", "hold_joint", "held jointly"),
    ("held jointly", "end_joint", "free"),
    ("held", "end_holding", "free"),
    ("free", "ask_steal", "stealing"),
    ("stealing", "end_steal", "free"),
    ("free", "retire", "retired"),
];

#[test]
fn a_lock_walks_every_allowed_transition_in_the_order_its_life_takes_them() {
    let mut state = Lifecycle::default();
    assert_eq!(state.name(), "free");
    // Granted, released, asked about a stale file, decided, granted after the steal, lost,
    // and retired when idle.
    let walk = [
        ("hold", "held"),
        ("end_holding", "free"),
        ("ask_steal", "stealing"),
        ("end_steal", "free"),
        ("hold", "held"),
        ("end_holding", "free"),
        ("hold_joint", "held jointly"),
        ("end_joint", "free"),
        ("retire", "retired"),
    ];
    for (edge, to) in walk {
        apply(&mut state, edge).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(state.name(), to, "after {edge}");
    }
}

#[test]
fn every_edge_not_allowed_is_refused_and_leaves_the_state_as_it_was() {
    for from in every_state() {
        let from_name = from.name();
        for edge in EDGES {
            let mut state = match from_name {
                "free" => Lifecycle::Free,
                "held" => Lifecycle::Held(Box::new(holding())),
                "stealing" => Lifecycle::Stealing(Box::new(steal())),
                "held jointly" => Lifecycle::Joint(Box::new(joint())),
                _ => Lifecycle::Retired,
            };
            let allowed = ALLOWED
                .iter()
                .find(|(f, e, _)| *f == from_name && *e == edge);
            match (apply(&mut state, edge), allowed) {
                (Ok(()), Some((_, _, to))) => assert_eq!(state.name(), *to),
                (Err(refused), None) => {
                    assert_eq!(
                        refused,
                        Refused {
                            edge,
                            from: from_name
                        }
                    );
                    assert_eq!(
                        state.name(),
                        from_name,
                        "a refused {edge} changed the state"
                    );
                }
                (outcome, allowed) => {
                    panic!("{edge} from {from_name}: {outcome:?}, allowed: {allowed:?}")
                }
            }
        }
    }
}

#[test]
fn a_refused_transition_names_the_edge_and_the_state() {
    let mut state = Lifecycle::Held(Box::new(holding()));
    let refused = state.ask_steal(steal()).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "lock lifecycle: `ask_steal` is not allowed from held"
    );
    assert!(
        state.holding().is_some(),
        "the holding survived the refusal"
    );
}

#[test]
#[should_panic(expected = "`hold` is not allowed from stealing")]
fn must_panics_on_a_refused_transition_so_that_the_supervisor_cleans_up() {
    let mut state = Lifecycle::Stealing(Box::new(steal()));
    must(state.hold(holding()));
}

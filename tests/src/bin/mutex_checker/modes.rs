//! The lock modes a run exercises (`--mode`), and the mode each critical section was held in.
//!
//! A run is exclusive (every acquisition exclusive: the checker as it always was), mixed
//! (each acquisition shared with a given probability, else exclusive: a reader/writer lock
//! under load) or a semaphore of N (`slots:N`: every acquisition takes one of N slots, as all
//! holders of a semaphore must ask for the same N). The worker draws each acquisition's mode
//! and records it in its `enter` record, so that the analysis judges every section by how it
//! was really held, not by what the run was meant to do.
//!
//! A set run (`set`) takes two targets at once, all or nothing (`Client::lock_all`): each
//! iteration picks two distinct targets in a random order, and records one exclusive section
//! per target, each with its own target's token. The analysis judges every target alone, as
//! in an exclusive run; what the mode adds is the check that taking overlapping sets in
//! different orders neither breaks exclusion nor deadlocks (the waits end, none times out).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The share of a mixed run's acquisitions taken shared unless `--shared-share` says otherwise:
/// mostly readers, as a reader/writer lock usually is, with writers often enough that every
/// few holdings a writer must wait for the readers to drain.
pub(crate) const DEFAULT_SHARED_SHARE: f64 = 0.7;

/// How a run's workers take their locks (`--mode`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Mode {
    /// Every acquisition exclusive.
    Exclusive,
    /// Each acquisition shared with probability `shared_share`, else exclusive.
    Mixed {
        /// The probability, between 0 and 1.
        shared_share: f64,
    },
    /// Every acquisition takes one of this many slots (at least 1).
    Slots(u32),
    /// Every acquisition takes two distinct targets at once, exclusive, with `lock_all`.
    Set,
}

impl Mode {
    /// Whether this is the plain exclusive run, whose summary line stays as it always was.
    pub(crate) fn is_exclusive(self) -> bool {
        self == Mode::Exclusive
    }

    /// The mode of one acquisition; `draw` is a number in `0..1000` (mixed runs only use it).
    pub(crate) fn pick(self, draw: u64) -> Held {
        match self {
            Mode::Exclusive => Held::Exclusive,
            Mode::Mixed { shared_share } if (draw as f64) < shared_share * 1000.0 => Held::Shared,
            Mode::Mixed { .. } => Held::Exclusive,
            Mode::Slots(_) => Held::Slot,
            Mode::Set => Held::Exclusive,
        }
    }

    /// The lock options for an acquisition held as `held`.
    pub(crate) fn options(self, base: vfslock::LockOptions, held: Held) -> vfslock::LockOptions {
        match (held, self) {
            (Held::Exclusive, _) => base,
            (Held::Shared, _) => base.shared(),
            (Held::Slot, Mode::Slots(n)) => base.slots(n),
            // A slot outside a semaphore run is never drawn (see `pick`).
            (Held::Slot, _) => base.slots(1),
        }
    }

    /// Whether each acquisition takes several targets at once (`lock_all`).
    pub(crate) fn is_set(self) -> bool {
        self == Mode::Set
    }

    /// How many sections may be open at once on one target, if the mode bounds them apart
    /// from the exclusive rule (a semaphore).
    pub(crate) fn slots(self) -> Option<u32> {
        match self {
            Mode::Slots(n) => Some(n),
            _ => None,
        }
    }
}

impl fmt::Display for Mode {
    /// As `--mode` takes it: `exclusive`, `mixed`, `slots:N` (the share of a mixed run is a
    /// flag of its own).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::Exclusive => f.write_str("exclusive"),
            Mode::Mixed { .. } => f.write_str("mixed"),
            Mode::Slots(n) => write!(f, "slots:{n}"),
            Mode::Set => f.write_str("set"),
        }
    }
}

impl FromStr for Mode {
    type Err = String;

    /// `exclusive`, `mixed` (with the default share), `slots:N` or `set`.
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "exclusive" => Ok(Mode::Exclusive),
            "set" => Ok(Mode::Set),
            "mixed" => Ok(Mode::Mixed {
                shared_share: DEFAULT_SHARED_SHARE,
            }),
            _ => match s.strip_prefix("slots:").map(str::parse::<u32>) {
                Some(Ok(n)) if n >= 1 => Ok(Mode::Slots(n)),
                Some(_) => Err(format!("{s:?}: a semaphore needs a number of slots ≥ 1")),
                None => Err(format!("{s:?}: exclusive, mixed, slots:N or set")),
            },
        }
    }
}

/// How one critical section held its lock, as the worker asked for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Held {
    /// Alone: no other section of the target may overlap it.
    #[default]
    Exclusive,
    /// With other shared sections, and no exclusive one.
    Shared,
    /// One of the run's N slots.
    Slot,
}

impl Held {
    /// Whether this is the exclusive default (left out of the records, so that an exclusive
    /// run's logs read as they always did).
    pub(crate) fn is_exclusive(&self) -> bool {
        *self == Held::Exclusive
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print_as_the_flag_takes_them() {
        assert_eq!("exclusive".parse::<Mode>(), Ok(Mode::Exclusive));
        assert_eq!(
            "mixed".parse::<Mode>(),
            Ok(Mode::Mixed {
                shared_share: DEFAULT_SHARED_SHARE
            })
        );
        assert_eq!("slots:3".parse::<Mode>(), Ok(Mode::Slots(3)));
        assert_eq!("set".parse::<Mode>(), Ok(Mode::Set));
        for bad in ["slots:0", "slots:", "slots:x", "shared", "sets", ""] {
            assert!(bad.parse::<Mode>().is_err(), "{bad:?}");
        }
        for text in ["exclusive", "mixed", "slots:3", "set"] {
            assert_eq!(text.parse::<Mode>().unwrap().to_string(), text);
        }
    }

    #[test]
    fn a_mixed_run_draws_shared_with_its_share() {
        let mixed = Mode::Mixed { shared_share: 0.7 };
        assert_eq!(mixed.pick(0), Held::Shared);
        assert_eq!(mixed.pick(699), Held::Shared);
        assert_eq!(mixed.pick(700), Held::Exclusive);
        assert_eq!(Mode::Mixed { shared_share: 0.0 }.pick(0), Held::Exclusive);
        assert_eq!(Mode::Mixed { shared_share: 1.0 }.pick(999), Held::Shared);
        assert_eq!(Mode::Slots(2).pick(0), Held::Slot);
        assert_eq!(Mode::Exclusive.pick(0), Held::Exclusive);
        assert_eq!(Mode::Set.pick(0), Held::Exclusive);
    }
}

//! How `run` and `acquire` ask for a lock mode: `-s`/`--shared` (flock(1)'s spelling) or
//! `--slots N`; exclusive without either.

use clap::Args;
use vfslock::LockMode;

/// The lock mode flags shared by `run` and `acquire`.
#[derive(Args, Debug, Clone, Copy)]
pub(super) struct ModeArgs {
    /// Take the lock shared (a reader): any number of shared holders at once, and no
    /// exclusive one.
    #[arg(short = 's', long = "shared", conflicts_with = "slots")]
    shared: bool,
    /// Take one of N slots (a counting semaphore): at most N holders at once. Every holder
    /// must ask for the same N.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    slots: Option<u32>,
}

impl ModeArgs {
    /// The mode asked for.
    pub(super) fn mode(self) -> LockMode {
        match (self.shared, self.slots) {
            (true, _) => LockMode::Shared,
            (false, Some(n)) => LockMode::Slots(n),
            (false, None) => LockMode::Exclusive,
        }
    }
}

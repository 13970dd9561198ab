//! Fault injection for tests: only in builds with the `faults` cargo feature, never in a
//! release build. Wraps the real store calls; it never fakes a store.

use std::sync::atomic::{AtomicU64, Ordering};

/// Which faults to inject, at what rate.
#[derive(Debug)]
pub struct Faults {
    /// Share of conditional writes that are applied and then reported as failed.
    pub write_then_fail: f64,
    /// Drop the conditions of writes and deletes, as a server that ignores them would.
    pub ignore_conditions: bool,
    /// Faults injected so far.
    pub injected: AtomicU64,
}

impl Faults {
    /// Decides whether the write just applied is reported as failed.
    pub fn fail_after_write(&self) -> bool {
        let mut byte = [0u8; 2];
        let _ = getrandom::fill(&mut byte);
        let roll = f64::from(u16::from_ne_bytes(byte)) / f64::from(u16::MAX);
        let fail = roll < self.write_then_fail;
        if fail {
            self.injected.fetch_add(1, Ordering::Relaxed);
        }
        fail
    }
}

//! Fault injection for tests: only in builds with the `faults` cargo feature, never in a
//! release build. Wraps the real store calls; it never fakes a store.
//!
//! Two layers, both switched on by the config's `[faults]` table:
//! - [`Faults`], inside the object stores: a conditional write that is applied and then
//!   reported as failed (the outcome a dropped connection leaves), and writes sent without
//!   their conditions (to see the startup probe refuse such a server);
//! - [`StoreFaults`], in front of every store (`file://`, `mem://` and the object stores, see
//!   [`super::Store`]): an operation that fails before it reaches the store, or that is delayed,
//!   at a configurable rate. A switch file turns it off while the daemon runs, so that a
//!   chaos run can end in a healthy phase and check that everything settles.
//!
//! Every injected fault is logged at WARN with [`LOG_MARKER`] in its message, so that a test
//! can count them in the daemon's log even across a SIGKILL (the counters shown by
//! `vfslockctl status` die with the process).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::StoreError;

/// What every log line of an injected fault contains (and no other line does: the errors
/// they cause say "injected fault").
pub const LOG_MARKER: &str = "fault injected";

/// A uniform draw in `[0, 1)`: below a rate of 1 always, below a rate of 0 never.
fn roll() -> f64 {
    let mut bytes = [0u8; 4];
    let _ = getrandom::fill(&mut bytes);
    f64::from(u32::from_ne_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}

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
        let fail = roll() < self.write_then_fail;
        if fail {
            self.injected.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("{LOG_MARKER}: a write was applied, then reported failed");
        }
        fail
    }
}

/// What [`StoreFaults`] does to one operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Let it through untouched.
    Proceed,
    /// Wait this long, then let it through.
    Delay(Duration),
    /// Fail it before it reaches the store: nothing is applied.
    Fail,
}

/// Errors and delays in front of every store operation (create, read, replace, delete).
#[derive(Debug)]
pub struct StoreFaults {
    /// Share of operations that fail before they reach the store.
    pub error_rate: f64,
    /// Share of the operations let through that are delayed first.
    pub delay_rate: f64,
    /// How long a delayed operation waits.
    pub delay: Duration,
    /// Faults are injected only while this file exists (always, if `None`): a test removes it
    /// to heal the store without restarting the daemon.
    pub switch_file: Option<PathBuf>,
    /// Operations failed so far.
    pub errors: AtomicU64,
    /// Operations delayed so far.
    pub delays: AtomicU64,
}

impl StoreFaults {
    /// A layer with no faults injected yet.
    pub fn new(
        error_rate: f64,
        delay_rate: f64,
        delay: Duration,
        switch_file: Option<PathBuf>,
    ) -> Self {
        StoreFaults {
            error_rate,
            delay_rate,
            delay,
            switch_file,
            errors: AtomicU64::new(0),
            delays: AtomicU64::new(0),
        }
    }

    /// The decision for two uniform draws in `[0, 1)`: the first against the error rate, the
    /// second against the delay rate.
    pub fn decide(&self, error_roll: f64, delay_roll: f64) -> Decision {
        if error_roll < self.error_rate {
            Decision::Fail
        } else if delay_roll < self.delay_rate {
            Decision::Delay(self.delay)
        } else {
            Decision::Proceed
        }
    }

    /// Whether faults are switched on now (the switch file, if any, exists).
    fn armed(&self) -> bool {
        self.switch_file.as_ref().is_none_or(|file| file.exists())
    }

    /// Runs before operation `op` on `path`: may fail it with an injected error, or delay it.
    pub async fn before(&self, op: &str, path: &str) -> Result<(), StoreError> {
        if !self.armed() {
            return Ok(());
        }
        match self.decide(roll(), roll()) {
            Decision::Proceed => Ok(()),
            Decision::Delay(delay) => {
                self.delays.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(op, path, ?delay, "{LOG_MARKER}: delay");
                tokio::time::sleep(delay).await;
                Ok(())
            }
            Decision::Fail => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(op, path, "{LOG_MARKER}: error");
                Err(StoreError::new(format!(
                    "{op} {path}: injected fault (tests): the store operation failed"
                )))
            }
        }
    }

    /// The counters `vfslockctl status` shows beside the store's own.
    pub fn counters(&self) -> Vec<(String, u64)> {
        vec![
            (
                "injected-errors".to_owned(),
                self.errors.load(Ordering::Relaxed),
            ),
            (
                "injected-delays".to_owned(),
                self.delays.load(Ordering::Relaxed),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(error_rate: f64, delay_rate: f64) -> StoreFaults {
        StoreFaults::new(error_rate, delay_rate, Duration::from_millis(7), None)
    }

    #[test]
    fn a_rate_of_zero_never_injects_and_a_rate_of_one_always_does() {
        let draws = [0.0, 0.25, 0.5, 0.999_999];
        let quiet = layer(0.0, 0.0);
        let failing = layer(1.0, 0.0);
        let slow = layer(0.0, 1.0);
        for &a in &draws {
            for &b in &draws {
                assert_eq!(quiet.decide(a, b), Decision::Proceed, "{a} {b}");
                assert_eq!(failing.decide(a, b), Decision::Fail, "{a} {b}");
                assert_eq!(
                    slow.decide(a, b),
                    Decision::Delay(Duration::from_millis(7)),
                    "{a} {b}"
                );
            }
        }
        // An error wins over a delay.
        assert_eq!(layer(1.0, 1.0).decide(0.5, 0.5), Decision::Fail);
    }

    #[test]
    fn draws_stay_below_one() {
        assert!((0..10_000).map(|_| roll()).all(|r| (0.0..1.0).contains(&r)));
    }

    #[tokio::test]
    async fn injected_faults_are_counted_and_fail_before_the_store() {
        let failing = layer(1.0, 0.0);
        let err = failing.before("create", "/x.lock").await.unwrap_err();
        assert!(err.message.contains("injected fault"), "{err}");
        assert!(!err.message.contains(LOG_MARKER), "{err}");
        assert_eq!(failing.errors.load(Ordering::Relaxed), 1);

        let slow = layer(0.0, 1.0);
        slow.before("read", "/x.lock").await.unwrap();
        assert_eq!(slow.delays.load(Ordering::Relaxed), 1);

        let quiet = layer(0.0, 0.0);
        quiet.before("delete", "/x.lock").await.unwrap();
        assert_eq!(
            quiet.counters(),
            [
                ("injected-errors".to_owned(), 0),
                ("injected-delays".to_owned(), 0)
            ]
        );
    }

    #[tokio::test]
    async fn without_its_switch_file_the_layer_injects_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let switch = dir.path().join("faults-on");
        let failing = StoreFaults::new(1.0, 0.0, Duration::ZERO, Some(switch.clone()));
        failing.before("create", "/x.lock").await.unwrap();
        std::fs::write(&switch, b"").unwrap();
        assert!(failing.before("create", "/x.lock").await.is_err());
        std::fs::remove_file(&switch).unwrap();
        failing.before("create", "/x.lock").await.unwrap();
        assert_eq!(failing.errors.load(Ordering::Relaxed), 1);
    }
}

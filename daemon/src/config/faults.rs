//! Test-only knobs, kept apart from what users set: the `[faults]` table (fault injection in
//! the store layer, honoured only by builds with the `faults` cargo feature) and the clock
//! offset that the hidden `--clock-offset` flag sets.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::duration;

/// `[faults]` as written.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawFaults {
    /// Share (0..=1) of object-store writes applied and then reported as failed.
    write_then_fail: Option<f64>,
    /// Send object-store writes and deletes without their conditions, as a server that
    /// ignores them would behave (to see the startup probe refuse the store).
    ignore_conditions: Option<bool>,
    /// Share (0..=1) of store operations, on every store, failed before they reach it.
    error_rate: Option<f64>,
    /// Share (0..=1) of the other store operations delayed by `delay` first.
    delay_rate: Option<f64>,
    /// How long a delayed operation waits (default 20ms).
    delay: Option<String>,
    /// Errors and delays only while this file exists.
    switch_file: Option<PathBuf>,
    /// An acquire with this owner id makes its target's lock actor panic.
    panic_owner: Option<String>,
}

/// Test-only settings. Users leave them alone: `[faults]` is refused by a build without the
/// `faults` feature, and the clock offset is not in the file at all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultSettings {
    /// Share of object-store writes applied, then failed.
    pub write_then_fail: Option<f64>,
    /// Object-store conditions dropped, as a server that ignores them would.
    pub ignore_conditions: bool,
    /// Errors and delays in front of every store's operations.
    pub operations: Option<OperationFaults>,
    /// An acquire with this owner id makes its target's lock actor panic (to test
    /// supervision).
    pub panic_owner: Option<String>,
    /// Added to the wall clock, in nanoseconds. Not in the config file: only the hidden
    /// `--clock-offset` flag sets it, so that tests can give one daemon a skewed clock without
    /// touching the system's.
    pub clock_offset_ns: i64,
}

/// `[faults]` errors and delays in front of every store operation (tests only).
#[derive(Debug, Clone, PartialEq)]
pub struct OperationFaults {
    /// Share of operations failed before they reach the store.
    pub error_rate: f64,
    /// Share of the others delayed by [`OperationFaults::delay`] first.
    pub delay_rate: f64,
    /// How long a delayed operation waits.
    pub delay: Duration,
    /// Faults only while this file exists (always if `None`).
    pub switch_file: Option<PathBuf>,
}

/// The default of `[faults] delay`.
pub(super) const DEFAULT_FAULT_DELAY: Duration = Duration::from_millis(20);

impl FaultSettings {
    pub(super) fn from_raw(raw: Option<&RawFaults>) -> Result<FaultSettings, ConfigError> {
        let faults = FaultSettings {
            write_then_fail: raw.and_then(|f| f.write_then_fail),
            ignore_conditions: raw.and_then(|f| f.ignore_conditions).unwrap_or(false),
            operations: operation_faults(raw)?,
            panic_owner: raw.and_then(|f| f.panic_owner.clone()),
            clock_offset_ns: 0,
        };
        if faults.injects() && !cfg!(feature = "faults") {
            return Err(ConfigError::FaultsNotBuilt);
        }
        Ok(faults)
    }

    /// Whether any `[faults]` key is in force (the clock offset is not one).
    fn injects(&self) -> bool {
        self.write_then_fail.is_some()
            || self.ignore_conditions
            || self.operations.is_some()
            || self.panic_owner.is_some()
    }

    /// `[faults]` back in the file's shape, if any of it is in force.
    pub(super) fn to_raw(&self) -> Option<RawFaults> {
        let operations = self.operations.as_ref();
        self.injects().then(|| RawFaults {
            write_then_fail: self.write_then_fail,
            ignore_conditions: Some(self.ignore_conditions),
            error_rate: operations.map(|f| f.error_rate),
            delay_rate: operations.map(|f| f.delay_rate),
            delay: operations.map(|f| duration::format(f.delay)),
            switch_file: operations.and_then(|f| f.switch_file.clone()),
            panic_owner: self.panic_owner.clone(),
        })
    }
}

/// `[faults]` error and delay injection, if either rate is set.
fn operation_faults(raw: Option<&RawFaults>) -> Result<Option<OperationFaults>, ConfigError> {
    let Some(raw) = raw.filter(|f| f.error_rate.is_some() || f.delay_rate.is_some()) else {
        return Ok(None);
    };
    let rate = |value: Option<f64>, key: &str| match value {
        Some(r) if !(0.0..=1.0).contains(&r) => Err(ConfigError::OutOfRange {
            key: format!("faults.{key}"),
            rule: "must be a share between 0 and 1",
        }),
        r => Ok(r.unwrap_or(0.0)),
    };
    Ok(Some(OperationFaults {
        error_rate: rate(raw.error_rate, "error-rate")?,
        delay_rate: rate(raw.delay_rate, "delay-rate")?,
        delay: match &raw.delay {
            None => DEFAULT_FAULT_DELAY,
            Some(text) => duration::parse(text).map_err(|problem| ConfigError::Value {
                key: "faults.delay".into(),
                problem,
            })?,
        },
        switch_file: raw.switch_file.clone(),
    }))
}

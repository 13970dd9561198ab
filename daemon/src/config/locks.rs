//! `[locks]`: the lock protocol's timings (leases, re-checks, stale judgement, handoff
//! fairness, store timeouts).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{duration_of, non_empty, required, ConfigError};
use crate::duration;

/// `[locks]` as written.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawLocks {
    default_ttl: Option<String>,
    corrupt_grace: Option<String>,
    empty_grace: Option<String>,
    stale_answer_timeout: Option<String>,
    idle_actor_timeout: Option<String>,
    recheck_min: Option<String>,
    recheck_max: Option<String>,
    shutdown_timeout: Option<String>,
    skew_allowance: Option<String>,
    lease_margin: Option<String>,
    store_timeout: Option<String>,
    handoff_max_count: Option<u32>,
    handoff_max_time: Option<String>,
    handoff_cooldown: Option<String>,
    peer_ttl_factor: Option<u32>,
    max_hold: Option<String>,
    resume_window: Option<String>,
}

/// `[locks]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct LockSettings {
    /// Lease given when none is asked for.
    pub default_ttl: Duration,
    /// How long a corrupt lock file counts as held.
    pub corrupt_grace: Duration,
    /// How long an empty lock file counts as held: what a racing reader or an interrupted
    /// create leaves, never a lock anyone holds for long.
    pub empty_grace: Duration,
    /// How long to wait for a client's on-stale decision.
    pub stale_answer_timeout: Duration,
    /// How long an idle target actor lives.
    pub idle_actor_timeout: Duration,
    /// First re-check interval for foreign holders.
    pub recheck_min: Duration,
    /// Largest re-check interval for foreign holders.
    pub recheck_max: Duration,
    /// Bound on releasing everything at shutdown.
    pub shutdown_timeout: Duration,
    /// How far another host's clock may run ahead of ours.
    pub skew_allowance: Duration,
    /// Least safety margin between a lease's deadline and its expiry.
    pub lease_margin: Duration,
    /// Timeout of every store request.
    pub store_timeout: Duration,
    /// Most consecutive handoffs to local waiters.
    pub handoff_max_count: u32,
    /// Longest streak of handoffs to local waiters.
    pub handoff_max_time: Duration,
    /// How long local waiters hold back after a capped streak.
    pub handoff_cooldown: Duration,
    /// The ttl written into lock files, as a multiple of the renewed lease (1..=100): what Go
    /// peers that reuse one `Lock` value, and every other reader, judge staleness by.
    pub peer_ttl_factor: u32,
    /// The longest a lease renewed by this daemon may be held: the cap of every acquire that
    /// names none, and the most one may name. `None`: no cap.
    pub max_hold: Option<Duration>,
    /// How long a holding outlives its daemon (W): told to the holder with each grant, the time
    /// a restarted daemon keeps the holdings nobody resumed, and grants their targets to no one.
    /// Zero: holdings end with the daemon.
    pub resume_window: Duration,
}

impl LockSettings {
    pub(super) fn from_raw(raw: &RawLocks) -> Result<LockSettings, ConfigError> {
        let mut locks = LockSettings {
            default_ttl: duration_of(&raw.default_ttl, "locks.default-ttl")?,
            corrupt_grace: duration_of(&raw.corrupt_grace, "locks.corrupt-grace")?,
            empty_grace: duration_of(&raw.empty_grace, "locks.empty-grace")?,
            stale_answer_timeout: duration_of(
                &raw.stale_answer_timeout,
                "locks.stale-answer-timeout",
            )?,
            idle_actor_timeout: duration_of(&raw.idle_actor_timeout, "locks.idle-actor-timeout")?,
            recheck_min: duration_of(&raw.recheck_min, "locks.recheck-min")?,
            recheck_max: duration_of(&raw.recheck_max, "locks.recheck-max")?,
            shutdown_timeout: duration_of(&raw.shutdown_timeout, "locks.shutdown-timeout")?,
            skew_allowance: duration_of(&raw.skew_allowance, "locks.skew-allowance")?,
            lease_margin: duration_of(&raw.lease_margin, "locks.lease-margin")?,
            store_timeout: duration_of(&raw.store_timeout, "locks.store-timeout")?,
            handoff_max_count: required(&raw.handoff_max_count, "locks.handoff-max-count")?,
            handoff_max_time: duration_of(&raw.handoff_max_time, "locks.handoff-max-time")?,
            handoff_cooldown: Duration::ZERO,
            peer_ttl_factor: required(&raw.peer_ttl_factor, "locks.peer-ttl-factor")?,
            max_hold: None,
            resume_window: duration_of(&raw.resume_window, "locks.resume-window")?,
        };
        // Empty: no cap.
        locks.max_hold = match non_empty(&raw.max_hold) {
            None => None,
            Some(text) => Some(
                duration::parse(&text).map_err(|problem| ConfigError::Value {
                    key: "locks.max-hold".into(),
                    problem,
                })?,
            ),
        };
        if locks.max_hold.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::OutOfRange {
                key: "locks.max-hold".into(),
                rule: "must be above zero, or empty for no cap",
            });
        }
        // Empty: as long as the longest wait between two looks of another daemon.
        locks.handoff_cooldown = match non_empty(&raw.handoff_cooldown) {
            None => locks.recheck_max,
            Some(text) => duration::parse(&text).map_err(|problem| ConfigError::Value {
                key: "locks.handoff-cooldown".into(),
                problem,
            })?,
        };
        if !(1..=100).contains(&locks.peer_ttl_factor) {
            return Err(ConfigError::OutOfRange {
                key: "locks.peer-ttl-factor".into(),
                rule: "must be a whole number from 1 to 100",
            });
        }
        if locks.empty_grace < locks.store_timeout {
            return Err(ConfigError::OutOfRange {
                key: "locks.empty-grace".into(),
                rule: "must be at least `locks.store-timeout`: a writer that creates a lock file \
                       and then writes it (SFTP) may leave it empty for one store request",
            });
        }
        if locks.store_timeout.is_zero() {
            return Err(ConfigError::OutOfRange {
                key: "locks.store-timeout".into(),
                rule: "must be above zero",
            });
        }
        if locks.recheck_min.is_zero() || locks.recheck_min > locks.recheck_max {
            return Err(ConfigError::OutOfRange {
                key: "locks.recheck-min".into(),
                rule: "must be above zero and at most `locks.recheck-max`",
            });
        }
        Ok(locks)
    }

    pub(super) fn to_raw(&self) -> RawLocks {
        let text = |d: Duration| Some(duration::format(d));
        RawLocks {
            default_ttl: text(self.default_ttl),
            corrupt_grace: text(self.corrupt_grace),
            empty_grace: text(self.empty_grace),
            stale_answer_timeout: text(self.stale_answer_timeout),
            idle_actor_timeout: text(self.idle_actor_timeout),
            recheck_min: text(self.recheck_min),
            recheck_max: text(self.recheck_max),
            shutdown_timeout: text(self.shutdown_timeout),
            skew_allowance: text(self.skew_allowance),
            lease_margin: text(self.lease_margin),
            store_timeout: text(self.store_timeout),
            handoff_max_count: Some(self.handoff_max_count),
            handoff_max_time: text(self.handoff_max_time),
            handoff_cooldown: text(self.handoff_cooldown),
            peer_ttl_factor: Some(self.peer_ttl_factor),
            max_hold: Some(self.max_hold.map(duration::format).unwrap_or_default()),
            resume_window: text(self.resume_window),
        }
    }
}

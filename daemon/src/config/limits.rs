//! `[limits]`: what one client may cost the daemon (frame size, connections, locks, waiters,
//! and how long a half-sent frame may take).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{duration_of, required, ConfigError};
use crate::duration;

/// `[limits]` as written.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawLimits {
    max_frame: Option<u64>,
    io_timeout: Option<String>,
    max_connections: Option<usize>,
    max_locks_per_session: Option<usize>,
    max_waiters_per_target: Option<usize>,
}

/// `[limits]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitSettings {
    /// Largest frame accepted.
    pub max_frame: usize,
    /// Handshake and partial-frame timeout.
    pub io_timeout: Duration,
    /// Most client connections at once.
    pub max_connections: usize,
    /// Most acquires (held or waiting) per connection.
    pub max_locks_per_session: usize,
    /// Most waiters queued on one target.
    pub max_waiters_per_target: usize,
}

impl LimitSettings {
    pub(super) fn from_raw(raw: &RawLimits) -> Result<LimitSettings, ConfigError> {
        let limits = LimitSettings {
            max_frame: usize::try_from(required(&raw.max_frame, "limits.max-frame")?).map_err(
                |_| ConfigError::OutOfRange {
                    key: "limits.max-frame".into(),
                    rule: "is too large",
                },
            )?,
            io_timeout: duration_of(&raw.io_timeout, "limits.io-timeout")?,
            max_connections: required(&raw.max_connections, "limits.max-connections")?,
            max_locks_per_session: required(
                &raw.max_locks_per_session,
                "limits.max-locks-per-session",
            )?,
            max_waiters_per_target: required(
                &raw.max_waiters_per_target,
                "limits.max-waiters-per-target",
            )?,
        };
        if limits.max_frame < 64 || limits.max_frame > u32::MAX as usize {
            return Err(ConfigError::OutOfRange {
                key: "limits.max-frame".into(),
                rule: "must be between 64 bytes and 4 GiB",
            });
        }
        if limits.io_timeout.is_zero() {
            return Err(ConfigError::OutOfRange {
                key: "limits.io-timeout".into(),
                rule: "must be above zero",
            });
        }
        Ok(limits)
    }

    pub(super) fn to_raw(&self) -> RawLimits {
        RawLimits {
            max_frame: Some(self.max_frame as u64),
            io_timeout: Some(duration::format(self.io_timeout)),
            max_connections: Some(self.max_connections),
            max_locks_per_session: Some(self.max_locks_per_session),
            max_waiters_per_target: Some(self.max_waiters_per_target),
        }
    }
}

//! `[limits]`: what one client may cost the daemon (frame size, connections, locks, waiters,
//! and how long a half-sent frame may take), and what one local user may take of it all
//! (connections and locks per uid, with connections kept for root and the admin group).

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
    reserved_admin_connections: Option<usize>,
    max_connections_per_uid: Option<usize>,
    max_locks_per_session: Option<usize>,
    max_locks_per_uid: Option<usize>,
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
    /// How many of `max_connections` only root and the admin group may use.
    pub reserved_admin_connections: usize,
    /// Most connections of one non-admin uid at once.
    pub max_connections_per_uid: usize,
    /// Most acquires (held or waiting) per connection.
    pub max_locks_per_session: usize,
    /// Most acquires (held or waiting) of one non-admin uid, over all of its connections.
    pub max_locks_per_uid: usize,
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
            reserved_admin_connections: required(
                &raw.reserved_admin_connections,
                "limits.reserved-admin-connections",
            )?,
            max_connections_per_uid: required(
                &raw.max_connections_per_uid,
                "limits.max-connections-per-uid",
            )?,
            max_locks_per_session: required(
                &raw.max_locks_per_session,
                "limits.max-locks-per-session",
            )?,
            max_locks_per_uid: required(&raw.max_locks_per_uid, "limits.max-locks-per-uid")?,
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
        for (value, key) in [
            (
                limits.max_connections_per_uid,
                "limits.max-connections-per-uid",
            ),
            (limits.max_locks_per_uid, "limits.max-locks-per-uid"),
        ] {
            if value == 0 {
                return Err(ConfigError::OutOfRange {
                    key: key.into(),
                    rule: "must be above zero, or no user but root and the admin group could \
                           use vfslockd",
                });
            }
        }
        Ok(limits)
    }

    /// The connections kept for root and the admin group: `reserved-admin-connections`, but
    /// never more than half of `max-connections`, so that a small `max-connections` chosen
    /// before the reserve existed still leaves the others room instead of failing to load.
    pub fn admin_reserve(&self) -> usize {
        self.reserved_admin_connections
            .min(self.max_connections / 2)
    }

    pub(super) fn to_raw(&self) -> RawLimits {
        RawLimits {
            max_frame: Some(self.max_frame as u64),
            io_timeout: Some(duration::format(self.io_timeout)),
            max_connections: Some(self.max_connections),
            reserved_admin_connections: Some(self.reserved_admin_connections),
            max_connections_per_uid: Some(self.max_connections_per_uid),
            max_locks_per_session: Some(self.max_locks_per_session),
            max_locks_per_uid: Some(self.max_locks_per_uid),
            max_waiters_per_target: Some(self.max_waiters_per_target),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Settings;

    fn limits(text: &str) -> Result<super::LimitSettings, String> {
        Settings::from_toml(Some((&format!("[limits]\n{text}\n"), "test")))
            .map(|settings| settings.limits)
            .map_err(|e| crate::error::Chain(&e).to_string())
    }

    #[test]
    fn per_uid_limits_default_to_a_share_and_zero_is_refused_by_name() {
        let defaults = limits("").unwrap();
        assert_eq!(defaults.max_connections_per_uid, 1024);
        assert_eq!(defaults.max_locks_per_uid, 100_000);
        assert_eq!(defaults.admin_reserve(), 64);
        for key in ["max-connections-per-uid", "max-locks-per-uid"] {
            let err = limits(&format!("{key} = 0")).unwrap_err();
            assert!(err.contains(&format!("limits.{key}")), "{err}");
        }
    }

    #[test]
    fn the_admin_reserve_never_takes_more_than_half_of_the_connections() {
        let small = limits("max-connections = 3").unwrap();
        assert_eq!(small.admin_reserve(), 1, "a config from before the reserve");
        let exact = limits("max-connections = 4\nreserved-admin-connections = 2").unwrap();
        assert_eq!(exact.admin_reserve(), 2);
    }
}

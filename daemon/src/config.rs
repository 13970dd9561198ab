//! Configuration: raw TOML → merged over the embedded defaults → validated [`Settings`].
//!
//! The embedded default (`default-config.toml`, shipped beside this file and commented key by
//! key) is parsed first and a user's file overrides it key by key, so a daemon started with no
//! file at all serves `file://` and `mem://` with sane limits.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration;

/// The commented default configuration, embedded in the binary.
pub const DEFAULT_CONFIG: &str = include_str!("default-config.toml");

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    #[serde(default)]
    daemon: RawDaemon,
    #[serde(default)]
    locks: RawLocks,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    stores: RawStores,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawDaemon {
    socket: Option<String>,
    host_id: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawLocks {
    default_ttl: Option<String>,
    corrupt_grace: Option<String>,
    stale_answer_timeout: Option<String>,
    idle_actor_timeout: Option<String>,
    recheck_min: Option<String>,
    recheck_max: Option<String>,
    shutdown_timeout: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawLimits {
    max_frame: Option<u64>,
    io_timeout: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawStores {
    file: Option<bool>,
    mem: Option<bool>,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

/// Validated settings, in real types.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Socket path from the config file, if set.
    pub socket: Option<PathBuf>,
    /// Host identity from the config file, if set.
    pub host_id: Option<String>,
    /// Lease given when none is asked for.
    pub default_ttl: Duration,
    /// How long a corrupt lock file counts as held.
    pub corrupt_grace: Duration,
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
    /// Largest frame accepted.
    pub max_frame: usize,
    /// Handshake and partial-frame timeout.
    pub io_timeout: Duration,
    /// Whether `file://` is served.
    pub file_store: bool,
    /// Whether `mem://` is served.
    pub mem_store: bool,
}

fn merge<T: Clone>(base: &mut Option<T>, over: &Option<T>) {
    if over.is_some() {
        base.clone_from(over);
    }
}

impl RawConfig {
    fn parse(text: &str, origin: &str) -> Result<RawConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError(format!("{origin}: {e}")))
    }

    fn overlay(mut self, over: &RawConfig) -> RawConfig {
        merge(&mut self.daemon.socket, &over.daemon.socket);
        merge(&mut self.daemon.host_id, &over.daemon.host_id);
        let (l, o) = (&mut self.locks, &over.locks);
        merge(&mut l.default_ttl, &o.default_ttl);
        merge(&mut l.corrupt_grace, &o.corrupt_grace);
        merge(&mut l.stale_answer_timeout, &o.stale_answer_timeout);
        merge(&mut l.idle_actor_timeout, &o.idle_actor_timeout);
        merge(&mut l.recheck_min, &o.recheck_min);
        merge(&mut l.recheck_max, &o.recheck_max);
        merge(&mut l.shutdown_timeout, &o.shutdown_timeout);
        merge(&mut self.limits.max_frame, &over.limits.max_frame);
        merge(&mut self.limits.io_timeout, &over.limits.io_timeout);
        merge(&mut self.stores.file, &over.stores.file);
        merge(&mut self.stores.mem, &over.stores.mem);
        self
    }
}

fn required<T: Clone>(value: &Option<T>, key: &str) -> Result<T, ConfigError> {
    value
        .clone()
        .ok_or_else(|| ConfigError(format!("`{key}` has no value")))
}

fn duration_of(value: &Option<String>, key: &str) -> Result<Duration, ConfigError> {
    duration::parse(&required(value, key)?).map_err(|e| ConfigError(format!("`{key}`: {e}")))
}

fn non_empty(value: &Option<String>) -> Option<String> {
    value.clone().filter(|v| !v.is_empty())
}

impl Settings {
    /// The embedded defaults.
    pub fn defaults() -> Settings {
        Settings::from_toml(None).expect("the embedded default config is valid")
    }

    /// Loads `path` over the embedded defaults (or the defaults alone).
    pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
        match path {
            None => Settings::from_toml(None),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError(format!("cannot read config file {}: {e}", path.display()))
                })?;
                Settings::from_toml(Some((&text, &path.display().to_string())))
            }
        }
    }

    /// Parses a config text (with its origin for messages) over the embedded defaults.
    pub fn from_toml(user: Option<(&str, &str)>) -> Result<Settings, ConfigError> {
        let mut raw = RawConfig::parse(DEFAULT_CONFIG, "embedded default config")?;
        if let Some((text, origin)) = user {
            raw = raw.overlay(&RawConfig::parse(text, origin)?);
        }
        Settings::validate(&raw)
    }

    fn validate(raw: &RawConfig) -> Result<Settings, ConfigError> {
        let l = &raw.locks;
        let settings = Settings {
            socket: non_empty(&raw.daemon.socket).map(PathBuf::from),
            host_id: non_empty(&raw.daemon.host_id),
            default_ttl: duration_of(&l.default_ttl, "locks.default-ttl")?,
            corrupt_grace: duration_of(&l.corrupt_grace, "locks.corrupt-grace")?,
            stale_answer_timeout: duration_of(
                &l.stale_answer_timeout,
                "locks.stale-answer-timeout",
            )?,
            idle_actor_timeout: duration_of(&l.idle_actor_timeout, "locks.idle-actor-timeout")?,
            recheck_min: duration_of(&l.recheck_min, "locks.recheck-min")?,
            recheck_max: duration_of(&l.recheck_max, "locks.recheck-max")?,
            shutdown_timeout: duration_of(&l.shutdown_timeout, "locks.shutdown-timeout")?,
            max_frame: usize::try_from(required(&raw.limits.max_frame, "limits.max-frame")?)
                .map_err(|_| ConfigError("`limits.max-frame` is too large".into()))?,
            io_timeout: duration_of(&raw.limits.io_timeout, "limits.io-timeout")?,
            file_store: required(&raw.stores.file, "stores.file")?,
            mem_store: required(&raw.stores.mem, "stores.mem")?,
        };
        if settings.recheck_min.is_zero() || settings.recheck_min > settings.recheck_max {
            return Err(ConfigError(
                "`locks.recheck-min` must be above zero and at most `locks.recheck-max`".into(),
            ));
        }
        if settings.max_frame < 64 || settings.max_frame > u32::MAX as usize {
            return Err(ConfigError(
                "`limits.max-frame` must be between 64 bytes and 4 GiB".into(),
            ));
        }
        if settings.io_timeout.is_zero() {
            return Err(ConfigError("`limits.io-timeout` must be above zero".into()));
        }
        Ok(settings)
    }

    /// The settings as a complete TOML file (what `vfslockd --print-config` prints).
    pub fn to_toml(&self) -> String {
        let raw = RawConfig {
            daemon: RawDaemon {
                socket: Some(
                    self.socket
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                ),
                host_id: Some(self.host_id.clone().unwrap_or_default()),
            },
            locks: RawLocks {
                default_ttl: Some(duration::format(self.default_ttl)),
                corrupt_grace: Some(duration::format(self.corrupt_grace)),
                stale_answer_timeout: Some(duration::format(self.stale_answer_timeout)),
                idle_actor_timeout: Some(duration::format(self.idle_actor_timeout)),
                recheck_min: Some(duration::format(self.recheck_min)),
                recheck_max: Some(duration::format(self.recheck_max)),
                shutdown_timeout: Some(duration::format(self.shutdown_timeout)),
            },
            limits: RawLimits {
                max_frame: Some(self.max_frame as u64),
                io_timeout: Some(duration::format(self.io_timeout)),
            },
            stores: RawStores {
                file: Some(self.file_store),
                mem: Some(self.mem_store),
            },
        };
        toml::to_string(&raw).expect("settings serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_default_serves_file_and_mem() {
        let settings = Settings::defaults();
        assert!(settings.file_store && settings.mem_store);
        assert_eq!(settings.default_ttl, Duration::from_secs(30));
        assert_eq!(settings.max_frame, 1 << 20);
    }

    #[test]
    fn a_user_file_overrides_only_what_it_sets() {
        let settings =
            Settings::from_toml(Some(("[locks]\ndefault-ttl = \"5m\"\n", "test"))).unwrap();
        assert_eq!(settings.default_ttl, Duration::from_secs(300));
        assert_eq!(settings.corrupt_grace, Settings::defaults().corrupt_grace);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_their_name() {
        let err = Settings::from_toml(Some(("[locks]\nttl = \"5m\"\n", "my.toml"))).unwrap_err();
        assert!(err.to_string().contains("my.toml"), "{err}");
        let err =
            Settings::from_toml(Some(("[locks]\ndefault-ttl = \"soon\"\n", "x"))).unwrap_err();
        assert!(err.to_string().contains("locks.default-ttl"), "{err}");
    }

    #[test]
    fn printed_config_reads_back_identically() {
        let settings = Settings::from_toml(Some(("[daemon]\nhost-id = \"h1\"\n", "test"))).unwrap();
        let printed = settings.to_toml();
        assert_eq!(
            Settings::from_toml(Some((&printed, "printed"))).unwrap(),
            settings
        );
    }
}

//! Configuration: raw TOML → merged over the embedded defaults → validated [`Settings`].
//!
//! The embedded default (`daemon/src/default-config.toml`, commented key by key) is parsed
//! first and a user's file overrides it key by key, so a daemon started with no file at all
//! serves `file://` and `mem://` with sane limits.
//!
//! [`Settings`] is grouped as the file is: one module per section, each with the section as
//! written (all keys optional, unknown keys refused), the section validated in real types, and
//! the way back for `--print-config`. Adding a key touches its section's module (and the
//! embedded default, which gives it its default value and explains it), nothing else.
//!
//! | section                         | file         | settings                |
//! |---------------------------------|--------------|-------------------------|
//! | `[daemon]`                      | `daemon.rs`  | [`DaemonSettings`]      |
//! | `[locks]`                       | `locks.rs`   | [`LockSettings`]        |
//! | `[limits]`                      | `limits.rs`  | [`LimitSettings`]       |
//! | `[metrics]`                     | `metrics.rs` | [`MetricsSettings`]     |
//! | `[audit]`                       | `audit.rs`   | [`AuditSettings`]       |
//! | `[stores.file]`, `[stores.mem]` | `stores.rs`  | [`StoreSettings`]       |
//! | `[[stores.object]]`             | `object.rs`  | [`ObjectStoreSettings`] |
//! | `[[access]]`                    | `access.rs`  | [`AccessRuleSettings`]  |
//! | `[faults]` (tests only)         | `faults.rs`  | [`FaultSettings`]       |
//!
//! Errors are [`ConfigError`] (`error.rs`), each naming the key or table at fault.

mod access;
mod audit;
mod daemon;
mod error;
mod faults;
mod limits;
mod locks;
mod metrics;
mod object;
mod stores;

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use access::{AccessRuleSettings, NameOrId};
pub use audit::AuditSettings;
pub use daemon::{DaemonSettings, LogFormat};
pub use error::{ConfigError, ObjectStoreProblem};
pub use faults::{FaultSettings, OperationFaults};
pub use limits::LimitSettings;
pub use locks::LockSettings;
pub use metrics::MetricsSettings;
pub use object::{ObjectStoreSettings, Secret};
pub use stores::{FileRootSettings, FileStoreSettings, MemStoreSettings, StaleRule, StoreSettings};

use crate::duration;

/// The commented default configuration, embedded in the binary.
pub const DEFAULT_CONFIG: &str = include_str!("../default-config.toml");

/// The whole file as written: each section's keys optional, unknown keys refused.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    #[serde(default)]
    daemon: daemon::RawDaemon,
    #[serde(default)]
    locks: locks::RawLocks,
    #[serde(default)]
    limits: limits::RawLimits,
    #[serde(default)]
    metrics: metrics::RawMetrics,
    #[serde(default)]
    audit: audit::RawAudit,
    #[serde(default)]
    stores: stores::RawStores,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    access: Vec<access::RawAccessRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    faults: Option<faults::RawFaults>,
}

/// Validated settings, in real types, grouped as the file is.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `[daemon]`: socket, host identity, admin group, state directory, log format.
    pub daemon: DaemonSettings,
    /// `[locks]`: the lock protocol's timings.
    pub locks: LockSettings,
    /// `[limits]`: what one client may cost.
    pub limits: LimitSettings,
    /// `[metrics]`: recording, and the scrape listener.
    pub metrics: MetricsSettings,
    /// `[audit]`: the audit log, if any.
    pub audit: AuditSettings,
    /// `[stores.*]`: which stores are served, and how.
    pub stores: StoreSettings,
    /// `[[access]]`: who may lock under which prefixes (empty: everyone who can reach the
    /// socket).
    pub access: Vec<AccessRuleSettings>,
    /// Test-only knobs: `[faults]` and the clock offset.
    pub faults: FaultSettings,
    /// Whether the config file holds secrets while others can read it (warned at startup).
    pub secrets_readable_by_others: bool,
}

impl RawConfig {
    fn parse(text: &str, origin: &str) -> Result<RawConfig, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Parse {
            origin: origin.into(),
            source: Box::new(source),
        })
    }

    /// `over` laid over `self`, key by key: tables merge, every other value (arrays included)
    /// replaces. Done on the TOML tables, so no section lists its keys a second time for it.
    ///
    /// Only the embedded default is ever laid under a file. It has no `[[access]]` or
    /// `[[stores.object]]` tables, so a file's lists replacing the default's is the same as
    /// adding to them.
    fn overlay(self, over: &RawConfig) -> RawConfig {
        let table = |raw: &RawConfig| toml::Table::try_from(raw).expect("a config serializes");
        let mut merged = table(&self);
        merge(&mut merged, table(over));
        merged
            .try_into()
            .expect("two configs merged have the shape of a config")
    }
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base)), toml::Value::Table(over)) => merge(base, over),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// The value of `key`, which the embedded default always sets.
fn required<T: Clone>(value: &Option<T>, key: &str) -> Result<T, ConfigError> {
    value
        .clone()
        .ok_or_else(|| ConfigError::Missing { key: key.into() })
}

/// The duration `key` is set to.
fn duration_of(value: &Option<String>, key: &str) -> Result<Duration, ConfigError> {
    duration::parse(&required(value, key)?).map_err(|problem| ConfigError::Value {
        key: key.into(),
        problem,
    })
}

/// The value, unless it is empty (which the file uses for "not set").
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
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.into(),
                    source,
                })?;
                // Only the Unix block below (the file's mode) changes it.
                #[cfg_attr(not(unix), allow(unused_mut))]
                let mut settings = Settings::from_toml(Some((&text, &path.display().to_string())))?;
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let shared = std::fs::metadata(path)
                        .map(|m| m.permissions().mode() & 0o077 != 0)
                        .unwrap_or(false);
                    let raw = RawConfig::parse(&text, "")?;
                    settings.secrets_readable_by_others =
                        shared && stores::StoreSettings::has_literal_secrets(&raw.stores);
                }
                Ok(settings)
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
        let locks = LockSettings::from_raw(&raw.locks)?;
        Ok(Settings {
            daemon: DaemonSettings::from_raw(&raw.daemon)?,
            limits: LimitSettings::from_raw(&raw.limits)?,
            metrics: MetricsSettings::from_raw(&raw.metrics)?,
            audit: AuditSettings::from_raw(&raw.audit)?,
            stores: StoreSettings::from_raw(&raw.stores, locks.store_timeout)?,
            locks,
            access: raw
                .access
                .iter()
                .map(AccessRuleSettings::from_raw)
                .collect::<Result<_, _>>()?,
            faults: FaultSettings::from_raw(raw.faults.as_ref())?,
            secrets_readable_by_others: false,
        })
    }

    /// The settings as a complete TOML file (what `vfslockd --print-config` prints).
    pub fn to_toml(&self) -> String {
        let raw = RawConfig {
            daemon: self.daemon.to_raw(),
            locks: self.locks.to_raw(),
            limits: self.limits.to_raw(),
            metrics: self.metrics.to_raw(),
            audit: self.audit.to_raw(),
            stores: self.stores.to_raw(),
            access: self.access.iter().map(AccessRuleSettings::to_raw).collect(),
            faults: self.faults.to_raw(),
        };
        toml::to_string(&raw).expect("settings serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error with its causes, as the daemon prints it.
    fn message(err: &ConfigError) -> String {
        crate::error::Chain(err).to_string()
    }

    #[test]
    fn the_embedded_default_serves_file_and_mem() {
        let settings = Settings::defaults();
        assert_eq!(settings.stores.file.served, Some(StaleRule::Seed));
        assert_eq!(settings.stores.mem.served, Some(StaleRule::Seed));
        assert_eq!(settings.locks.handoff_cooldown, settings.locks.recheck_max);
        assert_eq!(settings.locks.default_ttl, Duration::from_secs(30));
        assert_eq!(settings.limits.max_frame, 1 << 20);
        assert_eq!(settings.locks.max_hold, None, "no cap unless configured");
    }

    #[test]
    fn max_hold_is_a_duration_above_zero_or_empty() {
        let settings = Settings::from_toml(Some(("[locks]\nmax-hold = \"2h\"\n", "test"))).unwrap();
        assert_eq!(settings.locks.max_hold, Some(Duration::from_secs(7200)));
        for bad in ["0s", "soon"] {
            let text = format!("[locks]\nmax-hold = \"{bad}\"\n");
            let err = Settings::from_toml(Some((&text, "test"))).unwrap_err();
            assert!(
                message(&err).contains("locks.max-hold"),
                "{}",
                message(&err)
            );
        }
    }

    #[test]
    fn a_user_file_overrides_only_what_it_sets() {
        let settings =
            Settings::from_toml(Some(("[locks]\ndefault-ttl = \"5m\"\n", "test"))).unwrap();
        assert_eq!(settings.locks.default_ttl, Duration::from_secs(300));
        assert_eq!(
            settings.locks.corrupt_grace,
            Settings::defaults().locks.corrupt_grace
        );
    }

    #[test]
    fn a_store_can_be_switched_off_or_given_the_watched_rule() {
        let text = "[stores.mem]\nenabled = false\n[stores.file]\nstale-rule = \"watched\"\n";
        let settings = Settings::from_toml(Some((text, "test"))).unwrap();
        assert_eq!(settings.stores.mem.served, None);
        assert_eq!(settings.stores.file.served, Some(StaleRule::Watched));
    }

    #[test]
    fn object_stores_are_validated_and_print_without_secrets() {
        let text = r#"
[[stores.object]]
prefix = "s3://locks/"
endpoint = "http://127.0.0.1:9100"
region = "us-east-1"
access-key-id = "AKIAEXAMPLE"
secret-access-key = "very-secret"
"#;
        let settings = Settings::from_toml(Some((text, "test"))).unwrap();
        let store = &settings.stores.object[0];
        assert_eq!(store.parsed.1, "locks");
        assert_eq!(
            store.secret_access_key.as_ref().unwrap().expose(),
            "very-secret"
        );
        assert!(!format!("{settings:?}").contains("very-secret"));
        let printed = settings.to_toml();
        assert!(!printed.contains("very-secret"), "{printed}");
        assert!(printed.contains("<redacted>"), "{printed}");

        let no_region = text.replace("region = \"us-east-1\"\n", "");
        let err = Settings::from_toml(Some((&no_region, "test"))).unwrap_err();
        assert!(message(&err).contains("region"), "{err}");
        let rooted = format!("{text}root = \"/elsewhere\"\n");
        let err = Settings::from_toml(Some((&rooted, "test"))).unwrap_err();
        assert!(message(&err).contains("root"), "{err}");
        let from_env = text.replace("\"very-secret\"", "\"env:VFSLOCK_TEST_SURELY_UNSET\"");
        let err = Settings::from_toml(Some((&from_env, "test"))).unwrap_err();
        assert!(message(&err).contains("VFSLOCK_TEST_SURELY_UNSET"), "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_their_name() {
        let err = Settings::from_toml(Some(("[locks]\nttl = \"5m\"\n", "my.toml"))).unwrap_err();
        assert!(message(&err).contains("my.toml"), "{err}");
        let err =
            Settings::from_toml(Some(("[locks]\ndefault-ttl = \"soon\"\n", "x"))).unwrap_err();
        assert!(message(&err).contains("locks.default-ttl"), "{err}");
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

    #[cfg(feature = "faults")]
    #[test]
    fn store_faults_are_read_validated_and_printed_back() {
        let text = "[faults]\nerror-rate = 0.05\ndelay-rate = 0.1\ndelay = \"30ms\"\n\
                    switch-file = \"/run/x/faults-on\"\n";
        let settings = Settings::from_toml(Some((text, "test"))).unwrap();
        let faults = settings.faults.operations.clone().unwrap();
        assert_eq!((faults.error_rate, faults.delay_rate), (0.05, 0.1));
        assert_eq!(faults.delay, Duration::from_millis(30));
        assert_eq!(
            faults.switch_file,
            Some(std::path::PathBuf::from("/run/x/faults-on"))
        );
        let printed = settings.to_toml();
        assert_eq!(
            Settings::from_toml(Some((&printed, "printed"))).unwrap(),
            settings
        );
        let delay_only = Settings::from_toml(Some(("[faults]\ndelay-rate = 1\n", "t"))).unwrap();
        let faults = delay_only.faults.operations.unwrap();
        assert_eq!(
            (faults.error_rate, faults.delay),
            (0.0, faults::DEFAULT_FAULT_DELAY)
        );
        let err = Settings::from_toml(Some(("[faults]\nerror-rate = 2\n", "t"))).unwrap_err();
        assert!(message(&err).contains("faults.error-rate"), "{err}");
        assert!(Settings::defaults().faults.operations.is_none());
    }

    #[cfg(not(feature = "faults"))]
    #[test]
    fn store_faults_need_the_faults_build() {
        let err = Settings::from_toml(Some(("[faults]\nerror-rate = 0.1\n", "t"))).unwrap_err();
        assert!(message(&err).contains("`faults` cargo feature"), "{err}");
    }
}

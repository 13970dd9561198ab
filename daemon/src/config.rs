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
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    access: Vec<RawAccessRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    faults: Option<RawFaults>,
}

/// One `[[access]]` table: who may lock under a prefix.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawAccessRule {
    prefix: String,
    #[serde(default)]
    users: Vec<NameOrId>,
    #[serde(default)]
    groups: Vec<NameOrId>,
}

/// A user or group in the config: its name, or its numeric id.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum NameOrId {
    /// A numeric uid or gid.
    Id(u32),
    /// A name, looked up in the system's user or group database at startup.
    Name(String),
}

impl std::fmt::Display for NameOrId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NameOrId::Id(id) => write!(f, "{id}"),
            NameOrId::Name(name) => f.write_str(name),
        }
    }
}

/// A validated `[[access]]` rule; names are resolved to ids by [`crate::access`].
#[derive(Debug, Clone, PartialEq)]
pub struct AccessRuleSettings {
    /// The prefix as written in the config.
    pub prefix: String,
    /// The prefix parsed.
    pub parsed: crate::address::Prefix,
    /// Users allowed to lock under it.
    pub users: Vec<NameOrId>,
    /// Groups (effective or supplementary) whose members may lock under it.
    pub groups: Vec<NameOrId>,
}

/// One entry of `[stores.file] roots`: a directory under which file:// locks may be taken.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
enum RawFileRoot {
    /// Just the path: locks allowed under it where the caller could create a file itself.
    Path(String),
    /// The path and whether the caller must be able to create files there itself.
    Table {
        path: String,
        #[serde(rename = "caller-must-write")]
        caller_must_write: Option<bool>,
    },
}

/// A validated `[stores.file] roots` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRootSettings {
    /// The directory, as written (absolute).
    pub path: PathBuf,
    /// Whether the caller must be able to create files in a lock file's directory itself
    /// (true: the root only narrows; false: it widens, the daemon creates lock files there for
    /// any caller the access rules allow).
    pub caller_must_write: bool,
}

/// `[faults]`: fault injection, honoured only by builds with the `faults` cargo feature.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawFaults {
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

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawDaemon {
    socket: Option<String>,
    host_id: Option<String>,
    admin_group: Option<String>,
    state_dir: Option<String>,
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
    skew_allowance: Option<String>,
    lease_margin: Option<String>,
    store_timeout: Option<String>,
    handoff_max_count: Option<u32>,
    handoff_max_time: Option<String>,
    handoff_cooldown: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawLimits {
    max_frame: Option<u64>,
    io_timeout: Option<String>,
    max_connections: Option<usize>,
    max_locks_per_session: Option<usize>,
    max_waiters_per_target: Option<usize>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawStores {
    #[serde(default)]
    file: RawStore,
    #[serde(default)]
    mem: RawStore,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    object: Vec<RawObjectStore>,
}

/// One `[[stores.object]]` table: an object store (or SFTP server) serving a URL prefix.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawObjectStore {
    prefix: String,
    endpoint: Option<String>,
    region: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    virtual_host_style: Option<bool>,
    account_name: Option<String>,
    account_key: Option<String>,
    credential_path: Option<String>,
    skip_signature: Option<bool>,
    key: Option<String>,
    known_hosts: Option<String>,
    root: Option<String>,
    fencing: Option<bool>,
    stale_rule: Option<StaleRule>,
    accept_weak: Option<bool>,
    request_timeout: Option<String>,
}

/// A secret from the config: a literal, or `env:NAME` read from the daemon's environment.
/// Its `Debug` never shows the value, so it cannot reach a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The value, for the store builder only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A validated object store.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectStoreSettings {
    /// The prefix as written in the config.
    pub prefix: String,
    /// The prefix parsed: scheme, bucket/container/host, key or path prefix.
    pub parsed: crate::address::Prefix,
    /// Service endpoint (`http://127.0.0.1:9100`; SFTP: none, the prefix names the host).
    pub endpoint: Option<String>,
    /// S3 region.
    pub region: Option<String>,
    /// S3 access key id.
    pub access_key_id: Option<Secret>,
    /// S3 secret access key.
    pub secret_access_key: Option<Secret>,
    /// S3 virtual-host-style addressing instead of path style.
    pub virtual_host_style: bool,
    /// Azure account name.
    pub account_name: Option<String>,
    /// Azure account key.
    pub account_key: Option<Secret>,
    /// GCS service-account credential file.
    pub credential_path: Option<String>,
    /// GCS: send unsigned requests (emulators).
    pub skip_signature: bool,
    /// SFTP: private key file.
    pub key: Option<String>,
    /// SFTP: `strict` (default), `accept` or `add`.
    pub known_hosts: Option<String>,
    /// Issue fencing tokens (default true; create-only stores never do).
    pub fencing: bool,
    /// Stale rule.
    pub stale_rule: StaleRule,
    /// Accept a store whose startup probe finds a missing capability.
    pub accept_weak: bool,
    /// Timeout of one request to the store.
    pub request_timeout: Duration,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawStore {
    enabled: Option<bool>,
    stale_rule: Option<StaleRule>,
    /// `[stores.file]` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    roots: Option<Vec<RawFileRoot>>,
}

/// How a store judges a lock stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StaleRule {
    /// The Go library's rule: `createdAt + ttl` (plus the skew allowance) has passed.
    Seed,
    /// This daemon watched the file unchanged for a whole TTL on its monotonic clock.
    Watched,
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
const DEFAULT_FAULT_DELAY: Duration = Duration::from_millis(20);

/// `[faults]` error and delay injection, if either rate is set.
fn operation_faults(raw: Option<&RawFaults>) -> Result<Option<OperationFaults>, ConfigError> {
    let Some(raw) = raw.filter(|f| f.error_rate.is_some() || f.delay_rate.is_some()) else {
        return Ok(None);
    };
    let rate = |value: Option<f64>, key: &str| match value {
        Some(r) if !(0.0..=1.0).contains(&r) => Err(ConfigError(format!(
            "`faults.{key}` must be a share between 0 and 1"
        ))),
        r => Ok(r.unwrap_or(0.0)),
    };
    Ok(Some(OperationFaults {
        error_rate: rate(raw.error_rate, "error-rate")?,
        delay_rate: rate(raw.delay_rate, "delay-rate")?,
        delay: match &raw.delay {
            None => DEFAULT_FAULT_DELAY,
            Some(text) => {
                duration::parse(text).map_err(|e| ConfigError(format!("`faults.delay`: {e}")))?
            }
        },
        switch_file: raw.switch_file.clone(),
    }))
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
    /// Group whose members may break locks and end others' detached leases (besides root).
    pub admin_group: Option<String>,
    /// Where the crash journal lives (default: see [`crate::journal::default_state_dir`]).
    pub state_dir: Option<PathBuf>,
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
    /// Most client connections at once.
    pub max_connections: usize,
    /// Most acquires (held or waiting) per connection.
    pub max_locks_per_session: usize,
    /// Most waiters queued on one target.
    pub max_waiters_per_target: usize,
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
    /// `file://` served, with this stale rule.
    pub file_store: Option<StaleRule>,
    /// Where `file://` lock files may be created (empty: wherever the caller could create a
    /// file itself).
    pub file_roots: Vec<FileRootSettings>,
    /// `mem://` served, with this stale rule.
    pub mem_store: Option<StaleRule>,
    /// Who may lock under which prefixes (empty: everyone who can reach the socket).
    pub access: Vec<AccessRuleSettings>,
    /// Object stores, by prefix.
    pub object_stores: Vec<ObjectStoreSettings>,
    /// Whether the config file holds secrets while others can read it (warned at startup).
    pub secrets_readable_by_others: bool,
    /// Tests only (`faults` feature): share of object-store writes applied, then failed.
    pub faults_write_then_fail: Option<f64>,
    /// Tests only (`faults` feature): object-store conditions dropped, as a server that ignores
    /// them would.
    pub faults_ignore_conditions: bool,
    /// Tests only (`faults` feature): errors and delays in front of every store's operations.
    pub faults_operations: Option<OperationFaults>,
    /// Tests only (`faults` feature): an acquire with this owner id makes its target's lock
    /// actor panic.
    pub faults_panic_owner: Option<String>,
    /// Added to the wall clock, in nanoseconds. Not in the config file: only the hidden
    /// `--clock-offset` flag sets it, so that tests can give one daemon a skewed clock without
    /// touching the system's.
    pub clock_offset_ns: i64,
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
        merge(&mut self.daemon.admin_group, &over.daemon.admin_group);
        merge(&mut self.daemon.state_dir, &over.daemon.state_dir);
        let (l, o) = (&mut self.locks, &over.locks);
        merge(&mut l.default_ttl, &o.default_ttl);
        merge(&mut l.corrupt_grace, &o.corrupt_grace);
        merge(&mut l.stale_answer_timeout, &o.stale_answer_timeout);
        merge(&mut l.idle_actor_timeout, &o.idle_actor_timeout);
        merge(&mut l.recheck_min, &o.recheck_min);
        merge(&mut l.recheck_max, &o.recheck_max);
        merge(&mut l.shutdown_timeout, &o.shutdown_timeout);
        merge(&mut l.skew_allowance, &o.skew_allowance);
        merge(&mut l.lease_margin, &o.lease_margin);
        merge(&mut l.store_timeout, &o.store_timeout);
        merge(&mut l.handoff_max_count, &o.handoff_max_count);
        merge(&mut l.handoff_max_time, &o.handoff_max_time);
        merge(&mut l.handoff_cooldown, &o.handoff_cooldown);
        merge(&mut self.limits.max_frame, &over.limits.max_frame);
        merge(&mut self.limits.io_timeout, &over.limits.io_timeout);
        merge(
            &mut self.limits.max_connections,
            &over.limits.max_connections,
        );
        merge(
            &mut self.limits.max_locks_per_session,
            &over.limits.max_locks_per_session,
        );
        merge(
            &mut self.limits.max_waiters_per_target,
            &over.limits.max_waiters_per_target,
        );
        for (base, over) in [
            (&mut self.stores.file, &over.stores.file),
            (&mut self.stores.mem, &over.stores.mem),
        ] {
            merge(&mut base.enabled, &over.enabled);
            merge(&mut base.stale_rule, &over.stale_rule);
            merge(&mut base.roots, &over.roots);
        }
        self.access.extend(over.access.iter().cloned());
        self.stores
            .object
            .extend(over.stores.object.iter().cloned());
        if over.faults.is_some() {
            self.faults.clone_from(&over.faults);
        }
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

fn secret(value: &Option<String>, key: &str) -> Result<Option<Secret>, ConfigError> {
    match value.as_deref() {
        None => Ok(None),
        Some(text) => match text.strip_prefix("env:") {
            Some(name) => std::env::var(name).map(|v| Some(Secret(v))).map_err(|_| {
                ConfigError(format!(
                    "`{key}` names the environment variable {name}, which is not set"
                ))
            }),
            None => Ok(Some(Secret(text.to_owned()))),
        },
    }
}

fn object_store_of(
    raw: &RawObjectStore,
    default_timeout: Duration,
) -> Result<ObjectStoreSettings, ConfigError> {
    use crate::address::{Address, Scheme};
    let at = format!("[[stores.object]] prefix = {:?}", raw.prefix);
    let parsed =
        Address::parse_prefix(&raw.prefix).map_err(|e| ConfigError(format!("{at}: {e}")))?;
    if !parsed.0.is_object_store() && parsed.0 != Scheme::Sftp {
        return Err(ConfigError(format!(
            "{at}: only s3://, gs://, azblob:// and sftp:// prefixes are object stores \
             (file:// and mem:// are configured under [stores.file] and [stores.mem])"
        )));
    }
    if parsed.1.is_empty() {
        return Err(ConfigError(format!(
            "{at}: the prefix must name the bucket, container or host"
        )));
    }
    if raw
        .root
        .as_deref()
        .is_some_and(|root| !root.is_empty() && root != "/")
    {
        // A root would move our lock objects away from where a Go peer using the same
        // bucket looks for them.
        return Err(ConfigError(format!(
            "{at}: `root` cannot be set: lock keys must stay where the target URL puts them"
        )));
    }
    if parsed.0 != Scheme::Sftp && raw.endpoint.is_none() && parsed.0 != Scheme::S3 {
        return Err(ConfigError(format!("{at}: `endpoint` is required")));
    }
    if parsed.0 == Scheme::S3 && raw.region.is_none() {
        return Err(ConfigError(format!(
            "{at}: `region` is required for S3 (e.g. \"us-east-1\")"
        )));
    }
    let request_timeout = match &raw.request_timeout {
        None => default_timeout,
        Some(text) => duration::parse(text)
            .map_err(|e| ConfigError(format!("{at}: `request-timeout`: {e}")))?,
    };
    Ok(ObjectStoreSettings {
        prefix: raw.prefix.clone(),
        parsed,
        endpoint: raw.endpoint.clone(),
        region: raw.region.clone(),
        access_key_id: secret(&raw.access_key_id, "access-key-id")?,
        secret_access_key: secret(&raw.secret_access_key, "secret-access-key")?,
        virtual_host_style: raw.virtual_host_style.unwrap_or(false),
        account_name: raw.account_name.clone(),
        account_key: secret(&raw.account_key, "account-key")?,
        credential_path: raw.credential_path.clone(),
        skip_signature: raw.skip_signature.unwrap_or(false),
        key: raw.key.clone(),
        known_hosts: raw.known_hosts.clone(),
        fencing: raw.fencing.unwrap_or(true),
        stale_rule: raw.stale_rule.unwrap_or(StaleRule::Seed),
        accept_weak: raw.accept_weak.unwrap_or(false),
        request_timeout,
    })
}

/// Whether any object store has a secret written in the file itself (not `env:`). Checked
/// against the file's Unix mode only.
#[cfg(unix)]
fn has_literal_secrets(raw: &RawConfig) -> bool {
    raw.stores.object.iter().any(|s| {
        [&s.access_key_id, &s.secret_access_key, &s.account_key]
            .into_iter()
            .flatten()
            .any(|v| !v.starts_with("env:"))
    })
}

fn store_of(raw: &RawStore, key: &str) -> Result<Option<StaleRule>, ConfigError> {
    let enabled = required(&raw.enabled, &format!("{key}.enabled"))?;
    if raw.roots.is_some() && key != "stores.file" {
        return Err(ConfigError(format!(
            "`{key}.roots` is not a setting: roots confine file:// targets ([stores.file])"
        )));
    }
    let rule = required(&raw.stale_rule, &format!("{key}.stale-rule"))?;
    Ok(enabled.then_some(rule))
}

fn file_roots_of(raw: &RawStore) -> Result<Vec<FileRootSettings>, ConfigError> {
    let mut roots = Vec::new();
    for root in raw.roots.iter().flatten() {
        let (path, caller_must_write) = match root {
            RawFileRoot::Path(path) => (path, None),
            RawFileRoot::Table {
                path,
                caller_must_write,
            } => (path, *caller_must_write),
        };
        if !Path::new(path).is_absolute() {
            return Err(ConfigError(format!(
                "[stores.file] roots: {path:?} is not an absolute path"
            )));
        }
        roots.push(FileRootSettings {
            path: PathBuf::from(path),
            caller_must_write: caller_must_write.unwrap_or(true),
        });
    }
    Ok(roots)
}

fn access_rule_of(raw: &RawAccessRule) -> Result<AccessRuleSettings, ConfigError> {
    let at = format!("[[access]] prefix = {:?}", raw.prefix);
    let parsed = crate::address::Address::parse_prefix(&raw.prefix)
        .map_err(|e| ConfigError(format!("{at}: {e}")))?;
    Ok(AccessRuleSettings {
        prefix: raw.prefix.clone(),
        parsed,
        users: raw.users.clone(),
        groups: raw.groups.clone(),
    })
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
                    settings.secrets_readable_by_others = shared && has_literal_secrets(&raw);
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
        let l = &raw.locks;
        let settings = Settings {
            socket: non_empty(&raw.daemon.socket).map(PathBuf::from),
            host_id: non_empty(&raw.daemon.host_id),
            admin_group: non_empty(&raw.daemon.admin_group),
            state_dir: non_empty(&raw.daemon.state_dir).map(PathBuf::from),
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
            skew_allowance: duration_of(&l.skew_allowance, "locks.skew-allowance")?,
            lease_margin: duration_of(&l.lease_margin, "locks.lease-margin")?,
            store_timeout: duration_of(&l.store_timeout, "locks.store-timeout")?,
            handoff_max_count: required(&l.handoff_max_count, "locks.handoff-max-count")?,
            handoff_max_time: duration_of(&l.handoff_max_time, "locks.handoff-max-time")?,
            handoff_cooldown: match non_empty(&l.handoff_cooldown) {
                None => duration_of(&l.recheck_max, "locks.recheck-max")?,
                Some(text) => duration::parse(&text)
                    .map_err(|e| ConfigError(format!("`locks.handoff-cooldown`: {e}")))?,
            },
            max_frame: usize::try_from(required(&raw.limits.max_frame, "limits.max-frame")?)
                .map_err(|_| ConfigError("`limits.max-frame` is too large".into()))?,
            io_timeout: duration_of(&raw.limits.io_timeout, "limits.io-timeout")?,
            max_connections: required(&raw.limits.max_connections, "limits.max-connections")?,
            max_locks_per_session: required(
                &raw.limits.max_locks_per_session,
                "limits.max-locks-per-session",
            )?,
            max_waiters_per_target: required(
                &raw.limits.max_waiters_per_target,
                "limits.max-waiters-per-target",
            )?,
            file_store: store_of(&raw.stores.file, "stores.file")?,
            file_roots: file_roots_of(&raw.stores.file)?,
            mem_store: store_of(&raw.stores.mem, "stores.mem")?,
            access: raw
                .access
                .iter()
                .map(access_rule_of)
                .collect::<Result<_, _>>()?,
            object_stores: Vec::new(),
            secrets_readable_by_others: false,
            faults_write_then_fail: raw.faults.as_ref().and_then(|f| f.write_then_fail),
            faults_ignore_conditions: raw
                .faults
                .as_ref()
                .and_then(|f| f.ignore_conditions)
                .unwrap_or(false),
            faults_operations: operation_faults(raw.faults.as_ref())?,
            faults_panic_owner: raw.faults.as_ref().and_then(|f| f.panic_owner.clone()),
            clock_offset_ns: 0,
        };
        if (settings.faults_write_then_fail.is_some()
            || settings.faults_ignore_conditions
            || settings.faults_operations.is_some()
            || settings.faults_panic_owner.is_some())
            && !cfg!(feature = "faults")
        {
            return Err(ConfigError(
                "[faults] needs a vfslockd built with the `faults` cargo feature (tests only)"
                    .into(),
            ));
        }
        let mut settings = settings;
        for raw_store in &raw.stores.object {
            let store = object_store_of(raw_store, settings.store_timeout)?;
            if settings
                .object_stores
                .iter()
                .any(|s| s.parsed == store.parsed)
            {
                return Err(ConfigError(format!(
                    "the store prefix {} is configured twice",
                    store.prefix
                )));
            }
            settings.object_stores.push(store);
        }
        if settings.store_timeout.is_zero() {
            return Err(ConfigError(
                "`locks.store-timeout` must be above zero".into(),
            ));
        }
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
                admin_group: Some(self.admin_group.clone().unwrap_or_default()),
                state_dir: Some(
                    self.state_dir
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                ),
            },
            locks: RawLocks {
                default_ttl: Some(duration::format(self.default_ttl)),
                corrupt_grace: Some(duration::format(self.corrupt_grace)),
                stale_answer_timeout: Some(duration::format(self.stale_answer_timeout)),
                idle_actor_timeout: Some(duration::format(self.idle_actor_timeout)),
                recheck_min: Some(duration::format(self.recheck_min)),
                recheck_max: Some(duration::format(self.recheck_max)),
                shutdown_timeout: Some(duration::format(self.shutdown_timeout)),
                skew_allowance: Some(duration::format(self.skew_allowance)),
                lease_margin: Some(duration::format(self.lease_margin)),
                store_timeout: Some(duration::format(self.store_timeout)),
                handoff_max_count: Some(self.handoff_max_count),
                handoff_max_time: Some(duration::format(self.handoff_max_time)),
                handoff_cooldown: Some(duration::format(self.handoff_cooldown)),
            },
            limits: RawLimits {
                max_frame: Some(self.max_frame as u64),
                io_timeout: Some(duration::format(self.io_timeout)),
                max_connections: Some(self.max_connections),
                max_locks_per_session: Some(self.max_locks_per_session),
                max_waiters_per_target: Some(self.max_waiters_per_target),
            },
            faults: (self.faults_write_then_fail.is_some()
                || self.faults_ignore_conditions
                || self.faults_operations.is_some()
                || self.faults_panic_owner.is_some())
            .then(|| RawFaults {
                panic_owner: self.faults_panic_owner.clone(),
                write_then_fail: self.faults_write_then_fail,
                ignore_conditions: Some(self.faults_ignore_conditions),
                error_rate: self.faults_operations.as_ref().map(|f| f.error_rate),
                delay_rate: self.faults_operations.as_ref().map(|f| f.delay_rate),
                delay: self
                    .faults_operations
                    .as_ref()
                    .map(|f| duration::format(f.delay)),
                switch_file: self
                    .faults_operations
                    .as_ref()
                    .and_then(|f| f.switch_file.clone()),
            }),
            stores: RawStores {
                object: self
                    .object_stores
                    .iter()
                    .map(ObjectStoreSettings::to_raw)
                    .collect(),
                file: RawStore {
                    enabled: Some(self.file_store.is_some()),
                    stale_rule: Some(self.file_store.unwrap_or(StaleRule::Seed)),
                    roots: Some(
                        self.file_roots
                            .iter()
                            .map(|root| RawFileRoot::Table {
                                path: root.path.display().to_string(),
                                caller_must_write: Some(root.caller_must_write),
                            })
                            .collect(),
                    ),
                },
                mem: RawStore {
                    enabled: Some(self.mem_store.is_some()),
                    stale_rule: Some(self.mem_store.unwrap_or(StaleRule::Seed)),
                    roots: None,
                },
            },
            access: self
                .access
                .iter()
                .map(|rule| RawAccessRule {
                    prefix: rule.prefix.clone(),
                    users: rule.users.clone(),
                    groups: rule.groups.clone(),
                })
                .collect(),
        };
        toml::to_string(&raw).expect("settings serialize")
    }
}

impl ObjectStoreSettings {
    /// Back to the file's shape, secrets redacted (for `--print-config`).
    fn to_raw(&self) -> RawObjectStore {
        let redacted = |s: &Option<Secret>| s.as_ref().map(|_| "<redacted>".to_owned());
        RawObjectStore {
            prefix: self.prefix.clone(),
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            access_key_id: redacted(&self.access_key_id),
            secret_access_key: redacted(&self.secret_access_key),
            virtual_host_style: Some(self.virtual_host_style),
            account_name: self.account_name.clone(),
            account_key: redacted(&self.account_key),
            credential_path: self.credential_path.clone(),
            skip_signature: Some(self.skip_signature),
            key: self.key.clone(),
            known_hosts: self.known_hosts.clone(),
            root: None,
            fencing: Some(self.fencing),
            stale_rule: Some(self.stale_rule),
            accept_weak: Some(self.accept_weak),
            request_timeout: Some(duration::format(self.request_timeout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_default_serves_file_and_mem() {
        let settings = Settings::defaults();
        assert_eq!(settings.file_store, Some(StaleRule::Seed));
        assert_eq!(settings.mem_store, Some(StaleRule::Seed));
        assert_eq!(settings.handoff_cooldown, settings.recheck_max);
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
    fn a_store_can_be_switched_off_or_given_the_watched_rule() {
        let text = "[stores.mem]\nenabled = false\n[stores.file]\nstale-rule = \"watched\"\n";
        let settings = Settings::from_toml(Some((text, "test"))).unwrap();
        assert_eq!(settings.mem_store, None);
        assert_eq!(settings.file_store, Some(StaleRule::Watched));
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
        let store = &settings.object_stores[0];
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
        assert!(err.to_string().contains("region"), "{err}");
        let rooted = format!("{text}root = \"/elsewhere\"\n");
        let err = Settings::from_toml(Some((&rooted, "test"))).unwrap_err();
        assert!(err.to_string().contains("root"), "{err}");
        let from_env = text.replace("\"very-secret\"", "\"env:VFSLOCK_TEST_SURELY_UNSET\"");
        let err = Settings::from_toml(Some((&from_env, "test"))).unwrap_err();
        assert!(
            err.to_string().contains("VFSLOCK_TEST_SURELY_UNSET"),
            "{err}"
        );
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

    #[cfg(feature = "faults")]
    #[test]
    fn store_faults_are_read_validated_and_printed_back() {
        let text = "[faults]\nerror-rate = 0.05\ndelay-rate = 0.1\ndelay = \"30ms\"\n\
                    switch-file = \"/run/x/faults-on\"\n";
        let settings = Settings::from_toml(Some((text, "test"))).unwrap();
        let faults = settings.faults_operations.clone().unwrap();
        assert_eq!((faults.error_rate, faults.delay_rate), (0.05, 0.1));
        assert_eq!(faults.delay, Duration::from_millis(30));
        assert_eq!(faults.switch_file, Some(PathBuf::from("/run/x/faults-on")));
        let printed = settings.to_toml();
        assert_eq!(
            Settings::from_toml(Some((&printed, "printed"))).unwrap(),
            settings
        );
        let delay_only = Settings::from_toml(Some(("[faults]\ndelay-rate = 1\n", "t"))).unwrap();
        let faults = delay_only.faults_operations.unwrap();
        assert_eq!(
            (faults.error_rate, faults.delay),
            (0.0, DEFAULT_FAULT_DELAY)
        );
        let err = Settings::from_toml(Some(("[faults]\nerror-rate = 2\n", "t"))).unwrap_err();
        assert!(err.to_string().contains("faults.error-rate"), "{err}");
        assert!(Settings::defaults().faults_operations.is_none());
    }

    #[cfg(not(feature = "faults"))]
    #[test]
    fn store_faults_need_the_faults_build() {
        let err = Settings::from_toml(Some(("[faults]\nerror-rate = 0.1\n", "t"))).unwrap_err();
        assert!(err.to_string().contains("`faults` cargo feature"), "{err}");
    }
}

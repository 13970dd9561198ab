//! One `[[stores.object]]` table: an object store (S3, GCS, Azure Blob) or an SFTP server
//! serving a URL prefix, with its endpoint and credentials.
//!
//! Secrets may be written as `env:NAME`, read from the daemon's environment when the config is
//! validated; a [`Secret`] never shows its value in `Debug` or `--print-config`.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::ObjectStoreProblem;
use super::{ConfigError, StaleRule};
use crate::duration;

/// One `[[stores.object]]` table as written.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawObjectStore {
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

impl RawObjectStore {
    /// Whether a secret is written in the file itself (not `env:`).
    #[cfg(unix)]
    pub(super) fn has_literal_secrets(&self) -> bool {
        [
            &self.access_key_id,
            &self.secret_access_key,
            &self.account_key,
        ]
        .into_iter()
        .flatten()
        .any(|v| !v.starts_with("env:"))
    }
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

impl ObjectStoreSettings {
    /// `default_timeout` is `locks.store-timeout`, used where `request-timeout` is not set.
    pub(super) fn from_raw(
        raw: &RawObjectStore,
        default_timeout: Duration,
    ) -> Result<ObjectStoreSettings, ConfigError> {
        Self::validate(raw, default_timeout).map_err(|source| ConfigError::ObjectStore {
            prefix: raw.prefix.clone(),
            source,
        })
    }

    fn validate(
        raw: &RawObjectStore,
        default_timeout: Duration,
    ) -> Result<ObjectStoreSettings, ObjectStoreProblem> {
        use crate::address::{Address, Scheme};
        let parsed = Address::parse_prefix(&raw.prefix)?;
        if !parsed.0.is_object_store() && parsed.0 != Scheme::Sftp {
            return Err(ObjectStoreProblem::NotAnObjectStore);
        }
        if parsed.1.is_empty() {
            return Err(ObjectStoreProblem::NoAuthority);
        }
        if raw
            .root
            .as_deref()
            .is_some_and(|root| !root.is_empty() && root != "/")
        {
            // A root would move our lock objects away from where a Go peer using the same
            // bucket looks for them.
            return Err(ObjectStoreProblem::Root);
        }
        if parsed.0 != Scheme::Sftp && raw.endpoint.is_none() && parsed.0 != Scheme::S3 {
            return Err(ObjectStoreProblem::NoEndpoint);
        }
        if parsed.0 == Scheme::S3 && raw.region.is_none() {
            return Err(ObjectStoreProblem::NoRegion);
        }
        let request_timeout = match &raw.request_timeout {
            None => default_timeout,
            Some(text) => duration::parse(text).map_err(|problem| ObjectStoreProblem::Value {
                key: "request-timeout",
                problem,
            })?,
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

    /// Checks that the files this store reads when it starts (SFTP `key`, GCS
    /// `credential-path`) can be read by this process, without starting it. The store's own
    /// probe, which talks to the service, comes later ([`crate::store::Stores::new`]).
    pub fn check_files(&self) -> Result<(), ConfigError> {
        let files = [
            ("key", &self.key),
            ("credential-path", &self.credential_path),
        ];
        for (key, path) in files {
            let Some(path) = path else { continue };
            readable(Path::new(path)).map_err(|source| ConfigError::ObjectStore {
                prefix: self.prefix.clone(),
                source: ObjectStoreProblem::Unreadable {
                    key,
                    path: path.into(),
                    source,
                },
            })?;
        }
        Ok(())
    }

    /// Back to the file's shape, secrets redacted (for `--print-config`).
    pub(super) fn to_raw(&self) -> RawObjectStore {
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

/// Opens `path` and reads a byte: opening alone succeeds on a directory.
fn readable(path: &Path) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open(path)?.read(&mut [0u8; 1]).map(drop)
}

fn secret(value: &Option<String>, key: &'static str) -> Result<Option<Secret>, ObjectStoreProblem> {
    match value.as_deref() {
        None => Ok(None),
        Some(text) => match text.strip_prefix("env:") {
            Some(name) => std::env::var(name).map(|v| Some(Secret(v))).map_err(|_| {
                ObjectStoreProblem::SecretUnset {
                    key,
                    name: name.into(),
                }
            }),
            None => Ok(Some(Secret(text.to_owned()))),
        },
    }
}

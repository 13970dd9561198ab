//! `[stores.file]`, `[stores.mem]` and the list of `[[stores.object]]`: which stores are
//! served and how each judges a lock stale. One object store's table is in `object.rs`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::object::{ObjectStoreSettings, RawObjectStore};
use super::{required, ConfigError};

/// `[stores]` as written.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawStores {
    #[serde(default)]
    file: RawStore,
    #[serde(default)]
    mem: RawStore,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    object: Vec<RawObjectStore>,
}

/// `[stores.file]` or `[stores.mem]` as written.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawStore {
    enabled: Option<bool>,
    stale_rule: Option<StaleRule>,
    /// `[stores.file]` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    roots: Option<Vec<RawFileRoot>>,
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

/// How a store judges a lock stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StaleRule {
    /// The Go library's rule: `createdAt + ttl` (plus the skew allowance) has passed.
    Seed,
    /// This daemon watched the file unchanged for a whole TTL on its monotonic clock.
    Watched,
}

/// The stores, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreSettings {
    /// `[stores.file]`.
    pub file: FileStoreSettings,
    /// `[stores.mem]`.
    pub mem: MemStoreSettings,
    /// `[[stores.object]]`, in the file's order (no two with the same prefix).
    pub object: Vec<ObjectStoreSettings>,
}

/// `[stores.file]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct FileStoreSettings {
    /// `file://` served, with this stale rule (`None`: `enabled = false`).
    pub served: Option<StaleRule>,
    /// Where `file://` lock files may be created (empty: wherever the caller could create a
    /// file itself).
    pub roots: Vec<FileRootSettings>,
}

/// `[stores.mem]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct MemStoreSettings {
    /// `mem://` served, with this stale rule (`None`: `enabled = false`).
    pub served: Option<StaleRule>,
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

impl StoreSettings {
    /// `store_timeout` is `locks.store-timeout`, the default of each object store's
    /// `request-timeout`.
    pub(super) fn from_raw(
        raw: &RawStores,
        store_timeout: Duration,
    ) -> Result<StoreSettings, ConfigError> {
        let file = FileStoreSettings {
            served: served(&raw.file, "stores.file")?,
            roots: file_roots(&raw.file)?,
        };
        let mem = MemStoreSettings {
            served: served(&raw.mem, "stores.mem")?,
        };
        let mut object: Vec<ObjectStoreSettings> = Vec::new();
        for raw_store in &raw.object {
            let store = ObjectStoreSettings::from_raw(raw_store, store_timeout)?;
            if object.iter().any(|s| s.parsed == store.parsed) {
                return Err(ConfigError::StoreTwice {
                    prefix: store.prefix,
                });
            }
            object.push(store);
        }
        Ok(StoreSettings { file, mem, object })
    }

    pub(super) fn to_raw(&self) -> RawStores {
        RawStores {
            object: self
                .object
                .iter()
                .map(ObjectStoreSettings::to_raw)
                .collect(),
            file: RawStore {
                enabled: Some(self.file.served.is_some()),
                stale_rule: Some(self.file.served.unwrap_or(StaleRule::Seed)),
                roots: Some(
                    self.file
                        .roots
                        .iter()
                        .map(|root| RawFileRoot::Table {
                            path: root.path.display().to_string(),
                            caller_must_write: Some(root.caller_must_write),
                        })
                        .collect(),
                ),
            },
            mem: RawStore {
                enabled: Some(self.mem.served.is_some()),
                stale_rule: Some(self.mem.served.unwrap_or(StaleRule::Seed)),
                roots: None,
            },
        }
    }

    /// Whether any object store has a secret written in the file itself (not `env:`).
    #[cfg(unix)]
    pub(super) fn has_literal_secrets(raw: &RawStores) -> bool {
        raw.object.iter().any(RawObjectStore::has_literal_secrets)
    }
}

/// The stale rule `[stores.<store>]` is served with, if it is.
fn served(raw: &RawStore, key: &str) -> Result<Option<StaleRule>, ConfigError> {
    let enabled = required(&raw.enabled, &format!("{key}.enabled"))?;
    if raw.roots.is_some() && key != "stores.file" {
        return Err(ConfigError::RootsOutsideFileStore { store: key.into() });
    }
    let rule = required(&raw.stale_rule, &format!("{key}.stale-rule"))?;
    Ok(enabled.then_some(rule))
}

fn file_roots(raw: &RawStore) -> Result<Vec<FileRootSettings>, ConfigError> {
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
            return Err(ConfigError::RelativeRoot { path: path.clone() });
        }
        roots.push(FileRootSettings {
            path: PathBuf::from(path),
            caller_must_write: caller_must_write.unwrap_or(true),
        });
    }
    Ok(roots)
}

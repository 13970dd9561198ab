//! `[daemon]`: where the daemon listens, who it says it is, who administers it, where its
//! crash journal lives.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{non_empty, ConfigError};

/// `[daemon]` as written.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawDaemon {
    socket: Option<String>,
    host_id: Option<String>,
    admin_group: Option<String>,
    state_dir: Option<String>,
}

/// `[daemon]`, validated. An empty value in the file means "not set" here.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonSettings {
    /// Socket path from the config file, if set.
    pub socket: Option<PathBuf>,
    /// Host identity from the config file, if set.
    pub host_id: Option<String>,
    /// Group whose members may break locks and end others' detached leases (besides root).
    pub admin_group: Option<String>,
    /// Where the crash journal lives (default: see [`crate::journal::default_state_dir`]).
    pub state_dir: Option<PathBuf>,
}

impl DaemonSettings {
    pub(super) fn from_raw(raw: &RawDaemon) -> Result<DaemonSettings, ConfigError> {
        Ok(DaemonSettings {
            socket: non_empty(&raw.socket).map(PathBuf::from),
            host_id: non_empty(&raw.host_id),
            admin_group: non_empty(&raw.admin_group),
            state_dir: non_empty(&raw.state_dir).map(PathBuf::from),
        })
    }

    pub(super) fn to_raw(&self) -> RawDaemon {
        let path = |p: &Option<PathBuf>| {
            Some(
                p.as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            )
        };
        RawDaemon {
            socket: path(&self.socket),
            host_id: Some(self.host_id.clone().unwrap_or_default()),
            admin_group: Some(self.admin_group.clone().unwrap_or_default()),
            state_dir: path(&self.state_dir),
        }
    }
}

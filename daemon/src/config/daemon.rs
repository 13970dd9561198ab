//! `[daemon]`: where the daemon listens, who it says it is, who administers it, where its
//! crash journal lives, and how it writes its log.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{non_empty, required, ConfigError};

/// `[daemon]` as written.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawDaemon {
    socket: Option<String>,
    host_id: Option<String>,
    admin_group: Option<String>,
    state_dir: Option<String>,
    log_format: Option<String>,
}

/// `[daemon]`, validated. An empty value in the file means "not set" here (except for
/// `log-format`, which always has one of its values).
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
    /// How log lines are written on stderr (`vfslockd --log-format` overrides it).
    pub log_format: LogFormat,
}

/// How the daemon writes its log lines on stderr: `log-format` in `[daemon]`, or
/// `vfslockd --log-format`.
///
/// Held as text in the raw section and read by [`LogFormat::parse`], rather than as a serde
/// enum, so that the file and the command line refuse a bad value with the same message, which
/// names the key and the values allowed (a serde enum fails in the TOML parser, with its own
/// wording and no key path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One line per event for a person to read (colours only on a terminal).
    Text,
    /// One JSON object per line, for a log collector.
    Json,
}

impl LogFormat {
    /// The format `text` names; otherwise what is wrong with it, naming the values allowed.
    pub fn parse(text: &str) -> Result<LogFormat, String> {
        match text {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "{other:?} is not a log format: use \"text\" or \"json\""
            )),
        }
    }

    /// Its name in the file.
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl DaemonSettings {
    pub(super) fn from_raw(raw: &RawDaemon) -> Result<DaemonSettings, ConfigError> {
        Ok(DaemonSettings {
            socket: non_empty(&raw.socket).map(PathBuf::from),
            host_id: non_empty(&raw.host_id),
            admin_group: non_empty(&raw.admin_group),
            state_dir: non_empty(&raw.state_dir).map(PathBuf::from),
            log_format: LogFormat::parse(&required(&raw.log_format, "daemon.log-format")?)
                .map_err(|problem| ConfigError::Value {
                    key: "daemon.log-format".into(),
                    problem,
                })?,
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
            log_format: Some(self.log_format.name().to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LogFormat;
    use crate::config::Settings;

    fn daemon(text: &str) -> Result<super::DaemonSettings, String> {
        Settings::from_toml(Some((&format!("[daemon]\n{text}\n"), "test")))
            .map(|settings| settings.daemon)
            .map_err(|e| crate::error::Chain(&e).to_string())
    }

    #[test]
    fn log_format_defaults_to_text_and_reads_json() {
        assert_eq!(daemon("").unwrap().log_format, LogFormat::Text);
        assert_eq!(
            daemon("log-format = \"json\"").unwrap().log_format,
            LogFormat::Json
        );
        assert_eq!(
            daemon("log-format = \"text\"").unwrap().log_format,
            LogFormat::Text
        );
    }

    #[test]
    fn an_unknown_log_format_is_refused_naming_the_key_and_the_formats() {
        for bad in ["xml", "JSON", ""] {
            let err = daemon(&format!("log-format = {bad:?}")).unwrap_err();
            assert!(err.contains("daemon.log-format"), "{err}");
            assert!(err.contains("\"text\" or \"json\""), "{err}");
        }
    }

    #[test]
    fn log_format_prints_back_as_written() {
        for name in [LogFormat::Text, LogFormat::Json].map(LogFormat::name) {
            let settings =
                Settings::from_toml(Some((&format!("[daemon]\nlog-format = {name:?}\n"), "t")))
                    .unwrap();
            let printed = settings.to_toml();
            assert!(
                printed.contains(&format!("log-format = {name:?}")),
                "{printed}"
            );
            assert_eq!(
                Settings::from_toml(Some((&printed, "printed"))).unwrap(),
                settings
            );
        }
    }
}

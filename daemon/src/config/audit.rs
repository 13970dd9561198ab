//! `[audit]`: whether the daemon keeps an audit log, where, and how much of it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{non_empty, required, ConfigError};

/// `[audit]` as written.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawAudit {
    path: Option<String>,
    max_size: Option<RawSize>,
    keep: Option<i64>,
}

/// A size as written: a byte count, or a number with a unit (`"64MiB"`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
enum RawSize {
    Bytes(i64),
    Text(String),
}

/// `[audit]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditSettings {
    /// The audit log file, an absolute path; `None`: no audit log.
    pub path: Option<PathBuf>,
    /// The file is rotated before a line would take it past this many bytes.
    pub max_size: u64,
    /// How many rotated files are kept (`audit.log.1` … `audit.log.N`).
    pub keep: u32,
}

/// More rotated files than this is a typo, not a retention policy: each rotation renames them
/// all.
const MAX_KEEP: i64 = 1000;

/// The units a size may carry, largest first.
const UNITS: [(&str, u64); 4] = [
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("B", 1),
];

impl AuditSettings {
    pub(super) fn from_raw(raw: &RawAudit) -> Result<AuditSettings, ConfigError> {
        let path = non_empty(&raw.path).map(PathBuf::from);
        if let Some(path) = &path {
            // Relative to what? The daemon's working directory is `/` under systemd and
            // wherever it was started otherwise: one file, two places.
            if !path.is_absolute() {
                return Err(ConfigError::Value {
                    key: "audit.path".into(),
                    problem: format!(
                        "{:?} is not an absolute path (under systemd: \
                         \"/var/log/vfslock/audit.log\")",
                        path.display().to_string()
                    ),
                });
            }
        }
        let max_size = match required(&raw.max_size, "audit.max-size")? {
            RawSize::Bytes(bytes) => u64::try_from(bytes).unwrap_or(0),
            RawSize::Text(text) => parse_size(&text).map_err(|problem| ConfigError::Value {
                key: "audit.max-size".into(),
                problem,
            })?,
        };
        if max_size == 0 {
            return Err(ConfigError::OutOfRange {
                key: "audit.max-size".into(),
                rule: "must be above zero",
            });
        }
        let keep = required(&raw.keep, "audit.keep")?;
        if !(0..=MAX_KEEP).contains(&keep) {
            return Err(ConfigError::OutOfRange {
                key: "audit.keep".into(),
                rule: "must be between 0 and 1000",
            });
        }
        Ok(AuditSettings {
            path,
            max_size,
            keep: keep as u32,
        })
    }

    pub(super) fn to_raw(&self) -> RawAudit {
        RawAudit {
            path: Some(
                self.path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
            max_size: Some(RawSize::Text(format_size(self.max_size))),
            keep: Some(i64::from(self.keep)),
        }
    }
}

/// Reads `"64MiB"`, `"512 KiB"`, `"100B"` or `"4096"` (bytes).
fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let unit = unit.trim();
    let scale = if unit.is_empty() {
        1
    } else {
        UNITS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(unit))
            .map(|&(_, scale)| scale)
            .ok_or_else(|| {
                format!("`{unit}` in {text:?} is not a size unit (use B, KiB, MiB or GiB)")
            })?
    };
    let number: u64 = number.parse().map_err(|_| {
        format!("{text:?} is not a size (a byte count, or a number with B, KiB, MiB or GiB)")
    })?;
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Writes a size the way [`parse_size`] reads it, in the largest unit that divides it.
fn format_size(bytes: u64) -> String {
    let (name, scale) = UNITS
        .iter()
        .find(|&&(_, scale)| bytes.is_multiple_of(scale))
        .copied()
        .unwrap_or(("B", 1));
    format!("{}{name}", bytes / scale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn refused(text: &str) -> String {
        let err = Settings::from_toml(Some((text, "t"))).unwrap_err();
        crate::error::Chain(&err).to_string()
    }

    #[test]
    fn there_is_no_audit_log_unless_a_path_is_given() {
        let settings = Settings::defaults();
        assert_eq!(settings.audit.path, None);
        assert_eq!(settings.audit.max_size, 64 << 20);
        assert_eq!(settings.audit.keep, 5);
    }

    #[test]
    fn max_size_takes_a_byte_count_or_a_size_with_a_unit() {
        for (written, bytes) in [
            ("\"64MiB\"", 64 << 20),
            ("\"512 kib\"", 512 << 10),
            ("\"100B\"", 100),
            ("\"1GiB\"", 1 << 30),
            ("4096", 4096),
        ] {
            let text = format!("[audit]\nmax-size = {written}\n");
            let settings = Settings::from_toml(Some((&text, "t"))).unwrap();
            assert_eq!(settings.audit.max_size, bytes, "{written}");
            let printed = settings.to_toml();
            let again = Settings::from_toml(Some((&printed, "printed"))).unwrap();
            assert_eq!(again.audit, settings.audit, "{printed}");
        }
        for bad in ["\"64MB\"", "\"lots\"", "\"MiB\"", "0", "-5", "\"0KiB\""] {
            let message = refused(&format!("[audit]\nmax-size = {bad}\n"));
            assert!(message.contains("audit.max-size"), "{bad}: {message}");
        }
    }

    #[test]
    fn the_path_must_be_absolute_and_keep_within_reason() {
        let absolute = if cfg!(windows) {
            r"C:\logs\audit.log"
        } else {
            "/var/log/v/audit.log"
        };
        let text = format!("[audit]\npath = {absolute:?}\n");
        let settings = Settings::from_toml(Some((&text, "t"))).unwrap();
        assert_eq!(settings.audit.path, Some(PathBuf::from(absolute)));
        let message = refused("[audit]\npath = \"audit.log\"\n");
        assert!(message.contains("audit.path"), "{message}");
        for bad in ["-1", "1001"] {
            let message = refused(&format!("[audit]\nkeep = {bad}\n"));
            assert!(message.contains("audit.keep"), "{message}");
        }
    }
}

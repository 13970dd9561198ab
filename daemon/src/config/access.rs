//! `[[access]]`: who may lock under a prefix, as written. The names are resolved to ids at
//! startup by [`crate::access`], which also enforces the rules.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// One `[[access]]` table as written.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawAccessRule {
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

impl AccessRuleSettings {
    pub(super) fn from_raw(raw: &RawAccessRule) -> Result<AccessRuleSettings, ConfigError> {
        let parsed = crate::address::Address::parse_prefix(&raw.prefix).map_err(|source| {
            ConfigError::AccessPrefix {
                prefix: raw.prefix.clone(),
                source,
            }
        })?;
        Ok(AccessRuleSettings {
            prefix: raw.prefix.clone(),
            parsed,
            users: raw.users.clone(),
            groups: raw.groups.clone(),
        })
    }

    pub(super) fn to_raw(&self) -> RawAccessRule {
        RawAccessRule {
            prefix: self.prefix.clone(),
            users: self.users.clone(),
            groups: self.groups.clone(),
        }
    }
}

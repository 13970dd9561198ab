//! Why a configuration cannot be used.
//!
//! Each variant says what is wrong and where (the key, the `[[stores.object]]` prefix, the
//! file), and keeps the error that caused it as its `source` rather than as text, so that the
//! daemon prints the whole chain once, at the top ([`crate::error::Chain`]).

use std::path::PathBuf;

use crate::address::AddressError;

/// A configuration that cannot be used. The daemon exits 78 (`EX_CONFIG`) on any of them.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The text is not TOML, or a key is unknown or has a value of the wrong type.
    #[error("{origin}")]
    Parse {
        /// The file (or "embedded default config").
        origin: String,
        /// The parser's message, which shows the line.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A key has no value (neither the file nor the embedded default sets it).
    #[error("`{key}` has no value")]
    Missing {
        /// The key, with its section (`locks.default-ttl`).
        key: String,
    },
    /// A value does not read as what the key needs.
    #[error("`{key}`: {problem}")]
    Value {
        /// The key, with its section.
        key: String,
        /// What is wrong with the value (it names the accepted forms).
        problem: String,
    },
    /// A value reads, but is outside what the key allows.
    #[error("`{key}` {rule}")]
    OutOfRange {
        /// The key, with its section.
        key: String,
        /// What the key allows ("must be above zero").
        rule: &'static str,
    },
    /// `roots` set on a store other than `[stores.file]`.
    #[error("`{store}.roots` is not a setting: roots confine file:// targets ([stores.file])")]
    RootsOutsideFileStore {
        /// The section (`stores.mem`).
        store: String,
    },
    /// A `[stores.file] roots` entry that is not an absolute path.
    #[error("[stores.file] roots: {path:?} is not an absolute path")]
    RelativeRoot {
        /// The entry as written.
        path: String,
    },
    /// Two `[[stores.object]]` tables serve the same prefix.
    #[error("the store prefix {prefix} is configured twice")]
    StoreTwice {
        /// The second one's prefix, as written.
        prefix: String,
    },
    /// A `[[stores.object]]` table that cannot be used.
    #[error("[[stores.object]] prefix = {prefix:?}")]
    ObjectStore {
        /// Its prefix, as written.
        prefix: String,
        /// What is wrong with it.
        #[source]
        source: ObjectStoreProblem,
    },
    /// An `[[access]]` table whose prefix does not parse.
    #[error("[[access]] prefix = {prefix:?}")]
    AccessPrefix {
        /// The prefix, as written.
        prefix: String,
        /// Why it does not parse.
        #[source]
        source: AddressError,
    },
    /// `[faults]` in a build that cannot honour it.
    #[error("[faults] needs a vfslockd built with the `faults` cargo feature (tests only)")]
    FaultsNotBuilt,
}

/// What is wrong with one `[[stores.object]]` table.
#[derive(Debug, thiserror::Error)]
pub enum ObjectStoreProblem {
    /// The prefix does not parse.
    #[error(transparent)]
    Prefix(#[from] AddressError),
    /// The prefix is a `file://` or `mem://` one.
    #[error(
        "only s3://, gs://, azblob:// and sftp:// prefixes are object stores \
         (file:// and mem:// are configured under [stores.file] and [stores.mem])"
    )]
    NotAnObjectStore,
    /// The prefix names no bucket, container or host.
    #[error("the prefix must name the bucket, container or host")]
    NoAuthority,
    /// `root` is set: it would move lock objects away from where a Go peer looks for them.
    #[error("`root` cannot be set: lock keys must stay where the target URL puts them")]
    Root,
    /// A store that needs an `endpoint` has none.
    #[error("`endpoint` is required")]
    NoEndpoint,
    /// An S3 store without a `region`.
    #[error("`region` is required for S3 (e.g. \"us-east-1\")")]
    NoRegion,
    /// A value does not read as what the key needs.
    #[error("`{key}`: {problem}")]
    Value {
        /// The key.
        key: &'static str,
        /// What is wrong with the value.
        problem: String,
    },
    /// A secret given as `env:NAME` whose variable is not set in the daemon's environment.
    #[error("`{key}` names the environment variable {name}, which is not set")]
    SecretUnset {
        /// The key.
        key: &'static str,
        /// The variable.
        name: String,
    },
    /// A file the store needs (a key, a credential file) that the daemon cannot read.
    #[error("cannot read the `{key}` file {}", path.display())]
    Unreadable {
        /// The key that names it.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

//! Lock targets: the URLs and paths a client may name, and their one normalized form.
//!
//! Two clients locking the same target must meet at the same lock, however each spelled the
//! target, so every accepted spelling is reduced here to a single [`Address`] whose
//! [`key`](Address::key) the daemon's registry uses. Spellings that could name something other
//! than a plain file or object (`..`, empty path segments, a directory, another target's `.lock`
//! file) are refused rather than guessed at.
//!
//! Object-store keys (`s3`, `gs`, `azblob`) are normalized without being altered: a Go peer
//! using the same bucket puts its lock at the key plus `.lock`, and ours must land on the same
//! object, so `//` inside a key is kept rather than collapsed as it would be in a path.
//!
//! # Layout
//!
//! - `mod.rs`: [`Scheme`], [`Prefix`] and [`Address`] with its parsers and accessors;
//! - `url.rs`: cutting a URL into scheme, authority and decoded path or key, bucket names,
//!   percent-encoding both ways;
//! - `sftp.rs`: the `[user@]host[:port]` authority of an `sftp` URL;
//! - `check.rs`: the rules a decoded path, key or prefix must obey;
//! - `error.rs`: [`AddressError`], whose message names the accepted forms.

mod check;
mod error;
mod sftp;
#[cfg(test)]
mod tests;
mod url;

pub use error::AddressError;

use std::fmt;

use check::{check_key, check_key_prefix, check_path, check_path_prefix};
use sftp::SftpHost;
use url::{is_pchar, parse_url, push_encoded};

/// Suffix of a lock file; the target `x` is locked through `x.lock`.
const LOCK_SUFFIX: &str = ".lock";

/// The store a target lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// The local file system (`file://` or a plain absolute path).
    File,
    /// The daemon's in-memory store (`mem://`).
    Mem,
    /// Amazon S3 or a compatible store (`s3://bucket/key`).
    S3,
    /// Google Cloud Storage (`gs://bucket/key`).
    Gcs,
    /// Azure Blob Storage (`azblob://container/key`; `az://` is read as the same).
    Azblob,
    /// A directory tree on an SSH server (`sftp://[user@]host[:port]/abs/path`).
    Sftp,
}

impl Scheme {
    /// The normalized scheme name, as it appears in [`Address::url`]: `file`, `mem`, `s3`, `gs`,
    /// `azblob` or `sftp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::File => "file",
            Scheme::Mem => "mem",
            Scheme::S3 => "s3",
            Scheme::Gcs => "gs",
            Scheme::Azblob => "azblob",
            Scheme::Sftp => "sftp",
        }
    }

    /// Whether targets are flat object keys in a bucket or container (S3, GCS, Azure Blob)
    /// rather than paths in a directory tree.
    pub fn is_object_store(self) -> bool {
        matches!(self, Scheme::S3 | Scheme::Gcs | Scheme::Azblob)
    }

    /// The scheme a URL names, case-insensitively. `az` is the Go library's name for Azure
    /// Blob Storage; reading it as `azblob` makes both spellings one target.
    fn from_name(name: &str) -> Option<Scheme> {
        Some(match name.to_ascii_lowercase().as_str() {
            "file" => Scheme::File,
            "mem" => Scheme::Mem,
            "s3" => Scheme::S3,
            "gs" => Scheme::Gcs,
            "azblob" | "az" => Scheme::Azblob,
            "sftp" => Scheme::Sftp,
            _ => return None,
        })
    }
}

/// A store prefix from the configuration, as [`Address::parse_prefix`] returns it: the scheme,
/// the normalized authority (as [`Address::authority`] gives it) and the decoded key prefix (for
/// object stores, without a leading `/`) or path prefix (otherwise, starting with `/`); the
/// third part is empty when the prefix covers the whole bucket, volume, host or file system.
pub type Prefix = (Scheme, String, String);

/// A validated, normalized lock target.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Address {
    scheme: Scheme,
    /// Empty for `file` (`localhost` is normalized away); for `mem`, a volume name, lowercased;
    /// for object stores, the bucket or container; for `sftp`, `[user@]host[:port]` as it
    /// appears in the normalized URL.
    authority: String,
    /// For `file`, `mem` and `sftp`: decoded, absolute, without empty, `.` or `..` segments.
    /// For object stores: `/` followed by the decoded key, whose empty segments are kept.
    path: String,
    /// The decoded parts of an `sftp` authority; `None` for every other scheme.
    sftp: Option<SftpHost>,
    /// The normalized URL, built once: every request names its target, and the URL is the
    /// registry's key.
    url: String,
}

impl Address {
    /// Parses a lock target:
    ///
    /// - `file:///abs/path` (host empty or `localhost`), or a plain absolute path (meaning
    ///   `file`, taken literally, not percent-decoded);
    /// - `mem:///path` or `mem://volume/path`;
    /// - `s3://bucket/key`, `gs://bucket/key`, `azblob://container/key` or `az://container/key`
    ///   (the key is everything after the first `/` following the bucket, percent-decoded, with
    ///   any `//` kept);
    /// - `sftp://[user@]host[:port]/abs/path`.
    ///
    /// URL paths, keys and users are percent-decoded. Scheme names and hosts match
    /// case-insensitively; bucket names, keys, paths and users do not.
    pub fn parse(input: &str) -> Result<Address, AddressError> {
        let fail = |reason: String| AddressError::target(input, reason);
        if input.is_empty() {
            return Err(fail("the target is empty".into()));
        }
        if input.contains('\0') {
            return Err(fail("the target contains a NUL byte".into()));
        }
        if input.starts_with('/') {
            check_path(input).map_err(fail)?;
            return Ok(Address::new(
                Scheme::File,
                String::new(),
                input.to_owned(),
                None,
            ));
        }
        let parts = parse_url(input).map_err(fail)?;
        let path = if parts.scheme.is_object_store() {
            check_key(&parts.name).map_err(fail)?;
            format!("/{}", parts.name)
        } else {
            if parts.name.is_empty() {
                return Err(fail("the URL has no path".into()));
            }
            check_path(&parts.name).map_err(fail)?;
            parts.name
        };
        Ok(Address::new(
            parts.scheme,
            parts.authority,
            path,
            parts.sftp,
        ))
    }

    fn new(scheme: Scheme, authority: String, path: String, sftp: Option<SftpHost>) -> Address {
        let mut url = format!("{}://{}", scheme.as_str(), authority);
        push_encoded(&mut url, &path, |byte| byte == b'/' || is_pchar(byte));
        Address {
            scheme,
            authority,
            path,
            sftp,
            url,
        }
    }

    /// Parses a store prefix from the configuration, e.g. `s3://locks/`, `s3://locks/team-a/`,
    /// `gs://bucket`, `azblob://container/`, `sftp://user@host:2222/srv/locks/`, `mem://`,
    /// `file:///` or `/srv/locks/`, into `(scheme, authority, key or path prefix)` (see
    /// [`Prefix`]). The authority is normalized as in [`Address::parse`]; the key or path prefix
    /// is decoded the same way and may be empty or end in `/`, but may not hold `.` or `..`
    /// segments, nor (for paths) empty ones. A path prefix of just `/` is returned empty, so
    /// that `file://` and `file:///` are one prefix.
    pub fn parse_prefix(input: &str) -> Result<Prefix, AddressError> {
        let fail = |reason: String| AddressError::prefix(input, reason);
        if input.is_empty() {
            return Err(fail("the prefix is empty".into()));
        }
        if input.contains('\0') {
            return Err(fail("the prefix contains a NUL byte".into()));
        }
        if input.starts_with('/') {
            let path = check_path_prefix(input).map_err(fail)?;
            return Ok((Scheme::File, String::new(), path));
        }
        let parts = parse_url(input).map_err(fail)?;
        let name = if parts.scheme.is_object_store() {
            check_key_prefix(&parts.name).map_err(fail)?;
            parts.name
        } else {
            check_path_prefix(&parts.name).map_err(fail)?
        };
        Ok((parts.scheme, parts.authority, name))
    }

    /// Whether this target lies under `prefix` (as returned by [`Address::parse_prefix`]): same
    /// scheme, same authority, and the [`object_key`](Address::object_key) (object stores) or
    /// [`path`](Address::path) (otherwise) starts with the prefix's key or path.
    ///
    /// A prefix that is empty or ends in `/` matches by plain string prefix. One that does not
    /// end in `/` matches only at a segment boundary: `s3://locks/team-a` covers `team-a` and
    /// `team-a/...` but not `team-ab/x`, because a configured prefix naming a directory would
    /// otherwise silently capture its longer-named siblings.
    pub fn has_prefix(&self, prefix: &Prefix) -> bool {
        let (scheme, authority, start) = prefix;
        if *scheme != self.scheme || *authority != self.authority {
            return false;
        }
        match self.object_key().strip_prefix(start.as_str()) {
            None => false,
            Some(rest) => {
                start.is_empty() || start.ends_with('/') || rest.is_empty() || rest.starts_with('/')
            }
        }
    }

    /// The store the target lives in.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The URL's normalized authority: empty for `file`; for `mem`, the volume (empty for
    /// `mem:///path`); for `s3` and `gs`, the bucket; for `azblob`, the container; for `sftp`,
    /// `[user@]host[:port]` as it appears in [`Address::url`] (e.g. `vfs@example.org:2222`, or
    /// `example.org` when neither a user nor a port other than 22 was given).
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// For `sftp` targets, `(user, host, port)`: the percent-decoded user if one was given, the
    /// lowercased host (an IPv6 literal keeps its brackets, as a `host:port` string needs them),
    /// and the port, `None` meaning the default 22. `None` for every other scheme.
    pub fn sftp_parts(&self) -> Option<(Option<&str>, &str, Option<u16>)> {
        self.sftp
            .as_ref()
            .map(|s| (s.user.as_deref(), s.host.as_str(), s.port))
    }

    /// The decoded path, starting with `/`. For object stores it is `/` followed by the
    /// [`object_key`](Address::object_key).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The path of the target's lock: [`path`](Address::path) with `.lock` appended.
    pub fn lock_path(&self) -> String {
        format!("{}{LOCK_SUFFIX}", self.path)
    }

    /// The name of the target inside its store: for object stores the decoded key, without a
    /// leading `/` of our own (e.g. `inbox//data.csv`); for other schemes the
    /// [`path`](Address::path).
    pub fn object_key(&self) -> &str {
        if self.scheme.is_object_store() {
            // Never empty: `path` is built as "/" + key.
            &self.path[1..]
        } else {
            &self.path
        }
    }

    /// The name of the target's lock inside its store: [`object_key`](Address::object_key) with
    /// `.lock` appended, where a Go peer looks for its own lock on the same target.
    pub fn lock_key(&self) -> String {
        format!("{}{LOCK_SUFFIX}", self.object_key())
    }

    /// The normalized URL, e.g. `file:///abs/data.csv`, `mem://vol/x`, `s3://bucket/in//x`,
    /// `azblob://container/x` or `sftp://vfs@example.org:2222/x`, percent-encoded so that
    /// [`Address::parse`] gives this address back. Only what a URL path cannot carry is encoded;
    /// `/` is kept.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The identity under which the daemon registers the target: equal addresses have equal
    /// keys and different addresses different ones.
    pub fn key(&self) -> &str {
        &self.url
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

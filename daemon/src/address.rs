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

use std::fmt;

/// The forms every refusal of a target names, so that a user who got one wrong learns the right
/// ones.
const ACCEPTED: &str = "expected file:///abs/path, mem:///path, s3://bucket/key, \
                        gs://bucket/key, azblob://container/key (or az://), \
                        sftp://[user@]host[:port]/path, or an absolute path";

/// The forms every refusal of a store prefix names.
const ACCEPTED_PREFIX: &str = "expected a store prefix such as file:///dir/, mem://, \
                               s3://bucket/, gs://bucket/dir/, azblob://container/ (or az://), \
                               sftp://[user@]host[:port]/dir/, or an absolute directory";

/// The scheme names [`Address::parse`] knows, for the refusal of an unknown one.
const SCHEME_NAMES: &str = "file, mem, s3, gs, azblob (or az) and sftp";

/// Longest accepted path in bytes, Linux's `PATH_MAX`.
const MAX_PATH: usize = 4096;

/// Longest object key in bytes: S3's and GCS's limit (Azure's is 1024 characters, which is no
/// shorter).
const MAX_KEY: usize = 1024;

/// The port an `sftp` URL means when it names none; dropped when normalizing so that
/// `host:22` and `host` are one target.
const DEFAULT_SFTP_PORT: u16 = 22;

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

/// The parts of an `sftp` URL's authority, normalized.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SftpHost {
    /// Percent-decoded, case kept: login names are case-sensitive.
    user: Option<String>,
    /// Lowercased; an IPv6 literal keeps its brackets.
    host: String,
    /// `None` for the default port 22, so that writing it or not gives one target.
    port: Option<u16>,
}

impl SftpHost {
    /// `[user@]host[:port]` with the user percent-encoded, as in the normalized URL.
    fn authority(&self) -> String {
        let mut out = String::new();
        if let Some(user) = &self.user {
            push_encoded(&mut out, user, is_userinfo_char);
            out.push('@');
        }
        out.push_str(&self.host);
        if let Some(port) = self.port {
            out.push_str(&format!(":{port}"));
        }
        out
    }
}

/// A URL cut into its normalized parts, before its path or key is checked as a target or as a
/// prefix (which, unlike a target, may be empty or end in `/`).
struct Parts {
    scheme: Scheme,
    authority: String,
    sftp: Option<SftpHost>,
    /// The decoded key (object stores, no leading `/`) or path (otherwise); may be empty.
    name: String,
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

/// Characters a URL path segment may carry unescaped (RFC 3986 `pchar` minus `%`).
fn is_pchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&byte)
}

/// Characters a URL user name may carry unescaped (RFC 3986 `userinfo` minus `%` and `:`, which
/// would start a password).
fn is_userinfo_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&byte)
}

/// Appends `text` to `out`, percent-encoding every byte `keep` refuses.
fn push_encoded(out: &mut String, text: &str, keep: impl Fn(u8) -> bool) {
    for byte in text.bytes() {
        if keep(byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
}

/// Splits `scheme:rest` when the part before the first `:` is an RFC 3986 scheme name.
fn split_scheme(input: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = input.split_once(':')?;
    let mut chars = scheme.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (first_ok && rest_ok).then_some((scheme, rest))
}

/// Cuts `scheme://authority/path` into normalized parts; the path or key is decoded but not yet
/// checked, since targets and prefixes obey different rules there.
fn parse_url(input: &str) -> Result<Parts, String> {
    let Some((scheme_name, rest)) = split_scheme(input) else {
        return Err("a relative path is ambiguous; give an absolute one".into());
    };
    let Some(scheme) = Scheme::from_name(scheme_name) else {
        return Err(format!(
            "unknown scheme \"{scheme_name}\" (accepted: {SCHEME_NAMES})"
        ));
    };
    let Some(rest) = rest.strip_prefix("//") else {
        let name = scheme_name.to_ascii_lowercase();
        return Err(format!("{name} URLs start with {name}://"));
    };
    // A literal '?' or '#' would start a query or fragment, which name nothing in a store;
    // treating them as part of the name instead would silently lock something else.
    if let Some(c) = rest.chars().find(|c| matches!(c, '?' | '#')) {
        return Err(format!(
            "'{c}' starts a URL query or fragment; percent-encode it ({}) if it is part of the name",
            if c == '?' { "%3F" } else { "%23" }
        ));
    }
    let (authority, raw_path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let mut sftp = None;
    let authority = match scheme {
        Scheme::File if authority.is_empty() || authority.eq_ignore_ascii_case("localhost") => {
            String::new()
        }
        Scheme::File => {
            return Err(format!(
                "a file URL names no host (got \"{authority}\"); use file:///path or localhost"
            ));
        }
        Scheme::Mem => {
            if !authority
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
            {
                return Err(format!(
                    "a mem volume name may hold only letters, digits, '-', '.', '_' and '~' \
                     (got \"{authority}\")"
                ));
            }
            // Host names are case-insensitive (RFC 3986), so the volume is too.
            authority.to_ascii_lowercase()
        }
        Scheme::S3 | Scheme::Gcs | Scheme::Azblob => check_bucket(scheme, authority)?,
        Scheme::Sftp => {
            let host = parse_sftp_authority(authority)?;
            let normalized = host.authority();
            sftp = Some(host);
            normalized
        }
    };
    let name = if scheme.is_object_store() {
        // The key is flat: an encoded '/' is the same object as a literal one.
        percent_decode(raw_path.strip_prefix('/').unwrap_or(""), true, "key")?
    } else {
        // A '/' inside a segment would make the decoded path split differently from the URL
        // the user wrote.
        percent_decode(raw_path, false, "path")?
    };
    Ok(Parts {
        scheme,
        authority,
        sftp,
        name,
    })
}

/// Checks a bucket or container name against its store's naming rule. The rules are applied
/// loosely (character set and length only): enough to catch a mistyped URL, while the store
/// itself remains the judge of the finer points.
fn check_bucket(scheme: Scheme, name: &str) -> Result<String, String> {
    let (noun, rule, ok) = match scheme {
        Scheme::S3 => (
            "bucket",
            "an S3 bucket name is 3-63 characters of lowercase letters, digits, '.' and '-'",
            (3..=63).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b)),
        ),
        Scheme::Gcs => (
            "bucket",
            "a GCS bucket name is 3-63 characters (up to 222 if it contains '.') of lowercase \
             letters, digits, '.', '-' and '_'",
            (3..=if name.contains('.') { 222 } else { 63 }).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b)),
        ),
        _ => (
            "container",
            "an Azure container name is 3-63 characters of lowercase letters, digits and '-'",
            (3..=63).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
        ),
    };
    if name.is_empty() {
        let scheme = scheme.as_str();
        return Err(format!(
            "the URL names no {noun}; use {scheme}://{noun}/key"
        ));
    }
    if ok {
        Ok(name.to_owned())
    } else {
        Err(format!("{rule} (got {name:?})"))
    }
}

/// Parses and normalizes `[user@]host[:port]`.
fn parse_sftp_authority(raw: &str) -> Result<SftpHost, String> {
    // The host part holds no '@', so the last one ends the user, which may then carry a
    // literal '@' of its own (a login name that is a mail address).
    let (user, host_port) = match raw.rsplit_once('@') {
        Some((user, host_port)) => (Some(user), host_port),
        None => (None, raw),
    };
    let user = match user {
        None => None,
        Some("") => return Err("the user before '@' is empty; name one or drop the '@'".into()),
        Some(user) if user.contains(':') => {
            // The URL is the lock's identity and shows up in logs and status output.
            return Err(
                "a password in an sftp URL is refused, since the URL is logged and \
                        shared; configure the store's credentials instead"
                    .into(),
            );
        }
        Some(user) => Some(percent_decode(user, true, "user")?),
    };
    let (host, port) = if host_port.starts_with('[') {
        let Some(end) = host_port.find(']') else {
            return Err("an IPv6 host lacks its closing ']'".into());
        };
        let (host, after) = host_port.split_at(end + 1);
        let inner = &host[1..end];
        if inner.is_empty()
            || !inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b":.".contains(&b))
        {
            return Err(format!(
                "an IPv6 host holds only hex digits, ':' and '.' between brackets (got {host:?})"
            ));
        }
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => {
                    return Err(format!(
                        "after an IPv6 host only ':port' may follow (got {after:?})"
                    ))
                }
            },
        };
        (host, port)
    } else {
        match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return Err("the URL names no host; use sftp://[user@]host[:port]/path".into());
    }
    if !host.starts_with('[')
        && !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
    {
        return Err(format!(
            "a host name may hold only letters, digits, '-', '.', '_' and '~', or be an IPv6 \
             literal in brackets (got {host:?})"
        ));
    }
    let port = match port {
        None => None,
        Some(text) => {
            // Checked digit by digit because `u16::from_str` would also take a leading '+'.
            let number = text
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| text.parse::<u16>().ok())
                .flatten()
                .filter(|&port| port != 0);
            match number {
                Some(DEFAULT_SFTP_PORT) => None,
                Some(port) => Some(port),
                None => {
                    return Err(format!(
                        "the port must be a number from 1 to 65535 (got {text:?})"
                    ))
                }
            }
        }
    };
    Ok(SftpHost {
        user,
        // Host names are case-insensitive (RFC 3986).
        host: host.to_ascii_lowercase(),
        port,
    })
}

/// Decodes `%XX` escapes. `slash_ok` says whether an encoded `/` may appear; `what` names the
/// decoded thing in a refusal.
fn percent_decode(text: &str, slash_ok: bool, what: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b'/') if !slash_ok => {
                return Err("%2F (an encoded '/') inside a path segment".into())
            }
            Some(0) => return Err(format!("the {what} contains a NUL byte (%00)")),
            Some(byte) => out.push(byte),
            None => {
                return Err("invalid percent escape: '%' must be followed by two hex digits".into())
            }
        }
        i += 3;
    }
    String::from_utf8(out).map_err(|_| format!("the percent-decoded {what} is not UTF-8"))
}

/// Checks a decoded path: absolute, only named segments, not a lock file, not too long.
fn check_path(path: &str) -> Result<(), String> {
    if path.len() > MAX_PATH {
        return Err(format!(
            "the path is {} bytes long, over the limit of {MAX_PATH}",
            path.len()
        ));
    }
    let Some(relative) = path.strip_prefix('/') else {
        return Err("the path is not absolute".into());
    };
    let mut segments = relative.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match segment {
            "" if last => return Err("the path ends in '/' and names no file".into()),
            "" => return Err("the path has an empty segment ('//')".into()),
            "." | ".." => {
                return Err(format!(
                    "the path has a \"{segment}\" segment; give the path without it"
                ))
            }
            name if last && name.ends_with(LOCK_SUFFIX) => {
                return Err(format!(
                    "\"{name}\" is the lock file of another target, not a target"
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks a decoded object key. Unlike a path, a key may hold empty segments (`a//b`, or a
/// leading `/`): it is one flat name, and a Go peer locking the same key must find our lock.
fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("the URL names no object key after the bucket".into());
    }
    // The lock's key, not just the target's, must fit: a target whose lock cannot be created
    // is better refused here than failed on by the store.
    if key.len() + LOCK_SUFFIX.len() > MAX_KEY {
        return Err(format!(
            "the key is {} bytes long; with \"{LOCK_SUFFIX}\" appended its lock's key would be \
             over the store limit of {MAX_KEY} bytes",
            key.len()
        ));
    }
    let mut segments = key.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match segment {
            "" if last => {
                return Err("the key ends in '/' and names a directory, not an object".into())
            }
            "." | ".." => {
                return Err(format!(
                    "the key has a \"{segment}\" segment; give the key without it"
                ))
            }
            name if last && name.ends_with(LOCK_SUFFIX) => {
                return Err(format!(
                    "\"{name}\" is the lock file of another target, not a target"
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks a decoded key prefix: like a key, but it may be empty or end in `/`.
fn check_key_prefix(prefix: &str) -> Result<(), String> {
    if prefix.len() > MAX_KEY {
        return Err(format!(
            "the key prefix is {} bytes long, over the store limit of {MAX_KEY}",
            prefix.len()
        ));
    }
    let body = prefix.strip_suffix('/').unwrap_or(prefix);
    if let Some(segment) = body.split('/').find(|s| matches!(*s, "." | "..")) {
        return Err(format!(
            "the key prefix has a \"{segment}\" segment; give it without"
        ));
    }
    Ok(())
}

/// Checks a decoded path prefix: like a path, but it may be empty or end in `/`. Returns it
/// with a lone `/` (the whole tree) turned into the empty prefix.
fn check_path_prefix(prefix: &str) -> Result<String, String> {
    if prefix.is_empty() || prefix == "/" {
        return Ok(String::new());
    }
    if prefix.len() > MAX_PATH {
        return Err(format!(
            "the path prefix is {} bytes long, over the limit of {MAX_PATH}",
            prefix.len()
        ));
    }
    let Some(relative) = prefix.strip_prefix('/') else {
        return Err("the path prefix is not absolute".into());
    };
    let body = relative.strip_suffix('/').unwrap_or(relative);
    for segment in body.split('/') {
        match segment {
            "" => return Err("the path prefix has an empty segment ('//')".into()),
            "." | ".." => {
                return Err(format!(
                    "the path prefix has a \"{segment}\" segment; give it without"
                ))
            }
            _ => {}
        }
    }
    Ok(prefix.to_owned())
}

/// Why a target or store prefix was refused. The message always names the accepted forms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressError {
    /// What was refused: "target" or "store prefix".
    what: &'static str,
    /// The input, shortened for display: an over-long path is itself the error.
    shown: String,
    reason: String,
    /// The accepted forms, [`ACCEPTED`] or [`ACCEPTED_PREFIX`].
    accepted: &'static str,
}

impl AddressError {
    fn target(input: &str, reason: String) -> Self {
        Self::new("target", input, reason, ACCEPTED)
    }

    fn prefix(input: &str, reason: String) -> Self {
        Self::new("store prefix", input, reason, ACCEPTED_PREFIX)
    }

    fn new(what: &'static str, input: &str, reason: String, accepted: &'static str) -> Self {
        const SHOWN_CHARS: usize = 80;
        let mut shown: String = input.chars().take(SHOWN_CHARS).collect();
        if shown.len() < input.len() {
            shown.push('…');
        }
        AddressError {
            what,
            shown,
            reason,
            accepted,
        }
    }
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {} {:?}: {}; {}",
            self.what, self.shown, self.reason, self.accepted
        )
    }
}

impl std::error::Error for AddressError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(input: &str) -> Address {
        Address::parse(input).unwrap_or_else(|e| panic!("{input:?} refused: {e}"))
    }

    /// Asserts refusal and returns the message, which must name the accepted forms.
    fn refused(input: &str) -> String {
        let message = match Address::parse(input) {
            Ok(a) => panic!("{input:?} accepted as {a:?}"),
            Err(e) => e.to_string(),
        };
        assert!(message.contains(ACCEPTED), "{message}");
        for form in [
            "file:///abs/path",
            "mem:///path",
            "s3://bucket/key",
            "gs://bucket/key",
            "azblob://container/key (or az://)",
            "sftp://[user@]host[:port]/path",
            "absolute path",
        ] {
            assert!(message.contains(form), "{form} missing from {message}");
        }
        message
    }

    fn prefix(input: &str) -> Prefix {
        Address::parse_prefix(input).unwrap_or_else(|e| panic!("prefix {input:?} refused: {e}"))
    }

    fn prefix_refused(input: &str) -> String {
        let message = match Address::parse_prefix(input) {
            Ok(p) => panic!("prefix {input:?} accepted as {p:?}"),
            Err(e) => e.to_string(),
        };
        assert!(message.contains(ACCEPTED_PREFIX), "{message}");
        assert!(message.contains("invalid store prefix"), "{message}");
        message
    }

    #[test]
    fn file_url_and_plain_path_are_the_same_target() {
        let url = ok("file:///abs/path/data.csv");
        assert_eq!(url.scheme(), Scheme::File);
        assert_eq!(url.path(), "/abs/path/data.csv");
        assert_eq!(url.authority(), "");
        assert_eq!(url.lock_path(), "/abs/path/data.csv.lock");
        assert_eq!(url.object_key(), "/abs/path/data.csv");
        assert_eq!(url.lock_key(), "/abs/path/data.csv.lock");
        assert_eq!(url.sftp_parts(), None);
        assert_eq!(url.url(), "file:///abs/path/data.csv");
        assert_eq!(url.to_string(), url.url());

        for same in [
            "/abs/path/data.csv",
            "file://localhost/abs/path/data.csv",
            "FILE://LocalHost/abs/path/data.csv",
            "File:///abs/path/data.csv",
            "file:///abs/path/data%2Ecsv",
        ] {
            assert_eq!(ok(same), url, "{same}");
            assert_eq!(ok(same).key(), url.key(), "{same}");
        }
    }

    #[test]
    fn mem_urls_keep_their_volume_in_the_identity() {
        let plain = ok("mem:///inbox/data.csv");
        assert_eq!(plain.scheme(), Scheme::Mem);
        assert_eq!(plain.authority(), "");
        assert_eq!(plain.path(), "/inbox/data.csv");
        assert_eq!(plain.object_key(), "/inbox/data.csv");
        assert_eq!(plain.url(), "mem:///inbox/data.csv");
        assert_eq!(ok("MEM:///inbox/data.csv"), plain);

        let vol = ok("mem://vol/x");
        assert_eq!(vol.authority(), "vol");
        assert_eq!(vol.path(), "/x");
        assert_eq!(vol.url(), "mem://vol/x");
        assert_eq!(ok("mem://VOL/x"), vol);
        assert_ne!(vol.key(), ok("mem:///x").key());
        assert_ne!(vol.key(), ok("mem://other/x").key());
        assert_ne!(ok("mem:///x").key(), ok("file:///x").key());
    }

    #[test]
    fn scheme_names_and_kinds() {
        for (scheme, name, object) in [
            (Scheme::File, "file", false),
            (Scheme::Mem, "mem", false),
            (Scheme::S3, "s3", true),
            (Scheme::Gcs, "gs", true),
            (Scheme::Azblob, "azblob", true),
            (Scheme::Sftp, "sftp", false),
        ] {
            assert_eq!(scheme.as_str(), name);
            assert_eq!(scheme.is_object_store(), object, "{name}");
            assert_eq!(Scheme::from_name(name), Some(scheme));
        }
        assert_eq!(Scheme::from_name("AZ"), Some(Scheme::Azblob));
    }

    #[test]
    fn object_store_urls_name_a_bucket_and_a_key() {
        for (input, scheme, bucket, url) in [
            (
                "s3://locks/inbox/data.csv",
                Scheme::S3,
                "locks",
                "s3://locks/inbox/data.csv",
            ),
            (
                "S3://my.bucket-1/inbox/data.csv",
                Scheme::S3,
                "my.bucket-1",
                "s3://my.bucket-1/inbox/data.csv",
            ),
            (
                "gs://my_bucket/inbox/data.csv",
                Scheme::Gcs,
                "my_bucket",
                "gs://my_bucket/inbox/data.csv",
            ),
            (
                "azblob://container-1/inbox/data.csv",
                Scheme::Azblob,
                "container-1",
                "azblob://container-1/inbox/data.csv",
            ),
        ] {
            let address = ok(input);
            assert_eq!(address.scheme(), scheme, "{input}");
            assert_eq!(address.authority(), bucket, "{input}");
            assert_eq!(address.object_key(), "inbox/data.csv", "{input}");
            assert_eq!(address.lock_key(), "inbox/data.csv.lock", "{input}");
            assert_eq!(address.path(), "/inbox/data.csv", "{input}");
            assert_eq!(address.lock_path(), "/inbox/data.csv.lock", "{input}");
            assert_eq!(address.url(), url, "{input}");
            assert_eq!(address.key(), url, "{input}");
            assert_eq!(address.to_string(), url, "{input}");
            assert_eq!(address.sftp_parts(), None, "{input}");
        }
        // One key in different stores is different targets.
        let keys = [
            "s3://abc/x",
            "gs://abc/x",
            "azblob://abc/x",
            "file:///abc/x",
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(ok(a).key(), ok(b).key(), "{a} {b}");
            }
        }
    }

    #[test]
    fn az_is_azblob() {
        let az = ok("az://container/inbox/data.csv");
        assert_eq!(az, ok("azblob://container/inbox/data.csv"));
        assert_eq!(az, ok("AZ://container/inbox/data.csv"));
        assert_eq!(az.scheme(), Scheme::Azblob);
        assert_eq!(az.url(), "azblob://container/inbox/data.csv");
        assert_eq!(az.key(), ok("AzBlob://container/inbox/data.csv").key());
    }

    #[test]
    fn object_keys_keep_double_slashes_and_are_decoded() {
        let address = ok("s3://locks/inbox//data.csv");
        assert_eq!(address.object_key(), "inbox//data.csv");
        assert_eq!(address.lock_key(), "inbox//data.csv.lock");
        assert_eq!(address.path(), "/inbox//data.csv");
        assert_eq!(address.url(), "s3://locks/inbox//data.csv");
        assert_ne!(address, ok("s3://locks/inbox/data.csv"));

        // A key may itself start with '/' or hold several empty segments.
        let leading = ok("gs://bucket//x///y");
        assert_eq!(leading.object_key(), "/x///y");
        assert_eq!(leading.path(), "//x///y");
        assert_eq!(leading.url(), "gs://bucket//x///y");

        // Keys are flat: an encoded '/' is the object a literal one names.
        let encoded = ok("s3://locks/inbox%2Fdata%20file.csv");
        assert_eq!(encoded.object_key(), "inbox/data file.csv");
        assert_eq!(encoded, ok("s3://locks/inbox/data%20file.csv"));
        assert_eq!(encoded.url(), "s3://locks/inbox/data%20file.csv");
        // Keys are case-sensitive.
        assert_ne!(ok("s3://locks/A"), ok("s3://locks/a"));
    }

    #[test]
    fn object_key_refusals_name_the_rule() {
        for input in [
            "s3://locks",
            "s3://locks/",
            "gs://bucket",
            "az://container/",
        ] {
            assert!(refused(input).contains("no object key"), "{input}");
        }
        for input in [
            "s3://locks/dir/",
            "gs://bucket/a//",
            "azblob://container/x/",
        ] {
            assert!(refused(input).contains("names a directory"), "{input}");
        }
        for input in [
            "s3://locks/a/../b",
            "s3://locks/./b",
            "gs://bucket/a/..",
            "s3://locks/a%2F..%2Fb",
            "s3://locks/%2E/b",
        ] {
            assert!(refused(input).contains("segment"), "{input}");
        }
        for input in [
            "s3://locks/x.lock",
            "gs://bucket/a/x%2Elock",
            "az://container/.lock",
        ] {
            assert!(refused(input).contains("lock file"), "{input}");
        }
        // As for files, only a lower-case suffix on the last segment marks a lock.
        assert_eq!(ok("s3://locks/x.LOCK").object_key(), "x.LOCK");
        assert_eq!(ok("s3://locks/x.lock/y").object_key(), "x.lock/y");
        assert!(refused("s3://locks/a\0b").contains("NUL"));
        assert!(refused("s3://locks/a%00b").contains("NUL"));
        assert!(refused("s3://locks/a?b").contains("%3F"));
        assert!(refused("s3://locks/a#b").contains("%23"));
        assert!(refused("s3://locks/a%FF").contains("key is not UTF-8"));
        assert!(refused("s3://locks/a%zz").contains("percent escape"));
    }

    #[test]
    fn object_keys_must_leave_room_for_the_lock_suffix() {
        let longest = "k".repeat(MAX_KEY - LOCK_SUFFIX.len());
        let address = ok(&format!("s3://locks/{longest}"));
        assert_eq!(address.lock_key().len(), MAX_KEY);
        let message = refused(&format!("s3://locks/{longest}k"));
        assert!(message.contains("1020 bytes"), "{message}");
        assert!(message.contains("1024"), "{message}");
        // The limit applies to the decoded key.
        let encoded = format!("s3://locks/{}", "%6B".repeat(MAX_KEY - LOCK_SUFFIX.len()));
        assert_eq!(ok(&encoded), address);
    }

    #[test]
    fn bucket_names_are_checked_per_store() {
        for input in [
            "s3://ab/x",
            "s3://Locks/x",
            "s3://my_bucket/x",
            "s3://a%62c/x",
            &format!("s3://{}/x", "a".repeat(64)),
        ] {
            let message = refused(input);
            assert!(
                message.contains(
                    "an S3 bucket name is 3-63 characters of lowercase letters, digits, '.' and '-'"
                ),
                "{message}"
            );
        }
        for input in [
            "gs://ab/x",
            "gs://Bucket/x",
            "gs://a~b/x",
            &format!("gs://{}/x", "a".repeat(64)),
        ] {
            let message = refused(input);
            assert!(
                message.contains("a GCS bucket name is 3-63 characters"),
                "{message}"
            );
            assert!(message.contains("'.', '-' and '_'"), "{message}");
        }
        // GCS allows longer names made of dotted parts.
        let dotted = format!("{}.{}", "a".repeat(100), "b".repeat(100));
        assert_eq!(ok(&format!("gs://{dotted}/x")).authority(), dotted);
        assert!(refused(&format!("gs://{}.x/x", "a".repeat(221))).contains("up to 222"));
        for input in [
            "azblob://ab/x",
            "az://Container/x",
            "az://my.container/x",
            "az://my_c/x",
        ] {
            let message = refused(input);
            assert!(
                message.contains(
                    "an Azure container name is 3-63 characters of lowercase letters, digits and '-'"
                ),
                "{message}"
            );
        }
        assert!(refused("s3:///key").contains("no bucket; use s3://bucket/key"));
        assert!(refused("az:///key").contains("no container; use azblob://container/key"));
        assert!(refused("s3:bucket/key").contains("s3 URLs start with s3://"));
        assert!(refused("az:c/key").contains("az URLs start with az://"));
    }

    #[test]
    fn sftp_urls_are_normalized() {
        let address = ok("SFTP://User@Example.ORG:22/x");
        assert_eq!(address.url(), "sftp://User@example.org/x");
        assert_eq!(address.scheme(), Scheme::Sftp);
        assert_eq!(address.authority(), "User@example.org");
        assert_eq!(
            address.sftp_parts(),
            Some((Some("User"), "example.org", None))
        );
        assert_eq!(address, ok("sftp://User@example.org/x"));
        assert_ne!(address, ok("sftp://user@example.org/x"));

        let full = ok("sftp://vfs@example.org:2222/srv/data.csv");
        assert_eq!(full.authority(), "vfs@example.org:2222");
        assert_eq!(
            full.sftp_parts(),
            Some((Some("vfs"), "example.org", Some(2222)))
        );
        assert_eq!(full.path(), "/srv/data.csv");
        assert_eq!(full.object_key(), "/srv/data.csv");
        assert_eq!(full.lock_path(), "/srv/data.csv.lock");
        assert_eq!(full.lock_key(), "/srv/data.csv.lock");
        assert_eq!(full.url(), "sftp://vfs@example.org:2222/srv/data.csv");
        assert_ne!(full.key(), ok("sftp://vfs@example.org/srv/data.csv").key());

        let bare = ok("sftp://example.org/x");
        assert_eq!(bare.authority(), "example.org");
        assert_eq!(bare.sftp_parts(), Some((None, "example.org", None)));
        assert_eq!(ok("sftp://example.org:0022/x"), bare);

        // A user is decoded and re-encoded; '@' may be part of it.
        let mail = ok("sftp://me%40corp.example@host/x");
        assert_eq!(
            mail.sftp_parts(),
            Some((Some("me@corp.example"), "host", None))
        );
        assert_eq!(mail.url(), "sftp://me%40corp.example@host/x");
        assert_eq!(ok("sftp://me@corp.example@host/x"), mail);

        let v6 = ok("sftp://[::1]:2222/x");
        assert_eq!(v6.sftp_parts(), Some((None, "[::1]", Some(2222))));
        assert_eq!(ok("sftp://[FE80::1]/x").authority(), "[fe80::1]");
        assert_eq!(ok("sftp://[::1]:22/x").url(), "sftp://[::1]/x");
    }

    #[test]
    fn sftp_refusals_name_the_rule() {
        assert!(refused("sftp:///x").contains("no host"));
        assert!(refused("sftp://u@/x").contains("no host"));
        assert!(refused("sftp://@host/x").contains("user before '@' is empty"));
        assert!(refused("sftp://u:secret@host/x").contains("password"));
        assert!(refused("sftp://ho st/x").contains("host name may hold only"));
        assert!(refused("sftp://ho%73t/x").contains("host name may hold only"));
        for port in ["0", "65536", "", "+22", "x", "22:1", "-1"] {
            let message = refused(&format!("sftp://host:{port}/x"));
            assert!(
                message.contains("port must be a number from 1 to 65535"),
                "{message}"
            );
        }
        assert_eq!(
            ok("sftp://host:65535/x").sftp_parts().unwrap().2,
            Some(65535)
        );
        assert!(refused("sftp://[::1/x").contains("closing ']'"));
        assert!(refused("sftp://[zz]/x").contains("IPv6"));
        assert!(refused("sftp://[::1]x/x").contains("':port'"));
        // The path obeys the file rules.
        assert!(refused("sftp://host").contains("no path"));
        assert!(refused("sftp://host/").contains("ends in '/'"));
        assert!(refused("sftp://host/a//b").contains("empty segment"));
        assert!(refused("sftp://host/a/../b").contains("segment"));
        assert!(refused("sftp://host/x.lock").contains("lock file"));
        assert!(refused("sftp://host/a%2Fb").contains("%2F"));
    }

    #[test]
    fn url_paths_are_percent_decoded_and_plain_paths_literal() {
        let url = ok("file:///data/my%20file%C3%A9.csv");
        assert_eq!(url.path(), "/data/my fileé.csv");
        assert_eq!(url.url(), "file:///data/my%20file%C3%A9.csv");
        let plain = ok("/data/my%20file.csv");
        assert_eq!(plain.path(), "/data/my%20file.csv");
        assert_eq!(plain.url(), "file:///data/my%2520file.csv");
    }

    #[test]
    fn url_round_trips_through_parse() {
        for input in [
            "/a b/c?d#e%f",
            "/ünï/cödé",
            "/x/a:b@c;d=e,f+g!h$i&j'k(l)m*n~o",
            "mem://v-1.x_y~/q%3Fr",
            "file:///tab%09here",
            "s3://locks/a%20b/c%3Fd%23e%25f",
            "s3://locks/ünï//cödé ü",
            "gs://b_1/x/a:b@c;d=e,f+g!h$i&j'k(l)m*n~o",
            "az://container//lead/%25/%3F%23",
            "azblob://container/x%0Ay",
            "sftp://%C3%BCser@host:2222/a%20b/%25%3F%23/ü",
            "sftp://a%20b%3Ac@[::1]/x",
        ] {
            let address = ok(input);
            let url = address.url();
            assert_eq!(ok(&url), address, "{input} -> {url}");
            assert_eq!(ok(&url).url(), url, "{input}");
        }
        let tricky = ok("s3://locks/a%20b/c%3Fd%23e%25f");
        assert_eq!(tricky.object_key(), "a b/c?d#e%f");
        assert_eq!(tricky.url(), "s3://locks/a%20b/c%3Fd%23e%25f");
        assert_eq!(ok("s3://locks/ü").url(), "s3://locks/%C3%BC");
        assert_eq!(ok("s3://locks/ü"), ok("s3://locks/%C3%BC"));
    }

    #[test]
    fn relative_and_dotted_paths_are_refused() {
        for input in ["data.csv", "./data.csv", "abs/path", "../x", " /abs"] {
            assert!(refused(input).contains("relative"), "{input}");
        }
        for input in [
            "/a/../b",
            "/a/./b",
            "/..",
            "file:///a/%2E%2E/b",
            "mem:///./x",
        ] {
            assert!(refused(input).contains("segment"), "{input}");
        }
    }

    #[test]
    fn empty_segments_and_directories_are_refused() {
        assert!(refused("/a//b").contains("empty segment"));
        assert!(refused("file:///a//b").contains("empty segment"));
        for input in ["/", "/a/", "file:///", "mem:///dir/"] {
            assert!(refused(input).contains("ends in '/'"), "{input}");
        }
        assert!(refused("").contains("empty"));
        assert!(refused("file://").contains("no path"));
        assert!(refused("mem://vol").contains("no path"));
    }

    #[test]
    fn lock_files_are_refused_as_targets() {
        for input in [
            "/data/x.csv.lock",
            "/.lock",
            "file:///x.lock",
            "mem:///x%2Elock",
        ] {
            assert!(refused(input).contains("lock file"), "{input}");
        }
        // Only the last segment matters; a directory may be called anything.
        assert_eq!(ok("/locks.lock/x").path(), "/locks.lock/x");
        assert_eq!(ok("/x.locked").path(), "/x.locked");
    }

    #[test]
    fn unknown_schemes_name_the_accepted_ones() {
        for input in [
            "http://example.com/x",
            "gcs://bucket/x",
            "azure://c/x",
            "c:data.csv",
        ] {
            let message = refused(input);
            let scheme = input.split(':').next().unwrap();
            assert!(
                message.contains(&format!("unknown scheme \"{scheme}\"")),
                "{message}"
            );
            assert!(
                message.contains("accepted: file, mem, s3, gs, azblob (or az) and sftp"),
                "{message}"
            );
        }
        // The object-store schemes are parsed now; whether a store serves them is not decided
        // here.
        for input in [
            "s3://bucket/key",
            "gs://bucket/key",
            "azblob://bucket/key",
            "sftp://h/k",
        ] {
            ok(input);
        }
    }

    #[test]
    fn malformed_urls_are_refused() {
        assert!(refused("file:/abs/x").contains("file://"));
        assert!(refused("mem:x").contains("mem://"));
        assert!(refused("file://host/x").contains("no host"));
        assert!(refused("mem://a@b/x").contains("volume"));
        assert!(refused("mem://a:1/x").contains("volume"));
        assert!(refused("file:///a?b").contains("%3F"));
        assert!(refused("file:///a#b").contains("%23"));
        assert!(refused("file:///a%2Fb").contains("%2F"));
        assert!(refused("file:///a%2fb").contains("%2F"));
        for bad in ["file:///a%", "file:///a%2", "file:///a%zz", "file:///a%+1"] {
            assert!(refused(bad).contains("percent escape"), "{bad}");
        }
        assert!(refused("file:///a%FF").contains("UTF-8"));
    }

    #[test]
    fn nul_bytes_are_refused() {
        assert!(refused("/a\0b").contains("NUL"));
        assert!(refused("file:///a\0b").contains("NUL"));
        assert!(refused("file:///a%00b").contains("NUL"));
        assert!(refused("sftp://u%00@host/x").contains("NUL"));
    }

    #[test]
    fn paths_over_4096_bytes_are_refused() {
        let at_limit = format!("/{}", "a".repeat(MAX_PATH - 1));
        assert_eq!(ok(&at_limit).path().len(), MAX_PATH);
        let over = format!("/{}", "a".repeat(MAX_PATH));
        let message = refused(&over);
        assert!(message.contains("4097 bytes"), "{message}");
        assert!(message.len() < 600, "the input is shortened: {message}");
        // The limit applies to the decoded path: escapes shrink it back under.
        let encoded = format!("file:///{}", "%61".repeat(MAX_PATH - 1));
        assert_eq!(ok(&encoded).path(), at_limit);
    }

    #[test]
    fn prefixes_are_parsed_and_normalized() {
        let s = |text: &str| text.to_owned();
        for (input, expected) in [
            ("s3://locks/", (Scheme::S3, s("locks"), s(""))),
            ("s3://locks", (Scheme::S3, s("locks"), s(""))),
            ("s3://locks/team-a/", (Scheme::S3, s("locks"), s("team-a/"))),
            ("s3://locks/team-a", (Scheme::S3, s("locks"), s("team-a"))),
            (
                "s3://locks/a//b%20c/",
                (Scheme::S3, s("locks"), s("a//b c/")),
            ),
            ("gs://b_1", (Scheme::Gcs, s("b_1"), s(""))),
            ("azblob://c-1/", (Scheme::Azblob, s("c-1"), s(""))),
            ("AZ://c-1/x/", (Scheme::Azblob, s("c-1"), s("x/"))),
            (
                "sftp://u@host:2222/srv/locks/",
                (Scheme::Sftp, s("u@host:2222"), s("/srv/locks/")),
            ),
            ("sftp://U@HOST:22", (Scheme::Sftp, s("U@host"), s(""))),
            ("mem://", (Scheme::Mem, s(""), s(""))),
            ("mem://Vol/", (Scheme::Mem, s("vol"), s(""))),
            ("mem:///team", (Scheme::Mem, s(""), s("/team"))),
            ("file:///", (Scheme::File, s(""), s(""))),
            ("file://", (Scheme::File, s(""), s(""))),
            (
                "file:///srv/locks/",
                (Scheme::File, s(""), s("/srv/locks/")),
            ),
            ("/srv/locks/", (Scheme::File, s(""), s("/srv/locks/"))),
            ("/", (Scheme::File, s(""), s(""))),
        ] {
            assert_eq!(prefix(input), expected, "{input}");
        }
    }

    #[test]
    fn bad_prefixes_are_refused() {
        assert!(prefix_refused("").contains("empty"));
        assert!(prefix_refused("locks/").contains("relative"));
        assert!(prefix_refused("http://x/").contains("unknown scheme"));
        assert!(prefix_refused("s3://Locks/").contains("S3 bucket name"));
        assert!(prefix_refused("s3:///x/").contains("no bucket"));
        assert!(prefix_refused("s3://locks/../x/").contains("\"..\" segment"));
        assert!(prefix_refused("s3://locks/./").contains("\".\" segment"));
        assert!(prefix_refused("file:///a//b/").contains("empty segment"));
        assert!(prefix_refused("/a/../").contains("segment"));
        assert!(prefix_refused("//").contains("empty segment"));
        assert!(prefix_refused("sftp://host:0/x/").contains("port"));
        assert!(prefix_refused("s3://locks/a?").contains("%3F"));
        assert!(prefix_refused("/a\0").contains("NUL"));
        assert!(
            prefix_refused(&format!("s3://locks/{}", "k".repeat(MAX_KEY + 1))).contains("1025")
        );
    }

    #[test]
    fn targets_match_prefixes_of_their_store() {
        let team_a_dir = prefix("s3://locks/team-a/");
        assert!(ok("s3://locks/team-a/x").has_prefix(&team_a_dir));
        assert!(ok("s3://locks/team-a//x").has_prefix(&team_a_dir));
        assert!(!ok("s3://locks/team-ab/x").has_prefix(&team_a_dir));
        assert!(!ok("s3://locks/team-a").has_prefix(&team_a_dir));

        // Without a trailing '/', a prefix matches at a segment boundary only.
        let team_a = prefix("s3://locks/team-a");
        assert!(ok("s3://locks/team-a").has_prefix(&team_a));
        assert!(ok("s3://locks/team-a/x").has_prefix(&team_a));
        assert!(ok("s3://locks/team-a//x").has_prefix(&team_a));
        assert!(!ok("s3://locks/team-ab/x").has_prefix(&team_a));
        assert!(!ok("s3://locks/team-ab").has_prefix(&team_a));

        let bucket = prefix("s3://locks/");
        assert!(ok("s3://locks/anything").has_prefix(&bucket));
        assert!(ok("s3://locks//lead").has_prefix(&bucket));
        assert!(!ok("s3://other/anything").has_prefix(&bucket));
        assert!(!ok("gs://locks/anything").has_prefix(&bucket));
        assert!(ok("az://c-1/x").has_prefix(&prefix("azblob://c-1")));

        let sftp = prefix("sftp://u@HOST:2222/srv/locks/");
        assert!(ok("sftp://u@host:2222/srv/locks/x").has_prefix(&sftp));
        assert!(!ok("sftp://u@host/srv/locks/x").has_prefix(&sftp));
        assert!(!ok("sftp://v@host:2222/srv/locks/x").has_prefix(&sftp));
        assert!(!ok("sftp://u@host:2222/srv/lockset/x").has_prefix(&sftp));
        assert!(ok("sftp://host/srv/x").has_prefix(&prefix("sftp://host:22/")));

        assert!(ok("/any/where").has_prefix(&prefix("file:///")));
        assert!(ok("file:///srv/locks").has_prefix(&prefix("/srv/locks")));
        assert!(!ok("/srv/lockset").has_prefix(&prefix("/srv/locks")));
        assert!(ok("mem:///x").has_prefix(&prefix("mem://")));
        assert!(!ok("mem://vol/x").has_prefix(&prefix("mem://")));
        assert!(ok("mem://vol/x").has_prefix(&prefix("mem://VOL")));
        assert!(!ok("mem:///x").has_prefix(&prefix("file:///")));
    }
}

//! Cutting a target or prefix URL into its normalized parts (scheme, authority, decoded path
//! or key) before the rules of `check.rs` judge the path or key, plus the percent-encoding
//! both ways and the naming rules of buckets and containers.

use super::sftp::{parse_sftp_authority, SftpHost};
use super::Scheme;

/// The scheme names [`Address::parse`](super::Address::parse) knows, for the refusal of an unknown one.
const SCHEME_NAMES: &str = "file, mem, s3, gs, azblob (or az) and sftp";

/// A URL cut into its normalized parts, before its path or key is checked as a target or as a
/// prefix (which, unlike a target, may be empty or end in `/`).
pub(super) struct Parts {
    pub(super) scheme: Scheme,
    pub(super) authority: String,
    pub(super) sftp: Option<SftpHost>,
    /// The decoded key (object stores, no leading `/`) or path (otherwise); may be empty.
    pub(super) name: String,
}

/// Characters a URL path segment may carry unescaped (RFC 3986 `pchar` minus `%`).
pub(super) fn is_pchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&byte)
}

/// Characters a URL user name may carry unescaped (RFC 3986 `userinfo` minus `%` and `:`, which
/// would start a password).
pub(super) fn is_userinfo_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&byte)
}

/// Appends `text` to `out`, percent-encoding every byte `keep` refuses.
pub(super) fn push_encoded(out: &mut String, text: &str, keep: impl Fn(u8) -> bool) {
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
pub(super) fn parse_url(input: &str) -> Result<Parts, String> {
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

/// Decodes `%XX` escapes. `slash_ok` says whether an encoded `/` may appear; `what` names the
/// decoded thing in a refusal.
pub(super) fn percent_decode(text: &str, slash_ok: bool, what: &str) -> Result<String, String> {
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

//! Lock targets: the URLs and paths a client may name, and their one normalized form.
//!
//! Two clients locking the same file must meet at the same lock, however each spelled the
//! target, so every accepted spelling is reduced here to a single [`Address`] whose
//! [`key`](Address::key) the daemon's registry uses. Spellings that could name something other
//! than a plain file (`..`, empty segments, a directory, another target's `.lock` file) are
//! refused rather than guessed at.

use std::fmt;

/// The forms every refusal names, so that a user who got one wrong learns the right ones.
const ACCEPTED: &str = "expected file:///abs/path, mem:///path or an absolute path";

/// Longest accepted path in bytes, Linux's `PATH_MAX`.
const MAX_PATH: usize = 4096;

/// Object-store schemes the project plans to support; named in the refusal so that their users
/// learn the daemon lacks the store, not that the URL is malformed.
const LATER_SCHEMES: [&str; 4] = ["s3", "gs", "azblob", "sftp"];

/// Suffix of a lock file; the target `x` is locked through `x.lock`.
const LOCK_SUFFIX: &str = ".lock";

/// The store a target lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// The local file system (`file://` or a plain absolute path).
    File,
    /// The daemon's in-memory store (`mem://`).
    Mem,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::File => "file",
            Scheme::Mem => "mem",
        }
    }
}

/// A validated, normalized lock target.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Address {
    scheme: Scheme,
    /// Empty for `file` (`localhost` is normalized away); for `mem`, a volume name, lowercased.
    authority: String,
    /// Decoded, absolute, without empty, `.` or `..` segments.
    path: String,
}

impl Address {
    /// Parses `file:///abs/path` (host empty or `localhost`), `mem:///path` or `mem://volume/path`,
    /// or a plain absolute path (meaning `file`). URL paths are percent-decoded; plain paths are
    /// taken literally. Scheme names match case-insensitively.
    pub fn parse(input: &str) -> Result<Address, AddressError> {
        let fail = |reason: String| Err(AddressError::new(input, reason));
        if input.is_empty() {
            return fail("the target is empty".into());
        }
        if input.contains('\0') {
            return fail("the target contains a NUL byte".into());
        }
        if input.starts_with('/') {
            return match check_path(input) {
                Ok(()) => Ok(Address {
                    scheme: Scheme::File,
                    authority: String::new(),
                    path: input.to_owned(),
                }),
                Err(reason) => fail(reason),
            };
        }
        let Some((scheme_name, rest)) = split_scheme(input) else {
            return fail("a relative path is ambiguous; give an absolute one".into());
        };
        let scheme = match scheme_name.to_ascii_lowercase().as_str() {
            "file" => Scheme::File,
            "mem" => Scheme::Mem,
            lower if LATER_SCHEMES.contains(&lower) => {
                return fail(format!(
                    "scheme \"{scheme_name}\" is not configured in this daemon (it serves file \
                     and mem)"
                ));
            }
            _ => {
                return fail(format!(
                    "unknown scheme \"{scheme_name}\" (this daemon serves file and mem)"
                ));
            }
        };
        match parse_url_rest(scheme, rest) {
            Ok(address) => Ok(address),
            Err(reason) => fail(reason),
        }
    }

    /// The store the target lives in.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The `mem` volume named by the URL's host part; empty for `file` and for `mem:///path`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The decoded absolute path; starts with `/`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The path of the target's lock file: the path with `.lock` appended.
    pub fn lock_path(&self) -> String {
        format!("{}{LOCK_SUFFIX}", self.path)
    }

    /// The normalized URL, e.g. `file:///abs/data.csv` or `mem://vol/x`, percent-encoded so that
    /// [`Address::parse`] gives this address back.
    pub fn url(&self) -> String {
        let mut url = format!("{}://{}", self.scheme.as_str(), self.authority);
        for byte in self.path.bytes() {
            if byte == b'/' || is_pchar(byte) {
                url.push(char::from(byte));
            } else {
                url.push_str(&format!("%{byte:02X}"));
            }
        }
        url
    }

    /// The identity under which the daemon registers the target: equal addresses have equal
    /// keys and different addresses different ones.
    pub fn key(&self) -> String {
        self.url()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url())
    }
}

/// Characters a URL path segment may carry unescaped (RFC 3986 `pchar` minus `%`).
fn is_pchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&byte)
}

/// Splits `scheme:rest` when the part before the first `:` is an RFC 3986 scheme name.
fn split_scheme(input: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = input.split_once(':')?;
    let mut chars = scheme.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (first_ok && rest_ok).then_some((scheme, rest))
}

/// The part after `scheme:`: `//authority/path`.
fn parse_url_rest(scheme: Scheme, rest: &str) -> Result<Address, String> {
    let Some(rest) = rest.strip_prefix("//") else {
        return Err(format!(
            "a {} URL must start with {}://",
            scheme.as_str(),
            scheme.as_str()
        ));
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
    };
    if raw_path.is_empty() {
        return Err("the URL has no path".into());
    }
    let mut path = String::with_capacity(raw_path.len());
    for segment in raw_path.split('/').skip(1) {
        path.push('/');
        path.push_str(&percent_decode_segment(segment)?);
    }
    check_path(&path)?;
    Ok(Address {
        scheme,
        authority,
        path,
    })
}

fn percent_decode_segment(segment: &str) -> Result<String, String> {
    let bytes = segment.as_bytes();
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
            // A slash inside a segment would make the decoded path split differently from the
            // URL the user wrote.
            Some(b'/') => return Err("%2F (an encoded '/') inside a path segment".into()),
            Some(0) => return Err("the target contains a NUL byte (%00)".into()),
            Some(byte) => out.push(byte),
            None => {
                return Err("invalid percent escape: '%' must be followed by two hex digits".into())
            }
        }
        i += 3;
    }
    String::from_utf8(out).map_err(|_| "the percent-decoded path is not UTF-8".into())
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

/// Why a target was refused. The message always names the accepted forms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressError {
    /// The input, shortened for display: an over-long path is itself the error.
    shown: String,
    reason: String,
}

impl AddressError {
    fn new(input: &str, reason: String) -> Self {
        const SHOWN_CHARS: usize = 80;
        let mut shown: String = input.chars().take(SHOWN_CHARS).collect();
        if shown.len() < input.len() {
            shown.push('…');
        }
        AddressError { shown, reason }
    }
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid target {:?}: {}; {ACCEPTED}",
            self.shown, self.reason
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
        assert!(
            message.contains("file:///abs/path")
                && message.contains("mem:///path")
                && message.contains("absolute path"),
            "{message}"
        );
        message
    }

    #[test]
    fn file_url_and_plain_path_are_the_same_target() {
        let url = ok("file:///abs/path/data.csv");
        assert_eq!(url.scheme(), Scheme::File);
        assert_eq!(url.path(), "/abs/path/data.csv");
        assert_eq!(url.authority(), "");
        assert_eq!(url.lock_path(), "/abs/path/data.csv.lock");
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
        ] {
            let address = ok(input);
            assert_eq!(ok(&address.url()), address, "{input}");
        }
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
    fn schemes_are_named_in_refusals() {
        for scheme in ["s3", "gs", "azblob", "sftp", "S3"] {
            let message = refused(&format!("{scheme}://bucket/key"));
            assert!(message.contains(&format!("\"{scheme}\"")), "{message}");
            assert!(
                message.contains("not configured in this daemon"),
                "{message}"
            );
            assert!(message.contains("file and mem"), "{message}");
        }
        let message = refused("http://example.com/x");
        assert!(message.contains("unknown scheme \"http\""), "{message}");
        assert!(message.contains("file and mem"), "{message}");
        assert!(refused("c:data.csv").contains("unknown scheme \"c\""));
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
    }

    #[test]
    fn paths_over_4096_bytes_are_refused() {
        let at_limit = format!("/{}", "a".repeat(MAX_PATH - 1));
        assert_eq!(ok(&at_limit).path().len(), MAX_PATH);
        let over = format!("/{}", "a".repeat(MAX_PATH));
        let message = refused(&over);
        assert!(message.contains("4097 bytes"), "{message}");
        assert!(message.len() < 400, "the input is shortened: {message}");
        // The limit applies to the decoded path: escapes shrink it back under.
        let encoded = format!("file:///{}", "%61".repeat(MAX_PATH - 1));
        assert_eq!(ok(&encoded).path(), at_limit);
    }
}

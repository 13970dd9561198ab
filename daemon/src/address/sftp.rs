//! The authority of an `sftp` URL, `[user@]host[:port]`: parsed, checked and normalized so
//! that every spelling of one account on one server (host case, the default port written or
//! not, an encoded user) is one target.

use super::url::{is_userinfo_char, percent_decode, push_encoded};

/// The port an `sftp` URL means when it names none; dropped when normalizing so that
/// `host:22` and `host` are one target.
const DEFAULT_SFTP_PORT: u16 = 22;

/// The parts of an `sftp` URL's authority, normalized.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct SftpHost {
    /// Percent-decoded, case kept: login names are case-sensitive.
    pub(super) user: Option<String>,
    /// Lowercased; an IPv6 literal keeps its brackets.
    pub(super) host: String,
    /// `None` for the default port 22, so that writing it or not gives one target.
    pub(super) port: Option<u16>,
}

impl SftpHost {
    /// `[user@]host[:port]` with the user percent-encoded, as in the normalized URL.
    pub(super) fn authority(&self) -> String {
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

/// Parses and normalizes `[user@]host[:port]`.
pub(super) fn parse_sftp_authority(raw: &str) -> Result<SftpHost, String> {
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

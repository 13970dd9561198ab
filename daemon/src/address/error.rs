//! Why a target or store prefix was refused: [`AddressError`], whose message names the input,
//! the reason and every accepted form, so that a user who got one wrong learns the right ones.

use std::fmt;

/// The forms every refusal of a target names, so that a user who got one wrong learns the right
/// ones.
pub(super) const ACCEPTED: &str = "expected file:///abs/path, mem:///path, s3://bucket/key, \
                        gs://bucket/key, azblob://container/key (or az://), \
                        sftp://[user@]host[:port]/path, or an absolute path";

/// The forms every refusal of a store prefix names.
pub(super) const ACCEPTED_PREFIX: &str = "expected a store prefix such as file:///dir/, mem://, \
                               s3://bucket/, gs://bucket/dir/, azblob://container/ (or az://), \
                               sftp://[user@]host[:port]/dir/, or an absolute directory";

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
    pub(super) fn target(input: &str, reason: String) -> Self {
        Self::new("target", input, reason, ACCEPTED)
    }

    pub(super) fn prefix(input: &str, reason: String) -> Self {
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

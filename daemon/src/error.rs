//! Printing an error with its causes.
//!
//! The daemon's errors are enums whose variants keep what caused them as their `source`
//! (an I/O error, a parse error) instead of flattening it into text, and each one's own
//! message leaves the cause out. So the cause is printed exactly once: by [`Chain`], where the
//! error is finally reported (the binaries, `--check-config`).

use std::fmt;

/// Displays an error and each of its sources, joined by `: `, e.g. "cannot listen on
/// /run/x.sock: Permission denied (os error 13)".
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            write!(f, ": {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot listen on {path}")]
    struct Listen {
        path: &'static str,
        #[source]
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    enum Start {
        #[error(transparent)]
        Listen(#[from] Listen),
    }

    #[test]
    fn each_cause_is_printed_once_after_its_context() {
        let error = Start::from(Listen {
            path: "/run/x.sock",
            source: std::io::Error::new(std::io::ErrorKind::PermissionDenied, "Permission denied"),
        });
        let printed = Chain(&error).to_string();
        assert_eq!(printed, "cannot listen on /run/x.sock: Permission denied");
    }
}

//! One error type for every lock operation, with a kind to branch on.
//!
//! Callers of the Go library branch with `errors.Is(err, ErrLockAlreadyHeld)`; here the same
//! question is [`Error::is_already_held`], and [`Error::kind`] answers the rest.

use std::fmt;
use std::path::Path;

use vfslock_proto::WireError;

/// What kind of failure an [`Error`] is: the protocol's kinds, which the daemon reports, and
/// the ones this library reports of its own (no daemon, a lost connection, no lock file).
pub use vfslock_proto::ErrorKind;

use crate::LockMetadata;

/// The error of every operation in this crate: the daemon's answer as it came ([`WireError`],
/// kind, message and holder), or one of this library's own in the same shape.
#[derive(Clone, Debug)]
pub struct Error(WireError);

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error(WireError::new(kind, message))
    }

    pub(crate) fn daemon_unavailable(path: &Path, cause: &std::io::Error) -> Self {
        Error::new(
            ErrorKind::DaemonUnavailable,
            format!(
                "vfslockd is not running at {} ({cause}): start it with `vfslockd` \
                 (or `systemctl start vfslockd`), or point VFSLOCK_SOCKET at its socket",
                path.display()
            ),
        )
    }

    pub(crate) fn connection_lost() -> Self {
        Error::new(
            ErrorKind::ConnectionLost,
            "the connection to vfslockd was lost; locks held through it are released",
        )
    }

    /// A release after the lease was lost; `kind` is the loss's ([`ErrorKind::LeaseLost`], or
    /// what the daemon said when it ended the lease).
    pub(crate) fn lease_lost(kind: ErrorKind, target: &str, reason: &str) -> Self {
        Error::new(
            kind,
            format!("the lock on {target} was lost before it was released: {reason}"),
        )
    }

    /// The same failure, naming `holder` as the lock's holder.
    pub(crate) fn with_holder(mut self, holder: LockMetadata) -> Self {
        self.0.holder = Some(Box::new(holder));
        self
    }

    /// The same failure with `note` appended to its message.
    pub(crate) fn with_note(mut self, note: &str) -> Self {
        self.0.message = format!("{} {note}", self.0.message);
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The lock file of the current holder, with [`ErrorKind::AlreadyHeld`] and
    /// [`ErrorKind::StaleVetoed`].
    pub fn holder(&self) -> Option<&LockMetadata> {
        self.0.holder.as_deref()
    }

    /// Whether someone else holds the lock (the Go library's `ErrLockAlreadyHeld`).
    pub fn is_already_held(&self) -> bool {
        self.kind() == ErrorKind::AlreadyHeld
    }

    /// Whether a lease was lost ([`ErrorKind::LeaseLost`]), or ended at its max-hold
    /// ([`ErrorKind::MaxHoldReached`]): what a release reports when the lock had been lost
    /// before it.
    pub fn is_lease_lost(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::LeaseLost | ErrorKind::MaxHoldReached
        )
    }

    /// Whether a waiting acquire timed out.
    pub fn is_timeout(&self) -> bool {
        self.kind() == ErrorKind::Timeout
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for Error {}

impl From<WireError> for Error {
    fn from(wire: WireError) -> Self {
        Error(wire)
    }
}

/// The error of [`Client::with_lock`](crate::Client::with_lock): either the lock failed, or
/// the closure did.
#[derive(Debug)]
pub enum WithLockError<E> {
    /// Taking or releasing the lock failed; the closure did not run, or ran to completion.
    Lock(Error),
    /// The closure returned this error (the lock was released).
    Closure(E),
}

impl<E: fmt::Display> fmt::Display for WithLockError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WithLockError::Lock(e) => write!(f, "lock: {e}"),
            WithLockError::Closure(e) => e.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for WithLockError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WithLockError::Lock(e) => Some(e),
            WithLockError::Closure(e) => Some(e),
        }
    }
}

impl<E> WithLockError<E> {
    /// The result of a `with_lock`-style helper: the closure's `outcome` (`None`: stopped
    /// because a lease was lost, which the release then reports) and the release's result.
    pub(crate) fn settle<T>(
        outcome: Option<Result<T, E>>,
        released: Result<(), Error>,
        lost: &str,
    ) -> Result<T, WithLockError<E>> {
        match outcome {
            None => Err(WithLockError::Lock(
                released
                    .err()
                    .unwrap_or_else(|| Error::new(ErrorKind::LeaseLost, lost)),
            )),
            Some(Err(e)) => Err(WithLockError::Closure(e)),
            Some(Ok(value)) => released.map(|()| value).map_err(WithLockError::Lock),
        }
    }

    /// The lock error, if this is one.
    pub fn lock_error(&self) -> Option<&Error> {
        match self {
            WithLockError::Lock(e) => Some(e),
            WithLockError::Closure(_) => None,
        }
    }

    /// Whether the lock was held by someone else.
    pub fn is_already_held(&self) -> bool {
        self.lock_error().is_some_and(Error::is_already_held)
    }
}

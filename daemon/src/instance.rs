//! One daemon per socket, decided by an OS lock held for the daemon's whole life.
//!
//! Probing the socket cannot tell a daemon that is slow to answer from one that is gone, and two
//! daemons on one socket would each believe they are the only writer of their lock files. An
//! exclusive `flock(2)` on `<socket>.pid` answers the question exactly and is released by the
//! kernel when the daemon dies, however it dies; only its holder may replace the socket file.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Why this daemon may not serve the socket.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// The lock file could not be opened or created.
    #[error("cannot open {}", path.display())]
    Open {
        /// The lock file (`<socket>.pid`).
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another daemon holds the lock.
    #[error(
        "another vfslockd{} is already serving {}: stop it first \
         (`systemctl stop vfslockd`, or kill that pid), or give this one another --socket",
        pid.as_ref().map(|pid| format!(" (pid {pid})")).unwrap_or_default(),
        socket.display()
    )]
    Held {
        /// The socket.
        socket: PathBuf,
        /// The other daemon's pid, as its lock file says.
        pid: Option<String>,
    },
}

/// Held while the daemon runs; dropping it (or dying) frees the socket for another daemon.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
    path: PathBuf,
}

impl InstanceLock {
    /// Takes the lock of the daemon serving `socket`, or says who already holds it.
    pub fn acquire(socket: &Path) -> Result<InstanceLock, InstanceError> {
        let mut path = socket.as_os_str().to_owned();
        path.push(".pid");
        let path = PathBuf::from(path);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|source| InstanceError::Open {
                path: path.clone(),
                source,
            })?;
        // SAFETY: the descriptor is valid for the lifetime of `file`.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let mut other = String::new();
            let _ = file.read_to_string(&mut other);
            let other = other.trim();
            return Err(InstanceError::Held {
                socket: socket.into(),
                pid: (!other.is_empty()).then(|| other.to_owned()),
            });
        }
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "{}", std::process::id());
        Ok(InstanceLock { _file: file, path })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_instance_on_one_socket_is_refused_until_the_first_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("d.sock");
        let first = InstanceLock::acquire(&socket).unwrap();
        let err = InstanceLock::acquire(&socket).unwrap_err();
        assert!(err.to_string().contains("already serving"), "{err}");
        assert!(
            err.to_string().contains(&std::process::id().to_string()),
            "{err}"
        );
        drop(first);
        InstanceLock::acquire(&socket).unwrap();
    }
}

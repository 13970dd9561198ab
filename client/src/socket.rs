//! Where the daemon's socket is, shared by the client and the daemon so that both pick the same
//! default.

use std::path::PathBuf;

/// Environment variable naming the socket; overrides every default.
pub const SOCKET_ENV: &str = "VFSLOCK_SOCKET";

/// The host service's socket (root, systemd): `/run/vfslock/vfslockd.sock`.
#[cfg(unix)]
pub fn system_socket_path() -> PathBuf {
    PathBuf::from("/run/vfslock/vfslockd.sock")
}

/// The host service's named pipe on Windows.
#[cfg(windows)]
pub fn system_socket_path() -> PathBuf {
    PathBuf::from(r"\\.\pipe\vfslockd")
}

/// A user's own daemon: `$XDG_RUNTIME_DIR/vfslock/vfslockd.sock`, or
/// `/tmp/vfslock-$UID/vfslockd.sock` when `XDG_RUNTIME_DIR` is not set.
#[cfg(unix)]
pub fn user_socket_path() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|dir| !dir.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("vfslock").join("vfslockd.sock"),
        None => {
            // SAFETY: geteuid has no preconditions and cannot fail.
            let uid = unsafe { libc::geteuid() };
            PathBuf::from(format!("/tmp/vfslock-{uid}/vfslockd.sock"))
        }
    }
}

/// A user's own daemon on Windows: the same pipe as the system one.
#[cfg(windows)]
pub fn user_socket_path() -> PathBuf {
    system_socket_path()
}

/// Where a daemon listens by default: the system socket for root, the user's otherwise.
pub fn daemon_default_socket_path() -> PathBuf {
    if let Some(path) = std::env::var_os(SOCKET_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    #[cfg(unix)]
    {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            return system_socket_path();
        }
    }
    user_socket_path()
}

/// Where a client connects by default: `$VFSLOCK_SOCKET`, then the system socket if it exists,
/// then the user's.
pub fn client_default_socket_path() -> PathBuf {
    if let Some(path) = std::env::var_os(SOCKET_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    // On Windows both are the same pipe, and probing a pipe's metadata opens (and drops) a
    // connection to it.
    #[cfg(unix)]
    {
        let system = system_socket_path();
        if system.exists() {
            return system;
        }
    }
    user_socket_path()
}

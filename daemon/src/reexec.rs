//! The planned restart: on SIGUSR2 (`systemctl reload vfslockd`) the daemon replaces itself
//! with the binary now installed at its path, in the same process, keeping its listening
//! socket and every lock.
//!
//! It is the crash path made deliberate. Nothing is released: the process image is replaced
//! with `execve`, so no session ends in an orderly way and no lock actor runs its release; the
//! kernel closes every client connection (all descriptors but the listening socket are
//! close-on-exec). The new image starts like any daemon: it finds the crash journal, keeps each
//! holding for the session that held it during the resume window, and the clients, which see
//! their connection end, reconnect to the same socket (which never stopped accepting: new
//! connections wait in its backlog) and resume. The process id does not change, so systemd
//! keeps supervising it; the socket is handed over with systemd's own protocol (`LISTEN_FDS`
//! on descriptor 3), and the variables systemd gave the first image (`NOTIFY_SOCKET`, the
//! watchdog's) are given to the next. A socket the daemon bound itself stays its own: the next
//! image removes it at exit as the first would have.
//!
//! What lives only in the process, the `mem://` store, is handed over through a file: once the
//! binary is known to be there, the store is sealed and copied beside the crash journal (mode
//! 0600), the `mem://` holdings are written to the journal, and the next image, told where the
//! copy is ([`MEMORY_VAR`]), loads it before it keeps the journal's holdings.
//!
//! If the path holds no executable, the daemon logs why and goes on serving, as if nothing had
//! been asked. If `execve` itself fails after the socket was handed over, it exits as a crash
//! would, and the next start resumes as after one.

use std::ffi::OsString;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The variable that tells the next image that the passed socket is its own (bound by the
/// daemon, not by systemd).
pub const OWN_SOCKET_VAR: &str = "VFSLOCKD_REEXEC_OWN_SOCKET";

/// The variable that tells the next image that it was started by a planned restart, for the
/// restart figures ([`crate::restarts`]): the image cannot tell otherwise, since a crash and a
/// planned restart leave the same journal.
pub const PLANNED_VAR: &str = "VFSLOCKD_REEXEC_PLANNED";

/// The variable that names the file where the previous image left its `mem://` store.
pub const MEMORY_VAR: &str = "VFSLOCKD_REEXEC_MEMORY";

/// The file where the previous image of a planned restart left its `mem://` store, if this
/// image was started by one. Removes the variable, so that no child inherits it.
pub fn take_memory_file() -> Option<PathBuf> {
    let path = std::env::var_os(MEMORY_VAR).map(PathBuf::from);
    std::env::remove_var(MEMORY_VAR);
    path
}

/// systemd's variables as the first image found them, before startup removed them.
static SYSTEMD_ENV: OnceLock<Vec<(&'static str, OsString)>> = OnceLock::new();

/// Remembers systemd's notification and watchdog variables for the next image. Call first
/// thing, before [`crate::systemd::Notifier::from_env`] removes them.
pub fn remember_environment() {
    let kept = ["NOTIFY_SOCKET", "WATCHDOG_USEC"]
        .into_iter()
        .filter_map(|name| Some((name, std::env::var_os(name)?)))
        .collect();
    let _ = SYSTEMD_ENV.set(kept);
}

/// Whether this image was started by a planned restart of a daemon that had bound its socket
/// itself. Removes the variable, so that no child inherits it.
pub fn take_own_socket_flag() -> bool {
    let own = std::env::var_os(OWN_SOCKET_VAR).is_some();
    std::env::remove_var(OWN_SOCKET_VAR);
    own
}

/// Whether this image was started by a planned restart. Removes the variable, so that no
/// child inherits it and a later crash of this image is not taken for a planned restart.
pub fn take_planned_flag() -> bool {
    let planned = std::env::var_os(PLANNED_VAR).is_some();
    std::env::remove_var(PLANNED_VAR);
    planned
}

/// The binary to start: the path this process was started from, whose file a package upgrade
/// may have replaced since (`/proc/self/exe` then names the old, deleted one).
fn binary() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let text = exe.to_string_lossy();
    let path = match text.strip_suffix(" (deleted)") {
        Some(live) => PathBuf::from(live),
        None => exe,
    };
    // Checked before anything is changed: a failed exec must leave a working daemon.
    let meta = std::fs::metadata(&path)?;
    use std::os::unix::fs::PermissionsExt;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(std::io::Error::other(format!(
            "{} is not an executable file",
            path.display()
        )));
    }
    Ok(path)
}

/// Replaces this process with the binary at its path, handing over `listener` (its socket at
/// `own_socket` if the daemon bound it), the metrics listener systemd passed (`metrics`; one
/// the daemon bound from its config is bound again by the next image, which may have another
/// config) and what `hand_over` leaves for the next image (the `mem://` store's file, run once
/// the binary is known to be there). Returns only when that failed, with why.
pub fn replace_process(
    listener: RawFd,
    metrics: Option<RawFd>,
    own_socket: Option<&Path>,
    hand_over: impl FnOnce() -> std::io::Result<Option<PathBuf>>,
) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    const PASSED: RawFd = 3;
    const PASSED_METRICS: RawFd = 4;
    let binary = match binary() {
        Ok(binary) => binary,
        Err(e) => return e,
    };
    let memory = match hand_over() {
        Ok(memory) => memory,
        Err(e) => return std::io::Error::other(format!("cannot hand the mem:// store over: {e}")),
    };
    // The socket goes to descriptor 3, without close-on-exec, as systemd passes it.
    // SAFETY: plain descriptor calls; `listener` is open for the daemon's life. Whatever held
    // descriptor 3 is close-on-exec and goes with this image anyway; the exec below is the
    // next thing this thread does, and its failure ends the process (see below).
    // The metrics listener goes to descriptor 4 the same way, by way of a copy above both, as
    // it may sit at 3 itself.
    unsafe {
        let metrics_copy = match metrics {
            Some(fd) => {
                let copy = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
                if copy < 0 {
                    return std::io::Error::last_os_error();
                }
                Some(copy)
            }
            None => None,
        };
        if listener != PASSED && libc::dup2(listener, PASSED) < 0 {
            return std::io::Error::last_os_error();
        }
        let flags = libc::fcntl(PASSED, libc::F_GETFD);
        libc::fcntl(PASSED, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
        if let Some(copy) = metrics_copy {
            // dup2 leaves the new descriptor without close-on-exec.
            if libc::dup2(copy, PASSED_METRICS) < 0 {
                return std::io::Error::last_os_error();
            }
            libc::close(copy);
        }
    }
    let mut command = std::process::Command::new(&binary);
    command
        .args(std::env::args_os().skip(1))
        .env("LISTEN_PID", std::process::id().to_string())
        .env(PLANNED_VAR, "1");
    if metrics.is_some() {
        let names = format!("vfslockd:{}", crate::systemd::METRICS_FD_NAME);
        command.env("LISTEN_FDS", "2").env("LISTEN_FDNAMES", names);
    } else {
        command.env("LISTEN_FDS", "1").env_remove("LISTEN_FDNAMES");
    }
    for (name, value) in SYSTEMD_ENV.get().into_iter().flatten() {
        command.env(name, value);
    }
    if SYSTEMD_ENV
        .get()
        .is_some_and(|env| env.iter().any(|(name, _)| *name == "WATCHDOG_USEC"))
    {
        command.env("WATCHDOG_PID", std::process::id().to_string());
    }
    if own_socket.is_some() {
        command.env(OWN_SOCKET_VAR, "1");
    }
    if let Some(memory) = &memory {
        command.env(MEMORY_VAR, memory);
    }
    tracing::info!(binary = %binary.display(), "restarting in place: every lock is kept for its holder to resume");
    let error = command.exec();
    // Descriptor 3 may have been another file of ours, now replaced by the socket: carrying on
    // could write to the wrong file. End as a crash would; the journal and the resume window
    // keep every lock for the next start.
    tracing::error!(binary = %binary.display(), error = %error, "the planned restart failed after the socket was handed over; exiting");
    std::process::exit(70);
}

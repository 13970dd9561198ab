//! The SFTP store's `ssh` control masters: never left running after the daemon.
//!
//! OpenDAL's sftp service (through the `openssh` crate) starts one `ssh -M -f` control master
//! per pooled connection. `-f` daemonizes it (its own session, re-parented to PID 1), so it is
//! not our child: it gets no signal meant for our process group and outlives us by design
//! (`ControlPersist=yes`). The crate ends it through its control socket when the session is
//! dropped, but that request races with the shutdown of the runtime: when a whole process group
//! gets SIGTERM (`timeout(1)`, some service managers), the sftp channel dies with us, its task
//! starts closing the session, deletes the control directory and is dropped before the `-O exit`
//! reaches the master, which then stays connected with nothing left to tell it to exit. After a
//! SIGKILL nobody asks it at all.
//!
//! OpenDAL gives no hook on how `ssh` is started, but the crate puts the control directory in
//! `$XDG_STATE_HOME`, read when a connection is made. So the daemon points that at a directory
//! of its own, `<socket>.ssh/` (one per daemon identity, like the instance lock `<socket>.pid`
//! beside it, and on the runtime directory's tmpfs under systemd), and every master it starts
//! names that directory on its command line (`-S <dir>/.ssh-connectionXXXXXX/master`, then
//! `ssh: <dir>/... [mux]` once it retitles itself). That is how they are found in `/proc`:
//! - at startup, after the instance lock is held (so no live daemon owns the directory), the
//!   masters a killed predecessor left are ended, and its stale control directories removed;
//! - at exit, once the runtime is gone (so no task can start another), every master still
//!   running is ended, whichever way the daemon stops short of SIGKILL.
//!
//! Only processes of our own user, whose command line is `ssh` and names that directory, are
//! signalled: SIGTERM (ssh then closes its connection cleanly), SIGKILL if one is still there
//! after [`GRACE`].

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a master gets to exit after SIGTERM before it gets SIGKILL.
const GRACE: Duration = Duration::from_secs(2);

/// The prefix of the control directories the `openssh` crate makes (`tempfile` adds 6 chars).
const CONNECTION_PREFIX: &str = ".ssh-connection";

/// This daemon's control directory, once [`prepare`] has set it.
static CONTROL_DIR: OnceLock<PathBuf> = OnceLock::new();

/// The control directory of the daemon serving `socket`: `<socket>.ssh`.
pub fn control_dir(socket: &Path) -> PathBuf {
    let mut name = OsString::from(socket.as_os_str());
    name.push(".ssh");
    let dir = PathBuf::from(name);
    // A relative --socket must not make a directory that means something else to ssh,
    // which may run with another working directory.
    std::path::absolute(&dir).unwrap_or(dir)
}

/// Ends the `ssh` masters a predecessor serving `socket` left in `<socket>.ssh/` and removes
/// their control directories; with `sftp` (an SFTP store is configured), also makes that
/// directory this daemon's control directory. Call it once, at startup, after the instance
/// lock is held and before any store connects (it sets `XDG_STATE_HOME`, which the `openssh`
/// crate reads when it connects). Returns how many leftovers it ended.
pub fn prepare(socket: &Path, sftp: bool) -> std::io::Result<usize> {
    let dir = control_dir(socket);
    let ended = end_masters_in(&dir);
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            if entry
                .file_name()
                .as_bytes()
                .starts_with(CONNECTION_PREFIX.as_bytes())
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    if !sftp {
        let _ = std::fs::remove_dir(&dir);
        return Ok(ended);
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    // Racy against a thread reading the environment at the same moment, as every change of
    // it is; this runs while startup has started no task or child yet. The only other reader
    // of this variable in the daemon, the default state directory, is resolved before this
    // (`run`).
    std::env::set_var("XDG_STATE_HOME", &dir);
    let _ = CONTROL_DIR.set(dir);
    Ok(ended)
}

/// Ends every `ssh` master this daemon started that still runs; call it last thing, once the
/// runtime is shut down. Does nothing if no SFTP store was set up. Returns how many it ended.
pub fn end_masters() -> usize {
    CONTROL_DIR.get().map_or(0, |dir| end_masters_in(dir))
}

/// Ends the `ssh` processes of our user whose command line names a control directory in
/// `dir`: SIGTERM, then SIGKILL after [`GRACE`].
fn end_masters_in(dir: &Path) -> usize {
    let found = masters_in(dir);
    for pid in &found {
        // SAFETY: plain syscall; the pid was just read from /proc.
        unsafe { libc::kill(*pid, libc::SIGTERM) };
    }
    let start = Instant::now();
    let mut left = found.clone();
    while !left.is_empty() && start.elapsed() < GRACE {
        std::thread::sleep(Duration::from_millis(10));
        left.retain(|pid| still_master(*pid, dir));
    }
    for pid in &left {
        tracing::warn!(pid, "an ssh master did not exit on SIGTERM; killing it");
        // SAFETY: as above.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    if !found.is_empty() {
        tracing::info!(ended = found.len(), dir = %dir.display(), "ended ssh control masters");
    }
    found.len()
}

/// The pids of our user's `ssh` processes whose command line names a control directory in
/// `dir`.
fn masters_in(dir: &Path) -> Vec<libc::pid_t> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let own = std::process::id() as libc::pid_t;
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|pid| *pid != own && still_master(*pid, dir))
        .collect()
}

/// Whether `pid` is (still) one of our user's `ssh` processes naming a control directory in
/// `dir` (a gone or exited process is not).
fn still_master(pid: libc::pid_t, dir: &Path) -> bool {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if std::fs::metadata(&proc).ok().map(|m| m.uid()) != Some(uid) {
        return false;
    }
    let Ok(cmdline) = std::fs::read(proc.join("cmdline")) else {
        return false;
    };
    names_control_dir(&cmdline, dir)
}

/// Whether a `/proc/PID/cmdline` is that of `ssh` (by name, or as a master retitles itself:
/// `ssh: <control path> [mux]`) and names a control directory inside `dir`.
fn names_control_dir(cmdline: &[u8], dir: &Path) -> bool {
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let is_ssh = argv0 == b"ssh" || argv0.ends_with(b"/ssh") || argv0.starts_with(b"ssh: ");
    let mut needle = dir.as_os_str().as_bytes().to_vec();
    needle.push(b'/');
    needle.extend_from_slice(CONNECTION_PREFIX.as_bytes());
    is_ssh
        && cmdline
            .windows(needle.len())
            .any(|w| w == needle.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_master_is_known_by_its_control_path_before_and_after_it_retitles_itself() {
        let dir = Path::new("/run/vfslock/vfslockd.sock.ssh");
        let spawned = b"ssh\0-E\0/run/vfslock/vfslockd.sock.ssh/.ssh-connectionAbC123/log\0-S\0\
            /run/vfslock/vfslockd.sock.ssh/.ssh-connectionAbC123/master\0-M\0-f\0-N\0";
        assert!(names_control_dir(spawned, dir));
        let retitled = b"ssh: /run/vfslock/vfslockd.sock.ssh/.ssh-connectionAbC123/master [mux]\0";
        assert!(names_control_dir(retitled, dir));
        let by_path = b"/usr/bin/ssh\0-S\0/run/vfslock/vfslockd.sock.ssh/.ssh-connectionX/master\0";
        assert!(names_control_dir(by_path, dir));
    }

    #[test]
    fn other_processes_and_other_daemons_masters_are_not_ours() {
        let dir = Path::new("/run/vfslock/a.sock.ssh");
        // Another daemon's directory that shares a prefix with ours.
        let other = b"ssh: /run/vfslock/a.sock.ssh2/.ssh-connectionAbC123/master [mux]\0";
        assert!(!names_control_dir(other, dir));
        // Not ssh, although it names our directory.
        let editor = b"vi\0/run/vfslock/a.sock.ssh/.ssh-connectionAbC123/log\0";
        assert!(!names_control_dir(editor, dir));
        // ssh, but another directory.
        let user = b"ssh\0-S\0/root/.local/state/.ssh-connectionAbC123/master\0";
        assert!(!names_control_dir(user, dir));
    }

    #[test]
    fn the_control_dir_sits_beside_the_socket() {
        assert_eq!(
            control_dir(Path::new("/run/vfslock/vfslockd.sock")),
            Path::new("/run/vfslock/vfslockd.sock.ssh")
        );
    }
}

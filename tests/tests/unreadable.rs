//! Lock files of another user (issue 13, "Lock files of another user"): the Go library's OS
//! backend writes its lock files with mode 0600, so a `vfslockd` running as another user cannot
//! read one. Such a file is still a held lock, by a holder nobody here can name, and never
//! stale (bytes that cannot be read cannot be compared for an exact steal): `run -n` is refused
//! as already held, `run -w` waits until the file is gone, and `show` names the file's owner
//! and mode. The daemon runs as `nobody` (root reads every file); the planted lock file belongs
//! to a third user, uid 1.

use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use vfslock_tests::{bin, eventually, wait_with_deadline, Launch, NOBODY, TEST_CONFIG};

/// The owner of the planted lock file: neither the daemon's user nor the test's.
const THIRD_UID: u32 = 1;

/// A `vfslockd` running as `nobody`, in a directory of its own that `nobody` owns.
struct NobodyDaemon {
    child: Child,
    launch: Launch,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

impl NobodyDaemon {
    fn start() -> NobodyDaemon {
        let dir = tempfile::Builder::new()
            .prefix("vfslock-unreadable-")
            .tempdir()
            .unwrap();
        owned_by_nobody(dir.path());
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        // Writable by the daemon's user: what it cannot do there is read the lock file.
        owned_by_nobody(&data);
        let launch = Launch::in_dir(bin("vfslockd"), dir.path());
        std::fs::write(&launch.config, TEST_CONFIG).unwrap();
        let mut command = launch.command().unwrap();
        // SAFETY: between fork and exec only async-signal-safe calls: setgroups, setgid,
        // setuid.
        unsafe {
            command.pre_exec(|| {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(NOBODY) != 0
                    || libc::setuid(NOBODY) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().expect("start vfslockd as nobody");
        if let Err(e) = launch.wait_serving(&mut child) {
            panic!("vfslockd {e}:\n{}", launch.log());
        }
        NobodyDaemon {
            child,
            launch,
            data,
            _dir: dir,
        }
    }

    /// `vfslockctl --socket … ARGS`, as root (the caller; only the daemon is `nobody`).
    fn ctl(&self, args: &[&str]) -> Command {
        let mut command = Command::new(bin("vfslockctl"));
        command
            .arg("--socket")
            .arg(&self.launch.socket)
            .args(args)
            .stdin(Stdio::null());
        command
    }

    fn ctl_output(&self, args: &[&str]) -> Output {
        self.ctl(args).output().expect("run vfslockctl")
    }
}

impl Drop for NobodyDaemon {
    fn drop(&mut self) {
        // SAFETY: plain syscall on the pid of our own child, not reaped yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        wait_with_deadline(&mut self.child);
    }
}

fn owned_by_nobody(path: &Path) {
    chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A live Go lock file (never expires), as the Go library writes it: 0600, owned by its user.
fn plant_go_lock(lock_file: &Path) {
    std::fs::write(
        lock_file,
        r#"{
  "createdAt": "2026-11-27T15:20:00.123456789Z",
  "ttl": 0,
  "hostname": "go-peer",
  "pid": 4242
}"#,
    )
    .unwrap();
    std::fs::set_permissions(lock_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    chown(lock_file, Some(THIRD_UID), Some(THIRD_UID)).unwrap();
}

/// "uid 1 (daemon)" where this host names uid 1, else "uid 1".
fn third_user() -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let name = passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.get(2) == Some(&THIRD_UID.to_string().as_str())).then(|| fields[0].to_owned())
    });
    match name {
        Some(name) => format!("uid {THIRD_UID} ({name})"),
        None => format!("uid {THIRD_UID}"),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn another_users_unreadable_lock_file_is_held_by_an_unknown_holder_never_stale() {
    let daemon = NobodyDaemon::start();
    let target = format!("file://{}", daemon.data.join("report.csv").display());
    let lock_file = daemon.data.join("report.csv.lock");
    plant_go_lock(&lock_file);
    let owner = format!("owned by {}, mode 0600", third_user());

    let tried = daemon.ctl_output(&["run", "-n", &target, "--", "true"]);
    let refusal = text(&tried.stderr);
    assert_eq!(
        tried.status.code(),
        Some(1),
        "run -n on an unreadable lock file must be refused as already held: {refusal}\n{}",
        daemon.launch.log()
    );
    for part in [
        "is already locked",
        "held by an unknown holder",
        "the lock file is unreadable",
        &owner,
        "not readable by vfslockd's uid 65534",
        "until its owner removes it or makes it readable",
    ] {
        assert!(refusal.contains(part), "{part:?} missing from: {refusal}");
    }

    let shown = daemon.ctl_output(&["show", &target]);
    let rows = text(&shown.stdout);
    assert_eq!(
        shown.status.code(),
        Some(0),
        "show must report the lock as held: {rows}{}",
        text(&shown.stderr)
    );
    for part in ["held by an unknown holder", "unreadable", &owner] {
        assert!(rows.contains(part), "{part:?} missing from show: {rows}");
    }
    let stale_row = rows.lines().find(|l| l.starts_with("stale")).unwrap_or("");
    assert!(stale_row.ends_with("no"), "never stale: {rows}");
    let json = daemon.ctl_output(&["--json", "show", &target]);
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON show");
    assert_eq!(json["locked"], true, "{json}");
    assert_eq!(json["stale"], false, "{json}");

    // A wait queues behind the unknown holder, re-checks, and gets the lock once the file is
    // gone; the command's output proves it ran while holding it.
    let ran = daemon.data.join("ran");
    let mut waiter = daemon
        .ctl(&[
            "run",
            "-w",
            "5m",
            &target,
            "--",
            "sh",
            "-c",
            &format!("echo held > {}", ran.display()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vfslockctl run -w");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(eventually(
        "the waiter is queued behind the unreadable file",
        || {
            if let Some(status) = waiter.try_wait().unwrap() {
                let output = stderr_of(&mut waiter);
                panic!("run -w must wait, it exited with {status}: {output}");
            }
            let list = daemon.ctl_output(&["--json", "list"]);
            let entries: serde_json::Value =
                serde_json::from_slice(&list.stdout).unwrap_or_default();
            entries
                .as_array()
                .is_some_and(|all| all.iter().any(|e| e["waiters"] == 1))
        },
    ));
    assert!(
        !ran.exists(),
        "the command must not run while the file is there"
    );
    std::fs::remove_file(&lock_file).unwrap();
    let status = wait_with_deadline(&mut waiter);
    let output = stderr_of(&mut waiter);
    assert!(status.success(), "run -w: {status}: {output}");
    assert_eq!(std::fs::read_to_string(&ran).unwrap().trim(), "held");
}

/// A finished child's stderr, for a failure message.
fn stderr_of(child: &mut Child) -> String {
    use std::io::Read;
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    stderr
}

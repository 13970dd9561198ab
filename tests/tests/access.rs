//! Who may lock what, judged by the daemon from the socket's peer credentials: the config's
//! `[[access]]` rules by user and group, and the confinement of `file://` locks to directories
//! the caller could create files in itself (or the configured roots), symlinks included.
//! Callers act as `nobody` through `vfslockctl`; the daemon runs as root.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;
use vfslock_tests::{open_to_everyone, vfslockctl, Daemon, TEST_CONFIG};

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `vfslockctl acquire TARGET` (a detached lease) as `nobody` with these groups, or as root.
fn acquire(daemon: &Daemon, as_nobody: Option<Vec<u32>>, target: &str) -> Output {
    vfslockctl(
        daemon,
        as_nobody,
        &["--json", "acquire", target, "--ttl", "1m"],
    )
}

fn lock_id(output: &Output) -> String {
    let lease: Value = serde_json::from_slice(&output.stdout).expect("JSON lease");
    lease["lock_id"].as_str().expect("lock id").to_owned()
}

/// A directory with this mode (root-owned, as the tests run as root).
fn directory(path: PathBuf, mode: u32) -> PathBuf {
    std::fs::create_dir_all(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// A temporary directory `nobody` may enter.
fn reachable_tempdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("vfslock-access-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn target_in(dir: &Path, name: &str) -> String {
    format!("file://{}", dir.join(name).display())
}

fn lock_file_in(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.lock"))
}

#[test]
fn access_rules_allow_by_user_or_group_and_refusals_are_clear_and_logged() {
    let config = format!(
        "{TEST_CONFIG}
[[access]]
prefix = \"mem://team/\"
groups = [4242]

[[access]]
prefix = \"mem://team/private/\"
users = [\"root\"]
"
    );
    let daemon = Daemon::start_with(&config);
    open_to_everyone(&daemon);

    let refused = acquire(&daemon, Some(vec![]), "mem://team/report");
    assert!(!refused.status.success());
    let message = stderr(&refused);
    assert!(
        message.contains("uid 65534 may not lock mem://team/report")
            && message.contains("gid 4242"),
        "{message}"
    );
    assert!(
        daemon.log().contains("refused by the access rules"),
        "{}",
        daemon.log()
    );

    // A member of the group, by a supplementary group only.
    let member = acquire(&daemon, Some(vec![4242]), "mem://team/report");
    assert!(member.status.success(), "{}", stderr(&member));
    let released = vfslockctl(
        &daemon,
        Some(vec![4242]),
        &[
            "release",
            "mem://team/report",
            "--lock-id",
            &lock_id(&member),
        ],
    );
    assert!(released.status.success(), "{}", stderr(&released));

    // The longer prefix decides: the group rule does not reach into private/.
    let private = acquire(&daemon, Some(vec![4242]), "mem://team/private/x");
    assert!(!private.status.success());
    assert!(
        stderr(&private).contains("mem://team/private/"),
        "{}",
        stderr(&private)
    );
    // Root passes every rule; targets no rule covers are open.
    assert!(acquire(&daemon, None, "mem://team/private/x")
        .status
        .success());
    let open = acquire(&daemon, Some(vec![]), "mem://elsewhere/x");
    assert!(open.status.success(), "{}", stderr(&open));
}

#[test]
fn a_caller_locks_files_only_where_it_could_create_files_itself() {
    let base = reachable_tempdir();
    let writable = directory(base.path().join("writable"), 0o777);
    let closed = directory(base.path().join("closed"), 0o755);
    std::os::unix::fs::symlink(&closed, writable.join("link")).unwrap();
    let daemon = Daemon::start();
    open_to_everyone(&daemon);
    let nobody = || Some(vec![]);

    let refused = acquire(&daemon, nobody(), &target_in(&closed, "data.csv"));
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("cannot create files in"),
        "{}",
        stderr(&refused)
    );
    assert!(daemon.log().contains("refused by the access rules"));

    // A link in a directory the caller may write leads to one it may not: judged there.
    let via_link = acquire(
        &daemon,
        nobody(),
        &format!("file://{}/link/data.csv", writable.display()),
    );
    assert!(!via_link.status.success());
    assert!(
        stderr(&via_link).contains(&closed.display().to_string()),
        "the refusal names the real directory: {}",
        stderr(&via_link)
    );
    let created: Vec<_> = std::fs::read_dir(&closed).unwrap().collect();
    assert!(
        created.is_empty(),
        "nothing was created in {closed:?}: {created:?}"
    );

    let allowed = acquire(&daemon, nobody(), &target_in(&writable, "data.csv"));
    assert!(allowed.status.success(), "{}", stderr(&allowed));
    assert!(lock_file_in(&writable, "data.csv").exists());

    // Root could create the file itself, so the daemon does it for root.
    let by_root = acquire(&daemon, None, &target_in(&closed, "data.csv"));
    assert!(by_root.status.success(), "{}", stderr(&by_root));
    assert!(lock_file_in(&closed, "data.csv").exists());
}

#[test]
fn configured_roots_narrow_and_widen_where_files_are_locked() {
    let base = reachable_tempdir();
    let narrow = directory(base.path().join("narrow"), 0o777);
    let wide = directory(base.path().join("wide"), 0o755);
    let outside = directory(base.path().join("outside"), 0o777);
    std::os::unix::fs::symlink(&outside, narrow.join("out")).unwrap();
    let config = format!(
        "{TEST_CONFIG}
[stores.file]
roots = [{:?}, {{ path = {:?}, caller-must-write = false }}]
",
        narrow.display().to_string(),
        wide.display().to_string()
    );
    let daemon = Daemon::start_with(&config);
    open_to_everyone(&daemon);
    let nobody = || Some(vec![]);

    let in_narrow = acquire(&daemon, nobody(), &target_in(&narrow, "a"));
    assert!(in_narrow.status.success(), "{}", stderr(&in_narrow));
    // Widened: nobody could not create a file in `wide`; the daemon does it for them.
    let in_wide = acquire(&daemon, nobody(), &target_in(&wide, "b"));
    assert!(in_wide.status.success(), "{}", stderr(&in_wide));
    assert!(lock_file_in(&wide, "b").exists());

    // Narrowed: outside every root nobody may lock, though `outside` is world-writable, not
    // through a symlink under a root either, and not even root.
    for (who, target) in [
        (nobody(), target_in(&outside, "c")),
        (nobody(), format!("file://{}/out/c", narrow.display())),
        (None, target_in(&outside, "c")),
    ] {
        let refused = acquire(&daemon, who, &target);
        assert!(!refused.status.success(), "{target}");
        assert!(
            stderr(&refused).contains("outside the directories this daemon locks files in"),
            "{target}: {}",
            stderr(&refused)
        );
    }
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
}

#[tokio::test]
async fn a_target_named_through_a_symlinked_directory_locks_the_real_file() {
    let base = reachable_tempdir();
    let real = directory(base.path().join("real"), 0o755);
    std::os::unix::fs::symlink(&real, base.path().join("alias")).unwrap();
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let via_alias = format!("file://{}/alias/data.csv", base.path().display());
    let via_real = target_in(&real, "data.csv");

    let mut held = client.new_lock(&via_alias, vfslock::LockOptions::default());
    held.acquire().await.expect("acquire through the alias");
    assert!(lock_file_in(&real, "data.csv").exists());
    // Both names are one lock.
    let err = client
        .new_lock(&via_real, vfslock::LockOptions::default())
        .acquire()
        .await
        .unwrap_err();
    assert!(err.is_already_held(), "{err}");
    held.release().await.expect("release through the alias");
    assert!(!lock_file_in(&real, "data.csv").exists());
}

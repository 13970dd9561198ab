//! Per-uid limits (issue 13, part 4): one local user cannot take every connection or lock of
//! the daemon. Callers run `vfslockctl` as `nobody` and as a second non-root uid over the real
//! socket; the test itself (root) is an admin, exempt from the per-uid limits and served from
//! the connections kept for admins.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Output, Stdio};

use vfslock::{ErrorKind, LockOptions};
use vfslock_tests::{bin, eventually, open_to_everyone, Daemon, NOBODY, TEST_CONFIG};

/// A second non-root uid (no account needed: the daemon judges by the number).
const OTHER: u32 = 65532;

fn with_limits(limits: &str) -> String {
    format!("{TEST_CONFIG}\n[limits]\n{limits}\n")
}

/// `vfslockctl --socket … ARGS` as `uid` (its own gid, no supplementary groups).
fn ctl_as(daemon: &Daemon, uid: u32) -> Command {
    let mut command = Command::new(bin("vfslockctl"));
    command
        .arg("--socket")
        .arg(daemon.socket())
        .uid(uid)
        .gid(uid);
    command
}

fn run_as(daemon: &Daemon, uid: u32, args: &[&str]) -> Output {
    ctl_as(daemon, uid)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run vfslockctl")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A `vfslockctl run` of `uid` holding `target` over its own connection until dropped.
struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Holder {
    /// Starts it and waits until its command runs, i.e. the lock is held.
    fn start(daemon: &Daemon, uid: u32, target: &str) -> Holder {
        let mut child = ctl_as(daemon, uid)
            .args(["run", "-n", target, "--", "sh", "-c", "echo held; exec cat"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vfslockctl run");
        let stdin = child.stdin.take();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if line.trim() != "held" {
            let output = child.wait_with_output().unwrap();
            panic!("uid {uid} could not hold {target}: {}", stderr(&output));
        }
        Holder { child, stdin }
    }

    /// Lets the command end (its `cat` reads end of input) and waits for `vfslockctl`.
    fn finish(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the holder failed: {status}");
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        if self.stdin.take().is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Root still connects and locks, as an admin.
async fn root_still_locks(daemon: &Daemon, target: &str) {
    let client = daemon.client().await;
    let mut lock = client.new_lock(target, LockOptions::default());
    lock.acquire().await.expect("root locks");
    lock.release().await.unwrap();
}

#[tokio::test]
async fn one_uid_gets_its_share_of_connections_and_the_others_still_connect() {
    let daemon = Daemon::start_with(&with_limits("max-connections-per-uid = 2"));
    open_to_everyone(&daemon);
    let first = Holder::start(&daemon, NOBODY, "mem:///uid/a");
    let _second = Holder::start(&daemon, NOBODY, "mem:///uid/b");

    let refused = run_as(&daemon, NOBODY, &["status"]);
    assert!(!refused.status.success());
    let message = stderr(&refused);
    assert!(
        message.contains("uid 65534 already has 2 connections")
            && message.contains("limits.max-connections-per-uid"),
        "{message}"
    );

    root_still_locks(&daemon, "mem:///uid/root").await;
    let other = run_as(&daemon, OTHER, &["status"]);
    assert!(other.status.success(), "{}", stderr(&other));

    // One of nobody's connections closes: nobody connects again.
    first.finish();
    eventually("nobody to connect again", || {
        run_as(&daemon, NOBODY, &["status"]).status.success()
    })
    .await;
}

#[tokio::test]
async fn one_uid_gets_its_share_of_locks_over_all_its_connections() {
    let daemon = Daemon::start_with(&with_limits("max-locks-per-uid = 2"));
    open_to_everyone(&daemon);
    let first = Holder::start(&daemon, NOBODY, "mem:///uid/a");
    let _second = Holder::start(&daemon, NOBODY, "mem:///uid/b");

    // A third connection of nobody: connected, but its lock would be nobody's third.
    let refused = run_as(
        &daemon,
        NOBODY,
        &["run", "-n", "mem:///uid/c", "--", "true"],
    );
    assert!(!refused.status.success());
    let message = stderr(&refused);
    assert!(
        message.contains("uid 65534 already holds or waits for 2 locks")
            && message.contains("limits.max-locks-per-uid"),
        "{message}"
    );

    let other = run_as(&daemon, OTHER, &["run", "-n", "mem:///uid/c", "--", "true"]);
    assert!(other.status.success(), "{}", stderr(&other));
    root_still_locks(&daemon, "mem:///uid/c").await;

    // A released lock (its holder's command ended) gives nobody its place back.
    first.finish();
    eventually("nobody to lock again", || {
        run_as(
            &daemon,
            NOBODY,
            &["run", "-n", "mem:///uid/c", "--", "true"],
        )
        .status
        .success()
    })
    .await;
}

#[tokio::test]
async fn the_last_connections_are_kept_for_root() {
    let daemon = Daemon::start_with(&with_limits(
        "max-connections = 4\nreserved-admin-connections = 2",
    ));
    open_to_everyone(&daemon);
    let _nobody = Holder::start(&daemon, NOBODY, "mem:///uid/a");
    let _other = Holder::start(&daemon, OTHER, "mem:///uid/b");

    // Two connections open: the two left are root's, whoever asks.
    for uid in [NOBODY, OTHER] {
        let refused = run_as(&daemon, uid, &["status"]);
        assert!(!refused.status.success());
        let message = stderr(&refused);
        assert!(
            message.contains("limits.reserved-admin-connections"),
            "{message}"
        );
    }
    let first = daemon.client().await;
    let _second = daemon.client().await;
    first.ping().await.expect("root is served from the reserve");
    // The reserve is part of max-connections, which holds for root too.
    let err = vfslock::Client::connect(daemon.socket()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LimitExceeded, "{err}");
    assert!(err.message().contains("limits.max-connections"), "{err}");
}

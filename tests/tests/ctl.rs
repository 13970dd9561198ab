//! End-to-end checks of `vfslockctl`: the real binary against a real daemon, so that exit
//! codes, the lock a `run` hands to its command, signal forwarding and the machine output are
//! what scripts will actually see.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use vfslock::LockOptions;
use vfslock_tests::{bin, eventually, fixture, within, Daemon, DEADLINE};

/// `vfslockctl --socket <the test daemon's>`, never reading the terminal, and killed if the
/// test fails before reaping it.
fn ctl(daemon: &Daemon) -> Command {
    let mut cmd = Command::new(bin("vfslockctl"));
    cmd.arg("--socket")
        .arg(daemon.socket())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Runs a command to completion within [`DEADLINE`], capturing its output.
async fn output(cmd: &mut Command) -> Output {
    tokio::time::timeout(DEADLINE, cmd.output())
        .await
        .expect("vfslockctl finished within the deadline")
        .expect("start vfslockctl")
}

/// Starts a long-running `vfslockctl` whose output nobody reads (its command inherits the
/// same null streams, so no pipe outlives the test).
fn spawn(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start vfslockctl")
}

async fn wait(child: &mut Child) -> ExitStatus {
    tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("vfslockctl exited within the deadline")
        .expect("wait for vfslockctl")
}

fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or_else(|| {
        panic!(
            "vfslockctl died of a signal: {:?}\nstderr: {}",
            output.status,
            stderr(output)
        )
    })
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", stdout(output)))
}

/// Asserts the "one line on stderr, prefixed" contract of a failure.
fn assert_one_line_failure(output: &Output, contains: &str) {
    let text = stderr(output);
    assert!(text.starts_with("vfslockctl: "), "stderr: {text}");
    assert_eq!(text.lines().count(), 1, "stderr: {text}");
    assert!(text.contains(contains), "expected {contains:?} in: {text}");
}

/// `key: value` lines of human output, continuation lines left out.
fn key_values(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|line| !line.starts_with(' '))
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.to_owned(), value.trim().to_owned()))
        .collect()
}

/// A shell loop that waits for `go` to exist; bounded (about [`DEADLINE`]) so that a failed
/// test does not leave it running for ever.
fn wait_for_script(go: &Path) -> String {
    format!(
        "i=0; while [ ! -e '{}' ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done",
        go.display()
    )
}

fn lock_file(target: &str) -> PathBuf {
    PathBuf::from(format!("{target}.lock"))
}

fn read_json_file(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}: {text}", path.display()))
}

/// Polls an async condition until it holds, failing after [`DEADLINE`].
async fn until(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !condition().await {
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn signal(child: &Child, signal: libc::c_int) {
    let pid = child.id().expect("child not reaped yet") as libc::pid_t;
    // SAFETY: plain syscall on the pid of our own child, which has not been reaped yet.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
}

#[tokio::test]
async fn run_true_exits_0_and_removes_the_lock_file() {
    let daemon = Daemon::start();
    let target = daemon.file_target("data.csv");
    let out = output(ctl(&daemon).args(["run", &target, "--", "true"])).await;
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert!(!lock_file(&target).exists());
    // flock(1) style, without `--`, works too.
    let out = output(ctl(&daemon).args(["run", &target, "true"])).await;
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert!(!lock_file(&target).exists());
}

#[tokio::test]
async fn run_exits_with_the_command_status() {
    let daemon = Daemon::start();
    let target = daemon.file_target("data.csv");

    let out = output(ctl(&daemon).args(["run", &target, "--", "sh", "-c", "exit 7"])).await;
    assert_eq!(code(&out), 7, "stderr: {}", stderr(&out));
    assert!(!lock_file(&target).exists());

    let out = output(ctl(&daemon).args(["run", &target, "--", "sh", "-c", "kill -TERM $$"])).await;
    assert_eq!(code(&out), 128 + libc::SIGTERM, "stderr: {}", stderr(&out));
    assert!(!lock_file(&target).exists());
}

#[tokio::test]
async fn run_of_a_command_that_cannot_start_exits_127_or_126() {
    let daemon = Daemon::start();
    let target = daemon.file_target("data.csv");

    let missing = daemon.data_dir().join("no-such-command");
    let out = output(ctl(&daemon).args(["run", &target, "--"]).arg(&missing)).await;
    assert_eq!(code(&out), 127, "stderr: {}", stderr(&out));
    assert_one_line_failure(&out, "cannot run");
    assert!(!lock_file(&target).exists());

    let not_executable = daemon.data_dir().join("not-executable");
    std::fs::write(&not_executable, "#!/bin/sh\nexit 0\n").expect("write script");
    let out = output(
        ctl(&daemon)
            .args(["run", &target, "--"])
            .arg(&not_executable),
    )
    .await;
    assert_eq!(code(&out), 126, "stderr: {}", stderr(&out));
    assert_one_line_failure(&out, "cannot run");
    assert!(!lock_file(&target).exists());
}

#[tokio::test]
async fn run_on_a_held_lock_exits_1_or_the_conflict_code() {
    let daemon = Daemon::start();
    let target = daemon.file_target("data.csv");
    let client = daemon.client().await;
    let mut held = client.new_lock(&target, LockOptions::default().owner_id("holder"));
    held.acquire().await.expect("library acquire");
    let ran = daemon.data_dir().join("ran");
    let touch = format!("touch '{}'", ran.display());

    let out = output(ctl(&daemon).args(["run", "-n", &target, "--", "sh", "-c", &touch])).await;
    assert_eq!(code(&out), 1);
    assert_one_line_failure(&out, &format!("vfslockctl show {}", "file://"));

    let out =
        output(ctl(&daemon).args(["run", "-n", "-E", "42", &target, "--", "sh", "-c", &touch]))
            .await;
    assert_eq!(code(&out), 42, "stderr: {}", stderr(&out));

    let out =
        output(ctl(&daemon).args(["run", "-w", "0", &target, "--", "sh", "-c", &touch])).await;
    assert_eq!(code(&out), 1, "stderr: {}", stderr(&out));

    let start = Instant::now();
    let out =
        output(ctl(&daemon).args(["run", "-w", "200ms", &target, "--", "sh", "-c", &touch])).await;
    assert_eq!(code(&out), 1, "stderr: {}", stderr(&out));
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "{:?}",
        start.elapsed()
    );
    assert_one_line_failure(&out, "timed out");
    assert!(stderr(&out).contains("vfslockctl show"), "{}", stderr(&out));

    assert!(!ran.exists(), "the command ran without the lock");
    // The failed attempts left the holder alone.
    assert!(held.is_held());
    let written = read_json_file(&lock_file(&target));
    assert_eq!(written["ownerId"], "holder");
}

#[tokio::test]
async fn usage_errors_exit_2() {
    let daemon = Daemon::start();
    let target = daemon.file_target("data.csv");
    for args in [
        vec!["run", target.as_str()],
        vec!["run", "-n", "-w", "1s", target.as_str(), "true"],
        vec!["run", "-w", "soon", target.as_str(), "true"],
        vec!["no-such-command"],
        vec![],
    ] {
        let out = output(ctl(&daemon).args(&args)).await;
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).is_empty(), "{args:?}");
    }
    let out = output(ctl(&daemon).args(["run", target.as_str()])).await;
    assert!(stderr(&out).starts_with("vfslockctl: "), "{}", stderr(&out));
    assert!(!lock_file(&target).exists());
}

#[tokio::test]
async fn an_unreachable_socket_exits_69() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let socket = dir.path().join("nobody-listens.sock");
    let ran = dir.path().join("ran");
    let target = dir.path().join("data.csv");
    for args in [
        vec!["status".to_owned()],
        vec!["list".to_owned()],
        vec!["show".to_owned(), target.display().to_string()],
        vec![
            "run".to_owned(),
            target.display().to_string(),
            "touch".to_owned(),
            ran.display().to_string(),
        ],
    ] {
        let out = output(
            Command::new(bin("vfslockctl"))
                .arg("--socket")
                .arg(&socket)
                .args(&args)
                .stdin(Stdio::null()),
        )
        .await;
        assert_eq!(code(&out), 69, "{args:?}: {}", stderr(&out));
        assert_one_line_failure(&out, "vfslockd is not running");
    }
    assert!(!ran.exists());
}

#[tokio::test]
async fn the_command_sees_its_target_and_holds_the_lock_of_vfslockctl() {
    let daemon = Daemon::start();
    let target = daemon.file_target("data.csv");
    let seen = daemon.data_dir().join("seen");
    let go = daemon.data_dir().join("go");
    let script = format!(
        "printf %s \"$VFSLOCK_TARGET\" > '{}.tmp' && mv '{0}.tmp' '{0}'; {}",
        seen.display(),
        wait_for_script(&go)
    );
    let mut run = spawn(ctl(&daemon).args([
        "run", "--owner", "ctl-test", "--ttl", "5m", &target, "--", "sh", "-c", &script,
    ]));
    let ctl_pid = i64::from(run.id().expect("running"));
    eventually("the command to start", || seen.exists()).await;
    assert_eq!(std::fs::read_to_string(&seen).expect("marker"), target);

    let written = read_json_file(&lock_file(&target));
    assert_eq!(written["pid"], ctl_pid, "{written}");
    assert_eq!(written["ownerId"], "ctl-test");
    assert_eq!(written["ttl"], 300_000_000_000_i64);

    let status = json(&output(ctl(&daemon).args(["status", "--json"])).await);
    let out = output(ctl(&daemon).args(["show", "--json", &target])).await;
    assert_eq!(code(&out), 0);
    let shown = json(&out);
    assert_eq!(shown["locked"], true);
    assert_eq!(shown["format"], "vfslock");
    assert_eq!(shown["pid"], ctl_pid);
    assert_eq!(shown["owner_id"], "ctl-test");
    assert_eq!(shown["ttl_seconds"], 300.0);
    assert_eq!(shown["never_expires"], false);
    assert_eq!(shown["stale"], false);
    assert_eq!(shown["lock_id"], written["lockId"]);
    assert_eq!(shown["daemon_id"], status["instance_id"]);

    std::fs::write(&go, "").expect("go");
    assert_eq!(wait(&mut run).await.code(), Some(0));
    assert!(!lock_file(&target).exists());
}

#[tokio::test]
async fn a_second_run_waits_for_the_first() {
    let daemon = Daemon::start();
    let target = daemon.file_target("data.csv");
    let started = daemon.data_dir().join("started");
    let go = daemon.data_dir().join("go");
    let order = daemon.data_dir().join("order");
    let first_script = format!(
        "touch '{}'; {}; echo first >> '{}'",
        started.display(),
        wait_for_script(&go),
        order.display()
    );
    let second_script = format!("echo second >> '{}'", order.display());

    let mut first = spawn(ctl(&daemon).args(["run", &target, "--", "sh", "-c", &first_script]));
    eventually("the first command to start", || started.exists()).await;
    let mut second = spawn(ctl(&daemon).args(["run", &target, "--", "sh", "-c", &second_script]));

    let url = format!("file://{target}");
    let first_pid = i64::from(first.id().expect("running"));
    until("the second run to queue", async || {
        let listed = json(&output(ctl(&daemon).args(["list", "--json"])).await);
        listed
            .as_array()
            .expect("list --json is an array")
            .iter()
            .any(|entry| entry["target"] == url.as_str() && entry["waiters"] == 1)
    })
    .await;
    let listed = json(&output(ctl(&daemon).args(["list", "--json"])).await);
    assert_eq!(listed[0]["pid"], first_pid, "{listed}");
    assert!(
        !order.exists(),
        "the second command ran while the first held the lock"
    );
    assert!(second.try_wait().expect("poll").is_none());

    std::fs::write(&go, "").expect("go");
    assert_eq!(wait(&mut first).await.code(), Some(0));
    assert_eq!(wait(&mut second).await.code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(&order).expect("order"),
        "first\nsecond\n"
    );
    assert!(!lock_file(&target).exists());
}

#[tokio::test]
async fn the_lock_outlives_a_killed_vfslockctl_while_its_command_runs() {
    let daemon = Daemon::start();
    let target = daemon.file_target("data.csv");
    let started = daemon.data_dir().join("started");
    let go = daemon.data_dir().join("go");
    let script = format!("touch '{}'; {}", started.display(), wait_for_script(&go));
    let mut run = spawn(ctl(&daemon).args(["run", &target, "--", "sh", "-c", &script]));
    eventually("the command to start", || started.exists()).await;

    run.start_kill().expect("SIGKILL vfslockctl");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&wait(&mut run).await),
        Some(libc::SIGKILL)
    );

    let client = daemon.client().await;
    let mut lock = client.new_lock(&target, LockOptions::default());
    let err = lock
        .acquire()
        .await
        .expect_err("the command still holds the lock");
    assert!(err.is_already_held(), "{err}");

    std::fs::write(&go, "").expect("go");
    eventually("the lock to be released after the command ended", || {
        !lock_file(&target).exists()
    })
    .await;
    lock.acquire()
        .await
        .expect("acquire once the command ended");
    lock.release().await.expect("release");
}

#[tokio::test]
async fn with_close_a_killed_vfslockctl_releases_the_lock_at_once() {
    let daemon = Daemon::start();
    let target = daemon.file_target("data.csv");
    let started = daemon.data_dir().join("started");
    let go = daemon.data_dir().join("go");
    let done = daemon.data_dir().join("done");
    let script = format!(
        "echo $$ > '{0}.tmp' && mv '{0}.tmp' '{0}'; {1}; touch '{2}'",
        started.display(),
        wait_for_script(&go),
        done.display()
    );
    let mut run = spawn(ctl(&daemon).args(["run", "-o", &target, "--", "sh", "-c", &script]));
    eventually("the command to start", || started.exists()).await;
    let command_pid: libc::pid_t = std::fs::read_to_string(&started)
        .expect("pid file")
        .trim()
        .parse()
        .expect("a pid");

    run.start_kill().expect("SIGKILL vfslockctl");
    wait(&mut run).await;

    let client = daemon.client().await;
    let mut lock = client.new_lock(&target, LockOptions::default());
    until("the lock to be released", async || {
        match lock.acquire().await {
            Ok(()) => true,
            Err(e) if e.is_already_held() => false,
            Err(e) => panic!("acquire: {e}"),
        }
    })
    .await;
    // SAFETY: signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(command_pid, 0) } == 0;
    assert!(alive, "the command should still run");
    lock.release().await.expect("release");
    std::fs::write(&go, "").expect("go");
    // Not left to poll a data directory that is about to be deleted.
    eventually("the command to finish", || done.exists()).await;
}

#[tokio::test]
async fn stop_signals_are_passed_on_to_the_command() {
    let daemon = Daemon::start();
    let target = daemon.file_target("data.csv");
    let started = daemon.data_dir().join("started");
    let trapped = daemon.data_dir().join("trapped");
    let go = daemon.data_dir().join("go");

    // A command that handles SIGTERM: vfslockctl keeps waiting and exits with its status.
    let script = format!(
        "trap 'echo term > \"{}\"; exit 5' TERM; touch '{}'; {}",
        trapped.display(),
        started.display(),
        wait_for_script(&go)
    );
    let mut run = spawn(ctl(&daemon).args(["run", &target, "--", "sh", "-c", &script]));
    eventually("the command to start", || started.exists()).await;
    signal(&run, libc::SIGTERM);
    assert_eq!(wait(&mut run).await.code(), Some(5));
    assert_eq!(
        std::fs::read_to_string(&trapped).expect("trap ran"),
        "term\n"
    );
    assert!(!lock_file(&target).exists());

    // A command that does not: it dies of the signal, reported as 128 + N.
    std::fs::remove_file(&started).expect("reset marker");
    let script = format!("touch '{}'; {}", started.display(), wait_for_script(&go));
    let mut run = spawn(ctl(&daemon).args(["run", &target, "--", "sh", "-c", &script]));
    eventually("the command to start", || started.exists()).await;
    signal(&run, libc::SIGHUP);
    assert_eq!(wait(&mut run).await.code(), Some(128 + libc::SIGHUP));
    assert!(!lock_file(&target).exists());
}

#[tokio::test]
async fn status_reports_the_daemon() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let mut lock = client.new_lock(daemon.file_target("data.csv"), LockOptions::default());
    lock.acquire().await.expect("acquire");

    let out = output(ctl(&daemon).args(["status", "--json"])).await;
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    let status = json(&out);
    assert_eq!(status["pid"], daemon.pid());
    assert_eq!(status["instance_id"], client.daemon().instance_id.as_str());
    assert_eq!(status["hostname"], client.daemon().hostname.as_str());
    assert_eq!(status["protocol_version"], client.daemon().protocol_version);
    assert_eq!(
        status["daemon_version"],
        client.daemon().daemon_version.as_str()
    );
    assert_eq!(status["held"], 1);
    assert_eq!(status["waiting"], 0);
    assert!(status["sessions"].as_u64().expect("sessions") >= 1);
    assert!(status["uptime_seconds"].as_f64().expect("uptime") >= 0.0);
    let schemes: Vec<&str> = status["stores"]
        .as_array()
        .expect("stores")
        .iter()
        .map(|s| s["scheme"].as_str().expect("scheme"))
        .collect();
    assert!(
        schemes.contains(&"file") && schemes.contains(&"mem"),
        "{schemes:?}"
    );

    let out = output(ctl(&daemon).arg("status")).await;
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    let fields = key_values(&text);
    assert_eq!(fields["pid"], daemon.pid().to_string(), "{text}");
    assert_eq!(fields["instance"], client.daemon().instance_id, "{text}");
    assert_eq!(fields["held"], "1", "{text}");
    assert!(fields["stores"].starts_with("file"), "{text}");
    assert!(text.contains("mem "), "{text}");
    for key in [
        "daemon", "protocol", "host", "uptime", "waiting", "sessions", "targets",
    ] {
        assert!(fields.contains_key(key), "{key} missing from:\n{text}");
    }
}

#[tokio::test]
async fn list_shows_held_locks() {
    let daemon = Daemon::start();
    let target = daemon.file_target("data.csv");
    let url = format!("file://{target}");
    let client = daemon.client().await;
    let mut lock = client.new_lock(
        &target,
        LockOptions::default()
            .owner_id("lister")
            .ttl(Duration::from_secs(300)),
    );
    lock.acquire().await.expect("acquire");

    let out = output(ctl(&daemon).args(["list", "--json"])).await;
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    let listed = json(&out);
    let entries = listed.as_array().expect("an array");
    assert_eq!(entries.len(), 1, "{listed}");
    let entry = &entries[0];
    assert_eq!(entry["target"], url.as_str());
    assert_eq!(entry["pid"], std::process::id());
    // SAFETY: geteuid has no preconditions.
    assert_eq!(entry["uid"], unsafe { libc::geteuid() });
    assert_eq!(entry["owner_id"], "lister");
    assert_eq!(entry["lock_id"], lock.lock_id().expect("held"));
    assert_eq!(entry["ttl_seconds"], 300.0);
    assert_eq!(entry["token"], lock.token().expect("a token"));
    assert_eq!(entry["waiters"], 0);
    assert_eq!(entry["mode"], "exclusive");
    assert_eq!(entry["holders"], 1);
    assert!(entry["age_seconds"].as_f64().expect("age") >= 0.0);

    let out = output(ctl(&daemon).arg("list")).await;
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "TARGET",
            "PID",
            "UID",
            "OWNER",
            "AGE",
            "TTL",
            "TOKEN",
            "WAITERS",
            "MODE",
            "HOLDERS",
            "WAITED",
            "ELSEWHERE"
        ]
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row[0], url, "{text}");
    assert_eq!(row[1], std::process::id().to_string(), "{text}");
    assert_eq!(row[3], "lister", "{text}");
    assert_eq!(row[row.len() - 7], "5m", "{text}");
    let token = lock.token().expect("a token").to_string();
    assert_eq!(row[row.len() - 6], token, "{text}");
    assert_eq!(row[row.len() - 5], "0", "{text}");
    assert_eq!(row[row.len() - 4], "exclusive", "{text}");
    assert_eq!(row[row.len() - 3], "1", "{text}");
    // Nobody waits, and nobody was seen holding it elsewhere.
    assert_eq!(row[row.len() - 2..], ["-", "-"], "{text}");

    lock.release().await.expect("release");
    let out = output(ctl(&daemon).args(["list", "--json"])).await;
    assert_eq!(json(&out), serde_json::json!([]));
    let out = output(ctl(&daemon).arg("list")).await;
    assert_eq!(
        stdout(&out).lines().count(),
        1,
        "only the header: {}",
        stdout(&out)
    );
}

#[tokio::test]
async fn show_reads_a_go_lock_file() {
    let daemon = Daemon::start();
    let target = daemon.file_target("batch.csv");
    std::fs::write(lock_file(&target), fixture("go-lockfile-no-ttl.lock")).expect("fixture");

    let out = output(ctl(&daemon).args(["show", "--json", &target])).await;
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    let shown = json(&out);
    assert_eq!(shown["target"], target.as_str());
    assert_eq!(shown["locked"], true);
    assert_eq!(shown["format"], "go");
    assert_eq!(shown["format_version"], Value::Null);
    assert_eq!(shown["hostname"], "batch-host");
    assert_eq!(shown["pid"], 77);
    assert_eq!(shown["owner_id"], Value::Null);
    assert_eq!(shown["created_at"], "2025-08-04T09:30:12Z");
    assert_eq!(shown["ttl_seconds"], 0.0);
    assert_eq!(shown["never_expires"], true);
    assert_eq!(shown["expires_at"], Value::Null);
    assert_eq!(shown["stale"], false);
    assert_eq!(shown["lock_id"], Value::Null);

    let out = output(ctl(&daemon).args(["show", &target])).await;
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    let fields = key_values(&text);
    assert_eq!(fields["format"], "go", "{text}");
    assert_eq!(fields["hostname"], "batch-host", "{text}");
    assert_eq!(fields["pid"], "77", "{text}");
    assert_eq!(fields["created"], "2025-08-04T09:30:12Z", "{text}");
    assert_eq!(fields["ttl"], "never expires", "{text}");
    assert_eq!(fields["expires at"], "never", "{text}");
    assert_eq!(fields["stale"], "no", "{text}");

    // A Go holder blocks `run` like any other.
    let out = output(ctl(&daemon).args(["run", "-n", &target, "true"])).await;
    assert_eq!(code(&out), 1);
    assert_one_line_failure(&out, "batch-host");
}

#[tokio::test]
async fn show_of_an_unlocked_target_exits_1() {
    let daemon = Daemon::start();
    let target = daemon.file_target("free.csv");

    let out = output(ctl(&daemon).args(["show", &target])).await;
    assert_eq!(code(&out), 1);
    assert_eq!(stdout(&out), format!("{target} is not locked\n"));

    let out = output(ctl(&daemon).args(["show", "--json", &target])).await;
    assert_eq!(code(&out), 1);
    let shown = json(&out);
    assert_eq!(shown["locked"], false);
    assert_eq!(shown["target"], target.as_str());
}

#[tokio::test]
async fn a_lost_lease_is_reported_and_with_on_loss_none_the_command_still_finishes() {
    let mut daemon = Daemon::start();
    let target = daemon.file_target("data.csv");
    let started = daemon.data_dir().join("started");
    let go = daemon.data_dir().join("go");
    let script = format!("touch '{}'; {}", started.display(), wait_for_script(&go));
    let mut run = ctl(&daemon)
        .args([
            "run",
            "--on-loss",
            "none",
            &target,
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vfslockctl");
    eventually("the command to start", || started.exists()).await;

    // Stopping the daemon releases every lock and tells the holders.
    assert!(daemon.terminate().success());
    assert!(!lock_file(&target).exists());
    assert!(
        run.try_wait().expect("poll").is_none(),
        "vfslockctl must wait for its command"
    );

    // The warning comes while the command still runs, not after it.
    let mut errors = BufReader::new(run.stderr.take().expect("piped stderr")).lines();
    let warning = within("the lost-lock warning", errors.next_line())
        .await
        .expect("read stderr")
        .expect("a warning line");
    assert!(
        warning.starts_with("vfslockctl: lost the lock"),
        "{warning}"
    );

    std::fs::write(&go, "").expect("go");
    assert_eq!(wait(&mut run).await.code(), Some(0));
    let rest = within("the end of stderr", errors.next_line())
        .await
        .expect("read stderr");
    assert_eq!(rest, None, "only one line on stderr");
}

#[tokio::test]
async fn a_lost_lease_sends_the_command_sigterm_and_it_sees_its_token() {
    let mut daemon = Daemon::start();
    let target = daemon.file_target("data.csv");
    let started = daemon.data_dir().join("started");
    let go = daemon.data_dir().join("go");
    let script = format!(
        "echo \"$VFSLOCK_TOKEN\" > '{}'; {}",
        started.display(),
        wait_for_script(&go)
    );
    let mut run = ctl(&daemon)
        .args(["run", &target, "--", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vfslockctl");
    eventually("the command to start", || {
        std::fs::read_to_string(&started).is_ok_and(|t| t.ends_with('\n'))
    })
    .await;
    let token: u64 = std::fs::read_to_string(&started)
        .unwrap()
        .trim()
        .parse()
        .expect("VFSLOCK_TOKEN is a number");
    let written = std::fs::read_to_string(lock_file(&target)).unwrap();
    assert!(
        written.contains(&format!("\"token\": {token}")),
        "{written}"
    );

    // Stopping the daemon ends the lease: the command is told with SIGTERM (143), without
    // anyone creating `go`.
    assert!(daemon.terminate().success());
    assert_eq!(wait(&mut run).await.code(), Some(128 + libc::SIGTERM));
    let mut errors = BufReader::new(run.stderr.take().expect("piped stderr")).lines();
    let warning = within("the lost-lock warning", errors.next_line())
        .await
        .expect("read stderr")
        .expect("a warning line");
    assert!(warning.contains("sending it signal 15"), "{warning}");
}

/// `vfslockctl` run from `dir`, with the test daemon's socket and the binary's path in the
/// environment for the commands it runs (`$CTL`, `$VFSLOCK_SOCKET`).
fn ctl_in(daemon: &Daemon, dir: &Path) -> Command {
    let mut cmd = ctl(daemon);
    cmd.current_dir(dir)
        .env("CTL", bin("vfslockctl"))
        .env("VFSLOCK_SOCKET", daemon.socket());
    cmd
}

#[tokio::test]
async fn run_locks_a_relative_path_in_its_working_directory_as_flock_does() {
    let daemon = Daemon::start();
    let data = daemon.data_dir().canonicalize().unwrap();
    std::fs::create_dir(data.join("sub")).unwrap();
    let absolute = data.join("data.csv").to_str().unwrap().to_owned();
    // Holding the lock, the command looks from the data directory: the lock file is there,
    // and `show` (given the relative path too) and `list` name the absolute target.
    let script = "cp data.csv.lock held.lock && \"$CTL\" show --json data.csv > shown.json && \
                  \"$CTL\" list --json > listed.json";
    let out = output(ctl_in(&daemon, &data).args([
        "run",
        "--owner",
        "relative",
        "sub/../data.csv",
        "--",
        "sh",
        "-c",
        script,
    ]))
    .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let held = read_json_file(&data.join("held.lock"));
    assert_eq!(held["ownerId"], "relative");
    let shown = read_json_file(&data.join("shown.json"));
    assert_eq!(shown["target"], absolute.as_str());
    assert_eq!(shown["locked"], true);
    assert_eq!(shown["lock_id"], held["lockId"]);
    let listed = read_json_file(&data.join("listed.json"));
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["target"], format!("file://{absolute}"));
    assert!(!data.join("data.csv.lock").exists(), "released");
    assert!(!data.join("sub/data.csv.lock").exists());

    // A relative path whose directory does not exist is refused before anything is sent.
    let out = output(ctl_in(&daemon, &data).args(["run", "nope/data.csv", "--", "true"])).await;
    assert_eq!(code(&out), 70, "as any target the daemon refuses");
    assert_one_line_failure(
        &out,
        "cannot make the relative path \"nope/data.csv\" absolute",
    );
    let out = output(ctl_in(&daemon, &data).args(["show", "nope/data.csv"])).await;
    assert_eq!(code(&out), 70, "as any target the daemon refuses");
    assert_one_line_failure(&out, "nope/data.csv");
}

#[tokio::test]
async fn run_c_runs_a_command_string_through_sh_as_flock_does() {
    let daemon = Daemon::start();
    let data = daemon.data_dir().canonicalize().unwrap();
    // flock(1)'s form: the target, then -c and the string.
    let out = output(ctl_in(&daemon, &data).args([
        "run",
        "data.csv",
        "-c",
        "test -f data.csv.lock && printf %s \"$VFSLOCK_TOKEN\" > token; exit 3",
    ]))
    .await;
    assert_eq!(code(&out), 3, "the string's own status: {}", stderr(&out));
    let token = std::fs::read_to_string(data.join("token")).expect("the command ran");
    assert!(token.parse::<u64>().is_ok_and(|t| t > 0), "{token:?}");

    // -c first: every word is a target, all taken before the string runs.
    let out = output(ctl_in(&daemon, &data).args([
        "run",
        "-c",
        "test -f a.csv.lock && test -f b.csv.lock && echo both",
        "a.csv",
        "b.csv",
    ]))
    .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "both\n");
    assert!(!data.join("a.csv.lock").exists() && !data.join("b.csv.lock").exists());

    // A command both ways is a usage error.
    let out =
        output(ctl_in(&daemon, &data).args(["run", "-c", "true", "a.csv", "--", "true"])).await;
    assert_eq!(code(&out), 2);
    assert_one_line_failure(&out, "either with -c or after the targets");
}

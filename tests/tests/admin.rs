//! The operator's commands: `break`, detached leases (`acquire`, `release`, `renew`) across
//! separate `vfslockctl` invocations, `list --target`, completions and man pages, and who may
//! do what, judged by the daemon from the socket's peer credentials.

use std::path::PathBuf;
use std::process::Output;

use serde_json::Value;
use vfslock::{ErrorKind, LockOptions};
use vfslock_tests::{open_to_everyone, vfslockctl as ctl, within, Daemon, TEST_CONFIG};

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {:?}, stderr {:?}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn a_detached_lease_outlives_its_command_and_is_released_by_another() {
    let daemon = Daemon::start();
    let target = daemon.file_target("nightly.csv");
    let lock_file = PathBuf::from(format!("{target}.lock"));

    let acquired = ctl(
        &daemon,
        None,
        &["--json", "acquire", &target, "--ttl", "5m"],
    );
    assert!(acquired.status.success(), "{}", stderr(&acquired));
    let lease = json(&acquired);
    let lock_id = lease["lock_id"].as_str().expect("lock id").to_owned();
    assert!(lease["token"].as_u64().is_some(), "{lease}");

    // The command is gone; the lease is not.
    let written = std::fs::read_to_string(&lock_file).expect("lock file after acquire exited");
    assert!(
        written.contains(&lock_id) && written.contains("\"detached\": true"),
        "{written}"
    );
    let client = daemon.client().await;
    let err = client
        .new_lock(&target, LockOptions::default())
        .acquire()
        .await
        .unwrap_err();
    assert!(err.is_already_held(), "{err}");

    let renewed = ctl(
        &daemon,
        None,
        &[
            "--json",
            "renew",
            &target,
            "--lock-id",
            &lock_id,
            "--ttl",
            "10m",
        ],
    );
    assert!(renewed.status.success(), "{}", stderr(&renewed));
    assert_eq!(json(&renewed)["ttl_seconds"].as_f64(), Some(600.0));

    let released = ctl(
        &daemon,
        None,
        &["--json", "release", &target, "--lock-id", &lock_id],
    );
    assert!(released.status.success(), "{}", stderr(&released));
    assert_eq!(json(&released)["released"], Value::Bool(true));
    assert!(!lock_file.exists());
    // Releasing again is not an error; renewing what is gone is a conflict (exit 1).
    let again = ctl(&daemon, None, &["release", &target, "--lock-id", &lock_id]);
    assert!(again.status.success(), "{}", stderr(&again));
    let gone = ctl(&daemon, None, &["renew", &target, "--lock-id", &lock_id]);
    assert_eq!(gone.status.code(), Some(1), "{}", stderr(&gone));
}

#[tokio::test]
async fn a_detached_lease_survives_daemon_shutdown_and_restart() {
    let mut daemon = Daemon::start();
    let target = daemon.file_target("kept.csv");
    let lease = json(&ctl(
        &daemon,
        None,
        &["--json", "acquire", &target, "--ttl", "5m"],
    ));
    let lock_id = lease["lock_id"].as_str().unwrap().to_owned();
    assert!(daemon.terminate().success());
    let lock_file = PathBuf::from(format!("{target}.lock"));
    assert!(
        lock_file.exists(),
        "SIGTERM left the detached lease in place"
    );
    daemon.restart();
    let shown = json(&ctl(&daemon, None, &["--json", "show", &target]));
    assert_eq!(shown["lock_id"].as_str(), Some(lock_id.as_str()));
    assert_eq!(shown["detached"], Value::Bool(true));
    let released = ctl(&daemon, None, &["release", &target, "--lock-id", &lock_id]);
    assert!(released.status.success(), "{}", stderr(&released));
    assert!(!lock_file.exists());
}

#[tokio::test]
async fn another_users_lease_and_break_are_refused_to_non_admins() {
    let daemon = Daemon::start();
    open_to_everyone(&daemon);
    let target = daemon.file_target("root-owned.csv");
    let lease = json(&ctl(
        &daemon,
        None,
        &["--json", "acquire", &target, "--ttl", "5m"],
    ));
    let lock_id = lease["lock_id"].as_str().unwrap().to_owned();

    let release = ctl(
        &daemon,
        Some(vec![]),
        &["release", &target, "--lock-id", &lock_id],
    );
    assert_eq!(release.status.code(), Some(70), "{}", stderr(&release));
    assert!(
        stderr(&release).contains("belongs to uid 0"),
        "{}",
        stderr(&release)
    );

    let broken = ctl(
        &daemon,
        Some(vec![]),
        &["break", &target, "--reason", "mine now"],
    );
    assert_eq!(broken.status.code(), Some(70), "{}", stderr(&broken));
    assert!(
        stderr(&broken).contains("needs root"),
        "{}",
        stderr(&broken)
    );
    assert!(
        daemon.log().contains("refused a break"),
        "the refusal is logged"
    );
    assert!(
        PathBuf::from(format!("{target}.lock")).exists(),
        "nothing was removed"
    );
}

#[tokio::test]
async fn an_admin_group_member_may_break_a_lock_and_its_holder_learns() {
    // Group 4242: no name needed, the daemon takes a number too. nobody gets it only as a
    // supplementary group, which only SO_PEERGROUPS reveals.
    let daemon = Daemon::start_with(&format!("[daemon]\nadmin-group = \"4242\"\n{TEST_CONFIG}"));
    open_to_everyone(&daemon);
    let target = daemon.file_target("stuck.csv");
    let client = daemon.client().await;
    let mut lock = client.new_lock(&target, LockOptions::default().owner_id("stuck-job"));
    lock.acquire().await.unwrap();

    let broken = ctl(
        &daemon,
        Some(vec![4242]),
        &["--json", "break", &target, "--reason", "job is dead"],
    );
    assert!(broken.status.success(), "{}", stderr(&broken));
    let report = json(&broken);
    assert_eq!(report["broken"], Value::Bool(true));
    assert_eq!(report["owner_id"].as_str(), Some("stuck-job"));

    let reason = within("the holder to hear of the break", lock.lost()).await;
    assert!(
        reason.contains("broken by uid 65534") && reason.contains("job is dead"),
        "{reason}"
    );
    assert!(!PathBuf::from(format!("{target}.lock")).exists());
    assert_eq!(
        lock.release().await.unwrap_err().kind(),
        ErrorKind::LeaseLost
    );
    let log = daemon.log();
    assert!(
        log.contains("lock broken by an admin") && log.contains("job is dead"),
        "{log}"
    );
}

#[tokio::test]
async fn root_breaks_a_foreign_lock_file_too() {
    let daemon = Daemon::start();
    let target = daemon.file_target("go-held.csv");
    std::fs::write(
        format!("{target}.lock"),
        vfslock_tests::fixture("go-lockfile-no-ttl.lock"),
    )
    .unwrap();
    let broken = json(&ctl(&daemon, None, &["--json", "break", &target]));
    assert_eq!(broken["hostname"].as_str(), Some("batch-host"));
    assert!(!PathBuf::from(format!("{target}.lock")).exists());
    let nothing = json(&ctl(&daemon, None, &["--json", "break", &target]));
    assert_eq!(nothing["broken"], Value::Bool(false));
}

#[tokio::test]
async fn list_filters_by_target_prefix_and_shows_tokens() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let mut a = client.new_lock("mem:///team-a/x", LockOptions::default());
    let mut b = client.new_lock("mem:///team-b/x", LockOptions::default());
    a.acquire().await.unwrap();
    b.acquire().await.unwrap();
    let listed = json(&ctl(
        &daemon,
        None,
        &["--json", "list", "--target", "mem:///team-a/"],
    ));
    let entries = listed.as_array().expect("an array");
    assert_eq!(entries.len(), 1, "{listed}");
    assert_eq!(entries[0]["target"].as_str(), Some("mem:///team-a/x"));
    assert_eq!(entries[0]["token"].as_u64(), a.token());
}

#[test]
fn completions_and_man_pages_come_from_the_argument_definitions() {
    let daemon = Daemon::start();
    let bash = ctl(&daemon, None, &["completions", "bash"]);
    let text = String::from_utf8_lossy(&bash.stdout);
    assert!(bash.status.success() && text.contains("acquire") && text.contains("break"));
    let man = ctl(&daemon, None, &["man"]);
    let page = String::from_utf8_lossy(&man.stdout);
    assert!(
        man.status.success() && page.contains(".TH vfslockctl"),
        "{page}"
    );
    let sub = ctl(&daemon, None, &["man", "run"]);
    assert!(String::from_utf8_lossy(&sub.stdout).contains("flock"));
    let bad = ctl(&daemon, None, &["completions", "cmd.exe"]);
    assert_eq!(bad.status.code(), Some(2));
}

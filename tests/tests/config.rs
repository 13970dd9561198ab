//! `vfslockd --check-config`: the checks a start would run that change nothing, for operators
//! to run before a restart; and the daemon itself exiting 78 (`EX_CONFIG`, which the unit does
//! not restart on) for a configuration error found after the file parsed (issue 12).

use std::path::Path;
use std::process::Output;

use vfslock_tests::{bin, start_refused, TEST_CONFIG};

/// `sysexits.h`'s EX_CONFIG.
const EXIT_CONFIG: i32 = 78;

/// Runs `vfslockd --check-config --config <config>` with a socket path of its own, and checks
/// that the socket was not created.
fn check_config(dir: &Path, config: &str) -> Output {
    let path = dir.join("vfslockd.toml");
    std::fs::write(&path, config).unwrap();
    let socket = dir.join("vfslockd.sock");
    let output = std::process::Command::new(bin("vfslockd"))
        .arg("--check-config")
        .arg("--config")
        .arg(&path)
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env_remove("VFSLOCK_TEST_UNSET_SECRET")
        .output()
        .expect("run vfslockd --check-config");
    assert!(!socket.exists(), "--check-config bound the socket");
    assert!(
        !dir.join("state").exists(),
        "--check-config made the state directory"
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts a refusal with exit 78 whose message names every one of `named`.
fn assert_refused(output: &Output, named: &[&str]) {
    assert_eq!(
        output.status.code(),
        Some(EXIT_CONFIG),
        "stdout: {}\nstderr: {}",
        stdout(output),
        stderr(output)
    );
    assert!(!stdout(output).contains("ok"), "{}", stdout(output));
    let message = stderr(output);
    for name in named {
        assert!(
            message.contains(name),
            "{name:?} is not named in: {message}"
        );
    }
}

/// An SFTP store whose key is `key`: checking it needs the file, never the server (there is
/// none at this address).
fn sftp_store(key: &Path) -> String {
    format!(
        "[[stores.object]]\nprefix = \"sftp://vfslock@127.0.0.1:9/srv/locks/\"\nkey = {:?}\n",
        key.display().to_string()
    )
}

#[test]
fn check_config_says_ok_for_a_good_file_without_contacting_its_stores() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_ed25519");
    std::fs::write(&key, "a private key").unwrap();
    let config = format!(
        "{TEST_CONFIG}\n[[access]]\nprefix = \"mem://team/\"\nusers = [\"root\", 1001]\n\
         groups = [0]\n\n{}",
        sftp_store(&key)
    );
    let output = check_config(dir.path(), &config);
    assert!(
        output.status.success(),
        "stdout: {}\nstderr: {}",
        stdout(&output),
        stderr(&output)
    );
    assert_eq!(stdout(&output).trim(), "ok");

    // No file at all: the embedded default is checked.
    let output = std::process::Command::new(bin("vfslockd"))
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output).trim(), "ok");
}

#[test]
fn check_config_refuses_an_unknown_key_with_78() {
    let dir = tempfile::tempdir().unwrap();
    let output = check_config(dir.path(), "[locks]\nttl = \"5m\"\n");
    assert_refused(&output, &["vfslockd.toml", "unknown field `ttl`"]);
}

#[test]
fn check_config_refuses_a_per_uid_limit_of_zero_with_78() {
    let dir = tempfile::tempdir().unwrap();
    let output = check_config(dir.path(), "[limits]\nmax-locks-per-uid = 0\n");
    assert_refused(&output, &["limits.max-locks-per-uid", "above zero"]);
}

#[test]
fn check_config_refuses_an_unknown_access_user_with_78() {
    let dir = tempfile::tempdir().unwrap();
    let output = check_config(
        dir.path(),
        "[[access]]\nprefix = \"mem://team/\"\nusers = [\"no-such-user-of-vfslock\"]\n",
    );
    assert_refused(
        &output,
        &[
            "[[access]] prefix = \"mem://team/\"",
            "no user named no-such-user-of-vfslock",
        ],
    );
}

#[test]
fn check_config_refuses_an_env_secret_that_is_not_set_with_78() {
    let dir = tempfile::tempdir().unwrap();
    let output = check_config(
        dir.path(),
        "[[stores.object]]\nprefix = \"s3://locks/\"\nendpoint = \"http://127.0.0.1:9\"\n\
         region = \"us-east-1\"\naccess-key-id = \"AKIAEXAMPLE\"\n\
         secret-access-key = \"env:VFSLOCK_TEST_UNSET_SECRET\"\n",
    );
    assert_refused(
        &output,
        &[
            "s3://locks/",
            "secret-access-key",
            "VFSLOCK_TEST_UNSET_SECRET",
        ],
    );
}

#[test]
fn check_config_refuses_a_key_file_it_cannot_read_with_78() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-key");
    let output = check_config(dir.path(), &sftp_store(&missing));
    assert_refused(
        &output,
        &[
            "sftp://vfslock@127.0.0.1:9/srv/locks/",
            &format!("cannot read the `key` file {}", missing.display()),
            // The cause, kept to the end of the message.
            "No such file or directory",
        ],
    );

    // A directory opens (even for root) but cannot be read as a key.
    let directory = dir.path().join("keys");
    std::fs::create_dir(&directory).unwrap();
    let output = check_config(dir.path(), &sftp_store(&directory));
    assert_refused(
        &output,
        &[&format!(
            "cannot read the `key` file {}",
            directory.display()
        )],
    );
}

/// Before issue 12 an unknown name in `[[access]]` exited 1, which systemd restarts in a loop.
#[test]
fn an_unknown_access_user_makes_the_daemon_exit_78() {
    let config = format!(
        "{TEST_CONFIG}\n[[access]]\nprefix = \"mem://team/\"\n\
         users = [\"no-such-user-of-vfslock\"]\n"
    );
    let (status, log) = start_refused(&config);
    assert_eq!(status.code(), Some(EXIT_CONFIG), "{status}\n{log}");
    assert!(
        log.contains("cannot start: [[access]] prefix = \"mem://team/\": no user named no-such-user-of-vfslock"),
        "{log}"
    );
}

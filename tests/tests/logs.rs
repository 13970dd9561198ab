//! The daemon's log on stderr: `--log-format json` and `[daemon] log-format = "json"` write one
//! JSON object per line (the fields docs/design.md, "Logs", promises collectors), the
//! command line overrides the file, the text format has no colours when stderr is not a
//! terminal, and an unknown format is a configuration error (exit 78). Both formats under the
//! journal are in `systemd.rs`.

use std::process::Stdio;

use serde_json::{Map, Value};
use vfslock::LockOptions;
use vfslock_tests::{start_refused_with, within, Daemon, TEST_CONFIG};

/// `sysexits.h`'s EX_CONFIG.
const EXIT_CONFIG: i32 = 78;

/// [`TEST_CONFIG`] with `[daemon] log-format` set.
fn config_with_log_format(format: &str) -> String {
    format!("{TEST_CONFIG}\n[daemon]\nlog-format = {format:?}\n")
}

/// Takes and releases a `file://` and a `mem://` lock through the client, then stops the daemon
/// and returns all it logged. A daemon that has exited has written every line: its shutdown
/// waits for each session to end, and a session logs its end inside its span.
async fn log_of_a_lock_and_release(mut daemon: Daemon) -> String {
    let client = daemon.client().await;
    for target in [daemon.file_target("logged.csv"), "mem:///logged".to_owned()] {
        let mut lock = client.new_lock(&target, LockOptions::default());
        within("an acquire", lock.acquire())
            .await
            .unwrap_or_else(|e| panic!("acquire {target}: {e}"));
        within("a release", lock.release())
            .await
            .unwrap_or_else(|e| panic!("release {target}: {e}"));
    }
    drop(client);
    let status = daemon.terminate();
    let log = daemon.log();
    assert!(status.success(), "vfslockd exited with {status}:\n{log}");
    log
}

/// `line` as a JSON object with the fields every line has: `timestamp` (RFC 3339, UTC),
/// `level`, `fields` with `message`, and `target`.
fn json_object(line: &str, log: &str) -> Map<String, Value> {
    let value: Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("a line that is not JSON ({e}): {line:?}\nin:\n{log}"));
    let Value::Object(object) = value else {
        panic!("a line that is not a JSON object: {line:?}\nin:\n{log}");
    };
    let timestamp = object.get("timestamp").and_then(Value::as_str);
    assert!(
        timestamp.is_some_and(|t| t.len() > 20 && t.as_bytes()[10] == b'T' && t.ends_with('Z')),
        "no RFC 3339 timestamp in {line:?}"
    );
    assert!(
        matches!(
            object.get("level").and_then(Value::as_str),
            Some("ERROR" | "WARN" | "INFO" | "DEBUG" | "TRACE")
        ),
        "no level in {line:?}"
    );
    assert!(
        object
            .get("fields")
            .and_then(|f| f.get("message"))
            .is_some_and(Value::is_string),
        "no fields.message in {line:?}"
    );
    assert!(
        object.get("target").is_some_and(Value::is_string),
        "no target in {line:?}"
    );
    object
}

/// Checks that every non-empty line of `log` is a JSON object of the log's fields, that the
/// daemon said it serves, and that events inside a request's span name the span.
fn assert_a_json_log(log: &str) {
    let lines: Vec<Map<String, Value>> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| json_object(line, log))
        .collect();
    let message =
        |line: &Map<String, Value>| line["fields"]["message"].as_str().unwrap().to_owned();
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "INFO" && message(l).contains("serving")),
        "no `serving` line in:\n{log}"
    );
    // The sessions' spans (debug, which the tests' RUST_LOG enables): the innermost as `span`,
    // all of them, root first, as `spans`.
    assert!(
        lines.iter().any(|l| {
            l.get("span").and_then(|s| s.get("name")) == Some(&Value::from("session"))
                && l.get("spans")
                    .and_then(Value::as_array)
                    .is_some_and(|spans| spans.iter().any(|s| s["name"] == "session"))
        }),
        "no event inside a session's span in:\n{log}"
    );
}

#[tokio::test]
async fn log_format_json_on_the_command_line_writes_a_json_object_per_line() {
    let daemon = Daemon::start_host(TEST_CONFIG, None, &["--log-format", "json"]);
    assert_a_json_log(&log_of_a_lock_and_release(daemon).await);
}

#[tokio::test]
async fn log_format_json_in_the_config_file_writes_a_json_object_per_line() {
    let daemon = Daemon::start_with(&config_with_log_format("json"));
    assert_a_json_log(&log_of_a_lock_and_release(daemon).await);
}

#[tokio::test]
async fn the_command_line_log_format_overrides_the_files() {
    let daemon = Daemon::start_host(
        &config_with_log_format("json"),
        None,
        &["--log-format", "text"],
    );
    let log = log_of_a_lock_and_release(daemon).await;
    assert!(log.contains(" INFO ") && log.contains("serving"), "{log}");
    assert!(
        log.lines()
            .all(|l| serde_json::from_str::<Map<String, Value>>(l).is_err()),
        "a JSON line in a text log:\n{log}"
    );
}

#[tokio::test]
async fn the_text_log_has_no_colours_when_stderr_is_a_file() {
    let log = log_of_a_lock_and_release(Daemon::start()).await;
    assert!(log.contains(" INFO ") && log.contains("serving"), "{log}");
    assert!(
        !log.contains("\x1b["),
        "escape sequences in a log file: {log:?}"
    );
}

#[tokio::test]
async fn a_failed_start_under_json_is_a_json_error_line_too() {
    let daemon = Daemon::start();
    // A second daemon on the same socket: it gets past its config and logging, then is refused.
    let output = daemon
        .command()
        .args(["--log-format", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    // Every line is checked, not only the last.
    let objects: Vec<Map<String, Value>> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| json_object(line, &stderr))
        .collect();
    let last = objects
        .last()
        .unwrap_or_else(|| panic!("nothing on stderr"));
    assert_eq!(last["level"], "ERROR", "{stderr}");
    let message = last["fields"]["message"].as_str().unwrap();
    assert!(message.contains("already serving"), "{stderr}");
}

#[test]
fn an_unknown_log_format_is_a_config_error_naming_the_formats() {
    let (status, log) = start_refused_with(TEST_CONFIG, &["--log-format", "xml"]);
    assert_eq!(status.code(), Some(EXIT_CONFIG), "{log}");
    assert!(log.contains("--log-format"), "{log}");
    assert!(
        log.contains("\"xml\"") && log.contains("\"text\" or \"json\""),
        "{log}"
    );

    let (status, log) = start_refused_with(&config_with_log_format("xml"), &[]);
    assert_eq!(status.code(), Some(EXIT_CONFIG), "{log}");
    assert!(log.contains("daemon.log-format"), "{log}");
    assert!(
        log.contains("\"xml\"") && log.contains("\"text\" or \"json\""),
        "{log}"
    );
}

/// The spans of a JSON log line, by name: each span's fields.
fn spans_of(object: &Map<String, Value>) -> Vec<Map<String, Value>> {
    object
        .get("spans")
        .and_then(Value::as_array)
        .map(|spans| {
            spans
                .iter()
                .filter_map(|s| s.as_object().cloned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_is_a_span_with_its_caller_and_lock_id_and_store_calls_are_its_children() {
    // Inherited by the daemon: this test's process is its own (nextest), so no other test sees it.
    std::env::set_var("RUST_LOG", "debug");
    let daemon = Daemon::start_host(TEST_CONFIG, None, &["--log-format", "json"]);
    let client = daemon.client().await;
    let target = daemon.file_target("spanned.csv");
    let mut lock = client.new_lock(&target, LockOptions::default());
    within("an acquire", lock.acquire()).await.unwrap();
    let lock_id = lock.lock_id().unwrap().to_owned();
    within("a release", lock.release()).await.unwrap();
    drop(client);
    let mut daemon = daemon;
    assert!(daemon.terminate().success());
    let log = daemon.log();
    let lines: Vec<Map<String, Value>> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| json_object(l, &log))
        .collect();
    let pid = u64::from(std::process::id());
    let request_of = |object: &Map<String, Value>, kind: &str| {
        spans_of(object).into_iter().find(|s| {
            s.get("name") == Some(&Value::from("request"))
                && s.get("kind") == Some(&Value::from(kind))
        })
    };
    // The acquire's store call: a child `store` span of the acquire's request span, with its
    // latency.
    let create = lines
        .iter()
        .find(|o| {
            o["fields"]["message"] == "store call"
                && spans_of(o)
                    .iter()
                    .any(|s| s["name"] == "store" && s["op"] == "create")
        })
        .unwrap_or_else(|| panic!("no store call of the acquire in:\n{log}"));
    assert!(create["fields"]["took_us"].is_u64(), "{create:?}");
    let request = request_of(create, "acquire").unwrap_or_else(|| panic!("{create:?}"));
    assert_eq!(
        request["target"],
        Value::from(target.as_str()),
        "{request:?}"
    );
    assert_eq!(request["pid"], Value::from(pid), "{request:?}");
    assert!(request["uid"].is_u64(), "{request:?}");
    assert!(request["session"].is_u64(), "{request:?}");
    let names: Vec<String> = spans_of(create)
        .iter()
        .filter_map(|s| s["name"].as_str().map(str::to_owned))
        .collect();
    let at = |name: &str| names.iter().position(|n| n == name);
    assert!(
        at("request") < at("store"),
        "the store span is the request's child: {names:?}"
    );
    // The acquire's span names the lock id once it is granted.
    assert!(
        lines.iter().any(|o| o["fields"]["message"] == "answered"
            && request_of(o, "acquire")
                .is_some_and(|r| r.get("lock_id") == Some(&Value::from(lock_id.as_str())))),
        "no answered acquire with lock id {lock_id} in:\n{log}"
    );
    // The release's span names it from the start, its delete included.
    assert!(
        lines.iter().any(|o| spans_of(o)
            .iter()
            .any(|s| s["name"] == "store" && s["op"] == "delete")
            && request_of(o, "release")
                .is_some_and(|r| r.get("lock_id") == Some(&Value::from(lock_id.as_str())))),
        "no store delete in the release's span in:\n{log}"
    );
}

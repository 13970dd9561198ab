//! The mutual-exclusion checker, short form: three daemons sharing one directory, nine
//! workers, random SIGKILLs; no two holders at once, strictly increasing fencing tokens, no
//! orphan lock files. The same with two daemons on each test object store (S3, GCS, Azure
//! Blob), and on the test SFTP server (create-only mode: no tokens, so only overlaps and
//! orphans). And its self-test: on `mem://` targets, which each daemon keeps apart, it must
//! find the overlaps. And short chaos runs (issue 6 §6): three daemons × eight workers on
//! `file://` with daemon kills and store faults, and on S3 with daemon kills, store faults and
//! a network partition of one host (root and `ip` needed; the run starts a moto of its own
//! from the venv `tests/servers/start.sh` installs). And the lock modes (issue 15) on
//! `file://`: shared and exclusive clients mixed (no exclusive section overlaps another, shared
//! ones do), and a semaphore of 3 (never more than 3 sections at once), with its self-test on
//! `mem://`, where each daemon grants its own 2 slots of "the" semaphore of 2. And sets of
//! locks taken all or nothing (`Client::lock_all`, two of three targets in a random order):
//! a chaos run on `file://` and one on S3, where no two sections of a target overlap and no
//! set's wait stalls, and the self-test on `mem://`, where the sets of two daemons overlap.
//!
//! `mutex_checker` finds `vfslockd` next to itself: build the binaries first
//! (`cargo build --workspace --bins --features vfslockd/faults`; `tests/run.sh` does it). The
//! object-store runs need the test servers and their `VFSLOCK_TEST_*` variables
//! (`tests/servers/start.sh`, then `. tests/servers/run/env`; `tests/run.sh` does both).

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Generous: the short runs take about 5–7 s.
const RUN_DEADLINE: Duration = Duration::from_secs(90);

struct Outcome {
    success: bool,
    summary: HashMap<String, String>,
    stderr: String,
    line: String,
}

impl Outcome {
    fn count(&self, key: &str) -> u64 {
        let value = self
            .summary
            .get(key)
            .unwrap_or_else(|| panic!("no {key}= in the summary {:?}\n{}", self.line, self.stderr));
        value
            .parse()
            .unwrap_or_else(|_| panic!("{key}={value} is not a number"))
    }
}

fn checker(args: &[&str]) -> Outcome {
    checker_mode("run", args)
}

fn checker_mode(mode: &str, args: &[&str]) -> Outcome {
    let dir = tempfile::tempdir().expect("temporary directory");
    let stdout_path = dir.path().join("stdout");
    let stderr_path = dir.path().join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mutex_checker"))
        .arg(mode)
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("start mutex_checker");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for mutex_checker") {
            break status;
        }
        if start.elapsed() > RUN_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "mutex_checker did not finish within {RUN_DEADLINE:?}:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = std::fs::read_to_string(&stdout_path).unwrap();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    let line = stdout
        .lines()
        .find(|line| line.starts_with("mutex-checker: "))
        .unwrap_or_else(|| panic!("no summary line (exit {status}):\n{stdout}\n{stderr}"))
        .to_owned();
    let summary = line["mutex-checker: ".len()..]
        .split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Outcome {
        success: status.success(),
        summary,
        stderr,
        line,
    }
}

/// Fails on any overlap, token-order violation, late loss or orphan; returns the run's summary
/// and details, for the caller's own assertions.
fn assert_no_violation(outcome: &Outcome) -> String {
    let context = format!("{}\n{}", outcome.line, outcome.stderr);
    for key in [
        "overlaps",
        "order_violations",
        "equal_tokens",
        "rejected_writes",
        "lost_late",
        "orphans",
    ] {
        assert_eq!(outcome.count(key), 0, "{key}: {context}");
    }
    context
}

#[test]
fn several_daemons_keep_mutual_exclusion_while_clients_are_killed() {
    let outcome = checker(&[]);
    let context = assert_no_violation(&outcome);
    assert_eq!(outcome.count("daemons"), 3, "{context}");
    assert_eq!(outcome.count("clients"), 9, "{context}");
    assert!(outcome.count("acquisitions") > 50, "{context}");
    assert!(outcome.count("kills") > 0, "{context}");
    assert!(outcome.success, "mutex_checker failed: {context}");
}

/// A run that must fail: two daemons on `mem://`, which each keep their own locks, so that each
/// grants "the" lock of `extra`'s mode; no kills. The failed run keeps its directory, so it
/// gets one that goes with the test. Returns the outcome and the context for messages.
fn broken_run(extra: &[&str]) -> (Outcome, String) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut args = vec![
        "--dir",
        dir.path().to_str().expect("UTF-8 temporary path"),
        "--mem",
        "--daemons",
        "2",
        "--duration",
        "2",
        "--kill-every-ms",
        "0",
    ];
    args.extend_from_slice(extra);
    let outcome = checker(&args);
    let context = format!("{}\n{}", outcome.line, outcome.stderr);
    assert!(!outcome.success, "a broken run passed: {context}");
    assert!(outcome.count("overlaps") > 0, "{context}");
    (outcome, context)
}

#[test]
fn the_checker_finds_the_overlaps_of_daemons_that_do_not_share_a_store() {
    let (outcome, context) = broken_run(&["--clients", "2", "--targets", "1"]);
    assert_eq!(outcome.count("kills"), 0, "{context}");
}

#[test]
fn shared_and_exclusive_clients_mixed_never_overlap_an_exclusive_section() {
    let outcome = checker(&["--mode", "mixed", "--duration", "3"]);
    let context = assert_no_violation(&outcome);
    assert_eq!(
        outcome.summary.get("mode").map(String::as_str),
        Some("mixed"),
        "{context}"
    );
    assert_eq!(outcome.count("rejected_reads"), 0, "{context}");
    assert!(outcome.count("acquisitions") > 50, "{context}");
    // Both modes were taken, and the shared sections did share.
    assert!(outcome.count("shared_sections") > 0, "{context}");
    assert!(
        outcome.count("shared_sections") < outcome.count("acquisitions"),
        "{context}"
    );
    assert!(outcome.count("shared_overlaps") > 0, "{context}");
    assert!(outcome.count("kills") > 0, "{context}");
    assert!(outcome.success, "mutex_checker failed: {context}");
}

#[test]
fn a_semaphore_of_three_never_has_more_than_three_holders() {
    let outcome = checker(&["--mode", "slots:3", "--duration", "3"]);
    let context = assert_no_violation(&outcome);
    assert_eq!(
        outcome.summary.get("mode").map(String::as_str),
        Some("slots:3"),
        "{context}"
    );
    assert_eq!(outcome.count("rejected_reads"), 0, "{context}");
    assert!(outcome.count("acquisitions") > 50, "{context}");
    let most = outcome.count("max_concurrent");
    assert!((2..=3).contains(&most), "{context}");
    assert!(outcome.count("kills") > 0, "{context}");
    assert!(outcome.success, "mutex_checker failed: {context}");
}

#[test]
fn the_checker_finds_a_semaphore_overrun_by_daemons_that_do_not_share_a_store() {
    // Two daemons each grant 2 slots of "the" semaphore of 2.
    let (outcome, context) = broken_run(&["--mode", "slots:2", "--clients", "3", "--targets", "1"]);
    assert!(outcome.count("max_concurrent") > 2, "{context}");
    assert!(outcome.stderr.contains("over 2 slots"), "{context}");
}

/// Fails (rather than skips) when the test servers' variables are missing.
fn require_servers(vars: &[&str]) {
    let missing: Vec<&str> = vars
        .iter()
        .copied()
        .filter(|name| std::env::var_os(name).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "{} not set: start the test servers with tests/servers/start.sh and source \
         tests/servers/run/env (tests/run.sh does both)",
        missing.join(", ")
    );
}

/// A short run on an object store with its defaults (2 daemons × 3 workers, 2 targets,
/// 5 s, 5 ms holdings), which must keep every promise.
fn object_store_run(store: &str, vars: &[&str], extra: &[&str]) -> Outcome {
    require_servers(vars);
    let mut args = vec!["--store", store];
    args.extend_from_slice(extra);
    let outcome = checker(&args);
    let context = format!("{}\n{}", outcome.line, outcome.stderr);
    assert_eq!(
        outcome.summary.get("store").map(String::as_str),
        Some(store),
        "{context}"
    );
    assert_no_violation(&outcome);
    assert!(outcome.count("acquisitions") > 20, "{context}");
    assert!(outcome.count("kills") > 0, "{context}");
    assert!(outcome.success, "mutex_checker failed: {context}");
    outcome
}

const S3_VARS: &[&str] = &[
    "VFSLOCK_TEST_S3_ENDPOINT",
    "VFSLOCK_TEST_S3_BUCKET",
    "VFSLOCK_TEST_S3_REGION",
    "VFSLOCK_TEST_S3_ACCESS_KEY_ID",
    "VFSLOCK_TEST_S3_SECRET_ACCESS_KEY",
];

#[test]
fn daemons_sharing_an_s3_bucket_keep_mutual_exclusion_while_clients_are_killed() {
    object_store_run("s3", S3_VARS, &[]);
}

#[test]
fn daemons_sharing_a_gcs_bucket_keep_mutual_exclusion_while_clients_are_killed() {
    object_store_run(
        "gcs",
        &["VFSLOCK_TEST_GCS_ENDPOINT", "VFSLOCK_TEST_GCS_BUCKET"],
        &[],
    );
}

#[test]
fn daemons_sharing_an_azure_container_keep_mutual_exclusion_while_clients_are_killed() {
    object_store_run(
        "azblob",
        &[
            "VFSLOCK_TEST_AZBLOB_ENDPOINT",
            "VFSLOCK_TEST_AZBLOB_CONTAINER",
            "VFSLOCK_TEST_AZBLOB_ACCOUNT",
            "VFSLOCK_TEST_AZBLOB_KEY",
        ],
        &[],
    );
}

#[test]
fn daemons_sharing_an_sftp_root_keep_mutual_exclusion_while_clients_are_killed() {
    // Create-only mode: no tokens (the token columns stay 0, the guarded writes are skipped),
    // no stale steals (the default TTL, 10 s, outlasts the run: killed workers' locks go
    // through release-on-disconnect).
    let outcome = object_store_run(
        "sftp",
        &[
            "VFSLOCK_TEST_SFTP_ENDPOINT",
            "VFSLOCK_TEST_SFTP_USER",
            "VFSLOCK_TEST_SFTP_KEY",
            "VFSLOCK_TEST_SFTP_ROOT",
        ],
        &[],
    );
    let context = format!("{}\n{}", outcome.line, outcome.stderr);
    assert!(outcome.stderr.contains("tokens_checked=false"), "{context}");
    assert!(!outcome.stderr.contains("writes_skipped=0 "), "{context}");
}

#[test]
fn daemons_on_s3_keep_mutual_exclusion_when_writes_land_but_report_failure() {
    let outcome = object_store_run("s3", S3_VARS, &["--faults", "0.2"]);
    // The daemons resolved the injected faults by reading back.
    assert!(
        outcome.count("injected") > 0,
        "{}\n{}",
        outcome.line,
        outcome.stderr
    );
}

/// The promises every chaos run must keep, and the chaos it must have made.
fn assert_chaos_kept_every_promise(outcome: &Outcome) {
    let context = assert_no_violation(outcome);
    assert_eq!(outcome.count("daemons"), 3, "{context}");
    assert_eq!(outcome.count("clients"), 24, "{context}");
    assert!(outcome.count("acquisitions") > 20, "{context}");
    assert!(outcome.count("kills") > 0, "{context}");
    assert!(outcome.count("daemon_kills") > 0, "{context}");
    assert_kill_holdings_add_up(outcome, &context);
    assert!(outcome.count("injected") > 0, "{context}");
    assert!(outcome.success, "mutex_checker failed: {context}");
}

/// The summary says what became of the holdings the daemon kills found: resumed and lost
/// are each a part of them (the rest: a holder killed itself, or a release that failed
/// otherwise).
fn assert_kill_holdings_add_up(outcome: &Outcome, context: &str) -> (u64, u64, u64) {
    let held = outcome.count("held_at_kills");
    let (resumed, lost) = (outcome.count("resumed"), outcome.count("lost"));
    assert!(resumed + lost <= held, "{context}");
    (held, resumed, lost)
}

/// Daemons killed with SIGKILL every 500 ms and started again at once, while their clients
/// hold locks for 100 ms (and no client is killed): the holdings the kills find are resumed
/// by the restarted daemons (issue 17), and mutual exclusion and the token order hold
/// throughout.
#[test]
fn holdings_found_by_daemon_kills_are_resumed_and_exclusion_holds() {
    let outcome = checker(&[
        "--kill-daemon-every-ms",
        "500",
        "--kill-every-ms",
        "1000000",
        "--hold-ms",
        "100",
        "--targets",
        "3",
        "--duration",
        "5",
    ]);
    let context = assert_no_violation(&outcome);
    assert!(outcome.count("daemon_kills") > 0, "{context}");
    let (held, resumed, _) = assert_kill_holdings_add_up(&outcome, &context);
    assert!(held > 0, "the kills found holdings: {context}");
    assert!(resumed > 0, "some were resumed: {context}");
    assert!(outcome.success, "mutex_checker failed: {context}");
}

#[test]
fn a_chaos_run_on_files_keeps_mutual_exclusion_through_daemon_kills_and_store_faults() {
    let outcome = checker_mode("chaos", &["--duration", "5"]);
    assert_chaos_kept_every_promise(&outcome);
    assert!(outcome.count("acquisitions") > 200, "{}", outcome.line);
}

#[test]
fn a_chaos_run_on_s3_survives_daemon_kills_store_faults_and_a_network_partition() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let ip = Command::new("ip").arg("-V").output().is_ok();
    assert!(
        root && ip,
        "the partition needs root and iproute2's `ip` (tests/servers/start.sh installs it)"
    );
    // A daemon kill every second: kills wait while a partition is under way (about 7 s of
    // the 12), and the run must still have some.
    let outcome = checker_mode(
        "chaos",
        &[
            "--store",
            "s3",
            "--partition",
            "--duration",
            "12",
            "--kill-daemon-every-ms",
            "1000",
        ],
    );
    let context = format!("{}\n{}", outcome.line, outcome.stderr);
    assert_chaos_kept_every_promise(&outcome);
    let partitions = outcome.count("partitions");
    assert!(partitions > 0, "{context}");
    // Every partition passed all three checks.
    for key in ["lost_before_ttl", "taken_after_ttl", "untouched_after_heal"] {
        assert_eq!(outcome.count(key), partitions, "{key}: {context}");
    }
    assert_eq!(outcome.count("partition_failures"), 0, "{context}");
}

/// What a set run (`--mode set`) must show besides keeping every promise: its mode, enough
/// sets, two sections (one per target) per set, and no stall — with the worker's generous
/// wait (20 s), a wait that timed out means the sets deadlocked, and so would a wait as long
/// as the run.
fn assert_sets_kept_going(outcome: &Outcome, at_least: u64) {
    let context = format!("{}\n{}", outcome.line, outcome.stderr);
    assert_eq!(
        outcome.summary.get("mode").map(String::as_str),
        Some("set"),
        "{context}"
    );
    assert_eq!(outcome.count("targets"), 3, "{context}");
    let sets = outcome.count("set_sections");
    assert!(sets >= at_least, "only {sets} sets: {context}");
    // Every set held two targets; a kill while holding may leave a set's second enter out.
    let acquisitions = outcome.count("acquisitions");
    assert!(
        ((2 * sets).saturating_sub(outcome.count("kills"))..=2 * sets).contains(&acquisitions),
        "{context}"
    );
    assert_eq!(outcome.count("wait_timeouts"), 0, "{context}");
    // Sections of a target never overlap, so never more than one is open.
    assert_eq!(outcome.count("max_concurrent"), 1, "{context}");
    assert!(
        outcome.count("longest_wait_ms") < 15_000,
        "a set waited as long as a deadlock would: {context}"
    );
}

#[test]
fn lock_sets_never_overlap_on_a_shared_target_while_clients_are_killed() {
    // Chaos on file://: worker kills, daemon kills and store faults (errors and delays).
    let outcome = checker_mode("chaos", &["--mode", "set", "--duration", "4"]);
    assert_chaos_kept_every_promise(&outcome);
    assert_sets_kept_going(&outcome, 200);
}

#[test]
fn lock_sets_on_s3_never_overlap_through_daemon_kills_and_store_faults() {
    require_servers(S3_VARS);
    let outcome = checker_mode(
        "chaos",
        &["--store", "s3", "--mode", "set", "--duration", "4"],
    );
    let context = format!("{}\n{}", outcome.line, outcome.stderr);
    assert_eq!(
        outcome.summary.get("store").map(String::as_str),
        Some("s3"),
        "{context}"
    );
    assert_chaos_kept_every_promise(&outcome);
    // A floor that a stall would not reach, far under what a busy machine does (29 to 60).
    assert_sets_kept_going(&outcome, 10);
}

#[test]
fn the_checker_finds_overlapping_sets_of_daemons_that_do_not_share_a_store() {
    // The sets one daemon grants overlap the other's.
    let (outcome, context) = broken_run(&["--mode", "set", "--clients", "2"]);
    assert_eq!(
        outcome.summary.get("mode").map(String::as_str),
        Some("set"),
        "{context}"
    );
    assert!(outcome.count("set_sections") > 0, "{context}");
    assert!(outcome.count("max_concurrent") > 1, "{context}");
    assert!(outcome.stderr.contains("finding: overlap: t"), "{context}");
}

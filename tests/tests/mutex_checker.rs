//! The mutual-exclusion checker, short form: three daemons sharing one directory, nine
//! workers, random SIGKILLs; no two holders at once, strictly increasing fencing tokens, no
//! orphan lock files. And its self-test: on `mem://` targets, which each daemon keeps apart,
//! it must find the overlaps.
//!
//! `mutex_checker` finds `vfslockd` next to itself: build the binaries first
//! (`cargo build --workspace --bins`; `tests/run.sh` does it).

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Generous: the short run takes about 7 s.
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
    let dir = tempfile::tempdir().expect("temporary directory");
    let stdout_path = dir.path().join("stdout");
    let stderr_path = dir.path().join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mutex_checker"))
        .arg("run")
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

#[test]
fn several_daemons_keep_mutual_exclusion_while_clients_are_killed() {
    let outcome = checker(&[]);
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
    assert_eq!(outcome.count("daemons"), 3, "{context}");
    assert_eq!(outcome.count("clients"), 9, "{context}");
    assert!(outcome.count("acquisitions") > 50, "{context}");
    assert!(outcome.count("kills") > 0, "{context}");
    assert!(outcome.success, "mutex_checker failed: {context}");
}

#[test]
fn the_checker_finds_the_overlaps_of_daemons_that_do_not_share_a_store() {
    // mem:// lives in each daemon's memory: two daemons each grant "the" lock. The failed
    // run keeps its directory: give it one that goes with the test.
    let dir = tempfile::tempdir().expect("temporary directory");
    let outcome = checker(&[
        "--dir",
        dir.path().to_str().expect("UTF-8 temporary path"),
        "--mem",
        "--daemons",
        "2",
        "--clients",
        "2",
        "--targets",
        "1",
        "--duration",
        "2",
        "--kill-every-ms",
        "0",
    ]);
    let context = format!("{}\n{}", outcome.line, outcome.stderr);
    assert!(!outcome.success, "a broken run passed: {context}");
    assert!(outcome.count("overlaps") > 0, "{context}");
    assert_eq!(outcome.count("kills"), 0, "{context}");
}

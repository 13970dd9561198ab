//! The audit log (`[audit] path`): after a scripted workload on the real daemon (grants at
//! once and after a wait, a try that finds the lock held, a timeout, a steal of a stale Go lock
//! file, a lease broken under its holder with `vfslockctl break`, a shared lock and a detached
//! lease, an acquire refused before it reaches a target, locks still held when the daemon
//! stops), its audit log holds exactly the lines that workload must produce, target by target,
//! each naming the holder (the test's pid and uid), its lock id and token as the client got
//! them. The daemon writes them out when SIGTERM stops it. With a tiny `max-size` the log
//! rotates: never more than `keep` old files, the newest lines in `audit.log`, none missing
//! from the files kept. A bad `max-size` or a path the daemon cannot write stops its start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use vfslock::{ErrorKind, LockOptions};
use vfslock_tests::{
    next_position, start_refused, vfslockctl, watch_queue, within, Daemon, DEADLINE, TEST_CONFIG,
};

/// The owner id that makes a target's actor panic (`[faults] panic-owner`).
const TRIGGER: &str = "panic now";

/// A daemon whose audit log is `audit.log` in a directory of the test's (made by the daemon),
/// with `extra` after the `[audit]` path: more keys of it, then other sections.
fn daemon_with_audit(extra: &str) -> (Daemon, tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("logs/audit.log");
    let config = format!(
        "{TEST_CONFIG}\n[audit]\npath = \"{}\"\n{extra}",
        path.display()
    );
    (Daemon::start_with(&config), dir, path)
}

/// Every line of an audit file, each of which must be one JSON object.
fn lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("audit log {}: {e}", path.display()));
    text.lines()
        .map(|line| {
            serde_json::from_str::<Value>(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
        })
        .collect()
}

/// The lines of each target, in the order written.
fn by_target(lines: &[Value]) -> BTreeMap<String, Vec<Value>> {
    let mut targets: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for line in lines {
        let target = line["target"].as_str().expect("a target").to_owned();
        targets.entry(target).or_default().push(line.clone());
    }
    targets
}

/// The lines of the one target whose name ends with `suffix`.
fn of<'a>(targets: &'a BTreeMap<String, Vec<Value>>, suffix: &str) -> &'a [Value] {
    let found: Vec<_> = targets.keys().filter(|t| t.ends_with(suffix)).collect();
    assert_eq!(found.len(), 1, "one target ending in {suffix}: {found:?}");
    &targets[found[0]]
}

/// A holding's lock id and token, as [`assert_holder`] takes them.
fn id(held: &(String, Option<u64>)) -> (Option<&str>, Option<u64>) {
    (Some(held.0.as_str()), held.1)
}

/// The `event` of each line.
fn events(lines: &[Value]) -> Vec<&str> {
    lines.iter().map(|l| l["event"].as_str().unwrap()).collect()
}

/// The test process's uid, as the kernel tells the daemon.
fn uid() -> u64 {
    // SAFETY: plain syscall without arguments.
    u64::from(unsafe { libc::getuid() })
}

/// Asserts that `line` names the test process as the holder (or asker) of `lock_id` and
/// `token`, in `mode`, on `host`.
fn assert_holder(line: &Value, lock_id: Option<&str>, token: Option<u64>, mode: &str, host: &str) {
    assert_eq!(line["pid"], u64::from(std::process::id()), "{line}");
    assert_eq!(line["uid"], uid(), "{line}");
    assert_eq!(line["host"], host, "{line}");
    assert_eq!(line["mode"], mode, "{line}");
    assert_eq!(line["lock_id"].as_str(), lock_id, "{line}");
    assert_eq!(line["token"].as_u64(), token, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_workload_leaves_exactly_its_lines_in_the_audit_log() {
    let (mut daemon, _dir, path) = daemon_with_audit("");
    let client = daemon.client().await;
    let options = || LockOptions::default().ttl(Duration::from_secs(30));

    // mem: granted at once, then granted after a wait (handed over at the release).
    let mut first = client.new_lock("mem:///audit/one", options().owner_id("first"));
    within("first grant", first.acquire()).await.unwrap();
    let host = first.held_metadata().unwrap().hostname.clone();
    let first_held = (first.lock_id().unwrap().to_owned(), first.token());
    let (queued, mut positions) = watch_queue(options());
    let mut second = client.new_lock("mem:///audit/one", queued);
    let waiting =
        tokio::spawn(async move { second.acquire_timeout(DEADLINE).await.map(|()| second) });
    assert_eq!(next_position(&mut positions).await, 1);
    first.release().await.unwrap();
    let mut second = within("the waiter's grant", waiting)
        .await
        .unwrap()
        .unwrap();
    let second_held = (second.lock_id().unwrap().to_owned(), second.token());
    second.release().await.unwrap();

    // mem: a try that finds the lock held, and a wait that times out; held until the stop.
    let mut holder = client.new_lock("mem:///audit/two", options());
    holder.acquire().await.unwrap();
    let holder_held = (holder.lock_id().unwrap().to_owned(), holder.token());
    let mut tried = client.new_lock("mem:///audit/two", options());
    let error = tried.acquire().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::AlreadyHeld);
    let mut timed = client.new_lock("mem:///audit/two", options());
    let error = timed
        .acquire_timeout(Duration::from_millis(100))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Timeout);

    // file: a stale Go lock file is taken over.
    let stale = daemon.stale_go_target("stale.csv");
    let mut stealer = client.new_lock(stale.as_str(), options());
    stealer.acquire().await.unwrap();
    let stealer_held = (stealer.lock_id().unwrap().to_owned(), stealer.token());
    stealer.release().await.unwrap();

    // file: a lease broken under its holder, which hears of it.
    let broken = daemon.file_target("broken.csv");
    let mut victim = client.new_lock(broken.as_str(), options());
    victim.acquire().await.unwrap();
    let victim_held = (victim.lock_id().unwrap().to_owned(), victim.token());
    let out = vfslockctl(&daemon, None, &["break", &broken, "--reason", "audit test"]);
    assert!(out.status.success(), "{out:?}");
    within("the holder hears of the break", victim.lost()).await;

    // mem: a shared holding, held until the stop.
    let mut reader = client.new_lock("mem:///audit/shared", options().shared());
    reader.acquire().await.unwrap();
    let reader_held = (reader.lock_id().unwrap().to_owned(), reader.token());

    // mem: a detached lease, taken and ended by its lock id.
    let lease = client
        .acquire_detached(
            "mem:///audit/detached",
            Duration::from_secs(60),
            Some("nightly".into()),
            None,
        )
        .await
        .unwrap();
    assert!(client
        .release_detached("mem:///audit/detached", &lease.lock_id)
        .await
        .unwrap());

    // Refused before it reaches a target: no store serves it.
    let mut nowhere = client.new_lock("s3://no-store-here/x", options());
    let error = nowhere.acquire().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidTarget, "{error}");

    // The stop releases what is still held; its lines are written out before the exit.
    assert!(daemon.terminate().success(), "{}", daemon.log());
    let all = lines(&path);
    let targets = by_target(&all);

    let one = of(&targets, "mem:///audit/one");
    assert_eq!(events(one), ["grant", "release", "grant", "release"]);
    for (line, held) in one
        .iter()
        .zip([&first_held, &first_held, &second_held, &second_held])
    {
        let (lock_id, token) = id(held);
        assert_holder(line, lock_id, token, "exclusive", &host);
    }
    assert_eq!(one[0]["owner"], "first");
    assert_eq!(one[2]["owner"], Value::Null);
    assert_eq!(one[1]["cause"], "released");
    assert!(one[1]["held_ms"].is_u64(), "{}", one[1]);
    assert!(one[2]["waited_ms"].is_u64(), "{}", one[2]);

    let two = of(&targets, "mem:///audit/two");
    assert_eq!(events(two), ["grant", "refused", "refused", "lost"]);
    let (lock_id, token) = id(&holder_held);
    assert_holder(&two[0], lock_id, token, "exclusive", &host);
    assert_holder(&two[1], None, None, "exclusive", &host);
    assert_eq!(two[1]["error_kind"], "already_held");
    assert_eq!(two[2]["error_kind"], "timeout");
    assert!(two[2]["waited_ms"].as_u64().unwrap() >= 100, "{}", two[2]);
    assert_holder(&two[3], lock_id, token, "exclusive", &host);
    assert_eq!(two[3]["cause"], "daemon_stopping");

    let stolen = of(&targets, "/stale.csv");
    assert_eq!(events(stolen), ["steal", "grant", "release"]);
    let (lock_id, token) = id(&stealer_held);
    for line in stolen {
        assert_holder(line, lock_id, token, "exclusive", &host);
    }
    assert_eq!(
        stolen[0]["stolen_from"],
        serde_json::json!({
            "host": "ingest-7",
            "pid": 4242,
            "owner": "ingestion-service-1",
            "lock_id": null,
        })
    );

    let broken = of(&targets, "/broken.csv");
    assert_eq!(events(broken), ["grant", "break", "lost"]);
    let (lock_id, token) = id(&victim_held);
    for line in broken {
        assert_holder(line, lock_id, token, "exclusive", &host);
    }
    assert_eq!(broken[1]["reason"], "audit test");
    assert_eq!(broken[1]["by"]["uid"], uid(), "{}", broken[1]);
    let breaker = broken[1]["by"]["pid"].as_u64().unwrap();
    assert_ne!(
        breaker,
        u64::from(std::process::id()),
        "vfslockctl broke it"
    );
    assert_eq!(broken[2]["cause"], "stolen_or_broken");

    let shared = of(&targets, "mem:///audit/shared");
    assert_eq!(events(shared), ["grant", "lost"]);
    let (lock_id, token) = id(&reader_held);
    for line in shared {
        assert_holder(line, lock_id, token, "shared", &host);
    }
    assert_eq!(shared[1]["cause"], "daemon_stopping");

    let detached = of(&targets, "mem:///audit/detached");
    assert_eq!(events(detached), ["grant", "release"]);
    for line in detached {
        assert_holder(line, Some(&lease.lock_id), lease.token, "exclusive", &host);
        assert_eq!(line["owner"], "nightly");
        assert_eq!(line["detached"], true);
    }
    assert_eq!(
        detached[1]["by"],
        serde_json::json!({ "pid": std::process::id(), "uid": uid() })
    );

    let nowhere = of(&targets, "s3://no-store-here/x");
    assert_eq!(events(nowhere), ["refused"]);
    assert_holder(&nowhere[0], None, None, "exclusive", &host);
    assert_eq!(nowhere[0]["error_kind"], "invalid_target");
    assert!(nowhere[0].get("waited_ms").is_none(), "{}", nowhere[0]);

    assert_eq!(targets.len(), 7, "{all:#?}");
    for line in &all {
        let time = line["time"].as_str().unwrap();
        // RFC 3339, UTC, to the millisecond: 2026-12-07T19:42:13.701Z.
        assert!(
            time.len() == 24 && time.ends_with('Z') && &time[19..20] == ".",
            "{time}"
        );
    }
    drop((holder, reader));
}

/// Polls the daemon until `held` locks are held through it.
async fn until_held(client: &vfslock::Client, held: u64) {
    within("the daemon's held count", async {
        while client.status().await.unwrap().held != held {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_max_hold_a_closed_connection_and_a_failed_actor_end_holdings_in_the_log() {
    let (mut daemon, _dir, path) =
        daemon_with_audit(&format!("\n[faults]\npanic-owner = \"{TRIGGER}\"\n"));
    let client = daemon.client().await;

    // A holding ended at its max-hold.
    let capped = LockOptions::default().max_hold(Duration::from_millis(100));
    let mut capped = client.new_lock("mem:///audit/capped", capped);
    capped.acquire().await.unwrap();
    let capped_id = capped.lock_id().unwrap().to_owned();
    within("the max-hold", capped.lost()).await;

    // A holder whose process dies: its connection closes with the lock held.
    let mut run = std::process::Command::new(vfslock_tests::bin("vfslockctl"))
        .arg("--socket")
        .arg(daemon.socket())
        .args(["run", "mem:///audit/closed", "--", "cat"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    until_held(&client, 1).await;
    run.kill().unwrap();
    // Ends `cat`, which waits on our pipe.
    drop(run.stdin.take());
    run.wait().unwrap();
    until_held(&client, 0).await;

    // A holder, a waiter, and an acquire that makes the target's actor fail.
    let mut holder = client.new_lock("mem:///audit/failed", LockOptions::default());
    holder.acquire().await.unwrap();
    let holder_id = holder.lock_id().unwrap().to_owned();
    let (queued, mut positions) = watch_queue(LockOptions::default());
    let mut waiting = client.new_lock("mem:///audit/failed", queued);
    let waiter = tokio::spawn(async move { waiting.acquire_wait().await });
    assert_eq!(next_position(&mut positions).await, 1);
    let mut trigger = client.new_lock(
        "mem:///audit/failed",
        LockOptions::default().owner_id(TRIGGER),
    );
    let error = trigger.acquire().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Internal, "{error}");
    within("the holder hears of the failure", holder.lost()).await;
    let waited = within("the waiter's answer", waiter).await.unwrap();
    assert_eq!(waited.unwrap_err().kind(), ErrorKind::Internal);

    assert!(daemon.terminate().success(), "{}", daemon.log());
    let all = lines(&path);
    let targets = by_target(&all);

    let capped = of(&targets, "mem:///audit/capped");
    assert_eq!(events(capped), ["grant", "lost"]);
    assert_eq!(capped[1]["lock_id"], capped_id.as_str());
    assert_eq!(capped[1]["cause"], "max_hold");
    assert!(
        capped[1]["message"].as_str().unwrap().contains("max-hold"),
        "{}",
        capped[1]
    );

    let closed = of(&targets, "mem:///audit/closed");
    assert_eq!(events(closed), ["grant", "release"]);
    assert_eq!(closed[1]["cause"], "connection_closed");
    assert_eq!(closed[1]["pid"], u64::from(run.id()), "vfslockctl held it");
    assert_eq!(closed[0]["lock_id"], closed[1]["lock_id"]);

    let failed = of(&targets, "mem:///audit/failed");
    assert_eq!(events(failed), ["grant", "lost", "refused", "refused"]);
    assert_eq!(failed[1]["lock_id"], holder_id.as_str());
    assert_eq!(failed[1]["cause"], "daemon_failed");
    let mut owners: Vec<&Value> = failed[2..].iter().map(|l| &l["owner"]).collect();
    owners.sort_by_key(|owner| owner.is_string());
    assert_eq!(owners, [&Value::Null, &Value::from(TRIGGER)]);
    for refused in &failed[2..] {
        assert_eq!(refused["error_kind"], "internal", "{refused}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_max_size_rotates_the_log_and_loses_nothing_in_the_files_kept() {
    let (mut daemon, _dir, path) = daemon_with_audit("max-size = \"2KiB\"\nkeep = 2\n");
    let logs = path.parent().unwrap().to_owned();
    let files = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&logs)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let client = daemon.client().await;
    let mut expected = Vec::new();
    for round in 0..40 {
        let mut lock = client.new_lock("mem:///audit/rotate", LockOptions::default());
        lock.acquire().await.unwrap();
        let lock_id = lock.lock_id().unwrap().to_owned();
        lock.release().await.unwrap();
        expected.push(("grant", lock_id.clone()));
        expected.push(("release", lock_id));
        let now = files();
        assert!(now.len() <= 3, "round {round}: {now:?}");
    }
    assert!(daemon.terminate().success(), "{}", daemon.log());
    assert_eq!(files(), ["audit.log", "audit.log.1", "audit.log.2"]);
    let mut kept = Vec::new();
    for name in ["audit.log.2", "audit.log.1", "audit.log"] {
        let file = logs.join(name);
        assert!(std::fs::metadata(&file).unwrap().len() <= 2048, "{name}");
        for line in lines(&file) {
            let event = line["event"].as_str().unwrap().to_owned();
            kept.push((event, line["lock_id"].as_str().unwrap().to_owned()));
        }
    }
    // The three files hold the newest records, in order, with none missing between them.
    assert!(kept.len() > 6, "{kept:?}");
    let newest: Vec<(String, String)> = expected[expected.len() - kept.len()..]
        .iter()
        .map(|(event, id)| (event.to_string(), id.clone()))
        .collect();
    assert_eq!(kept, newest);
}

#[test]
fn a_bad_max_size_or_a_path_it_cannot_write_stops_the_start() {
    let (status, log) = start_refused(&format!("{TEST_CONFIG}\n[audit]\nmax-size = \"lots\"\n"));
    assert_eq!(status.code(), Some(78), "{log}");
    assert!(log.contains("audit.max-size"), "{log}");
    let (status, log) = start_refused(&format!("{TEST_CONFIG}\n[audit]\npath = \"audit.log\"\n"));
    assert_eq!(status.code(), Some(78), "{log}");
    assert!(log.contains("audit.path"), "{log}");
    // A file where its directory should be.
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, b"").unwrap();
    let config = format!(
        "{TEST_CONFIG}\n[audit]\npath = \"{}\"\n",
        blocker.join("audit.log").display()
    );
    let (status, log) = start_refused(&config);
    assert!(!status.success(), "{log}");
    assert!(log.contains("cannot open the audit log"), "{log}");
}

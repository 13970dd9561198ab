//! The planned restart under load (issue 17's first check): 100 locks held by 10 client
//! processes of the library (5 async, 5 blocking), 5 `vfslockctl run` commands, and 20 waiters
//! queued behind some of them (in two more processes), when the daemon's binary is replaced and
//! the daemon restarted through the documented path (SIGUSR2, which `systemctl reload` sends).
//! The lock files are polled throughout: every one keeps its `lockId` and token. Nobody hears
//! of a lost lease, every command runs on and finishes normally, every waiter is served after
//! the restart, and no lock file is left at the end.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use vfslock_tests::{bin, eventually, within, Daemon, Store, StoreTarget};

#[path = "support/raw.rs"]
#[allow(dead_code)] // stores.rs uses all of it, this file a part
mod raw;
use raw::Raw;

const HOLDERS: usize = 10;
const HELD_EACH: usize = 10;
const RUNS: usize = 5;
const WAITER_PROCESSES: usize = 2;
const WAITS_EACH: usize = 10;

/// Every line the client processes printed, in order, each with its process's name.
type Lines = Arc<Mutex<Vec<(String, String)>>>;

fn spawn_reading(mut command: Command, name: String, lines: &Lines) -> Child {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    let stdout = child.stdout.take().expect("stdout");
    let lines = lines.clone();
    tokio::spawn(async move {
        let mut reader = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            lines.lock().unwrap().push((name.clone(), line));
        }
    });
    child
}

fn count(lines: &Lines, prefix: &str) -> usize {
    lines
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, line)| line.starts_with(prefix))
        .count()
}

/// The lock file's `lockId` and token as the store has it (through the daemon for `mem://`,
/// which lives inside it: `None` while the daemon is away).
async fn identity(
    raw: &Raw,
    client: &vfslock::Client,
    target: &StoreTarget,
) -> Option<(String, Option<u64>)> {
    if target.store == Store::Mem {
        let metadata = client.metadata(&target.url).await.ok()??;
        return Some((metadata.lock_id?, metadata.token));
    }
    let bytes = raw.read(target.key()).await?;
    let json: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    Some((json["lockId"].as_str()?.to_owned(), json["token"].as_u64()))
}

async fn restart_under_load(store: Store) {
    let daemon = Daemon::start_copy(&store.daemon_config("resume-window = \"60s\"", ""));
    let socket = daemon.socket().to_string_lossy().into_owned();
    let raw = Raw::new(store);
    let client = daemon.client().await;
    let held: Vec<StoreTarget> = (0..HOLDERS * HELD_EACH)
        .map(|i| store.target(&format!("load{i}")))
        .collect();
    let runs: Vec<StoreTarget> = (0..RUNS)
        .map(|i| store.target(&format!("run{i}")))
        .collect();
    let lines: Lines = Arc::default();

    let mut holders = Vec::new();
    for (p, chunk) in held.chunks(HELD_EACH).enumerate() {
        let mut command = Command::new(bin("lock_holder"));
        let api = if p % 2 == 0 { "async" } else { "blocking" };
        command.args(["--socket", &socket, "--api", api]);
        for target in chunk {
            command.args(["--hold", &target.url]);
        }
        holders.push(spawn_reading(command, format!("holder{p}"), &lines));
    }
    eventually("every lock held", || count(&lines, "held ") == held.len()).await;
    let go = daemon.data_dir().join("go");
    let mut commands = Vec::new();
    for target in &runs {
        let mut command = Command::new(bin("vfslockctl"));
        command
            .args(["--socket", &socket, "run", &target.url, "--", "sh", "-c"])
            .arg(format!(
                "while [ ! -e '{}' ]; do sleep 0.05; done",
                go.display()
            ))
            .kill_on_drop(true);
        commands.push(command.spawn().expect("start vfslockctl run"));
    }
    let mut waiters = Vec::new();
    for p in 0..WAITER_PROCESSES {
        let mut command = Command::new(bin("lock_holder"));
        let api = if p == 0 { "async" } else { "blocking" };
        command.args(["--socket", &socket, "--api", api]);
        for target in &held[p * WAITS_EACH..(p + 1) * WAITS_EACH] {
            command.args(["--wait", &target.url]);
        }
        waiters.push(spawn_reading(command, format!("waiter{p}"), &lines));
    }
    let waits = WAITER_PROCESSES * WAITS_EACH;
    eventually("every waiter queued", || count(&lines, "queued ") == waits).await;
    let watched: Vec<StoreTarget> = held.iter().chain(&runs).cloned().collect();
    let mut before = Vec::new();
    for target in &watched {
        let mut seen = None;
        for _ in 0..100 {
            seen = identity(&raw, &client, target).await;
            if seen.is_some() {
                break;
            }
            // A `run` command's lock is taken just after the command starts.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        before.push(seen.unwrap_or_else(|| panic!("no lock file for {}", target.url)));
    }

    // The lock files, polled from before the restart until after it.
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (stop, watched, before) = (stop.clone(), watched.clone(), before.clone());
        let client = daemon.client().await;
        tokio::spawn(async move {
            let raw = Raw::new(store);
            let (mut passes, mut changed) = (0usize, Vec::new());
            while !stop.load(Ordering::Acquire) {
                for (target, was) in watched.iter().zip(&before) {
                    match identity(&raw, &client, target).await {
                        Some(now) if &now == was => {}
                        // `mem://` is read through the daemon, which is away for a moment.
                        None if store == Store::Mem => {}
                        now => changed.push(format!("{}: {was:?} became {now:?}", target.url)),
                    }
                }
                passes += 1;
            }
            (passes, changed)
        })
    };

    let first = client.status().await.expect("status").instance_id;
    daemon.replace_binary();
    daemon.signal(libc::SIGUSR2);
    let resumed = watched.len();
    eventually("every holding resumed by the new daemon", || {
        daemon.log().matches("holding resumed").count() >= resumed
    })
    .await;
    eventually("every waiter queued again", || {
        count(&lines, "queued ") >= 2 * waits
    })
    .await;
    let status = within("status", client.status()).await.expect("status");
    assert_ne!(status.instance_id, first, "a new daemon answers");
    stop.store(true, Ordering::Release);
    let (passes, changed) = within("the poller", poller).await.expect("poller");
    assert!(passes > 0, "the lock files were polled");
    assert!(changed.is_empty(), "lock files changed: {changed:#?}");
    assert_eq!(
        count(&lines, "granted "),
        0,
        "no waiter served before the release"
    );

    // The holders let go: every waiter is served; the commands finish.
    for holder in &mut holders {
        let stdin = holder.stdin.as_mut().expect("stdin");
        stdin.write_all(b"release\n").await.expect("tell a holder");
    }
    for waiter in &mut waiters {
        waiter.stdin.take();
    }
    std::fs::write(&go, "").expect("tell the commands to finish");
    for (n, mut command) in commands.into_iter().enumerate() {
        let exit = within("a run command", command.wait()).await.expect("wait");
        assert!(
            exit.success(),
            "run command {n} finished normally: {exit:?}"
        );
    }
    for mut child in holders.into_iter().chain(waiters) {
        let exit = within("a client process", child.wait())
            .await
            .expect("wait");
        assert!(exit.success(), "{exit:?}");
    }
    eventually("every process done", || {
        count(&lines, "done") == HOLDERS + WAITER_PROCESSES
    })
    .await;
    let all = lines.lock().unwrap().clone();
    let bad: Vec<_> = all
        .iter()
        .filter(|(_, line)| line.starts_with("lost ") || line.starts_with("failed "))
        .collect();
    assert!(bad.is_empty(), "losses or failures: {bad:#?}");
    assert_eq!(count(&lines, "granted "), waits, "every waiter served");
    assert_eq!(count(&lines, "released "), waits);
    // What the holders said they held is what the store kept.
    for (target, was) in watched.iter().zip(&before).take(held.len()) {
        let said = all
            .iter()
            .find(|(_, line)| {
                line.strip_prefix("held ")
                    .is_some_and(|rest| rest.starts_with(&format!("{} ", target.url)))
            })
            .map(|(_, line)| line.clone())
            .expect("a held line");
        assert!(said.contains(&was.0), "{said} vs {was:?}");
    }
    for target in &watched {
        assert_eq!(
            identity(&raw, &client, target).await,
            None,
            "no lock file left for {}",
            target.url
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_planned_restart_under_load_keeps_every_lock_on_file() {
    restart_under_load(Store::File).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_planned_restart_under_load_keeps_every_lock_on_s3() {
    restart_under_load(Store::S3).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_planned_restart_under_load_keeps_every_lock_on_mem() {
    restart_under_load(Store::Mem).await;
}

//! The live view of contention (issue 18): waiters hear where they stand as the queue moves
//! (protocol 9's `Event::Waiting`, at most one a second each, never to older clients),
//! `vfslockctl list` shows each target's oldest waiter and the last holder seen in its lock
//! file from elsewhere, and `vfslockctl run -w` on a terminal draws a status line that is
//! cleared when the lock is taken, and nothing without a terminal.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;
use vfslock::{LockOptions, Waiting};
use vfslock_proto::{
    codec, AcquireRequest, ClientFrame, Event, Request, Response, ServerFrame, WaitMode,
};
use vfslock_tests::{bin, fixture, vfslockctl, within, Daemon, DEADLINE, TEST_CONFIG};

#[path = "support/wire.rs"]
mod wire;
use wire::{handshaken_at, read_frame};

/// Every announcement a waiter heard, with when it came.
type Heard = Arc<Mutex<Vec<(Waiting, Instant)>>>;

/// `options`, recording every announcement with when it came.
fn recording(options: LockOptions) -> (LockOptions, Heard) {
    let seen: Heard = Arc::default();
    let options = options.on_waiting({
        let seen = seen.clone();
        move |waiting| seen.lock().unwrap().push((waiting.clone(), Instant::now()))
    });
    (options, seen)
}

/// A waiter on `target` with `options`, acquiring in a task of its own, once it was told it
/// waits at `position`: its task (the lock once granted) and what it heard.
async fn queued_at(
    client: &vfslock::Client,
    target: &str,
    options: LockOptions,
    position: u32,
) -> (JoinHandle<Result<vfslock::Lock, vfslock::Error>>, Heard) {
    let (options, seen) = recording(options);
    let mut lock = client.new_lock(target, options);
    let waiting = tokio::spawn(async move { lock.acquire_timeout(DEADLINE).await.map(|()| lock) });
    announced(&seen, |w| w.position == position).await;
    (waiting, seen)
}

/// Waits until `seen` has an announcement that `wanted` accepts.
async fn announced(seen: &Heard, wanted: impl Fn(&Waiting) -> bool) {
    let start = Instant::now();
    while !seen.lock().unwrap().iter().any(|(w, _)| wanted(w)) {
        assert!(
            start.elapsed() < DEADLINE,
            "no such announcement; heard: {:?}",
            seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_hear_their_new_place_and_holder_as_the_queue_moves() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let target = "mem:///live/moves";
    let mut holder = client.new_lock(target, LockOptions::default().owner_id("first"));
    holder.acquire().await.unwrap();
    let holder_pid = std::process::id() as i64;

    let mut waiters = Vec::new();
    let mut records = Vec::new();
    // In this order: the second queues before the third.
    for (owner, position) in [("second", 1), ("third", 2)] {
        let options = LockOptions::default().owner_id(owner);
        let (waiting, seen) = queued_at(&client, target, options, position).await;
        waiters.push(waiting);
        records.push(seen);
    }
    // Each was told its place and who holds the lock.
    for (index, seen) in records.iter().enumerate() {
        let first = seen.lock().unwrap()[0].0.clone();
        assert_eq!(first.position, index as u32 + 1);
        assert_eq!(first.target, target);
        let held_by = first.holder.expect("the holder is named");
        assert_eq!(
            (held_by.pid, held_by.owner_id.as_deref()),
            (holder_pid, Some("first"))
        );
        assert!(first.held_for.is_some());
    }
    // The holder lets go: the second holds it now, and the third moves up under it.
    holder.release().await.unwrap();
    let mut second = within("the second's grant", waiters.remove(0))
        .await
        .unwrap()
        .unwrap();
    announced(&records[1], |w| {
        w.position == 1 && w.holder.as_ref().and_then(|h| h.owner_id.as_deref()) == Some("second")
    })
    .await;
    second.release().await.unwrap();
    let mut third = within("the third's grant", waiters.remove(0))
        .await
        .unwrap()
        .unwrap();
    third.release().await.unwrap();
    // Rounds are at least a second apart: the third heard twice, a second or more apart.
    let heard = records[1].lock().unwrap().clone();
    assert_eq!(heard.len(), 2, "{heard:?}");
    assert!(
        heard[1].1 - heard[0].1 >= Duration::from_millis(900),
        "{heard:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_moving_queue_is_announced_at_most_once_a_second_per_waiter() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let target = "mem:///live/fast";
    let mut holder = client.new_lock(target, LockOptions::default());
    holder.acquire().await.unwrap();
    // Twenty waiters, each releasing as soon as it is served, ahead of the watched one.
    let mut ahead = Vec::new();
    let (positions_tx, mut positions) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..20 {
        let tx = positions_tx.clone();
        let mut lock = client.new_lock(
            target,
            LockOptions::default().on_queue_position(move |p| {
                let _ = tx.send(p);
            }),
        );
        ahead.push(tokio::spawn(async move {
            lock.acquire_timeout(DEADLINE).await?;
            lock.release().await
        }));
        within("a place", positions.recv()).await;
    }
    let started = Instant::now();
    let (waiting, seen) = queued_at(&client, target, LockOptions::default(), 21).await;
    holder.release().await.unwrap();
    let mut watched = within("the watched grant", waiting).await.unwrap().unwrap();
    let took = started.elapsed();
    watched.release().await.unwrap();
    for served in ahead {
        served.await.unwrap().unwrap();
    }
    // Twenty moves; one announcement on joining and at most one a second after it.
    let heard = seen.lock().unwrap().len();
    let allowed = 2 + took.as_secs() as usize;
    assert!(
        heard <= allowed,
        "{heard} announcements in {took:?} (at most {allowed})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_protocol_8_never_hears_the_repeated_announcement() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let target = "mem:///live/old";
    let mut holder = client.new_lock(target, LockOptions::default());
    holder.acquire().await.unwrap();
    // In this order: the newer waiter queues behind the first.
    let (ahead_wait, _) = queued_at(&client, target, LockOptions::default(), 1).await;
    let (newer_wait, seen) = queued_at(&client, target, LockOptions::default(), 2).await;

    // An old client queues third, by hand.
    let mut old = handshaken_at(daemon.socket(), 8).await;
    let acquire = ClientFrame::Request {
        id: 7,
        request: Request::Acquire(AcquireRequest {
            target: target.into(),
            ttl: None,
            owner_id: None,
            wait: WaitMode::Wait { timeout: None },
            ask_on_stale: false,
            detached: false,
        }),
    };
    old.write_all(&codec::encode_frame(&acquire).unwrap())
        .await
        .unwrap();
    let first: ServerFrame = read_frame(&mut old, "the old client's place").await;
    assert!(
        matches!(
            first,
            ServerFrame::Event {
                event: Event::QueuePosition { position: 3 } | Event::Queued { position: 3, .. },
                ..
            }
        ),
        "{first:?}"
    );
    // The queue moves twice; the newer client hears each move, the old one nothing.
    holder.release().await.unwrap();
    let mut ahead = within("the first waiter's grant", ahead_wait)
        .await
        .unwrap()
        .unwrap();
    announced(&seen, |w| w.position == 1).await;
    ahead.release().await.unwrap();
    let mut newer = within("the newer waiter's grant", newer_wait)
        .await
        .unwrap()
        .unwrap();
    newer.release().await.unwrap();
    let next: ServerFrame = read_frame(&mut old, "the old client's grant").await;
    assert!(
        matches!(
            next,
            ServerFrame::Response {
                id: 7,
                result: Ok(Response::Granted(_) | Response::GrantedResumable { .. })
            }
        ),
        "an old client's next frame is its grant, with no announcement before it: {next:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_shows_the_oldest_wait_and_the_holder_seen_from_elsewhere() {
    let daemon = Daemon::start();
    // Held by a Go peer on another host, with no TTL: it never goes stale.
    let target = daemon.file_target("elsewhere.csv");
    std::fs::write(format!("{target}.lock"), fixture("go-lockfile-no-ttl.lock")).unwrap();
    let go_holder: serde_json::Value =
        serde_json::from_slice(&fixture("go-lockfile-no-ttl.lock")).unwrap();
    let client = daemon.client().await;
    let (options, seen) = recording(LockOptions::default());
    let mut waiter = client.new_lock(target.as_str(), options);
    let waiting = tokio::spawn(async move { waiter.acquire_timeout(DEADLINE).await });
    announced(&seen, |w| w.holder.is_some()).await;
    let told = seen.lock().unwrap().last().unwrap().0.clone();
    let told_holder = told.holder.unwrap();
    assert_eq!(
        told_holder.hostname,
        go_holder["hostname"].as_str().unwrap()
    );
    assert_eq!(told_holder.pid, go_holder["pid"].as_i64().unwrap());

    let out = vfslockctl(&daemon, None, &["--json", "list"]);
    assert!(out.status.success(), "{out:?}");
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entry = &listed[0];
    assert_eq!(entry["target"], format!("file://{target}"), "{listed}");
    assert_eq!(entry["waiters"], 1);
    assert!(
        entry["oldest_wait_seconds"].as_f64().unwrap() > 0.0,
        "{entry}"
    );
    let foreign = &entry["foreign_holder"];
    assert_eq!(foreign["hostname"], go_holder["hostname"], "{entry}");
    assert_eq!(foreign["pid"], go_holder["pid"], "{entry}");
    assert!(foreign["seen_for_seconds"].as_f64().unwrap() >= 0.0);
    let out = vfslockctl(&daemon, None, &["list"]);
    let table = String::from_utf8(out.stdout).unwrap();
    let header = table.lines().next().unwrap();
    assert!(
        header.contains("WAITED") && header.contains("ELSEWHERE"),
        "{table}"
    );
    assert!(
        table.contains(&format!(
            "pid {} on {}",
            go_holder["pid"],
            go_holder["hostname"].as_str().unwrap()
        )),
        "{table}"
    );
    waiting.abort();
}

/// A pseudo-terminal 250 columns wide: the controlling side, and the terminal a child writes
/// to.
fn pty() -> (std::fs::File, OwnedFd) {
    let (mut controller, mut terminal) = (0, 0);
    let size = libc::winsize {
        ws_row: 24,
        ws_col: 250,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two descriptors we then own; no name or termios asked.
    let rc = unsafe {
        libc::openpty(
            &mut controller,
            &mut terminal,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both were just opened for us and nothing else owns them.
    unsafe {
        (
            std::fs::File::from_raw_fd(controller),
            OwnedFd::from_raw_fd(terminal),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_w_on_a_terminal_shows_where_it_waits_and_clears_the_line() {
    let daemon = Daemon::start_with(TEST_CONFIG);
    let client = daemon.client().await;
    let target = daemon.file_target("terminal.csv");
    let mut holder = client.new_lock(target.as_str(), LockOptions::default().owner_id("nightly"));
    holder.acquire().await.unwrap();

    let (controller, terminal) = pty();
    let mut run = std::process::Command::new(bin("vfslockctl"))
        .arg("--socket")
        .arg(daemon.socket())
        .args(["run", "-w", "30s", &target, "--", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(terminal))
        .spawn()
        .unwrap();
    // What the terminal shows, read as it comes.
    let (shown_tx, mut shown) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        let mut controller = controller;
        let mut buffer = [0u8; 4096];
        // Ends with EIO once the child has closed the terminal.
        while let Ok(n @ 1..) = controller.read(&mut buffer) {
            let _ = shown_tx.send(String::from_utf8_lossy(&buffer[..n]).into_owned());
        }
    });
    let mut screen = String::new();
    while !screen.contains("held by pid") {
        let more = within("the status line", shown.recv())
            .await
            .unwrap_or_else(|| panic!("the terminal closed; it showed {screen:?}"));
        screen.push_str(&more);
    }
    assert!(
        screen.contains(&format!("waiting for {target}: next in line here")),
        "{screen:?}"
    );
    assert!(screen.contains("(owner nightly)"), "{screen:?}");
    holder.release().await.unwrap();
    let status = tokio::task::block_in_place(|| vfslock_tests::wait_with_deadline(&mut run));
    assert!(status.success(), "{status}");
    while let Ok(Some(more)) = tokio::time::timeout(Duration::from_millis(200), shown.recv()).await
    {
        screen.push_str(&more);
    }
    assert!(
        screen.trim_end().ends_with("\x1b[2K"),
        "the line is cleared once the lock is taken: {screen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_w_without_a_terminal_prints_nothing_while_it_waits() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let target = daemon.file_target("piped.csv");
    let mut holder = client.new_lock(target.as_str(), LockOptions::default());
    holder.acquire().await.unwrap();
    // Another waiter shows when the piped run has queued: it is second, behind it.
    let mut run = std::process::Command::new(bin("vfslockctl"))
        .arg("--socket")
        .arg(daemon.socket())
        .args(["run", "-w", "30s", &target, "--", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        let listed = client.list_queues().await.unwrap();
        if listed.iter().any(|l| l.listed.entry.waiters == 1) {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "vfslockctl never queued");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Past the first round of announcements.
    let (second_wait, _) = queued_at(&client, &target, LockOptions::default(), 2).await;
    holder.release().await.unwrap();
    let out = tokio::task::block_in_place(|| {
        vfslock_tests::wait_with_deadline(&mut run);
        let mut stderr = String::new();
        run.stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        stderr
    });
    assert_eq!(out, "", "nothing on a stderr that is not a terminal");
    let mut second = within("the second grant", second_wait)
        .await
        .unwrap()
        .unwrap();
    second.release().await.unwrap();
}

/// A daemon with known contention: `busy` held by the test with three waiters, `calm` held
/// with one, `free` only held. Returns the daemon, the holdings and the waiting tasks.
async fn contention() -> (
    Daemon,
    Vec<vfslock::Lock>,
    Vec<JoinHandle<Result<vfslock::Lock, vfslock::Error>>>,
) {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let mut held = Vec::new();
    let mut waiting = Vec::new();
    for (name, waiters) in [("busy", 3), ("calm", 1), ("free", 0)] {
        let target = format!("mem:///top/{name}");
        let mut lock = client.new_lock(target.as_str(), LockOptions::default().owner_id(name));
        lock.acquire().await.unwrap();
        held.push(lock);
        for place in 1..=waiters {
            let options = LockOptions::default();
            waiting.push(queued_at(&client, &target, options, place).await.0);
        }
    }
    (daemon, held, waiting)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_once_and_json_put_the_most_contended_target_first() {
    let (daemon, held, waiting) = contention().await;
    let pid = std::process::id();

    let out = vfslockctl(&daemon, None, &["top", "--once"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("TARGET"))
        .skip(1)
        .collect();
    assert_eq!(rows.len(), 3, "{text}");
    let first: Vec<&str> = rows[0].split_whitespace().collect();
    assert_eq!(&first[..2], ["mem:///top/busy", "3"], "{text}");
    assert!(rows[0].contains(&format!("pid {pid} on")), "{text}");
    assert!(rows[0].contains("(owner busy)"), "{text}");
    assert!(rows[1].starts_with("mem:///top/calm "), "{text}");
    assert!(rows[2].starts_with("mem:///top/free "), "{text}");
    assert!(
        text.lines().next().unwrap().contains("3 held, 4 waiting"),
        "{text}"
    );
    assert!(
        !text.contains('\x1b'),
        "no escape codes off a terminal: {text:?}"
    );

    let out = vfslockctl(&daemon, None, &["--json", "top"]);
    assert!(out.status.success(), "{out:?}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let busy = &doc["targets"][0];
    assert_eq!(busy["target"], "mem:///top/busy", "{doc}");
    assert_eq!(busy["waiters"], 3);
    assert!(busy["oldest_wait_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(busy["holder"]["pid"], pid);
    assert_eq!(busy["holder"]["owner_id"], "busy");
    assert_eq!(busy["holder"]["here"], true);
    assert_eq!(doc["targets"][1]["waiters"], 1, "{doc}");
    assert_eq!(doc["waiting"], 4);
    assert!(doc["acquisitions_per_second"].is_number(), "{doc}");
    assert!(
        doc["stores"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["store"] == "mem"),
        "{doc}"
    );
    for task in waiting {
        task.abort();
    }
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_on_a_terminal_draws_the_targets_and_quits_on_q() {
    use std::io::Write;
    let (daemon, held, waiting) = contention().await;
    let (controller, terminal) = pty();
    let mut top = std::process::Command::new(bin("vfslockctl"))
        .arg("--socket")
        .arg(daemon.socket())
        .arg("top")
        .stdin(Stdio::from(terminal.try_clone().unwrap()))
        .stdout(Stdio::from(terminal.try_clone().unwrap()))
        .stderr(Stdio::from(terminal))
        .spawn()
        .unwrap();
    let mut keyboard = controller.try_clone().unwrap();
    let (shown_tx, mut shown) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        let mut controller = controller;
        let mut buffer = [0u8; 8192];
        while let Ok(n @ 1..) = controller.read(&mut buffer) {
            let _ = shown_tx.send(String::from_utf8_lossy(&buffer[..n]).into_owned());
        }
    });
    let mut screen = String::new();
    let start = Instant::now();
    // The screen is drawn cell by cell, blanks skipped: look for words without spaces.
    while !(screen.contains("mem:///top/busy") && screen.contains("quits")) {
        assert!(
            start.elapsed() < DEADLINE,
            "the live view showed {screen:?}"
        );
        match tokio::time::timeout(Duration::from_millis(100), shown.recv()).await {
            Ok(Some(more)) => screen.push_str(&more),
            Ok(None) => panic!("the terminal closed; it showed {screen:?}"),
            Err(_) => {}
        }
    }
    keyboard.write_all(b"q").unwrap();
    let status = tokio::task::block_in_place(|| vfslock_tests::wait_with_deadline(&mut top));
    assert!(status.success(), "{status}: {screen:?}");
    for task in waiting {
        task.abort();
    }
    drop(held);
}

//! Events that tell an application its daemon restarted and what was resumed (issue 17, point
//! 4): `Client::events` and `blocking::Client::events` against a real `vfslockd` killed with
//! SIGKILL and started again on the same socket and state, and the one line per event that
//! `vfslockctl run` writes to stderr while its command runs on.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use vfslock::{ClientEvent, Events, Lock, LockOptions, LockRef};
use vfslock_tests::{within, Daemon, DEADLINE, TEST_CONFIG};

/// A daemon whose resume window is `window`.
fn daemon_with_window(window: &str) -> Daemon {
    Daemon::start_with(&TEST_CONFIG.replace(
        "[locks]\n",
        &format!("[locks]\nresume-window = \"{window}\"\n"),
    ))
}

/// The next event, failing the test when none comes in time.
async fn next_event(events: &mut Events) -> ClientEvent {
    within("the next client event", events.next())
        .await
        .expect("the client is alive")
}

/// How the events name a lock held by `lock` on the absolute path `path`.
fn lock_ref(lock: &Lock, path: &str) -> LockRef {
    LockRef {
        target: format!("file://{path}"),
        lock_id: lock.lock_id().expect("held").to_owned(),
    }
}

fn set_of(locks: &[LockRef]) -> BTreeSet<LockRef> {
    locks.iter().cloned().collect()
}

/// Two locks held through a daemon killed and restarted within the window: one `DaemonGone`
/// naming both while they wait, one `DaemonRestarted` naming both as resumed, and nothing
/// more; both stay held.
#[tokio::test(flavor = "multi_thread")]
async fn a_restart_within_the_window_is_announced_once_with_every_lock_resumed() {
    let mut daemon = daemon_with_window("5m");
    let client = daemon.client().await;
    let mut events = client.events();
    let (first_path, second_path) = (daemon.file_target("a.csv"), daemon.file_target("b.csv"));
    let mut first = client.new_lock(&first_path, LockOptions::default());
    let mut second = client.new_lock(&second_path, LockOptions::default());
    within("acquire", first.acquire()).await.expect("acquire");
    within("acquire", second.acquire()).await.expect("acquire");
    let both = BTreeSet::from([
        lock_ref(&first, &first_path),
        lock_ref(&second, &second_path),
    ]);

    daemon.kill();
    let gone_at = std::time::Instant::now();
    match next_event(&mut events).await {
        ClientEvent::DaemonGone { resuming, deadline } => {
            assert_eq!(set_of(&resuming), both);
            let deadline = deadline.expect("a deadline while locks wait");
            assert!(
                deadline > gone_at && deadline <= gone_at + Duration::from_secs(300),
                "within the 5m window: {:?}",
                deadline - gone_at
            );
        }
        other => panic!("expected DaemonGone, got {other:?}"),
    }
    daemon.restart();
    match next_event(&mut events).await {
        ClientEvent::DaemonRestarted { resumed, lost } => {
            assert_eq!(set_of(&resumed), both);
            assert_eq!(resumed.len(), 2, "each named once: {resumed:?}");
            assert!(lost.is_empty(), "{lost:?}");
        }
        other => panic!("expected DaemonRestarted, got {other:?}"),
    }
    assert!(first.is_held() && second.is_held());
    // A request on the resumed connection announces nothing more.
    within("ping", client.ping()).await.expect("ping");
    assert_eq!(events.try_next(), None);
    within("release", first.release()).await.expect("release");
    within("release", second.release()).await.expect("release");
}

/// The blocking API hears the same two events for its one lock.
#[tokio::test(flavor = "multi_thread")]
async fn the_blocking_api_hears_the_restart_and_the_resumed_lock() {
    let mut daemon = daemon_with_window("5m");
    let socket = daemon.socket().to_owned();
    let path = daemon.file_target("blocking.csv");
    let (held_tx, held_rx) = tokio::sync::oneshot::channel();
    let holder = tokio::task::spawn_blocking(move || {
        let client = vfslock::blocking::Client::connect(&socket).expect("connect");
        let mut events = client.events();
        let mut lock = client.new_lock(&path, LockOptions::default());
        lock.acquire().expect("blocking acquire");
        let held = LockRef {
            target: format!("file://{path}"),
            lock_id: lock.lock_id().expect("held").to_owned(),
        };
        held_tx.send(()).expect("tell the test");
        let gone = events.next_timeout(DEADLINE).expect("DaemonGone");
        let restarted = events.next().expect("DaemonRestarted");
        let more = events.next_timeout(Duration::from_millis(100));
        let still = lock.is_held();
        lock.release().expect("release");
        (held, gone, restarted, more, still)
    });
    within("the blocking lock", held_rx).await.expect("held");

    daemon.kill();
    daemon.restart();
    let (held, gone, restarted, more, still) = within("the blocking holder", holder)
        .await
        .expect("the blocking holder");
    assert!(
        matches!(&gone, ClientEvent::DaemonGone { resuming, deadline: Some(_) }
            if resuming == std::slice::from_ref(&held)),
        "{gone:?}"
    );
    assert_eq!(
        restarted,
        ClientEvent::DaemonRestarted {
            resumed: vec![held],
            lost: Vec::new(),
        }
    );
    assert_eq!(more, None, "one event each");
    assert!(still, "resumed, never lost");
}

/// A daemon that is not back within the window: the event names the lock as lost, as
/// `Lock::lost` does, and the restart that follows is announced at the client's next request
/// with nothing left to resume.
#[tokio::test(flavor = "multi_thread")]
async fn a_lock_not_resumed_in_time_is_named_lost() {
    let mut daemon = daemon_with_window("1s");
    let client = daemon.client().await;
    let mut events = client.events();
    let path = daemon.file_target("late.csv");
    let mut lock = client.new_lock(&path, LockOptions::default());
    within("acquire", lock.acquire()).await.expect("acquire");
    let held = lock_ref(&lock, &path);

    daemon.kill();
    assert!(matches!(
        next_event(&mut events).await,
        ClientEvent::DaemonGone { resuming, .. } if resuming == [held.clone()]
    ));
    let reason = within("the loss", lock.lost()).await;
    match next_event(&mut events).await {
        ClientEvent::NotRestartedInTime { lost } => {
            assert_eq!(lost.len(), 1, "{lost:?}");
            assert_eq!(lost[0].lock, held);
            assert_eq!(lost[0].reason, reason, "the reason Lock::lost gives");
            assert!(reason.contains("not resumed"), "{reason}");
        }
        other => panic!("expected NotRestartedInTime, got {other:?}"),
    }
    assert!(!lock.is_held());

    daemon.restart();
    // Nothing waits to be resumed, so the client does not dial by itself: its next request
    // reconnects, and that announces the restart.
    assert_eq!(events.try_next(), None);
    within("ping", client.ping()).await.expect("ping");
    assert_eq!(
        next_event(&mut events).await,
        ClientEvent::DaemonRestarted {
            resumed: Vec::new(),
            lost: Vec::new(),
        }
    );
    let released = within("release the lost lock", lock.release()).await;
    assert!(released.is_err_and(|e| e.is_lease_lost()));
}

/// A restarted daemon that kept one lock and not the other (`mem://` locks live in its
/// memory): one `DaemonRestarted` names the first resumed and the second lost with the
/// daemon's reason, which `Lock::lost` gives too.
#[tokio::test(flavor = "multi_thread")]
async fn a_lock_the_restarted_daemon_did_not_keep_is_named_lost() {
    let mut daemon = daemon_with_window("5m");
    let client = daemon.client().await;
    let mut events = client.events();
    let path = daemon.file_target("kept.csv");
    let mut kept = client.new_lock(&path, LockOptions::default());
    let mut memory = client.new_lock("mem:///events/memory", LockOptions::default());
    within("acquire", kept.acquire()).await.expect("acquire");
    within("acquire", memory.acquire()).await.expect("acquire");
    let kept_ref = lock_ref(&kept, &path);
    let memory_ref = LockRef {
        target: "mem:///events/memory".to_owned(),
        lock_id: memory.lock_id().expect("held").to_owned(),
    };

    daemon.kill();
    daemon.restart();
    assert!(matches!(
        next_event(&mut events).await,
        ClientEvent::DaemonGone { resuming, .. } if resuming.len() == 2
    ));
    match next_event(&mut events).await {
        ClientEvent::DaemonRestarted { resumed, lost } => {
            assert_eq!(resumed, [kept_ref]);
            assert_eq!(lost.len(), 1, "{lost:?}");
            assert_eq!(lost[0].lock, memory_ref);
            let reason = within("the loss", memory.lost()).await;
            assert_eq!(lost[0].reason, reason);
        }
        other => panic!("expected DaemonRestarted, got {other:?}"),
    }
    assert!(kept.is_held());
    within("release", kept.release()).await.expect("release");
}

/// A client that held nothing hears that the daemon went away, and that it restarted when its
/// next request reconnects.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_holding_nothing_hears_the_restart_at_its_next_request() {
    let mut daemon = daemon_with_window("5m");
    let client = daemon.client().await;
    let mut events = client.events();
    within("ping", client.ping()).await.expect("ping");

    daemon.kill();
    assert_eq!(
        next_event(&mut events).await,
        ClientEvent::DaemonGone {
            resuming: Vec::new(),
            deadline: None,
        }
    );
    daemon.restart();
    within("ping the restarted daemon", client.ping())
        .await
        .expect("the next request reconnects");
    assert_eq!(
        next_event(&mut events).await,
        ClientEvent::DaemonRestarted {
            resumed: Vec::new(),
            lost: Vec::new(),
        }
    );
    within("ping", client.ping()).await.expect("ping");
    assert_eq!(events.try_next(), None, "one restart, one event");
}

/// `vfslockctl run` across two crashes with restarts within the window: its command is not
/// signalled and exits 0, and stderr has exactly one "went away" and one "restarted ... was
/// resumed" line per restart.
#[tokio::test(flavor = "multi_thread")]
async fn vfslockctl_run_logs_each_restart_once_and_the_command_runs_on() {
    use tokio::process::Command;
    let mut daemon = daemon_with_window("5m");
    let target = daemon.file_target("run.csv");
    let go = daemon.data_dir().join("go");
    let started = daemon.data_dir().join("started");
    let mut run = Command::new(vfslock_tests::bin("vfslockctl"))
        .arg("--socket")
        .arg(daemon.socket())
        .args(["run", &target, "--", "sh", "-c"])
        // A command killed by a signal cannot exit 0.
        .arg(format!(
            "touch '{}'; while [ ! -e '{}' ]; do sleep 0.05; done; exit 0",
            started.display(),
            go.display()
        ))
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start vfslockctl run");
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let mut stderr = BufReader::new(run.stderr.take().expect("stderr")).lines();
    let reader = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Ok(Some(line)) = stderr.next_line().await {
            let _ = lines_tx.send(line.clone());
            all.push(line);
        }
        all
    });
    let lock_file = format!("{target}.lock");
    // The command runs once vfslockctl has its grant. (The lock file exists a moment before
    // that: a crash in between fails the acquire, which is not what this test is about.)
    vfslock_tests::eventually("the command's start", || started.exists()).await;
    assert!(
        std::path::Path::new(&lock_file).exists(),
        "the command's lock"
    );

    for restart in 1..=2 {
        daemon.kill();
        daemon.restart();
        loop {
            let line = within(&format!("restart {restart} on stderr"), lines.recv())
                .await
                .expect("vfslockctl run is still running");
            if line.contains("vfslockd restarted") {
                break;
            }
        }
    }
    std::fs::write(&go, "").expect("tell the command to finish");
    let exit = within("the command", run.wait()).await.expect("wait");
    let stderr = within("stderr", reader).await.expect("the stderr reader");
    let text = stderr.join("\n");
    assert_eq!(exit.code(), Some(0), "the command ran on: {text}");
    let count = |needle: &str| stderr.iter().filter(|line| line.contains(needle)).count();
    assert_eq!(count("vfslockd went away"), 2, "{text}");
    assert_eq!(count("vfslockd restarted"), 2, "{text}");
    assert_eq!(
        count(&format!(
            "vfslockd restarted; the lock on {target} was resumed (lock id "
        )),
        2,
        "{text}"
    );
    assert_eq!(count("lost"), 0, "{text}");
    assert_eq!(stderr.len(), 4, "nothing else: {text}");
    assert!(!std::path::Path::new(&lock_file).exists(), "released");
}

/// The planned restart (`systemctl reload`: SIGUSR2, the same process re-executing its
/// binary) is announced like a crash: the daemon went away, and restarted with the lock
/// resumed.
#[tokio::test(flavor = "multi_thread")]
async fn a_planned_restart_is_announced_with_the_lock_resumed() {
    let daemon =
        Daemon::start_copy(&TEST_CONFIG.replace("[locks]\n", "[locks]\nresume-window = \"5m\"\n"));
    let client = daemon.client().await;
    let mut events = client.events();
    let path = daemon.file_target("planned.csv");
    let mut lock = client.new_lock(&path, LockOptions::default());
    within("acquire", lock.acquire()).await.expect("acquire");
    let held = lock_ref(&lock, &path);

    daemon.replace_binary();
    daemon.signal(libc::SIGUSR2);
    assert!(matches!(
        next_event(&mut events).await,
        ClientEvent::DaemonGone { resuming, .. } if resuming == [held.clone()]
    ));
    assert_eq!(
        next_event(&mut events).await,
        ClientEvent::DaemonRestarted {
            resumed: vec![held],
            lost: Vec::new(),
        }
    );
    assert!(lock.is_held());
    within("release", lock.release()).await.expect("release");
}

/// Something that accepts connections on the socket but never answers (a frozen daemon): the
/// client gives the lock up at its deadline all the same, says so in one `NotRestartedInTime`,
/// and announces the restart once a real daemon answers its next request.
#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_that_never_answers_does_not_hold_the_loss_up() {
    let mut daemon = daemon_with_window("1s");
    let client = daemon.client().await;
    let mut events = client.events();
    let path = daemon.file_target("frozen.csv");
    let mut lock = client.new_lock(&path, LockOptions::default());
    within("acquire", lock.acquire()).await.expect("acquire");
    let held = lock_ref(&lock, &path);

    daemon.kill();
    std::fs::remove_file(daemon.socket()).expect("the killed daemon's socket");
    let mute = tokio::net::UnixListener::bind(daemon.socket()).expect("bind the mute socket");
    let accepted = tokio::spawn(async move {
        let mut silent = Vec::new();
        while let Ok((stream, _)) = mute.accept().await {
            silent.push(stream);
        }
    });
    assert!(matches!(
        next_event(&mut events).await,
        ClientEvent::DaemonGone { resuming, .. } if resuming == [held.clone()]
    ));
    match next_event(&mut events).await {
        ClientEvent::NotRestartedInTime { lost } => {
            assert_eq!(lost.len(), 1, "{lost:?}");
            assert_eq!(lost[0].lock, held);
        }
        other => panic!("expected NotRestartedInTime, got {other:?}"),
    }
    let reason = within("the loss", lock.lost()).await;
    assert!(reason.contains("not resumed"), "{reason}");

    accepted.abort();
    let _ = accepted.await;
    std::fs::remove_file(daemon.socket()).expect("the mute socket");
    daemon.restart();
    within("ping the restarted daemon", client.ping())
        .await
        .expect("the next request reconnects");
    assert_eq!(
        next_event(&mut events).await,
        ClientEvent::DaemonRestarted {
            resumed: Vec::new(),
            lost: Vec::new(),
        }
    );
}

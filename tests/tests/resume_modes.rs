//! Holdings that outlive the daemon (issue 17) in every mode, and on `mem://`: shared locks and
//! semaphores are kept share by share across a crash (`kill -9`) and the planned restart
//! (SIGUSR2), each share handed back to its own holder with its lock id and token; `mem://`
//! locks, and detached leases, survive the planned restart (not a crash: `resume.rs`); a share
//! nobody resumes is removed when the resume window closes, and a waiter gets the lock then.

use std::time::{Duration, Instant};

use tokio::net::UnixStream;
use vfslock::{Client, ErrorKind, Lock, LockMode, LockOptions};
use vfslock_proto::{AcquireRequest, Request, Response, ServerFrame, WaitMode};
use vfslock_tests::{eventually, within, Daemon, TEST_CONFIG};

#[path = "support/wire.rs"]
mod wire;
use wire::{ask_as, handshaken};

fn config_with_window(window: &str) -> String {
    TEST_CONFIG.replace(
        "[locks]\n",
        &format!("[locks]\nresume-window = \"{window}\"\n"),
    )
}

/// A lock as its holder knows it: the lock, and its id and token when granted.
struct Held {
    lock: Lock,
    lock_id: String,
    token: Option<u64>,
}

async fn hold(client: &Client, target: &str, options: LockOptions) -> Held {
    let mut lock = client.new_lock(target, options);
    within("acquire", lock.acquire()).await.expect("acquire");
    Held {
        lock_id: lock.lock_id().expect("held").to_owned(),
        token: lock.token(),
        lock,
    }
}

/// Two shared holders of one target and three holders of a semaphore of three, each through a
/// client of its own.
async fn shared_and_slots(daemon: &Daemon, shared: &str, slots: &str) -> (Vec<Client>, Vec<Held>) {
    let mut clients = Vec::new();
    let mut held = Vec::new();
    for (target, options) in [
        (shared, LockOptions::default().shared()),
        (shared, LockOptions::default().shared()),
        (slots, LockOptions::default().slots(3)),
        (slots, LockOptions::default().slots(3)),
        (slots, LockOptions::default().slots(3)),
    ] {
        let client = daemon.client().await;
        held.push(hold(&client, target, options).await);
        clients.push(client);
    }
    (clients, held)
}

/// The holders' lock ids and tokens as the daemon describes the target (its entry shown as its
/// local holders), sorted.
async fn holders(client: &Client, target: &str) -> Vec<(Option<String>, Option<u64>, u32)> {
    let view = within("describe", client.describe(target))
        .await
        .expect("describe")
        .expect("locked");
    let mut holders: Vec<_> = view
        .holders
        .into_iter()
        .map(|h| (h.lock_id, h.token, h.count))
        .collect();
    holders.sort();
    holders
}

/// Every holding is still held with the lock id and token it was granted with.
fn still_held(held: &[Held]) {
    for held in held {
        assert!(held.lock.is_held(), "{} was never lost", held.lock_id);
        assert_eq!(held.lock.lock_id(), Some(held.lock_id.as_str()));
        assert_eq!(held.lock.token(), held.token, "the same token");
    }
}

async fn refused_now(client: &Client, target: &str, options: LockOptions) -> ErrorKind {
    let mut lock = client.new_lock(target, options);
    within("a try", lock.acquire())
        .await
        .expect_err("nobody else gets a kept lock")
        .kind()
}

#[tokio::test(flavor = "multi_thread")]
async fn shared_locks_and_semaphores_are_resumed_after_a_crash() {
    let mut daemon = Daemon::start_with(&config_with_window("5m"));
    let shared = daemon.file_target("shared.csv");
    let slots = daemon.file_target("slots.csv");
    let (clients, held) = shared_and_slots(&daemon, &shared, &slots).await;
    let before = [
        holders(&clients[0], &shared).await,
        holders(&clients[0], &slots).await,
    ];

    daemon.kill();
    daemon.restart();
    eventually("every share resumed by its holder", || {
        daemon.log().matches("holding resumed").count() == 5
    })
    .await;
    still_held(&held);
    let observer = daemon.client().await;
    assert_eq!(holders(&observer, &shared).await, before[0]);
    assert_eq!(holders(&observer, &slots).await, before[1]);
    // All three slots are back with their holders, and a writer cannot get in beside readers.
    assert_eq!(
        refused_now(&observer, &slots, LockOptions::default().slots(3)).await,
        ErrorKind::AlreadyHeld
    );
    assert_eq!(
        refused_now(&observer, &shared, LockOptions::default()).await,
        ErrorKind::AlreadyHeld
    );

    for mut held in held {
        within("release", held.lock.release())
            .await
            .expect("released as usual");
    }
    let mut writer = observer.new_lock(&shared, LockOptions::default());
    within("the writer", writer.acquire())
        .await
        .expect("free once every share let go");
    drop(clients);
}

/// `mem://` locks in every mode, detached leases on `file://` and `mem://`, shared locks and
/// semaphores on `file://`: a planned restart after an upgrade keeps them all, with their lock
/// ids and tokens, and nobody hears of a loss.
#[tokio::test(flavor = "multi_thread")]
async fn a_planned_restart_keeps_shared_and_mem_locks_and_detached_leases() {
    let daemon = Daemon::start_copy(&config_with_window("5m"));
    let shared = daemon.file_target("planned-shared.csv");
    let slots = daemon.file_target("planned-slots.csv");
    let (clients, mut held) = shared_and_slots(&daemon, &shared, &slots).await;
    let client = daemon.client().await;
    let first = client.status().await.expect("status").instance_id;
    let mem_exclusive = "mem:///planned/exclusive";
    let mem_shared = "mem:///planned/shared";
    held.push(hold(&client, mem_exclusive, LockOptions::default()).await);
    held.push(hold(&client, mem_shared, LockOptions::default().shared()).await);
    held.push(hold(&clients[0], mem_shared, LockOptions::default().shared()).await);
    let file_detached = daemon.file_target("planned-detached.csv");
    let ttl = Duration::from_secs(300);
    let detached = [
        within(
            "detached",
            client.acquire_detached(&file_detached, ttl, Some("job".into()), None),
        )
        .await
        .expect("detached lease"),
        within(
            "detached",
            client.acquire_detached("mem:///planned/detached", ttl, Some("job".into()), None),
        )
        .await
        .expect("detached lease"),
    ];
    let targets = [
        shared.as_str(),
        slots.as_str(),
        mem_exclusive,
        mem_shared,
        file_detached.as_str(),
        "mem:///planned/detached",
    ];
    let mut before = Vec::new();
    for target in targets {
        before.push(holders(&client, target).await);
    }
    let metadata = within("metadata", client.metadata(mem_exclusive))
        .await
        .expect("metadata")
        .expect("locked");

    daemon.replace_binary();
    let pid = daemon.pid();
    daemon.signal(libc::SIGUSR2);
    eventually("every holding resumed by the new daemon", || {
        daemon.log().matches("holding resumed").count() == 8
    })
    .await;
    let status = within("status from the new daemon", client.status())
        .await
        .expect("status");
    assert_ne!(status.instance_id, first, "a new daemon answers");
    assert_eq!(daemon.pid(), pid, "the same process");
    still_held(&held);
    for (target, before) in targets.iter().zip(&before) {
        assert_eq!(&holders(&client, target).await, before, "{target}");
    }
    let after = within("metadata", client.metadata(mem_exclusive))
        .await
        .expect("metadata")
        .expect("still locked");
    assert_eq!(
        (after.lock_id, after.token),
        (metadata.lock_id, metadata.token)
    );
    let log = daemon.log();
    assert!(
        !log.contains("lease lost") && !log.contains("not kept"),
        "{log}"
    );
    assert!(
        log.contains("handed the mem:// store to the next image")
            && log.contains("loaded the mem:// store the previous image handed over"),
        "{log}"
    );
    let files = walk(daemon.dir());
    assert!(
        files
            .iter()
            .any(|p| p.to_string_lossy().contains("journal-")),
        "the state directory is the daemon's: {files:?}"
    );
    let left_behind: Vec<_> = files
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("memory"))
        .collect();
    assert!(
        left_behind.is_empty(),
        "the copy is removed once loaded: {left_behind:?}"
    );

    // Held: a second client is refused each of them.
    let other = daemon.client().await;
    assert_eq!(
        refused_now(&other, mem_exclusive, LockOptions::default()).await,
        ErrorKind::AlreadyHeld
    );
    assert_eq!(
        refused_now(&other, mem_shared, LockOptions::default()).await,
        ErrorKind::AlreadyHeld
    );
    assert_eq!(
        refused_now(&other, "mem:///planned/detached", LockOptions::default()).await,
        ErrorKind::AlreadyHeld
    );
    // The detached leases are still theirs to release.
    for (target, grant) in [&file_detached, "mem:///planned/detached"]
        .iter()
        .zip(&detached)
    {
        assert!(within(
            "release detached",
            client.release_detached(target, &grant.lock_id)
        )
        .await
        .expect("release detached"));
    }

    // Waiters get them after release.
    let mut waiters = Vec::new();
    for target in [mem_exclusive, mem_shared] {
        let mut waiter = other.new_lock(target, LockOptions::default());
        waiters.push(tokio::spawn(async move {
            waiter
                .acquire_timeout(Duration::from_secs(30))
                .await
                .map(|()| waiter)
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for mut held in held {
        within("release", held.lock.release())
            .await
            .expect("released as usual");
    }
    for waiter in waiters {
        let waiter = within("a waiter", waiter).await.expect("join");
        assert!(waiter.expect("granted after the release").is_held());
    }
    drop(clients);
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// A raw connection's grant in `mode`: the connection then never resumes it.
async fn hold_raw(stream: &mut UnixStream, id: u64, target: &str, mode: LockMode) -> String {
    let request = Request::AcquireIn {
        request: AcquireRequest {
            target: target.to_owned(),
            ttl: Some(Duration::from_secs(30)),
            owner_id: Some("never-resumes".into()),
            wait: WaitMode::Try,
            ask_on_stale: false,
            detached: false,
        },
        mode,
    };
    match ask_as(stream, id, request).await {
        ServerFrame::Response {
            result: Ok(Response::GrantedResumable { grant, .. }),
            ..
        } => grant.lock_id,
        other => panic!("expected a resumable grant of {target}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unresumed_shares_are_removed_when_the_window_closes_and_waiters_get_the_lock() {
    let window = Duration::from_secs(3);
    let mut daemon = Daemon::start_with(&config_with_window("3s"));
    let shared = daemon.file_target("window-shared.csv");
    let slots = daemon.file_target("window-slots.csv");
    let client = daemon.client().await;
    // One share of each resumes (the library), the other never does (a raw connection).
    let mut reader = hold(&client, &shared, LockOptions::default().shared()).await;
    let mut slot = hold(&client, &slots, LockOptions::default().slots(2)).await;
    let mut raw = handshaken(daemon.socket()).await;
    let raw_reader = hold_raw(&mut raw, 1, &shared, LockMode::Shared).await;
    let raw_slot = hold_raw(&mut raw, 2, &slots, LockMode::Slots(2)).await;

    daemon.kill();
    drop(raw);
    daemon.restart();
    let started = Instant::now();
    eventually("the library's shares resumed", || {
        daemon.log().matches("holding resumed").count() == 2
    })
    .await;
    assert!(reader.lock.is_held() && slot.lock.is_held());
    assert_eq!(reader.lock.lock_id(), Some(reader.lock_id.as_str()));
    assert_eq!(slot.lock.lock_id(), Some(slot.lock_id.as_str()));

    // A second slot holder and a writer wait: the unresumed shares are kept until the window
    // closes, then removed, and the waiters get what they asked for.
    let other = daemon.client().await;
    let mut second = other.new_lock(&slots, LockOptions::default().slots(2));
    let second = tokio::spawn(async move {
        second
            .acquire_timeout(Duration::from_secs(30))
            .await
            .map(|()| (second, Instant::now()))
    });
    let view = within("describe", client.describe(&slots))
        .await
        .expect("describe")
        .expect("locked");
    assert!(
        view.holders
            .iter()
            .any(|h| h.lock_id.as_deref() == Some(raw_slot.as_str())),
        "the unresumed share is kept during the window: {view:?}"
    );
    let (second, granted_at) = within("the second slot", second)
        .await
        .expect("join")
        .expect("granted once the window closed");
    assert!(
        granted_at.duration_since(started) + Duration::from_millis(500) >= window,
        "not before the window closed"
    );
    assert!(second.is_held() && slot.lock.is_held());
    let view = within("describe", client.describe(&slots))
        .await
        .expect("describe")
        .expect("locked");
    assert!(
        !view
            .holders
            .iter()
            .any(|h| h.lock_id.as_deref() == Some(raw_slot.as_str())),
        "the unresumed share is gone: {view:?}"
    );

    let mut writer = other.new_lock(&shared, LockOptions::default());
    let writer = tokio::spawn(async move {
        writer
            .acquire_timeout(Duration::from_secs(30))
            .await
            .map(|()| writer)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let view = within("describe", client.describe(&shared))
        .await
        .expect("describe")
        .expect("locked");
    assert!(
        !view
            .holders
            .iter()
            .any(|h| h.lock_id.as_deref() == Some(raw_reader.as_str())),
        "the unresumed reader is gone: {view:?}"
    );
    within("release the reader", reader.lock.release())
        .await
        .expect("released");
    let writer = within("the writer", writer).await.expect("join");
    assert!(writer.expect("granted").is_held());
    within("release the slot", slot.lock.release())
        .await
        .expect("released");
}

/// A share kept by a restarted daemon that crashes again within the window is kept again, and
/// its session takes it back from the third run, by the lock id its grant named.
#[tokio::test(flavor = "multi_thread")]
async fn a_share_is_kept_across_a_second_crash_within_the_window() {
    let mut daemon = Daemon::start_with(&config_with_window("5m"));
    let slots = daemon.file_target("twice.csv");
    let mut raw = handshaken(daemon.socket()).await;
    let request = Request::AcquireIn {
        request: AcquireRequest {
            target: slots.clone(),
            ttl: Some(Duration::from_secs(30)),
            owner_id: None,
            wait: WaitMode::Try,
            ask_on_stale: false,
            detached: false,
        },
        mode: LockMode::Slots(2),
    };
    let mut shares = Vec::new();
    for id in [1, 2] {
        match ask_as(&mut raw, id, request.clone()).await {
            ServerFrame::Response {
                result: Ok(Response::GrantedResumable { grant, resume }),
                ..
            } => shares.push((grant, resume)),
            other => panic!("expected a resumable grant, got {other:?}"),
        }
    }
    daemon.kill();
    drop(raw);
    daemon.restart();
    daemon.kill();
    daemon.restart();
    let mut resumer = handshaken(daemon.socket()).await;
    for (id, (grant, resume)) in (10..).zip(&shares) {
        let answer = ask_as(
            &mut resumer,
            id,
            Request::Resume {
                target: grant.target.clone(),
                lock_id: grant.lock_id.clone(),
                session: resume.session.clone(),
                secret: resume.secret.clone(),
            },
        )
        .await;
        match answer {
            ServerFrame::Response {
                result: Ok(Response::GrantedResumable { grant: back, .. }),
                ..
            } => {
                assert_eq!(back.lock_id, grant.lock_id);
                assert_eq!(back.token, grant.token);
            }
            other => panic!("expected the share back, got {other:?}"),
        }
    }
    let client = daemon.client().await;
    assert_eq!(
        refused_now(&client, &slots, LockOptions::default().slots(2)).await,
        ErrorKind::AlreadyHeld
    );
}

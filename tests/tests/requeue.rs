//! Waiters that outlive the daemon (issue 17): an acquire that waits when the daemon restarts
//! keeps waiting at the restarted daemon with the rest of its timeout, and the waiters that
//! ask again keep their first-come order among themselves, ahead of every newcomer, whichever
//! reconnects first.

use std::time::Duration;

use tokio::net::UnixStream;
use vfslock::LockOptions;
use vfslock_proto::{
    AcquireRequest, ClientFrame, Event, LockMode, Request, RequestId, Response, Secret,
    ServerFrame, WaitMode, WaitPlace,
};
use vfslock_tests::{within, Daemon, TEST_CONFIG};

#[path = "support/wire.rs"]
mod wire;
use wire::{handshaken, read_frame};

fn config_with_window(window: &str) -> String {
    TEST_CONFIG.replace(
        "[locks]\n",
        &format!("[locks]\nresume-window = \"{window}\"\n"),
    )
}

fn wait_for(target: &str) -> AcquireRequest {
    AcquireRequest {
        target: target.to_owned(),
        ttl: Some(Duration::from_secs(30)),
        owner_id: None,
        wait: WaitMode::Wait {
            timeout: Some(Duration::from_secs(120)),
        },
        ask_on_stale: false,
        detached: false,
    }
}

async fn send(stream: &mut UnixStream, id: RequestId, request: Request) {
    use tokio::io::AsyncWriteExt;
    let frame =
        vfslock_proto::codec::encode_frame(&ClientFrame::Request { id, request }).expect("encode");
    stream.write_all(&frame).await.expect("send");
}

/// The next frame that is not an announcement of where a waiter stands (`Event::Waiting`,
/// protocol 9, which comes as the queue moves).
async fn next_but_announcements(stream: &mut UnixStream, what: &str) -> ServerFrame {
    loop {
        match read_frame::<ServerFrame>(stream, what).await {
            ServerFrame::Event {
                event: Event::Waiting { .. },
                ..
            } => continue,
            frame => return frame,
        }
    }
}

/// The next frame but announcements must be `Event::Queued`: its position and place.
async fn queued(stream: &mut UnixStream, what: &str) -> (u32, WaitPlace) {
    match next_but_announcements(stream, what).await {
        ServerFrame::Event {
            event:
                Event::Queued {
                    position,
                    ordinal,
                    resume,
                },
            ..
        } => (
            position,
            WaitPlace {
                ordinal,
                session: resume.session,
                secret: resume.secret,
            },
        ),
        other => panic!("{what}: expected a Queued event, got {other:?}"),
    }
}

/// The next frame but announcements of where a waiter stands (protocol 9) must be a grant;
/// its lock id.
async fn granted(stream: &mut UnixStream, what: &str) -> String {
    match next_but_announcements(stream, what).await {
        ServerFrame::Response {
            result: Ok(Response::GrantedResumable { grant, .. }),
            ..
        } => grant.lock_id,
        other => panic!("{what}: expected a grant, got {other:?}"),
    }
}

fn requeue(target: &str, place: WaitPlace) -> Request {
    Request::Requeue {
        request: wait_for(target),
        mode: LockMode::Exclusive,
        max_hold: None,
        place,
    }
}

/// Three waiters queued A, B, C ask again after `kill -9` in the order C, B, A, with a
/// newcomer D between C and B, and the holder (a library client, which resumes its lock by
/// itself) lets go before A is back: the queue is A, B, C, D all the same, and they are served
/// in that order. A place asked for with a wrong secret is refused.
#[tokio::test(flavor = "multi_thread")]
async fn waiters_keep_their_first_come_order_across_a_crash() {
    let mut daemon = Daemon::start_with(&config_with_window("5m"));
    let target = daemon.file_target("queue.csv");
    let client = daemon.client().await;
    let mut holder = client.new_lock(&target, LockOptions::default());
    within("the holder", holder.acquire()).await.expect("held");

    let mut places = Vec::new();
    // Kept open until the daemon dies, as a waiting client's connection is.
    let mut first_connections = Vec::new();
    for (n, name) in ["A", "B", "C"].into_iter().enumerate() {
        let mut waiter = handshaken(daemon.socket()).await;
        send(&mut waiter, 1, Request::Acquire(wait_for(&target))).await;
        let (position, place) = queued(&mut waiter, name).await;
        assert_eq!(position as usize, n + 1, "{name} queues behind the others");
        places.push(place);
        first_connections.push(waiter);
    }
    assert!(places[0].ordinal < places[1].ordinal && places[1].ordinal < places[2].ordinal);

    daemon.kill();
    drop(first_connections);
    daemon.restart();

    let mut again: Vec<Option<UnixStream>> = vec![None, None, None, None];
    // C first, with a wrong secret: refused, and its place stays.
    let mut c = handshaken(daemon.socket()).await;
    let mut forged = places[2].clone();
    forged.secret = Secret("0".repeat(64));
    send(&mut c, 1, requeue(&target, forged)).await;
    match read_frame::<ServerFrame>(&mut c, "a forged place").await {
        ServerFrame::Response { result: Err(e), .. } => {
            assert_eq!(e.kind, vfslock_proto::ErrorKind::PermissionDenied, "{e:?}")
        }
        other => panic!("a forged place must be refused, got {other:?}"),
    }
    send(&mut c, 2, requeue(&target, places[2].clone())).await;
    assert_eq!(queued(&mut c, "C again").await.0, 1);
    again[2] = Some(c);
    // A newcomer queues behind C: after every waiter of the previous run.
    let mut d = handshaken(daemon.socket()).await;
    send(&mut d, 1, Request::Acquire(wait_for(&target))).await;
    let (position, fresh) = queued(&mut d, "D").await;
    assert_eq!(position, 2, "the newcomer queues behind C");
    assert!(fresh.ordinal > places[2].ordinal);
    again[3] = Some(d);
    let mut b = handshaken(daemon.socket()).await;
    send(&mut b, 1, requeue(&target, places[1].clone())).await;
    assert_eq!(queued(&mut b, "B again").await.0, 1, "B goes before C");
    again[1] = Some(b);

    // The holder lets go before A is back: A's place holds B, C and D back.
    vfslock_tests::eventually("the holder resumed", || {
        daemon.log().contains("holding resumed")
    })
    .await;
    assert!(holder.is_held(), "the holder never lost its lock");
    within("the holder's release", holder.release())
        .await
        .expect("released");
    let mut a = handshaken(daemon.socket()).await;
    send(&mut a, 1, requeue(&target, places[0].clone())).await;
    assert_eq!(queued(&mut a, "A again").await.0, 1, "A goes first");
    again[0] = Some(a);
    let figures = within("the restart figures", client.restarts())
        .await
        .expect("restarts");
    let last = figures.last.expect("a restart");
    assert_eq!(
        (last.requeued, last.resumed),
        (3, 1),
        "the forged place is not counted"
    );
    // Served in the first-come order: a waiter served out of turn would keep the lock, and
    // the next read below would never see its grant.
    for (n, name) in ["A", "B", "C", "D"].into_iter().enumerate() {
        let stream = again[n].as_mut().expect("connected");
        let lock_id = granted(stream, name).await;
        send(
            stream,
            10,
            Request::Release {
                target: target.clone(),
                lock_id,
            },
        )
        .await;
        match read_frame::<ServerFrame>(stream, "the release").await {
            ServerFrame::Response {
                id: 10,
                result: Ok(Response::Released { held: true }),
            } => {}
            other => panic!("{name} releases: {other:?}"),
        }
    }
}

/// A library waiter whose daemon restarts (the planned path, with the binary replaced) keeps
/// waiting without an error, with the rest of its timeout, and gets the lock when the holder
/// lets go at the new daemon.
#[tokio::test(flavor = "multi_thread")]
async fn a_library_waiter_is_served_after_a_planned_restart() {
    let daemon = Daemon::start_copy(&config_with_window("5m"));
    let target = daemon.file_target("waited.csv");
    let client = daemon.client().await;
    let mut holder = client.new_lock(&target, LockOptions::default());
    within("the holder", holder.acquire()).await.expect("held");

    let (queued_tx, mut queued_rx) = tokio::sync::mpsc::unbounded_channel();
    let waiter_client = daemon.client().await;
    let options = LockOptions::default().on_queue_position(move |position| {
        let _ = queued_tx.send(position);
    });
    let mut waiter = waiter_client.new_lock(&target, options);
    let waiting = tokio::spawn(async move {
        let result = waiter.acquire_timeout(Duration::from_secs(120)).await;
        (result, waiter)
    });
    assert_eq!(within("queued", queued_rx.recv()).await, Some(1));

    let first = client.status().await.expect("status").instance_id;
    daemon.replace_binary();
    daemon.signal(libc::SIGUSR2);
    // The waiter asks again at the new daemon and is told its place there.
    assert_eq!(within("queued again", queued_rx.recv()).await, Some(1));
    let status = within("status", client.status()).await.expect("status");
    assert_ne!(status.instance_id, first, "a new daemon answers");
    vfslock_tests::eventually("the holder resumed", || {
        daemon.log().contains("holding resumed")
    })
    .await;
    assert!(!waiting.is_finished(), "still waiting behind the holder");

    within("the holder's release", holder.release())
        .await
        .expect("released");
    let (result, waiter) = within("the waiter", waiting).await.expect("joined");
    result.expect("granted after the restart");
    assert!(waiter.is_held());
}

/// A waiter of the previous run that never asks again holds the waiters behind it back only
/// until the resume window closes; then its place is given up and the queue is served.
#[tokio::test(flavor = "multi_thread")]
async fn a_place_nobody_asks_for_is_given_up_when_the_window_closes() {
    let mut daemon = Daemon::start_with(&config_with_window("1s"));
    let target = daemon.file_target("gone.csv");
    let mut holder = handshaken(daemon.socket()).await;
    send(&mut holder, 1, Request::Acquire(wait_for(&target))).await;
    let lock_id = granted(&mut holder, "the holder").await;
    let mut gone = handshaken(daemon.socket()).await;
    send(&mut gone, 1, Request::Acquire(wait_for(&target))).await;
    queued(&mut gone, "the waiter that will not come back").await;

    daemon.kill();
    drop((holder, gone));
    daemon.restart();
    // Neither the holder nor the first waiter come back; a newcomer waits behind both.
    let mut newcomer = handshaken(daemon.socket()).await;
    send(&mut newcomer, 1, Request::Acquire(wait_for(&target))).await;
    assert_eq!(queued(&mut newcomer, "the newcomer").await.0, 1);
    let granted_to = granted(&mut newcomer, "the newcomer, once the window closed").await;
    assert_ne!(granted_to, lock_id);
    let log = daemon.log();
    assert!(log.contains("did not ask again"), "{log}");
}

//! The client of the previous release against today's daemon: a protocol version 1 client (the
//! frozen copy in `vfslock_tests::v1`, which decodes nothing version 1 lacks) is welcomed in its
//! own version, acquires, waits in the queue, hears that its lease was lost when an admin breaks
//! its lock, and is granted the lock it waited for. A client of today's version on the same
//! daemon hears the same loss as version 2's `LeaseEnded`, with its error kind.

use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use vfslock::LockOptions;
use vfslock_proto::handshake::{Hello, HELLO_LEN, PROTOCOL_VERSION};
use vfslock_proto::{
    codec, frame, AcquireRequest, ClientFrame, ErrorKind, Event, Request, Response, ServerFrame,
    WaitMode, Welcome,
};
use vfslock_tests::{v1, within, Daemon};

fn acquire(target: &str, wait: v1::WaitMode) -> v1::Request {
    v1::Request::Acquire(v1::AcquireRequest {
        target: target.into(),
        ttl: None,
        owner_id: Some("release-1".into()),
        wait,
        ask_on_stale: false,
        detached: false,
    })
}

/// The next frame that is not a renewal (a slow machine may see one go by), as the version 1
/// client decodes it: a frame it cannot decode fails the test, as it dropped that client's
/// connection.
async fn next(client: &mut v1::Client, what: &str) -> v1::ServerFrame {
    loop {
        match within(what, client.next()).await {
            Ok(v1::ServerFrame::Event {
                event: v1::Event::LeaseRenewed { .. },
                ..
            }) => continue,
            Ok(frame) => return frame,
            Err(e) => panic!("the version 1 client failed waiting for {what}: {e}"),
        }
    }
}

fn granted(frame: v1::ServerFrame, id: v1::RequestId) -> v1::Grant {
    match frame {
        v1::ServerFrame::Response {
            id: answered,
            result: Ok(v1::Response::Granted(grant)),
        } if answered == id => grant,
        other => panic!("expected the grant of request {id}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_1_client_acquires_waits_and_hears_a_lost_lease() {
    let daemon = Daemon::start();
    let target = "mem:///compat/data.csv";

    let (mut holder, welcome) = v1::Client::connect(daemon.socket())
        .await
        .expect("today's daemon welcomes a version 1 client");
    assert_eq!(welcome.protocol_version, 1, "{welcome:?}");
    let (mut waiter, _) = v1::Client::connect(daemon.socket())
        .await
        .expect("a second version 1 client");

    holder.request(1, acquire(target, v1::WaitMode::Try)).await;
    let held = granted(next(&mut holder, "the holder's grant").await, 1);
    assert_eq!(held.target, target);

    waiter
        .request(1, acquire(target, v1::WaitMode::Wait { timeout: None }))
        .await;
    match next(&mut waiter, "the waiter's queue position").await {
        v1::ServerFrame::Event {
            id: 1,
            event: v1::Event::QueuePosition { position: 1 },
        } => {}
        other => panic!("expected queue position 1, got {other:?}"),
    }

    // Tests run as root, so today's client may break the lock as an admin.
    let admin = daemon.client().await;
    let broken = admin
        .break_lock(target, "compat test")
        .await
        .expect("an admin breaks the lock");
    assert_eq!(
        broken.and_then(|b| b.lock_id),
        Some(held.lock_id.clone()),
        "the holder's lock file was the one broken"
    );

    match next(&mut holder, "the holder to hear of its lost lease").await {
        v1::ServerFrame::Event {
            id: 1,
            event: v1::Event::LeaseLost { reason },
        } => assert!(reason.contains("compat test"), "{reason}"),
        other => panic!("expected LeaseLost for request 1, got {other:?}"),
    }

    let handed = granted(next(&mut waiter, "the waiter's grant").await, 1);
    assert_ne!(handed.lock_id, held.lock_id);
    waiter
        .request(
            2,
            v1::Request::Release {
                target: target.into(),
                lock_id: handed.lock_id.clone(),
            },
        )
        .await;
    match next(&mut waiter, "the release's answer").await {
        v1::ServerFrame::Response {
            id: 2,
            result: Ok(v1::Response::Released { held: true }),
        } => {}
        other => panic!("expected the release to be answered, got {other:?}"),
    }
    // The holder's connection is still served in version 1.
    holder.request(2, v1::Request::Ping).await;
    match next(&mut holder, "a pong").await {
        v1::ServerFrame::Response {
            id: 2,
            result: Ok(v1::Response::Pong),
        } => {}
        other => panic!("expected a pong, got {other:?}"),
    }
}

/// Reads one frame of today's protocol.
async fn read_frame<T: serde::de::DeserializeOwned>(stream: &mut UnixStream, what: &str) -> T {
    let mut prefix = [0u8; frame::LEN_PREFIX];
    within(what, stream.read_exact(&mut prefix))
        .await
        .expect("a frame's length");
    let mut payload = vec![0u8; u32::from_be_bytes(prefix) as usize];
    within(what, stream.read_exact(&mut payload))
        .await
        .expect("a frame");
    codec::decode(&payload).expect("a frame of today's protocol")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_current_client_hears_the_same_loss_as_lease_ended_with_its_kind() {
    let daemon = Daemon::start();
    let target = "mem:///compat/current.csv";

    // Today's protocol by hand, to see the very event the daemon sends.
    let mut stream = UnixStream::connect(daemon.socket()).await.expect("connect");
    stream
        .write_all(&Hello::current().encode())
        .await
        .expect("send the hello");
    let mut hello = [0u8; HELLO_LEN];
    within("the daemon's hello", stream.read_exact(&mut hello))
        .await
        .expect("read the hello");
    assert_eq!(Hello::decode(hello), Ok(Hello::current()));
    let welcome: Welcome = read_frame(&mut stream, "the welcome").await;
    assert_eq!(welcome.protocol_version, PROTOCOL_VERSION);
    let acquire = ClientFrame::Request {
        id: 1,
        request: Request::Acquire(AcquireRequest {
            target: target.into(),
            ttl: None,
            owner_id: None,
            wait: WaitMode::Try,
            ask_on_stale: false,
            detached: false,
        }),
    };
    stream
        .write_all(&codec::encode_frame(&acquire).unwrap())
        .await
        .expect("send the acquire");
    match read_frame(&mut stream, "the grant").await {
        ServerFrame::Response {
            id: 1,
            result: Ok(Response::GrantedResumable { .. }),
        } => {}
        other => panic!("expected a grant, got {other:?}"),
    }

    // And through the client library, which reports the kind when the lost lock is released.
    let client = daemon.client().await;
    assert_eq!(client.daemon().protocol_version, PROTOCOL_VERSION);
    let other = "mem:///compat/library.csv";
    let mut lock = client.new_lock(other, LockOptions::default());
    lock.acquire().await.expect("acquire");

    let admin = daemon.client().await;
    for target in [target, other] {
        admin
            .break_lock(target, "compat test")
            .await
            .expect("an admin breaks the lock");
    }
    loop {
        match read_frame(&mut stream, "the lost lease").await {
            ServerFrame::Event {
                event: Event::LeaseRenewed { .. },
                ..
            } => continue,
            ServerFrame::Event {
                id: 1,
                event: Event::LeaseEnded { kind, reason },
            } => {
                assert_eq!(kind, ErrorKind::LeaseLost);
                assert!(reason.contains("compat test"), "{reason}");
                break;
            }
            other => panic!("expected LeaseEnded for request 1, got {other:?}"),
        }
    }
    let reason = within("the library's holder to hear of its loss", lock.lost()).await;
    assert!(reason.contains("compat test"), "{reason}");
    let err = lock
        .release()
        .await
        .expect_err("the release reports the loss");
    assert_eq!(err.kind(), vfslock::ErrorKind::LeaseLost, "{err}");
}

/// Sends a hello of `version` and returns what the daemon sent before it closed.
async fn hello_answer(socket: &Path, version: u32) -> Vec<u8> {
    let mut stream = UnixStream::connect(socket).await.expect("connect");
    stream
        .write_all(&Hello { version }.encode())
        .await
        .expect("send the hello");
    let mut received = Vec::new();
    within(
        "the daemon to close the connection",
        stream.read_to_end(&mut received),
    )
    .await
    .expect("read until closed");
    received
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_the_daemon_does_not_speak_gets_its_newest_and_a_close() {
    let daemon = Daemon::start();
    for version in [0, PROTOCOL_VERSION + 1, u32::MAX] {
        let received = hello_answer(daemon.socket(), version).await;
        assert_eq!(received.len(), HELLO_LEN, "only a hello for {version}");
        assert_eq!(
            Hello::decode(received[..].try_into().unwrap()),
            Ok(Hello::current()),
            "the answer to a hello of version {version}"
        );
    }
    // The refusals leave the daemon serving both versions.
    let (_, welcome) = v1::Client::connect(daemon.socket())
        .await
        .expect("served after the fallback");
    assert_eq!(welcome.protocol_version, 1);
    let newest = daemon.client().await;
    newest.ping().await.expect("today's client is served too");
}

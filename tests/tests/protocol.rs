//! Misbehaving clients: invalid targets are refused with `InvalidTarget`, and raw-socket abuse
//! (garbage instead of a hello, a wrong protocol version, an oversized or truncated frame, a
//! garbage payload) gets an error or a close while the daemon keeps serving everyone else.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use vfslock::{ErrorKind, LockOptions};
use vfslock_proto::handshake::{Hello, HELLO_LEN};
use vfslock_proto::{codec, frame, ServerFrame, Welcome};
use vfslock_tests::{within, Daemon};

#[tokio::test(flavor = "multi_thread")]
async fn bad_targets_are_refused_as_invalid() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let dir = daemon.data_dir().to_string_lossy().into_owned();
    let bad = [
        "data.csv".to_owned(),
        "relative/data.csv".to_owned(),
        format!("{dir}/../data.csv"),
        format!("{dir}/sub/../data.csv"),
        format!("file://{dir}/../data.csv"),
        "mem:///a/../b".to_owned(),
        format!("{dir}/"),
        format!("file://{dir}/"),
        "mem:///dir/".to_owned(),
        format!("{dir}/data.csv.lock"),
        "mem:///data.csv.lock".to_owned(),
        "ftp://x/y".to_owned(),
        "s3://bucket/key".to_owned(),
        String::new(),
    ];
    for target in &bad {
        let mut lock = client.new_lock(target, LockOptions::default());
        let err = lock.acquire().await.expect_err(target);
        assert_eq!(err.kind(), ErrorKind::InvalidTarget, "{target:?}: {err:?}");
        assert!(!err.message().is_empty(), "{target:?}");
        let err = lock.acquire_wait().await.expect_err(target);
        assert_eq!(err.kind(), ErrorKind::InvalidTarget, "{target:?}: {err:?}");
        let err = client.metadata(target).await.expect_err(target);
        assert_eq!(err.kind(), ErrorKind::InvalidTarget, "{target:?}: {err:?}");
    }
    let err = client
        .new_lock("s3://bucket/key", LockOptions::default())
        .acquire()
        .await
        .expect_err("s3");
    assert!(err.message().contains("s3"), "{err}");
    // Nothing was created for any of them, and the connection still works.
    assert_eq!(
        std::fs::read_dir(daemon.data_dir()).unwrap().count(),
        0,
        "files appeared in the data directory"
    );
    let mut lock = client.new_lock(format!("{dir}/good.csv"), LockOptions::default());
    lock.acquire().await.expect("a good target after bad ones");
    lock.release().await.expect("release");
}

/// Reads until the daemon closes the connection (end of file or reset) and returns what came.
async fn read_until_closed(stream: &mut UnixStream) -> Vec<u8> {
    let mut received = Vec::new();
    within("the daemon to close the connection", async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) => return,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
                Err(e) => panic!("read: {e}"),
            }
        }
    })
    .await;
    received
}

/// Splits received bytes into server frames; all of them must be whole and valid.
fn server_frames(mut bytes: &[u8]) -> Vec<ServerFrame> {
    let decoder = frame::FrameDecoder::new(usize::MAX >> 1);
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let (payload, used) = decoder
            .next_frame(bytes)
            .expect("a valid frame")
            .expect("a whole frame");
        frames.push(codec::decode(payload).expect("a valid server frame"));
        bytes = &bytes[used..];
    }
    frames
}

/// Asserts that the daemon answered with one protocol error (request id 0) and closed.
async fn assert_protocol_error_then_close(stream: &mut UnixStream) {
    let frames = server_frames(&read_until_closed(stream).await);
    match frames.as_slice() {
        [ServerFrame::Response {
            id: 0,
            result: Err(e),
        }] => {
            assert_eq!(e.kind, vfslock_proto::ErrorKind::Protocol, "{e:?}");
        }
        other => panic!("expected one protocol error, got {other:?}"),
    }
}

/// Connects and completes a valid handshake by hand; returns the stream after the welcome.
async fn handshaken(socket: &Path) -> UnixStream {
    let mut stream = UnixStream::connect(socket).await.expect("connect");
    stream
        .write_all(&Hello::current().encode())
        .await
        .expect("send hello");
    let mut hello = [0u8; HELLO_LEN];
    within("the daemon's hello", stream.read_exact(&mut hello))
        .await
        .expect("read hello");
    assert_eq!(&hello, b"VFSL\0\0\0\x01");
    let mut prefix = [0u8; frame::LEN_PREFIX];
    within("the welcome", stream.read_exact(&mut prefix))
        .await
        .expect("read the welcome's length");
    let mut payload = vec![0u8; u32::from_be_bytes(prefix) as usize];
    within("the welcome", stream.read_exact(&mut payload))
        .await
        .expect("read the welcome");
    let welcome: Welcome = codec::decode(&payload).expect("a welcome frame");
    assert_eq!(welcome.protocol_version, 1);
    stream
}

/// Runs `misbehave` against a daemon that has a well-behaved client holding a lock, then checks
/// that the daemon kept serving: the old client still holds and can release, a new client can
/// acquire, and the daemon exits cleanly when asked.
async fn daemon_survives<F, Fut>(misbehave: F)
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut daemon = Daemon::start();
    let target = daemon.file_target("survivor.csv");
    let lock_file = PathBuf::from(format!("{target}.lock"));
    let client = daemon.client().await;
    let mut lock = client.new_lock(&target, LockOptions::default().owner_id("before"));
    lock.acquire().await.expect("acquire");

    misbehave(daemon.socket().to_owned()).await;

    client
        .ping()
        .await
        .expect("the old client still gets answers");
    assert!(lock.is_held());
    let newcomer = daemon.client().await;
    let mut other = newcomer.new_lock(&target, LockOptions::default().owner_id("after"));
    let err = other
        .acquire()
        .await
        .expect_err("still held by the old client");
    assert!(err.is_already_held(), "{err:?}");
    assert_eq!(
        err.holder().and_then(|h| h.owner_id.as_deref()),
        Some("before")
    );
    lock.release().await.expect("the old client releases");
    assert!(!lock_file.exists());
    other.acquire().await.expect("a new client acquires");
    assert!(lock_file.exists());
    other.release().await.expect("release");
    drop((client, newcomer));
    let status = tokio::task::block_in_place(|| daemon.terminate());
    assert!(
        status.success(),
        "vfslockd exited with {status}:\n{}",
        daemon.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_instead_of_a_hello_is_closed() {
    daemon_survives(async |socket| {
        let mut stream = UnixStream::connect(&socket).await.expect("connect");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: vfslockd\r\n\r\n")
            .await
            .expect("send garbage");
        let received = read_until_closed(&mut stream).await;
        assert!(received.is_empty(), "answered garbage with {received:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_protocol_version_gets_the_daemons_hello_then_a_close() {
    daemon_survives(async |socket| {
        let mut stream = UnixStream::connect(&socket).await.expect("connect");
        let mut hello = b"VFSL".to_vec();
        hello.extend_from_slice(&2u32.to_be_bytes());
        stream.write_all(&hello).await.expect("send hello");
        let received = read_until_closed(&mut stream).await;
        assert_eq!(
            received, b"VFSL\0\0\0\x01",
            "the daemon's hello, nothing more"
        );
        assert_eq!(
            Hello::decode(received[..].try_into().unwrap()),
            Ok(Hello { version: 1 })
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_length_prefix_gets_an_error_and_a_close() {
    daemon_survives(async |socket| {
        let mut stream = handshaken(&socket).await;
        stream
            .write_all(&0xFFFF_FFFFu32.to_be_bytes())
            .await
            .expect("send the prefix");
        assert_protocol_error_then_close(&mut stream).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_truncated_frame_followed_by_a_close_is_dropped() {
    daemon_survives(async |socket| {
        let mut stream = handshaken(&socket).await;
        let mut truncated = 100u32.to_be_bytes().to_vec();
        truncated.extend_from_slice(&[0u8; 10]);
        stream
            .write_all(&truncated)
            .await
            .expect("send part of a frame");
        stream.shutdown().await.expect("close the write side");
        let received = read_until_closed(&mut stream).await;
        // Nothing is owed to a client that left mid-frame; if anything comes, it is an error.
        for frame in server_frames(&received) {
            assert!(
                matches!(
                    frame,
                    ServerFrame::Response {
                        id: 0,
                        result: Err(_)
                    }
                ),
                "{frame:?}"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_well_framed_garbage_payload_gets_an_error_and_a_close() {
    daemon_survives(async |socket| {
        let mut stream = handshaken(&socket).await;
        let garbage = frame::encode(b"\xff\xfe\xfd definitely not bincode \x00\x01")
            .expect("frame the garbage");
        stream.write_all(&garbage).await.expect("send garbage");
        assert_protocol_error_then_close(&mut stream).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_connection_does_not_disturb_a_good_one_in_flight() {
    daemon_survives(async |socket| {
        // All the bad connections at once, interleaved with a good client's requests.
        let good = vfslock::Client::connect(&socket).await.expect("connect");
        let mut bad = Vec::new();
        for _ in 0..3 {
            let mut stream = handshaken(&socket).await;
            stream
                .write_all(&frame::encode(b"\x09garbage").unwrap())
                .await
                .expect("send garbage");
            bad.push(stream);
            good.ping().await.expect("ping between bad connections");
        }
        for stream in &mut bad {
            assert_protocol_error_then_close(stream).await;
        }
        let mut lock = good.new_lock("mem:///in-flight", LockOptions::default());
        lock.acquire().await.expect("acquire");
        lock.release().await.expect("release");
    })
    .await;
}

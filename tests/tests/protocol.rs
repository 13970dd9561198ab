//! Misbehaving clients: invalid targets are refused with `InvalidTarget`, and raw-socket abuse
//! (garbage instead of a hello, a wrong protocol version, an oversized or truncated frame, a
//! garbage payload) gets an error or a close while the daemon keeps serving everyone else.

use std::path::PathBuf;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use vfslock::{ErrorKind, LockOptions};
use vfslock_proto::handshake::{Hello, PROTOCOL_VERSION};
use vfslock_proto::{codec, frame, ServerFrame};
use vfslock_tests::{within, Daemon};

#[path = "support/wire.rs"]
mod wire;
use wire::{ask, handshaken, handshaken_at, read_frame};

#[tokio::test(flavor = "multi_thread")]
async fn bad_targets_are_refused_as_invalid() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let dir = daemon.data_dir().to_string_lossy().into_owned();
    // A relative path the library cannot make absolute (its directory does not exist); one it
    // can is made absolute before it is sent (tests/tests/ctl.rs), and the daemon refuses one
    // sent as it is (below).
    let bad = [
        "no-such-directory/data.csv".to_owned(),
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
    // Over the wire, from a client that sends a relative path as it is: refused, as
    // ambiguous (the daemon cannot know the caller's working directory).
    let mut raw = handshaken(daemon.socket()).await;
    for relative in ["data.csv", "relative/data.csv"] {
        let request = vfslock_proto::Request::Metadata {
            target: relative.into(),
        };
        match ask(&mut raw, request).await {
            ServerFrame::Response { result: Err(e), .. } => {
                assert_eq!(e.kind, ErrorKind::InvalidTarget, "{relative}: {e:?}");
                assert!(e.message.contains("relative path"), "{e:?}");
            }
            other => panic!("{relative}: {other:?}"),
        }
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
        // One above the newest version the daemon speaks.
        hello.extend_from_slice(&(PROTOCOL_VERSION + 1).to_be_bytes());
        stream.write_all(&hello).await.expect("send hello");
        let received = read_until_closed(&mut stream).await;
        assert_eq!(
            received,
            Hello::current().encode(),
            "the daemon's hello, nothing more"
        );
        assert_eq!(
            Hello::decode(received[..].try_into().unwrap()),
            Ok(Hello {
                version: PROTOCOL_VERSION
            })
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

/// A client that sends many requests and reads none of the answers fills its socket; the
/// daemon queues the rest for it (answers are written straight to the socket only while
/// nothing waits before them) and keeps serving everyone else. When the client reads at last,
/// while it goes on sending, every answer is there, whole and in order: an answer made while
/// older ones still wait in the queue must not overtake them.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_does_not_read_gets_every_answer_in_order_and_blocks_nobody() {
    use vfslock_proto::{ClientFrame, Request, Response};
    // Status answers are a few hundred bytes: a batch is far more than a socket buffer holds.
    const BATCH: u64 = 10_000;
    fn requests(ids: std::ops::RangeInclusive<u64>) -> Vec<u8> {
        let mut bytes = Vec::new();
        for id in ids {
            let request = if id % 2 == 0 {
                Request::Status
            } else {
                Request::Ping
            };
            let frame = codec::encode_frame(&ClientFrame::Request { id, request }).unwrap();
            bytes.extend_from_slice(&frame);
        }
        bytes
    }
    daemon_survives(async |socket| {
        let (mut read, mut write) = handshaken(&socket).await.into_split();
        within(
            "the first requests to be sent",
            write.write_all(&requests(1..=BATCH)),
        )
        .await
        .expect("send the requests");

        // Meanwhile the daemon serves another client in full.
        let other = vfslock::Client::connect(&socket).await.expect("connect");
        let mut lock = other.new_lock("mem:///not-blocked", LockOptions::default());
        within("another client's cycle", async {
            lock.acquire().await.expect("acquire");
            lock.release().await.expect("release");
        })
        .await;

        // More requests trickle in while the answers are read.
        let sender = tokio::spawn(async move {
            for start in (BATCH + 1..=2 * BATCH).step_by(100) {
                write
                    .write_all(&requests(start..=start + 99))
                    .await
                    .expect("send more requests");
                tokio::task::yield_now().await;
            }
            write
        });
        let mut received = Vec::new();
        let mut answered = 0;
        let mut chunk = vec![0u8; 16 * 1024];
        within("every answer", async {
            while answered < 2 * BATCH {
                let n = read.read(&mut chunk).await.expect("read answers");
                assert!(n > 0, "the daemon closed after {answered} answers");
                received.extend_from_slice(&chunk[..n]);
                // Whole frames only; a partial one waits for the next read.
                let decoder = frame::FrameDecoder::new(usize::MAX >> 1);
                let mut at = 0;
                while let Some((payload, used)) = decoder.next_frame(&received[at..]).unwrap() {
                    let expected = answered + 1;
                    match codec::decode::<ServerFrame>(payload).expect("a valid frame") {
                        ServerFrame::Response { id, result } => {
                            assert_eq!(id, expected, "answers out of order");
                            match (id % 2, result) {
                                (1, Ok(Response::Pong)) | (0, Ok(Response::Status(_))) => {}
                                (_, other) => panic!("answer {id}: {other:?}"),
                            }
                        }
                        other => panic!("unexpected frame {other:?}"),
                    }
                    answered += 1;
                    at += used;
                }
                received.drain(..at);
            }
        })
        .await;
        assert!(received.is_empty(), "bytes after the last answer");
        drop(sender.await.expect("the sender"));
    })
    .await;
}

/// A relay between a client and the daemon that passes the client's bytes on in small pieces,
/// so that a burst of requests backs up in the client's socket; answers pass at full speed.
async fn slow_relay(daemon_socket: PathBuf, relay_socket: PathBuf) {
    let listener = tokio::net::UnixListener::bind(&relay_socket).expect("bind the relay");
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.expect("accept the client");
        let daemon = UnixStream::connect(&daemon_socket)
            .await
            .expect("connect to the daemon");
        let (mut from_client, mut to_client) = client.into_split();
        let (mut from_daemon, mut to_daemon) = daemon.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut from_daemon, &mut to_client).await;
        });
        let mut piece = [0u8; 512];
        loop {
            match from_client.read(&mut piece).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to_daemon.write_all(&piece[..n]).await.is_err() {
                        break;
                    }
                }
            }
            tokio::task::yield_now().await;
        }
    });
}

/// Many large requests in flight at once on one connection, from many tasks, through a relay
/// that drains the client's socket slowly: the socket fills, and most frames go through the
/// client's queue behind others instead of straight to the socket (about a thousand per run
/// here). Every request is answered and the connection stays good: a frame cut into by another
/// would garble the stream, and the daemon would close it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_requests_from_many_tasks_on_one_connection_arrive_whole() {
    let daemon = Daemon::start();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let relay = dir.path().join("relay.sock");
    slow_relay(daemon.socket().to_owned(), relay.clone()).await;
    let client = vfslock::Client::connect(&relay)
        .await
        .expect("connect through the relay");
    // Targets near the path limit make every acquire a frame of about 4 KB; 128 of them in
    // flight are more than a socket buffer holds.
    let long = "d".repeat(4000);
    let mut tasks = Vec::new();
    for task in 0..128 {
        let client = client.clone();
        let target = format!("mem:///{long}/{task}");
        tasks.push(tokio::spawn(async move {
            let mut lock = client.new_lock(&target, LockOptions::default());
            for round in 0..5 {
                lock.acquire()
                    .await
                    .unwrap_or_else(|e| panic!("task {task}, round {round}: {e}"));
                lock.release()
                    .await
                    .unwrap_or_else(|e| panic!("task {task}, round {round}: {e}"));
            }
        }));
    }
    within("every task's cycles", async {
        for task in tasks {
            task.await.expect("a task panicked");
        }
    })
    .await;
    client.ping().await.expect("the connection is still good");
}

/// A resolve answers each target in order, a refusal in the place of a target the daemon would
/// refuse; a detached acquire asking for a max-hold is refused (nothing renews it, so nothing
/// would end it early), and the connection goes on.
#[tokio::test(flavor = "multi_thread")]
async fn resolve_answers_in_order_and_a_detached_max_hold_is_refused() {
    use vfslock_proto::{AcquireRequest, LockMode, Request, Response, WaitMode};
    let daemon = Daemon::start();
    let mut stream = handshaken(daemon.socket()).await;
    let dir = daemon.data_dir().to_string_lossy().into_owned();
    let answer = ask(
        &mut stream,
        Request::Resolve {
            targets: vec![
                "mem:///b".into(),
                "relative.csv".into(),
                format!("{dir}/a.csv"),
            ],
        },
    )
    .await;
    let ServerFrame::Response {
        id: 1,
        result: Ok(Response::Resolved(keys)),
    } = answer
    else {
        panic!("expected the keys, got {answer:?}");
    };
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert_eq!(keys[0].as_deref(), Ok("mem:///b"));
    let refused = keys[1].as_ref().expect_err("a relative path");
    assert_eq!(refused.kind, vfslock_proto::ErrorKind::InvalidTarget);
    let file_key = keys[2].as_ref().expect("a file target");
    assert!(
        file_key.starts_with("file:///") && file_key.ends_with("/a.csv"),
        "{file_key}"
    );
    let answer = ask(
        &mut stream,
        Request::AcquireBounded {
            request: AcquireRequest {
                target: "mem:///detached".into(),
                ttl: Some(std::time::Duration::from_secs(60)),
                owner_id: None,
                wait: WaitMode::Try,
                ask_on_stale: false,
                detached: true,
            },
            mode: LockMode::Exclusive,
            max_hold: Some(std::time::Duration::from_secs(5)),
        },
    )
    .await;
    let ServerFrame::Response {
        id: 1,
        result: Err(refused),
    } = answer
    else {
        panic!("expected a refusal, got {answer:?}");
    };
    assert_eq!(refused.kind, vfslock_proto::ErrorKind::Unsupported);
    assert!(refused.message.contains("TTL"), "{}", refused.message);
    let answer = ask(&mut stream, Request::Ping).await;
    assert!(matches!(
        answer,
        ServerFrame::Response {
            result: Ok(Response::Pong),
            ..
        }
    ));
}

/// Protocol 5: every grant of a lease held over the connection carries the session's resume
/// credentials and the resume window, the same for every grant of a connection and different
/// for each connection. The journal keeps the SHA-256 of the secret, never the secret, in a file
/// only the daemon's user can read, and the log never shows it. A detached lease (not the
/// session's) and a client of protocol 4 get plain grants.
#[tokio::test(flavor = "multi_thread")]
async fn grants_carry_the_session_secret_which_only_the_journal_hash_keeps() {
    use vfslock_proto::{AcquireRequest, Request, Response, Resumable, WaitMode};
    let daemon = Daemon::start();
    let acquire = |target: String, detached: bool| {
        Request::Acquire(AcquireRequest {
            target,
            ttl: Some(std::time::Duration::from_secs(30)),
            owner_id: None,
            wait: WaitMode::Try,
            ask_on_stale: false,
            detached,
        })
    };
    let resumable = |frame: ServerFrame| -> (String, Resumable) {
        match frame {
            ServerFrame::Response {
                result: Ok(Response::GrantedResumable { grant, resume }),
                ..
            } => (grant.lock_id, resume),
            other => panic!("expected a resumable grant, got {other:?}"),
        }
    };
    let mut first = handshaken(daemon.socket()).await;
    let (lock_a, resume_a) =
        resumable(ask(&mut first, acquire(daemon.file_target("a.csv"), false)).await);
    let (_, resume_b) =
        resumable(ask(&mut first, acquire(daemon.file_target("b.csv"), false)).await);
    assert_eq!(
        resume_a.window,
        std::time::Duration::from_secs(10),
        "the default W"
    );
    assert_eq!(resume_a.secret.0.len(), 64, "256 bits in hex");
    assert_eq!(resume_a, resume_b, "one session, one secret");
    let mut second = handshaken(daemon.socket()).await;
    let (_, other) = resumable(ask(&mut second, acquire(daemon.file_target("c.csv"), false)).await);
    assert_ne!(other.session, resume_a.session);
    assert_ne!(other.secret, resume_a.secret);

    // A detached lease belongs to its uid and lock id: a plain grant.
    match ask(&mut first, acquire(daemon.file_target("d.csv"), true)).await {
        ServerFrame::Response {
            result: Ok(Response::Granted(grant)),
            ..
        } => assert!(grant.metadata.detached),
        other => panic!("expected a plain grant for a detached lease, got {other:?}"),
    }
    // A client of protocol 4 gets what it can decode.
    let mut older = handshaken_at(daemon.socket(), 4).await;
    match ask(&mut older, acquire(daemon.file_target("e.csv"), false)).await {
        ServerFrame::Response {
            result: Ok(Response::Granted(_)),
            ..
        } => {}
        other => panic!("expected a plain grant for protocol 4, got {other:?}"),
    }

    // The journal: the session and the hash of its secret, never the secret.
    let state = daemon.dir().join("state");
    let journals: Vec<_> = std::fs::read_dir(&state)
        .expect("the state directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    assert_eq!(journals.len(), 1, "{journals:?}");
    let text = std::fs::read_to_string(&journals[0]).expect("read the journal");
    let line = text
        .lines()
        .find(|line| line.contains(&lock_a))
        .unwrap_or_else(|| panic!("no journal line for {lock_a}: {text}"));
    let entry: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
    assert_eq!(entry["session"], resume_a.session.as_str(), "{line}");
    let hash = entry["secret_sha256"].as_str().expect("a hash");
    assert!(
        vfslockd::link::resume::proves(&resume_a.secret.0, hash),
        "the journal's hash is not of the session's secret: {line}"
    );
    for secret in [&resume_a.secret, &other.secret] {
        assert!(
            !text.contains(secret.0.as_str()),
            "the journal has a secret"
        );
        assert!(
            !daemon.log().contains(secret.0.as_str()),
            "the log has a secret"
        );
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&journals[0])
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "journal mode {mode:o}");

    // A holding broken by an admin is journaled as lost before its holder hears: no restart
    // may hand it back.
    let admin = daemon.client().await;
    within(
        "break",
        admin.break_lock(&daemon.file_target("b.csv"), "test"),
    )
    .await
    .expect("break");
    let ended: ServerFrame = read_frame(&mut first, "the loss").await;
    assert!(
        matches!(
            &ended,
            ServerFrame::Event {
                event: vfslock_proto::Event::LeaseEnded { .. },
                ..
            }
        ),
        "{ended:?}"
    );
    let text = std::fs::read_to_string(&journals[0]).expect("read the journal");
    let broken = text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|entry| {
            entry["target"]
                .as_str()
                .is_some_and(|t| t.ends_with("b.csv"))
        })
        .expect("the journal line of b.csv");
    let lock_b = broken["acquire"].as_str().expect("its lock id");
    assert!(
        text.contains(&format!("{{\"lost\":\"{lock_b}\"}}")),
        "no lost mark for {lock_b}: {text}"
    );
}

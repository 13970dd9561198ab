//! Writes the committed seed corpus, `corpus/<target>/seed-*`, from real encodings: frames made
//! with the codec, the handshake greeting, the lock-file fixtures and a lock file this daemon
//! writes. Rerun after a protocol change:
//!
//! ```text
//! cargo run --manifest-path tests/fuzz/Cargo.toml --example seed_corpus
//! ```
//!
//! Each target's input layout is described at the top of its file in `fuzz_targets/`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use vfslock_proto::handshake::{Hello, PROTOCOL_VERSION};
use vfslock_proto::{
    codec, AcquireRequest, ClientFrame, ErrorKind, Event, Grant, ListEntry, LockFileFormat,
    LockMetadata, LockMode, Request, Response, ServerFrame, StatusInfo, StoreInfo, WaitMode,
    Welcome, WireError,
};
use vfslockd::lockfile::LockRecord;

/// 2025-08-04T09:30:12Z, the fixtures' `createdAt`.
const FIXTURE_CREATED: u64 = 1_754_299_812;

fn metadata() -> LockMetadata {
    LockMetadata {
        created_at_unix_ns: Some(1_754_299_812_345_678_901),
        acquired_at_unix_ns: Some(1_754_299_800_000_000_000),
        modified_unix_ns: Some(1_754_299_812_400_000_000),
        ttl_ns: 30_000_000_000,
        hostname: "ingest-7".into(),
        pid: 4242,
        owner_id: Some("ingestion-service-1".into()),
        lock_id: Some("0f3c9a".into()),
        daemon_id: Some("d-1".into()),
        token: Some(17),
        uid: Some(1000),
        detached: false,
        format: LockFileFormat::Vfslock(1),
        stale: false,
    }
}

fn client_frames() -> Vec<(&'static str, ClientFrame)> {
    let request = |id, request| ClientFrame::Request { id, request };
    vec![
        ("ping", request(1, Request::Ping)),
        (
            "acquire-slots",
            request(
                9,
                Request::AcquireIn {
                    request: AcquireRequest {
                        target: "s3://locks/gpu".into(),
                        ttl: None,
                        owner_id: None,
                        wait: WaitMode::Try,
                        ask_on_stale: false,
                        detached: false,
                    },
                    mode: LockMode::Slots(4),
                },
            ),
        ),
        (
            "acquire-wait",
            request(
                2,
                Request::Acquire(AcquireRequest {
                    target: "file:///srv/inbox/data.csv".into(),
                    ttl: Some(Duration::from_secs(30)),
                    owner_id: Some("importer".into()),
                    wait: WaitMode::Wait {
                        timeout: Some(Duration::from_millis(1500)),
                    },
                    ask_on_stale: true,
                    detached: false,
                }),
            ),
        ),
        (
            "acquire-try-detached",
            request(
                3,
                Request::Acquire(AcquireRequest {
                    target: "s3://bucket/key".into(),
                    ttl: Some(Duration::from_secs(600)),
                    owner_id: None,
                    wait: WaitMode::Try,
                    ask_on_stale: false,
                    detached: true,
                }),
            ),
        ),
        (
            "cancel",
            request(
                4,
                Request::Cancel {
                    target: "/tmp/x".into(),
                    acquire_id: 2,
                },
            ),
        ),
        (
            "release",
            request(
                5,
                Request::Release {
                    target: "/tmp/x".into(),
                    lock_id: "0f3c9a".into(),
                },
            ),
        ),
        (
            "renew",
            request(
                6,
                Request::Renew {
                    target: "/tmp/x".into(),
                    lock_id: "0f3c9a".into(),
                    ttl: None,
                },
            ),
        ),
        (
            "break",
            request(
                7,
                Request::Break {
                    target: "/tmp/x".into(),
                    reason: "stuck".into(),
                },
            ),
        ),
        (
            "metadata",
            request(
                8,
                Request::Metadata {
                    target: "mem:///a".into(),
                },
            ),
        ),
        ("list", request(9, Request::List)),
        ("status", request(10, Request::Status)),
        (
            "stale-verdict",
            ClientFrame::StaleVerdict {
                id: 2,
                target: "file:///srv/inbox/data.csv".into(),
                allow: false,
                reason: "not yet".into(),
            },
        ),
    ]
}

fn server_frames() -> Vec<(&'static str, ServerFrame)> {
    let ok = |id, response| ServerFrame::Response {
        id,
        result: Ok(response),
    };
    let event = |id, event| ServerFrame::Event { id, event };
    vec![
        (
            "granted",
            ok(
                2,
                Response::Granted(Grant {
                    target: "file:///srv/inbox/data.csv".into(),
                    lock_id: "0f3c9a".into(),
                    metadata: metadata(),
                    stole: None,
                    token: Some(17),
                    valid_for: Some(Duration::from_secs(27)),
                    valid_until_monotonic_ns: Some(123_456_789_000),
                }),
            ),
        ),
        (
            "already-held",
            ServerFrame::Response {
                id: 3,
                result: Err(WireError {
                    kind: ErrorKind::AlreadyHeld,
                    message: "held by ingest-7".into(),
                    holder: Some(Box::new(metadata())),
                }),
            },
        ),
        (
            "list",
            ok(
                9,
                Response::List(vec![ListEntry {
                    target: "mem:///a".into(),
                    lock_id: Some("l".into()),
                    pid: Some(12),
                    uid: Some(1000),
                    owner_id: None,
                    held_for: Some(Duration::from_secs(2)),
                    ttl: Duration::from_secs(30),
                    token: Some(9),
                    waiters: 3,
                }]),
            ),
        ),
        (
            "status",
            ok(
                10,
                Response::Status(StatusInfo {
                    daemon_version: "0.1.0".into(),
                    protocol_version: 1,
                    hostname: "h".into(),
                    instance_id: "i".into(),
                    pid: 1,
                    uptime: Duration::from_secs(1),
                    stores: vec![StoreInfo {
                        scheme: "mem".into(),
                        description: "memory".into(),
                        counters: vec![("creates".into(), 2)],
                    }],
                    held: 1,
                    waiting: 2,
                    sessions: 3,
                    targets: 4,
                }),
            ),
        ),
        ("pong", ok(1, Response::Pong)),
        (
            "stale-question",
            event(2, Event::StaleQuestion { holder: metadata() }),
        ),
        (
            "queue-position",
            event(2, Event::QueuePosition { position: 2 }),
        ),
        (
            "lease-renewed",
            event(
                2,
                Event::LeaseRenewed {
                    valid_for: Duration::from_millis(2500),
                    valid_until_monotonic_ns: None,
                },
            ),
        ),
        (
            "lease-ended",
            event(
                2,
                Event::LeaseEnded {
                    kind: ErrorKind::LeaseLost,
                    reason: "the lock was broken by uid 0: stuck".into(),
                },
            ),
        ),
    ]
}

fn welcome() -> Welcome {
    Welcome {
        protocol_version: PROTOCOL_VERSION,
        daemon_version: "0.1.0".into(),
        hostname: "h".into(),
        instance_id: "i".into(),
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).expect("create the corpus folder");
    fs::write(dir.join(format!("seed-{name}")), bytes).expect("write a seed");
}

/// `lockfile_parser`'s time layout: `i64` seconds and `u32` nanoseconds, big-endian.
fn instant(secs: i64) -> Vec<u8> {
    let mut out = secs.to_be_bytes().to_vec();
    out.extend(0u32.to_be_bytes());
    out
}

/// `lockfile_parser`'s 37-byte header: store time `modified`, `now`, a 60 s corrupt grace.
fn lock_header(modified: Option<i64>, now: i64) -> Vec<u8> {
    let mut out = vec![u8::from(modified.is_some())];
    out.extend(instant(modified.unwrap_or(0)));
    out.extend(instant(now));
    out.extend(60u64.to_be_bytes());
    out.extend(0u32.to_be_bytes());
    out
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let corpus = root.join("corpus");

    // request_decoder: payloads, no length prefix.
    let dir = corpus.join("request_decoder");
    for (name, frame) in client_frames() {
        write(&dir, name, &codec::encode(&frame).unwrap());
    }
    for (name, frame) in server_frames() {
        write(
            &dir,
            &format!("server-{name}"),
            &codec::encode(&frame).unwrap(),
        );
    }
    write(&dir, "welcome", &codec::encode(&welcome()).unwrap());

    // frame_decoder: a limit byte, then a connection's bytes.
    let dir = corpus.join("frame_decoder");
    let hello = Hello::current().encode();
    let frame = |f: &ClientFrame| codec::encode_frame(f).unwrap();
    let clients = client_frames();
    let mut session = vec![255];
    session.extend(hello);
    for (_, f) in clients.iter().take(3) {
        session.extend(frame(f));
    }
    write(&dir, "hello-then-requests", &session);
    let mut daemon = vec![255];
    daemon.extend(hello);
    daemon.extend(codec::encode_frame(&welcome()).unwrap());
    daemon.extend(codec::encode_frame(&server_frames()[4].1).unwrap());
    write(&dir, "hello-welcome-pong", &daemon);
    let mut old = vec![255];
    old.extend(Hello { version: 0 }.encode());
    write(&dir, "hello-version-0", &old);
    let acquire = frame(&clients[1].1);
    let mut too_large = vec![16];
    too_large.extend(&acquire);
    write(&dir, "over-the-limit", &too_large);
    let mut partial = vec![255];
    partial.extend(&acquire[..acquire.len() - 3]);
    write(&dir, "partial-frame", &partial);
    write(&dir, "empty-frames", &[8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    write(
        &dir,
        "not-vfslock",
        b"\xffGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    );

    // lockfile_parser: the 37-byte time header, then the file.
    let dir = corpus.join("lockfile_parser");
    let created = FIXTURE_CREATED as i64;
    let fixtures = root.join("..").join("fixtures");
    let mut names: Vec<_> = fs::read_dir(&fixtures)
        .expect("tests/fixtures")
        .map(|e| e.expect("a fixture").path())
        .filter(|p| p.extension().is_some_and(|e| e == "lock"))
        .collect();
    names.sort();
    for path in names {
        let mut input = lock_header(Some(created + 1), created + 200);
        input.extend(fs::read(&path).expect("read a fixture"));
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        write(&dir, &stem, &input);
    }
    let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
    let record = LockRecord {
        created_at: at(FIXTURE_CREATED),
        acquired_at: at(FIXTURE_CREATED - 60) + Duration::from_nanos(250_000_000),
        ttl: Duration::from_secs(30),
        hostname: "ingest-7".into(),
        pid: 4242,
        owner_id: Some("importer".into()),
        lock_id: "0f3c9a".into(),
        daemon_id: "d-1".into(),
        token: Some(17),
        uid: Some(1000),
        detached: true,
        peer_ttl: None,
    };
    let mut input = lock_header(None, created + 10);
    input.extend(record.to_json());
    write(&dir, "vfslock-record", &input);
    let mut input = lock_header(Some(created), created + 3600);
    input.extend(br#"{"owner": "some other tool", "pid": null, "ttl": null}"#);
    write(&dir, "foreign", &input);
    let mut input = lock_header(Some(created), created - 5);
    input.extend(
        br#"{"createdAt": "2025-08-04T11:30:12.5+02:00", "TTL": -1, "pid": 1, "vfslock": 1}"#,
    );
    write(&dir, "offset-negative-ttl", &input);

    println!("seed corpus written under {}", corpus.display());
}

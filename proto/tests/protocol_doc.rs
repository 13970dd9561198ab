//! The byte examples of `docs/protocol.md` are what the encoder writes: each block marked
//! `<!-- wire-example: NAME -->` is compared with the encoding of the value named here, so the
//! document that clients in other languages are written from cannot drift from the code.
//!
//! A block's lines are hex bytes, then two spaces and a comment; every line must parse, and
//! every example named here must be in the document.

use std::collections::BTreeMap;
use std::time::Duration;

use vfslock_proto::handshake::Hello;
use vfslock_proto::*;

const DOC: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md"));

const MARKER: &str = "<!-- wire-example: ";

/// Every marked block of the document, by name, as the bytes it spells.
fn examples_in_doc() -> BTreeMap<String, Vec<u8>> {
    let mut examples = BTreeMap::new();
    let mut lines = DOC.lines();
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix(MARKER) else {
            continue;
        };
        let name = rest
            .strip_suffix(" -->")
            .unwrap_or_else(|| panic!("unclosed marker: {line}"))
            .to_owned();
        assert_eq!(
            lines.next().map(str::trim_end),
            Some("```text"),
            "the example {name} must be a text block right after its marker"
        );
        let mut bytes = Vec::new();
        for line in lines.by_ref() {
            if line.starts_with("```") {
                break;
            }
            let hex = line.split("  ").next().unwrap_or_default();
            for byte in hex.split(' ').filter(|b| !b.is_empty()) {
                assert_eq!(byte.len(), 2, "example {name}: {byte:?} in {line:?}");
                bytes.push(u8::from_str_radix(byte, 16).unwrap_or_else(|e| {
                    panic!("example {name}: {byte:?} in {line:?} is not a hex byte: {e}")
                }));
            }
        }
        assert!(
            examples.insert(name.clone(), bytes).is_none(),
            "two examples are named {name}"
        );
    }
    examples
}

fn frame<T: serde::Serialize>(message: &T) -> Vec<u8> {
    codec::encode_frame(message).expect("encode")
}

fn value<T: serde::Serialize>(value: T) -> Vec<u8> {
    codec::encode(&value).expect("encode")
}

/// What each example must be.
fn expected() -> BTreeMap<&'static str, Vec<u8>> {
    let scalars = [
        value(5u32),
        value(250u32),
        value(251u32),
        value(300u32),
        value(100_000u32),
        value(123_456_789_000u64),
        value(0i64),
        value(-1i64),
        value(1i64),
        value(-5i64),
        value(200i64),
        value(1_754_299_812_345_678_901i128),
        value(true),
        value(None::<u64>),
        value(Some(3u64)),
        value("hé".to_owned()),
        value(Duration::new(30, 500)),
        value(vec![("a".to_owned(), 2u64)]),
    ]
    .concat();
    BTreeMap::from([
        ("hello", Hello { version: 2 }.encode().to_vec()),
        ("scalars", scalars),
        (
            "ping",
            frame(&ClientFrame::Request {
                id: 7,
                request: Request::Ping,
            }),
        ),
        (
            "pong",
            frame(&ServerFrame::Response {
                id: 7,
                result: Ok(Response::Pong),
            }),
        ),
        (
            "acquire",
            frame(&ClientFrame::Request {
                id: 1,
                request: Request::Acquire(AcquireRequest {
                    target: "mem:///a".into(),
                    ttl: Some(Duration::from_secs(30)),
                    owner_id: None,
                    wait: WaitMode::Wait {
                        timeout: Some(Duration::from_millis(1500)),
                    },
                    ask_on_stale: false,
                    detached: false,
                }),
            }),
        ),
        (
            "welcome",
            frame(&Welcome {
                protocol_version: 2,
                daemon_version: "0.1.0".into(),
                hostname: "h".into(),
                instance_id: "i".into(),
            }),
        ),
        (
            "already-held",
            frame(&ServerFrame::Response {
                id: 1,
                result: Err(WireError::new(ErrorKind::AlreadyHeld, "held")),
            }),
        ),
        (
            "renewed",
            frame(&ServerFrame::Event {
                id: 1,
                event: Event::LeaseRenewed {
                    valid_for: Duration::from_secs(20),
                    valid_until_monotonic_ns: Some(123_456_789_000),
                },
            }),
        ),
        (
            "lease-ended",
            frame(&ServerFrame::Event {
                id: 1,
                event: Event::LeaseEnded {
                    kind: ErrorKind::LeaseLost,
                    reason: "broken".into(),
                },
            }),
        ),
        (
            "lease-lost",
            frame(
                &ServerFrame::Event {
                    id: 1,
                    event: Event::LeaseEnded {
                        kind: ErrorKind::LeaseLost,
                        reason: "broken".into(),
                    },
                }
                .for_version(1),
            ),
        ),
    ])
}

#[test]
fn the_documents_byte_examples_are_what_the_encoder_writes() {
    let in_doc = examples_in_doc();
    let expected = expected();
    let hex = |bytes: &[u8]| {
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    for (name, bytes) in &expected {
        let written = in_doc
            .get(*name)
            .unwrap_or_else(|| panic!("docs/protocol.md lost its example {name}"));
        assert_eq!(
            hex(written),
            hex(bytes),
            "docs/protocol.md's example {name} (left) is not what the encoder writes (right)"
        );
    }
    for name in in_doc.keys() {
        assert!(
            expected.contains_key(name.as_str()),
            "docs/protocol.md's example {name} is checked by nothing: add it here"
        );
    }
}

/// Every error kind, by a match that stops compiling when one is added without a row here.
fn every_error_kind() -> Vec<ErrorKind> {
    use ErrorKind::*;
    let all = vec![
        AlreadyHeld,
        Timeout,
        InvalidTarget,
        StaleVetoed,
        Store,
        Protocol,
        Cancelled,
        ShuttingDown,
        LeaseLost,
        Unsupported,
        LimitExceeded,
        PermissionDenied,
        Internal,
        DaemonUnavailable,
        ConnectionLost,
        NotFound,
        Other,
        ModeConflict,
        MaxHoldReached,
    ];
    for kind in &all {
        match kind {
            AlreadyHeld | Timeout | InvalidTarget | StaleVetoed | Store | Protocol | Cancelled
            | ShuttingDown | LeaseLost | Unsupported | LimitExceeded | PermissionDenied
            | Internal | DaemonUnavailable | ConnectionLost | NotFound | Other | ModeConflict
            | MaxHoldReached => {}
        }
    }
    all
}

#[test]
fn the_document_has_the_current_version_and_every_error_kinds_tag() {
    assert!(
        DOC.contains(&format!(
            "The current protocol version is **{}**",
            handshake::PROTOCOL_VERSION
        )),
        "docs/protocol.md names another current version"
    );
    for kind in every_error_kind() {
        let tag = codec::encode(&kind).expect("encode");
        assert_eq!(tag.len(), 1, "{kind:?} is one byte");
        let row = format!("| {:<5} | `{kind:?}`", tag[0]);
        assert!(DOC.contains(&row), "docs/protocol.md lacks the row {row:?}");
    }
}

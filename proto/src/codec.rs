//! The one place that encodes and decodes messages.
//!
//! bincode 1.3.3 is pinned exactly and is no longer maintained (RUSTSEC-2025-0141), so every
//! call into it lives here: swapping the codec later touches this file only, not the message
//! types. Decoding is bounded ([`DECODE_LIMIT`]): bincode's default limit is unlimited, and a
//! hostile length inside a frame (a `Vec` claiming 2^60 elements) must not allocate.

use bincode::Options;
use serde::{de::DeserializeOwned, Serialize};

use crate::frame::{self, FrameError, DEFAULT_MAX_FRAME};

/// The most bytes a single decode may allocate for the message it builds.
pub const DECODE_LIMIT: u64 = DEFAULT_MAX_FRAME as u64 * 4;

/// A message that could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The bytes are not a valid message of the expected type.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The encoded message does not fit a frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

fn options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_limit(DECODE_LIMIT)
        .with_big_endian()
        .with_varint_encoding()
        .reject_trailing_bytes()
}

/// Encodes `message` into a payload (no length prefix).
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, CodecError> {
    options()
        .serialize(message)
        .map_err(|e| CodecError::Malformed(e.to_string()))
}

/// Encodes `message` into a whole frame: length prefix and payload.
pub fn encode_frame<T: Serialize>(message: &T) -> Result<Vec<u8>, CodecError> {
    Ok(frame::encode(&encode(message)?)?)
}

/// Decodes one payload. Trailing bytes after the message are an error.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, CodecError> {
    options()
        .deserialize(payload)
        .map_err(|e| CodecError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;
    use std::time::Duration;

    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: T) {
        let bytes = encode(&value).unwrap();
        let back: T = decode(&bytes).unwrap();
        assert_eq!(back, value);
    }

    fn sample_metadata() -> LockMetadata {
        LockMetadata {
            created_at_unix_ns: Some(1_754_299_812_345_678_901),
            acquired_at_unix_ns: None,
            modified_unix_ns: Some(-5),
            ttl_ns: 300_000_000_000,
            hostname: "ingest-7".into(),
            pid: 4242,
            owner_id: Some("ingestion-service-1".into()),
            lock_id: None,
            daemon_id: None,
            token: Some(17),
            uid: Some(1000),
            detached: false,
            format: LockFileFormat::Go,
            stale: true,
        }
    }

    #[test]
    fn every_client_message_round_trips() {
        let requests = [
            Request::Acquire(AcquireRequest {
                target: "mem:///inbox/data.csv".into(),
                ttl: Some(Duration::from_secs(30)),
                owner_id: Some("me".into()),
                wait: WaitMode::Wait {
                    timeout: Some(Duration::from_millis(1500)),
                },
                ask_on_stale: true,
                detached: false,
            }),
            Request::Renew {
                target: "/tmp/x".into(),
                lock_id: "abc".into(),
                ttl: Some(Duration::from_secs(60)),
            },
            Request::Break {
                target: "/tmp/x".into(),
                reason: "stuck".into(),
            },
            Request::Cancel {
                target: "/tmp/x".into(),
                acquire_id: 3,
            },
            Request::Release {
                target: "/tmp/x".into(),
                lock_id: "abc".into(),
            },
            Request::Metadata {
                target: "/tmp/x".into(),
            },
            Request::List,
            Request::Status,
            Request::Ping,
        ];
        for (id, request) in requests.into_iter().enumerate() {
            round_trip(ClientFrame::Request {
                id: id as u64,
                request,
            });
        }
        round_trip(ClientFrame::StaleVerdict {
            id: 9,
            target: "/tmp/x".into(),
            allow: false,
            reason: "not yet".into(),
        });
    }

    #[test]
    fn every_server_message_round_trips() {
        let responses = [
            Response::Granted(Grant {
                target: "file:///tmp/x".into(),
                lock_id: "id".into(),
                metadata: sample_metadata(),
                stole: Some(sample_metadata()),
                token: Some(1_764_000_000_000_001),
                valid_for: Some(Duration::from_secs(27)),
                valid_until_monotonic_ns: Some(123_456_789_000),
            }),
            Response::Cancelled,
            Response::Released { held: true },
            Response::Metadata(Some(sample_metadata())),
            Response::Metadata(None),
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
            Response::Renewed(sample_metadata()),
            Response::Broken(None),
            Response::Pong,
        ];
        for (id, response) in responses.into_iter().enumerate() {
            round_trip(ServerFrame::Response {
                id: id as u64,
                result: Ok(response),
            });
        }
        round_trip(ServerFrame::Response {
            id: 1,
            result: Err(WireError {
                kind: ErrorKind::AlreadyHeld,
                message: "held".into(),
                holder: Some(Box::new(sample_metadata())),
            }),
        });
        for event in [
            Event::QueuePosition { position: 2 },
            Event::StaleQuestion {
                holder: sample_metadata(),
            },
            Event::LeaseRenewed {
                valid_for: Duration::from_millis(2500),
                valid_until_monotonic_ns: None,
            },
            Event::LeaseLost {
                reason: "gone".into(),
            },
            Event::Releasing {
                reason: "shutdown".into(),
            },
            Event::LeaseEnded {
                kind: ErrorKind::Internal,
                reason: "the daemon failed".into(),
            },
        ] {
            round_trip(ServerFrame::Event { id: 4, event });
        }
        round_trip(Welcome {
            protocol_version: 1,
            daemon_version: "0.1.0".into(),
            hostname: "h".into(),
            instance_id: "i".into(),
        });
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for garbage in [
            &b""[..],
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff",
            b"\x00\xfc\xff\xff\xff\xff\xff\xff\xff\x7f",
            b"\x07\x00",
        ] {
            assert!(decode::<ClientFrame>(garbage).is_err(), "{garbage:?}");
        }
    }

    #[test]
    fn a_huge_collection_length_does_not_allocate() {
        // Response::List with a length of 2^62 elements: must fail on the limit, not abort on OOM.
        let mut bytes = encode(&ServerFrame::Response {
            id: 0,
            result: Ok(Response::List(vec![])),
        })
        .unwrap();
        bytes.pop();
        bytes.extend_from_slice(&[0xfd, 0x40, 0, 0, 0, 0, 0, 0, 0]);
        assert!(decode::<ServerFrame>(&bytes).is_err());
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode(&ClientFrame::Request {
            id: 1,
            request: Request::Ping,
        })
        .unwrap();
        bytes.push(0);
        assert!(decode::<ClientFrame>(&bytes).is_err());
    }
}

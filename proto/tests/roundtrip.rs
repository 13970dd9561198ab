//! Property tests of the wire: every message, whatever its content, survives
//! `codec::encode_frame` → `FrameDecoder::next_frame` → `codec::decode` unchanged, the
//! handshake greeting survives its fixed layout, no byte string makes a decoder panic, and a
//! frame rewritten for an older client fits that client's version.
//!
//! The strategies build every field of every message with a struct literal, without `..`: a
//! field added to a message breaks this file's build until a strategy covers it.
//! `PROPTEST_CASES=N` runs more (or fewer) cases than proptest's default 256 per property.

use std::fmt::Debug;
use std::time::Duration;

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestCaseError;
use serde::{de::DeserializeOwned, Serialize};
use vfslock_proto::frame::{FrameDecoder, DEFAULT_MAX_FRAME, LEN_PREFIX};
use vfslock_proto::handshake::{
    Hello, HelloError, HELLO_LEN, MAGIC, OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use vfslock_proto::*;

// ---- strategies -------------------------------------------------------------------------
//
// The composite strategies are boxed: their nested types are large, and a debug build keeps
// them on the stack of a test thread, which overflowed its 2 MiB.

/// Any Unicode text, short: the codec cares about lengths and UTF-8, not about size.
fn text() -> impl Strategy<Value = String> {
    ".{0,24}"
}

/// Any `Duration`, including the largest.
fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        Just(Duration::ZERO),
        Just(Duration::MAX),
    ]
}

fn lock_file_format() -> impl Strategy<Value = LockFileFormat> {
    prop_oneof![
        any::<u32>().prop_map(LockFileFormat::Vfslock),
        Just(LockFileFormat::Go),
        Just(LockFileFormat::Foreign),
        Just(LockFileFormat::Corrupt),
    ]
}

fn lock_metadata() -> BoxedStrategy<LockMetadata> {
    (
        (
            option::of(any::<i128>()),
            option::of(any::<i128>()),
            option::of(any::<i128>()),
            any::<i64>(),
            text(),
            any::<i64>(),
            option::of(text()),
        ),
        (
            option::of(text()),
            option::of(text()),
            option::of(any::<u64>()),
            option::of(any::<u32>()),
            any::<bool>(),
            lock_file_format(),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (created, acquired, modified, ttl_ns, hostname, pid, owner_id),
                (lock_id, daemon_id, token, uid, detached, format, stale),
            )| LockMetadata {
                created_at_unix_ns: created,
                acquired_at_unix_ns: acquired,
                modified_unix_ns: modified,
                ttl_ns,
                hostname,
                pid,
                owner_id,
                lock_id,
                daemon_id,
                token,
                uid,
                detached,
                format,
                stale,
            },
        )
        .boxed()
}

fn wait_mode() -> impl Strategy<Value = WaitMode> {
    prop_oneof![
        Just(WaitMode::Try),
        option::of(duration()).prop_map(|timeout| WaitMode::Wait { timeout }),
    ]
}

fn acquire_request() -> BoxedStrategy<AcquireRequest> {
    (
        text(),
        option::of(duration()),
        option::of(text()),
        wait_mode(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(target, ttl, owner_id, wait, ask_on_stale, detached)| AcquireRequest {
                target,
                ttl,
                owner_id,
                wait,
                ask_on_stale,
                detached,
            },
        )
        .boxed()
}

fn request() -> BoxedStrategy<Request> {
    prop_oneof![
        acquire_request().prop_map(Request::Acquire),
        (text(), any::<u64>())
            .prop_map(|(target, acquire_id)| Request::Cancel { target, acquire_id }),
        (text(), text()).prop_map(|(target, lock_id)| Request::Release { target, lock_id }),
        (text(), text(), option::of(duration())).prop_map(|(target, lock_id, ttl)| {
            Request::Renew {
                target,
                lock_id,
                ttl,
            }
        }),
        (text(), text()).prop_map(|(target, reason)| Request::Break { target, reason }),
        text().prop_map(|target| Request::Metadata { target }),
        Just(Request::List),
        Just(Request::Status),
        Just(Request::Ping),
        (acquire_request(), lock_mode())
            .prop_map(|(request, mode)| Request::AcquireIn { request, mode }),
        text().prop_map(|target| Request::Describe { target }),
        Just(Request::ListModes),
        (acquire_request(), lock_mode(), option::of(duration())).prop_map(
            |(request, mode, max_hold)| Request::AcquireBounded {
                request,
                mode,
                max_hold
            }
        ),
        vec(text(), 0..4).prop_map(|targets| Request::Resolve { targets }),
        (text(), text(), text(), text()).prop_map(|(target, lock_id, session, secret)| {
            Request::Resume {
                target,
                lock_id,
                session,
                secret: Secret(secret),
            }
        }),
        Just(Request::Restarts),
        Just(Request::Metrics),
        Just(Request::ListQueues),
        (text(), option::of(duration()))
            .prop_map(|(target, timeout)| Request::WaitReleased { target, timeout }),
        (
            acquire_request(),
            lock_mode(),
            option::of(duration()),
            (any::<u64>(), text(), text())
        )
            .prop_map(|(request, mode, max_hold, (ordinal, session, secret))| {
                Request::Requeue {
                    request,
                    mode,
                    max_hold,
                    place: WaitPlace {
                        ordinal,
                        session,
                        secret: Secret(secret),
                    },
                }
            }),
    ]
    .boxed()
}

fn lock_mode() -> impl Strategy<Value = LockMode> {
    prop_oneof![
        Just(LockMode::Exclusive),
        Just(LockMode::Shared),
        any::<u32>().prop_map(LockMode::Slots),
    ]
}

fn client_frame() -> BoxedStrategy<ClientFrame> {
    prop_oneof![
        (any::<u64>(), request()).prop_map(|(id, request)| ClientFrame::Request { id, request }),
        (any::<u64>(), text(), any::<bool>(), text()).prop_map(|(id, target, allow, reason)| {
            ClientFrame::StaleVerdict {
                id,
                target,
                allow,
                reason,
            }
        }),
    ]
    .boxed()
}

fn grant() -> BoxedStrategy<Grant> {
    (
        text(),
        text(),
        lock_metadata(),
        option::of(lock_metadata()),
        option::of(any::<u64>()),
        option::of(duration()),
        option::of(any::<u64>()),
    )
        .prop_map(
            |(target, lock_id, metadata, stole, token, valid_for, valid_until_monotonic_ns)| {
                Grant {
                    target,
                    lock_id,
                    metadata,
                    stole,
                    token,
                    valid_for,
                    valid_until_monotonic_ns,
                }
            },
        )
        .boxed()
}

fn list_entry() -> BoxedStrategy<ListEntry> {
    (
        text(),
        option::of(text()),
        option::of(any::<i64>()),
        option::of(any::<u32>()),
        option::of(text()),
        option::of(duration()),
        duration(),
        option::of(any::<u64>()),
        any::<u32>(),
    )
        .prop_map(
            |(target, lock_id, pid, uid, owner_id, held_for, ttl, token, waiters)| ListEntry {
                target,
                lock_id,
                pid,
                uid,
                owner_id,
                held_for,
                ttl,
                token,
                waiters,
            },
        )
        .boxed()
}

fn store_info() -> BoxedStrategy<StoreInfo> {
    (text(), text(), vec((text(), any::<u64>()), 0..4))
        .prop_map(|(scheme, description, counters)| StoreInfo {
            scheme,
            description,
            counters,
        })
        .boxed()
}

fn status_info() -> BoxedStrategy<StatusInfo> {
    (
        (
            text(),
            any::<u32>(),
            text(),
            text(),
            any::<u32>(),
            duration(),
        ),
        (
            vec(store_info(), 0..3),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
        ),
    )
        .prop_map(
            |(
                (daemon_version, protocol_version, hostname, instance_id, pid, uptime),
                (stores, held, waiting, sessions, targets),
            )| StatusInfo {
                daemon_version,
                protocol_version,
                hostname,
                instance_id,
                pid,
                uptime,
                stores,
                held,
                waiting,
                sessions,
                targets,
            },
        )
        .boxed()
}

fn response() -> BoxedStrategy<Response> {
    prop_oneof![
        grant().prop_map(Response::Granted),
        Just(Response::Cancelled),
        any::<bool>().prop_map(|held| Response::Released { held }),
        option::of(lock_metadata()).prop_map(Response::Metadata),
        vec(list_entry(), 0..4).prop_map(Response::List),
        status_info().prop_map(Response::Status),
        lock_metadata().prop_map(Response::Renewed),
        option::of(lock_metadata()).prop_map(Response::Broken),
        Just(Response::Pong),
        option::of(lock_view()).prop_map(Response::Described),
        vec(listed_lock(), 0..3).prop_map(Response::ListedModes),
        vec(
            prop_oneof![text().prop_map(Ok), wire_error().prop_map(Err)],
            0..3
        )
        .prop_map(Response::Resolved),
        (grant(), text(), text(), duration()).prop_map(|(grant, session, secret, window)| {
            Response::GrantedResumable {
                grant,
                resume: Resumable {
                    session,
                    secret: Secret(secret),
                    window,
                },
            }
        }),
        (
            any::<u64>(),
            option::of((
                any::<bool>(),
                (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
                option::of(duration())
            ))
        )
            .prop_map(|(restarts, last)| Response::Restarts(RestartInfo {
                restarts,
                last: last.map(
                    |(planned, (kept, resumed, lost, requeued), window_open_for)| LastRestart {
                        planned,
                        kept,
                        resumed,
                        lost,
                        requeued,
                        window_open_for,
                    }
                ),
            })),
        text().prop_map(Response::Metrics),
        Just(Response::NotHeld),
        vec(
            (
                listed_lock(),
                option::of(duration()),
                option::of((lock_metadata(), duration(), duration()))
            ),
            0..3
        )
        .prop_map(|locks| Response::ListedQueues(
            locks
                .into_iter()
                .map(|(listed, oldest_wait, foreign)| QueuedLock {
                    listed,
                    oldest_wait,
                    foreign_holder: foreign.map(|(holder, seen_for, last_seen)| {
                        ForeignHolder {
                            holder,
                            seen_for,
                            last_seen,
                        }
                    }),
                })
                .collect()
        )),
    ]
    .boxed()
}

fn holder_view() -> impl Strategy<Value = HolderView> {
    (
        (option::of(text()), text(), any::<i64>(), option::of(text())),
        (option::of(any::<u32>()), option::of(any::<u64>())),
        (option::of(any::<i128>()), any::<u32>(), any::<bool>()),
        (any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(
                (lock_id, hostname, pid, owner_id),
                (uid, token),
                (expires_unix_ns, count, detached),
                (local, expired),
            )| HolderView {
                lock_id,
                hostname,
                pid,
                owner_id,
                uid,
                token,
                expires_unix_ns,
                count,
                detached,
                local,
                expired,
            },
        )
}

fn lock_view() -> impl Strategy<Value = LockView> {
    (lock_metadata(), lock_mode(), vec(holder_view(), 0..3)).prop_map(|(lock, mode, holders)| {
        LockView {
            lock,
            mode,
            holders,
        }
    })
}

fn listed_lock() -> impl Strategy<Value = ListedLock> {
    (list_entry(), lock_mode(), any::<u32>()).prop_map(|(entry, mode, holders)| ListedLock {
        entry,
        mode,
        holders,
    })
}

fn error_kind() -> impl Strategy<Value = ErrorKind> {
    prop_oneof![
        Just(ErrorKind::AlreadyHeld),
        Just(ErrorKind::Timeout),
        Just(ErrorKind::ModeConflict),
        Just(ErrorKind::MaxHoldReached),
        Just(ErrorKind::InvalidTarget),
        Just(ErrorKind::StaleVetoed),
        Just(ErrorKind::Store),
        Just(ErrorKind::Protocol),
        Just(ErrorKind::Cancelled),
        Just(ErrorKind::ShuttingDown),
        Just(ErrorKind::LeaseLost),
        Just(ErrorKind::Unsupported),
        Just(ErrorKind::LimitExceeded),
        Just(ErrorKind::PermissionDenied),
        Just(ErrorKind::Internal),
        Just(ErrorKind::DaemonUnavailable),
        Just(ErrorKind::ConnectionLost),
        Just(ErrorKind::NotFound),
        Just(ErrorKind::Other),
    ]
}

fn wire_error() -> BoxedStrategy<WireError> {
    (
        error_kind(),
        text(),
        option::of(lock_metadata().prop_map(Box::new)),
    )
        .prop_map(|(kind, message, holder)| WireError {
            kind,
            message,
            holder,
        })
        .boxed()
}

fn event() -> BoxedStrategy<Event> {
    prop_oneof![
        any::<u32>().prop_map(|position| Event::QueuePosition { position }),
        lock_metadata().prop_map(|holder| Event::StaleQuestion { holder }),
        (duration(), option::of(any::<u64>())).prop_map(|(valid_for, valid_until_monotonic_ns)| {
            Event::LeaseRenewed {
                valid_for,
                valid_until_monotonic_ns,
            }
        }),
        text().prop_map(|reason| Event::LeaseLost { reason }),
        text().prop_map(|reason| Event::Releasing { reason }),
        (error_kind(), text()).prop_map(|(kind, reason)| Event::LeaseEnded { kind, reason }),
        (any::<u32>(), any::<u64>(), text(), text(), duration()).prop_map(
            |(position, ordinal, session, secret, window)| Event::Queued {
                position,
                ordinal,
                resume: Resumable {
                    session,
                    secret: Secret(secret),
                    window,
                },
            }
        ),
        (
            any::<u32>(),
            option::of(lock_metadata()),
            option::of(duration())
        )
            .prop_map(|(position, holder, held_for)| Event::Waiting {
                position,
                holder: holder.map(Box::new),
                held_for,
            }),
    ]
    .boxed()
}

fn server_frame() -> BoxedStrategy<ServerFrame> {
    prop_oneof![
        (
            any::<u64>(),
            prop_oneof![response().prop_map(Ok), wire_error().prop_map(Err)]
        )
            .prop_map(|(id, result)| ServerFrame::Response { id, result }),
        (any::<u64>(), event()).prop_map(|(id, event)| ServerFrame::Event { id, event }),
    ]
    .boxed()
}

fn welcome() -> BoxedStrategy<Welcome> {
    (any::<u32>(), text(), text(), text())
        .prop_map(
            |(protocol_version, daemon_version, hostname, instance_id)| Welcome {
                protocol_version,
                daemon_version,
                hostname,
                instance_id,
            },
        )
        .boxed()
}

fn hello() -> impl Strategy<Value = Hello> {
    prop_oneof![
        Just(Hello::current()),
        any::<u32>().prop_map(|version| Hello { version }),
    ]
}

/// A valid encoding with some bytes overwritten, some cut off or some appended: garbage that
/// gets past the first few bytes, where uniformly random bytes rarely do.
fn damaged(valid: Vec<u8>, edits: Vec<(usize, u8)>, cut: usize, tail: Vec<u8>) -> Vec<u8> {
    let mut bytes = valid;
    for (at, byte) in edits {
        if !bytes.is_empty() {
            let i = at % bytes.len();
            bytes[i] = byte;
        }
    }
    bytes.truncate(bytes.len().saturating_sub(cut));
    bytes.extend(tail);
    bytes
}

fn edits() -> impl Strategy<Value = (Vec<(usize, u8)>, usize, Vec<u8>)> {
    (
        vec((any::<usize>(), any::<u8>()), 0..4),
        prop_oneof![Just(0usize), 0usize..8],
        vec(any::<u8>(), 0..3),
    )
}

// ---- every variant has a strategy ------------------------------------------------------

/// Which variant `value` is, by a `match` without a wildcard: a variant added to a message
/// breaks this file's build until it is listed here and given a strategy above.
trait Variant {
    const COUNT: usize;
    fn variant(&self) -> usize;
}

impl Variant for ClientFrame {
    const COUNT: usize = 2;
    fn variant(&self) -> usize {
        match self {
            ClientFrame::Request { .. } => 0,
            ClientFrame::StaleVerdict { .. } => 1,
        }
    }
}

impl Variant for Request {
    const COUNT: usize = 20;
    fn variant(&self) -> usize {
        match self {
            Request::Acquire(_) => 0,
            Request::Cancel { .. } => 1,
            Request::Release { .. } => 2,
            Request::Renew { .. } => 3,
            Request::Break { .. } => 4,
            Request::Metadata { .. } => 5,
            Request::List => 6,
            Request::Status => 7,
            Request::Ping => 8,
            Request::AcquireIn { .. } => 9,
            Request::Describe { .. } => 10,
            Request::ListModes => 11,
            Request::AcquireBounded { .. } => 12,
            Request::Resolve { .. } => 13,
            Request::Resume { .. } => 14,
            Request::Restarts => 15,
            Request::Requeue { .. } => 16,
            Request::Metrics => 17,
            Request::ListQueues => 18,
            Request::WaitReleased { .. } => 19,
        }
    }
}

impl Variant for WaitMode {
    const COUNT: usize = 2;
    fn variant(&self) -> usize {
        match self {
            WaitMode::Try => 0,
            WaitMode::Wait { .. } => 1,
        }
    }
}

impl Variant for ServerFrame {
    const COUNT: usize = 3;
    fn variant(&self) -> usize {
        match self {
            ServerFrame::Response { result: Ok(_), .. } => 0,
            ServerFrame::Response { result: Err(_), .. } => 1,
            ServerFrame::Event { .. } => 2,
        }
    }
}

impl Variant for Response {
    const COUNT: usize = 17;
    fn variant(&self) -> usize {
        match self {
            Response::Granted(_) => 0,
            Response::Cancelled => 1,
            Response::Released { .. } => 2,
            Response::Metadata(_) => 3,
            Response::List(_) => 4,
            Response::Status(_) => 5,
            Response::Renewed(_) => 6,
            Response::Broken(_) => 7,
            Response::Pong => 8,
            Response::Described(_) => 9,
            Response::ListedModes(_) => 10,
            Response::Resolved(_) => 11,
            Response::GrantedResumable { .. } => 12,
            Response::Restarts(_) => 13,
            Response::Metrics(_) => 14,
            Response::ListedQueues(_) => 15,
            Response::NotHeld => 16,
        }
    }
}

impl Variant for Event {
    const COUNT: usize = 8;
    fn variant(&self) -> usize {
        match self {
            Event::QueuePosition { .. } => 0,
            Event::StaleQuestion { .. } => 1,
            Event::LeaseRenewed { .. } => 2,
            Event::LeaseLost { .. } => 3,
            Event::Releasing { .. } => 4,
            Event::LeaseEnded { .. } => 5,
            Event::Queued { .. } => 6,
            Event::Waiting { .. } => 7,
        }
    }
}

impl Variant for LockFileFormat {
    const COUNT: usize = 4;
    fn variant(&self) -> usize {
        match self {
            LockFileFormat::Vfslock(_) => 0,
            LockFileFormat::Go => 1,
            LockFileFormat::Foreign => 2,
            LockFileFormat::Corrupt => 3,
        }
    }
}

impl Variant for ErrorKind {
    const COUNT: usize = 19;
    fn variant(&self) -> usize {
        match self {
            ErrorKind::AlreadyHeld => 0,
            ErrorKind::Timeout => 1,
            ErrorKind::InvalidTarget => 2,
            ErrorKind::StaleVetoed => 3,
            ErrorKind::Store => 4,
            ErrorKind::Protocol => 5,
            ErrorKind::Cancelled => 6,
            ErrorKind::ShuttingDown => 7,
            ErrorKind::LeaseLost => 8,
            ErrorKind::Unsupported => 9,
            ErrorKind::LimitExceeded => 10,
            ErrorKind::PermissionDenied => 11,
            ErrorKind::Internal => 12,
            ErrorKind::DaemonUnavailable => 13,
            ErrorKind::ConnectionLost => 14,
            ErrorKind::NotFound => 15,
            ErrorKind::Other => 16,
            ErrorKind::ModeConflict => 17,
            ErrorKind::MaxHoldReached => 18,
        }
    }
}

/// Draws from `strategy` until every variant of `T` came out (at most 10,000 draws).
fn assert_covers_every_variant<T: Variant + Debug>(strategy: impl Strategy<Value = T>) {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut seen = vec![false; T::COUNT];
    for _ in 0..10_000 {
        let value = strategy.new_tree(&mut runner).expect("a value").current();
        seen[value.variant()] = true;
        if seen.iter().all(|s| *s) {
            return;
        }
    }
    let missing: Vec<usize> = (0..T::COUNT).filter(|i| !seen[*i]).collect();
    panic!(
        "the strategy for {} never produced variants {missing:?}",
        std::any::type_name::<T>()
    );
}

#[test]
fn the_strategies_produce_every_variant() {
    assert_covers_every_variant(client_frame());
    assert_covers_every_variant(request());
    assert_covers_every_variant(wait_mode());
    assert_covers_every_variant(server_frame());
    assert_covers_every_variant(response());
    assert_covers_every_variant(event());
    assert_covers_every_variant(lock_file_format());
    assert_covers_every_variant(error_kind());
}

// ---- properties -------------------------------------------------------------------------

/// The whole path a message takes between the two ends of a connection.
fn through_the_wire<T>(value: &T) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let bytes = codec::encode_frame(value).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);

    // A frame is only found once all of it has arrived.
    prop_assert_eq!(decoder.next_frame(&bytes[..bytes.len() - 1]), Ok(None));
    prop_assert_eq!(decoder.next_frame(&bytes[..LEN_PREFIX - 1]), Ok(None));

    let (payload, used) = decoder
        .next_frame(&bytes)
        .map_err(|e| TestCaseError::fail(e.to_string()))?
        .ok_or_else(|| TestCaseError::fail("no whole frame in an encoded frame"))?;
    prop_assert_eq!(used, bytes.len());
    prop_assert_eq!(used, LEN_PREFIX + payload.len());
    let back: T = codec::decode(payload).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&back, value);
    Ok(())
}

proptest! {
    #[test]
    fn client_frames_survive_the_wire(frame in client_frame()) {
        through_the_wire(&frame)?;
    }

    #[test]
    fn requests_survive_the_wire(request in request()) {
        through_the_wire(&request)?;
    }

    #[test]
    fn acquire_requests_survive_the_wire(acquire in acquire_request()) {
        through_the_wire(&acquire)?;
    }

    #[test]
    fn server_frames_survive_the_wire(frame in server_frame()) {
        through_the_wire(&frame)?;
    }

    #[test]
    fn responses_survive_the_wire(response in response()) {
        through_the_wire(&response)?;
    }

    #[test]
    fn results_survive_the_wire(
        result in prop_oneof![response().prop_map(Ok), wire_error().prop_map(Err)],
    ) {
        through_the_wire::<Result<Response, WireError>>(&result)?;
    }

    #[test]
    fn events_survive_the_wire(event in event()) {
        through_the_wire(&event)?;
    }

    #[test]
    fn lock_metadata_survives_the_wire(metadata in lock_metadata()) {
        through_the_wire(&metadata)?;
    }

    #[test]
    fn wire_errors_survive_the_wire(error in wire_error()) {
        through_the_wire(&error)?;
    }

    #[test]
    fn welcomes_survive_the_wire(welcome in welcome()) {
        through_the_wire(&welcome)?;
    }

    #[test]
    fn the_hello_survives_its_fixed_layout(hello in hello()) {
        let bytes = hello.encode();
        prop_assert_eq!(bytes.len(), HELLO_LEN);
        prop_assert_eq!(&bytes[..4], &MAGIC[..]);
        prop_assert_eq!(Hello::decode(bytes), Ok(hello));
    }

    #[test]
    fn any_greeting_decodes_or_is_refused_for_its_magic(bytes in any::<[u8; HELLO_LEN]>()) {
        match Hello::decode(bytes) {
            Ok(hello) => prop_assert_eq!(hello.encode(), bytes),
            Err(HelloError::BadMagic(magic)) => {
                prop_assert_ne!(magic, MAGIC);
                prop_assert_eq!(&magic[..], &bytes[..4]);
            }
        }
    }

    /// Frames written back to back come out one by one, in order, from one buffer.
    #[test]
    fn a_stream_of_frames_splits_back_into_its_messages(frames in vec(client_frame(), 0..6)) {
        let mut stream = Vec::new();
        for frame in &frames {
            stream.extend(codec::encode_frame(frame).map_err(|e| TestCaseError::fail(e.to_string()))?);
        }
        let decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let mut rest = &stream[..];
        let mut back = Vec::new();
        while let Some((payload, used)) =
            decoder.next_frame(rest).map_err(|e| TestCaseError::fail(e.to_string()))?
        {
            back.push(codec::decode::<ClientFrame>(payload).map_err(|e| TestCaseError::fail(e.to_string()))?);
            rest = &rest[used..];
        }
        prop_assert!(rest.is_empty());
        prop_assert_eq!(back, frames);
    }

    #[test]
    fn any_bytes_decode_or_fail_without_panicking(bytes in vec(any::<u8>(), 0..256)) {
        // Ok or Err, both fine; a panic fails the test. What decodes must re-encode to a value
        // that decodes to itself.
        if let Ok(frame) = codec::decode::<ClientFrame>(&bytes) {
            through_the_wire(&frame)?;
        }
        let _ = codec::decode::<ServerFrame>(&bytes);
    }

    #[test]
    fn damaged_client_frames_decode_or_fail_without_panicking(
        frame in client_frame(),
        (edits, cut, tail) in edits(),
    ) {
        let valid = codec::encode(&frame).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let bytes = damaged(valid, edits, cut, tail);
        if let Ok(frame) = codec::decode::<ClientFrame>(&bytes) {
            through_the_wire(&frame)?;
        }
    }

    #[test]
    fn damaged_server_frames_decode_or_fail_without_panicking(
        frame in server_frame(),
        (edits, cut, tail) in edits(),
    ) {
        let valid = codec::encode(&frame).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let bytes = damaged(valid, edits, cut, tail);
        if let Ok(frame) = codec::decode::<ServerFrame>(&bytes) {
            through_the_wire(&frame)?;
        }
    }

    /// A daemon never sends a client what its version lacks, and rewrites nothing a client's
    /// version already has.
    #[test]
    fn a_frame_for_an_older_client_fits_its_version(
        frame in server_frame(),
        version in OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION,
    ) {
        let down = frame.clone().for_version(version);
        prop_assert!(down.since_version() <= version, "{:?} for version {}", down, version);
        if frame.since_version() <= version {
            prop_assert_eq!(down, frame);
        }
    }
}

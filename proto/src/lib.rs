//! Wire protocol between `vfslockd` and its clients.
//!
//! This crate knows messages, frames and the codec. It knows no socket, no runtime, no store
//! and no lock file: the daemon and the client library both depend on it, so the two can only
//! disagree about the protocol by disagreeing about its version.
//!
//! # A connection
//!
//! 1. **Handshake**, fixed layout that never changes between protocol versions
//!    ([`handshake`]): the client sends 8 bytes, the daemon answers 8 bytes.
//!
//!    | bytes | content                                       |
//!    |-------|-----------------------------------------------|
//!    | 0..4  | magic `b"VFSL"`                                |
//!    | 4..8  | protocol version, `u32`, big-endian            |
//!
//!    The daemon speaks every version from [`handshake::OLDEST_PROTOCOL_VERSION`] to its own:
//!    for a version it speaks, its hello names the client's version and its first frame is a
//!    [`Welcome`]; for any other, its hello names its own version and it closes the connection,
//!    so that either side can report which versions met, and a newer client can connect again
//!    speaking the daemon's version ([`handshake`] has the rules, [`versions`] what each version
//!    added).
//! 2. **Frames** ([`frame`]) in both directions:
//!
//!    | bytes    | content                                                    |
//!    |----------|------------------------------------------------------------|
//!    | 0..4     | payload length `n`, `u32`, big-endian                      |
//!    | 4..4+n   | payload: one message encoded by [`codec`]                  |
//!
//!    A length above the receiver's limit (default [`frame::DEFAULT_MAX_FRAME`], 1 MiB) is
//!    refused before anything is allocated for it.
//! 3. **Messages**: the client sends [`ClientFrame`]s, the daemon sends [`ServerFrame`]s. Every
//!    request carries an id chosen by the client and its response echoes it, so one connection
//!    carries many requests at once. The daemon also sends [`Event`]s tagged with the id of the
//!    request they concern (a queue position, a stale-lock question, a lost lease).
//!
//! The whole wire format, for clients written in other languages, is `docs/protocol.md` in the
//! repository.
//!
//! # Example
//!
//! ```
//! use vfslock_proto::{codec, frame, ClientFrame, Request};
//!
//! let bytes = codec::encode_frame(&ClientFrame::Request { id: 7, request: Request::Ping }).unwrap();
//! let mut decoder = frame::FrameDecoder::new(frame::DEFAULT_MAX_FRAME);
//! let (payload, used) = decoder.next_frame(&bytes).unwrap().expect("a whole frame");
//! assert_eq!(used, bytes.len());
//! let back: ClientFrame = codec::decode(payload).unwrap();
//! assert_eq!(back, ClientFrame::Request { id: 7, request: Request::Ping });
//! ```

pub mod codec;
pub mod frame;
pub mod handshake;
mod message;
pub mod unix_time;
pub mod versions;

pub use message::*;

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
//!    If the versions differ the daemon closes the connection after its 8 bytes, so either side
//!    can report "client speaks 1, daemon speaks 2". If they match, the daemon's first frame is
//!    a [`Welcome`].
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

pub use message::*;

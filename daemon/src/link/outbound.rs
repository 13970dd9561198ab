//! A session's way out: the frames its target actors and its reader send to the client.
//!
//! An answer is written to the socket by whoever produces it (usually the target actor) when
//! nothing is queued before it and the socket takes it whole, so that a request costs no wake-up
//! of a writer task. Whatever the socket does not take at once, and everything behind it, goes
//! through the session's writer task, in order; a client that stops reading therefore never
//! blocks an actor, it only grows its own queue. On platforms without the direct path (named
//! pipes) every frame goes through the writer task.
//!
//! That mechanism is written once for both ends, in the client library
//! ([`vfslock::transport`], whose docs say why it lives there). This module types it for the
//! daemon's frames, logs a frame that cannot be encoded, and drops what a closed session is
//! sent.

use tokio::sync::mpsc;
use vfslock::transport;
use vfslock_proto::codec::CodecError;
use vfslock_proto::ServerFrame;

/// What the writer task writes: a frame, or the unwritten rest of one written in part directly.
pub type Outgoing = transport::Outgoing<ServerFrame>;

/// The writer task's end of an [`Outbound`]; run it with [`Writer::run`].
pub type Writer = transport::Writer<ServerFrame>;

/// The socket's send half, shared by the writer task and the direct writers.
#[cfg(unix)]
pub type SendHalf = tokio::net::unix::OwnedWriteHalf;

/// The sending end of a session, held by its link.
#[derive(Debug)]
pub struct Outbound(transport::Outbound<ServerFrame>);

impl Outbound {
    /// An outbound path without a direct socket (every frame through the queue), and the
    /// queue's far end: the writer task's, or a test's.
    pub fn queued() -> (Outbound, mpsc::UnboundedReceiver<Outgoing>) {
        let (outbound, frames) = transport::Outbound::queued();
        (Outbound(outbound), frames)
    }

    /// An outbound path writing to `socket` directly when it can, and its writer.
    #[cfg(unix)]
    pub fn direct(socket: std::sync::Arc<SendHalf>) -> (Outbound, Writer) {
        let (outbound, writer) = transport::Outbound::direct(socket, unencodable);
        (Outbound(outbound), writer)
    }

    /// An outbound path through the writer task only, and its writer.
    #[cfg(not(unix))]
    pub fn through_writer() -> (Outbound, Writer) {
        let (outbound, writer) = transport::Outbound::through_writer(unencodable);
        (Outbound(outbound), writer)
    }

    /// Sends `frame`; a closed session drops it.
    pub fn send(&self, frame: ServerFrame) {
        let _ = self.0.send(frame);
    }

    /// Whether the session's writer is gone.
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

fn unencodable(e: &CodecError) {
    tracing::error!(error = %e, "cannot encode a frame; dropped");
}

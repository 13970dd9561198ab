//! A connection's way out, written once for both ends of the protocol: the client's connection
//! to the daemon sends its requests through it, and each of the daemon's sessions its answers
//! and events.
//!
//! # Why it lives here
//! Both ends have the same problem and must solve it the same way, so the code is one. It needs
//! tokio and the socket, which the protocol crate (`vfslock-proto`) must stay free of, and this
//! crate is the only other one both ends share (the daemon depends on it for `vfslockctl`). It
//! is public for the daemon's sake; a program that only takes locks never needs it.
//!
//! # How a frame goes out
//! A lock cycle is two round trips, and on a busy host each system call and each task hop on
//! them shows in its time. So a frame is written straight to the socket by whoever sends it (a
//! lock's caller in the client, a lock actor in the daemon) when nothing is queued before it and
//! the socket takes it whole: one `send`, no wake-up of the writer task. Whatever the socket
//! does not take at once (the unwritten rest of a frame), and every frame behind it, goes
//! through the connection's writer task, which writes them in order, batching what is queued
//! into one write. Hence:
//! - frames leave in the order they were sent, whichever thread sends them: the lock over the
//!   direct path is held across the direct write, and nothing is written directly while
//!   anything is queued;
//! - a peer that stops reading never blocks a sender (a daemon's lock actor, a client's `Drop`):
//!   its frames queue, unbounded, for the writer task;
//! - sending needs no runtime, so the `Drop` of a lock can still release it.
//!
//! A named pipe (Windows) has no write that a sender could try without blocking, so there every
//! frame goes through the writer task. On Unix the read side is Tokio's own read half, which
//! learns from a short read that the socket is drained and so does not spend a failing `recv`
//! before every wait.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use interprocess::local_socket::tokio::Stream;
use tokio::sync::mpsc;
use vfslock_proto::codec::{self, CodecError};
use vfslock_proto::{ClientFrame, ServerFrame};

/// The socket's read side, for the connection's reader.
#[cfg(unix)]
pub type ReadHalf = tokio::net::unix::OwnedReadHalf;
/// The socket's read side, for the connection's reader.
#[cfg(not(unix))]
pub type ReadHalf = tokio::io::ReadHalf<Stream>;

/// The socket's write side: the writer task's, and on Unix also the direct path's (Tokio's send
/// half can be written from any thread).
#[cfg(unix)]
pub type WriteHalf = Arc<tokio::net::unix::OwnedWriteHalf>;
/// The socket's write side, the writer task's alone.
#[cfg(not(unix))]
pub type WriteHalf = tokio::io::WriteHalf<Stream>;

/// Splits a connected stream into its read side and its write side.
pub fn split(stream: Stream) -> (ReadHalf, WriteHalf) {
    #[cfg(unix)]
    {
        let Stream::UdSocket(inner) = stream;
        let (read, write) = tokio::net::UnixStream::from(inner).into_split();
        (read, Arc::new(write))
    }
    #[cfg(not(unix))]
    {
        tokio::io::split(stream)
    }
}

/// What a connection sends: a frame of the protocol, encoded when it is written.
pub trait Frame: Send + 'static {
    /// The whole frame (length prefix and payload), or why it cannot be encoded.
    fn encode(self) -> Result<Vec<u8>, CodecError>;
}

impl Frame for ClientFrame {
    fn encode(self) -> Result<Vec<u8>, CodecError> {
        codec::encode_frame(&self)
    }
}

impl Frame for ServerFrame {
    fn encode(self) -> Result<Vec<u8>, CodecError> {
        codec::encode_frame(&self)
    }
}

/// A frame its sender encoded already (to report an encoding error to its own caller).
impl Frame for Vec<u8> {
    fn encode(self) -> Result<Vec<u8>, CodecError> {
        Ok(self)
    }
}

/// What the writer task writes: a frame, or the unwritten rest of one written in part directly.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // a frame is queued as it is; boxing it would cost an allocation per frame
pub enum Outgoing<F> {
    /// A frame to encode and write.
    Frame(F),
    /// Encoded bytes, written as they are: the rest of a frame whose beginning is already on
    /// the socket, or all of one the socket did not take at once.
    Rest(Vec<u8>),
}

/// The connection is gone: nothing sent from now on reaches the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closed;

/// Told why a frame cannot be encoded (it is then dropped): the daemon logs it; the client
/// encodes its frames before it sends them, so that it can fail the request instead.
pub type Unencodable = fn(&CodecError);

/// The sending end of a connection, shared by everyone who sends on it.
#[derive(Debug)]
pub struct Outbound<F> {
    queue: mpsc::UnboundedSender<Outgoing<F>>,
    direct: Arc<Mutex<Direct>>,
    unencodable: Unencodable,
}

/// The direct path, and how many items the writer task has yet to write: a frame may be
/// written directly only while that is zero, so nothing overtakes what is queued.
#[derive(Debug, Default)]
struct Direct {
    #[cfg(unix)]
    socket: Option<WriteHalf>,
    queued: usize,
}

/// The writer task's end of an [`Outbound`].
pub struct Writer<F> {
    queue: mpsc::UnboundedReceiver<Outgoing<F>>,
    direct: Arc<Mutex<Direct>>,
    unencodable: Unencodable,
}

impl<F: Frame> Outbound<F> {
    /// A sending end without a direct socket or a writer task (every frame is queued), and the
    /// queue's far end, which a test reads.
    pub fn queued() -> (Outbound<F>, mpsc::UnboundedReceiver<Outgoing<F>>) {
        // Nothing is ever encoded here: there is neither a direct socket nor a writer.
        Outbound::with_queue(|_| {})
    }

    fn with_queue(unencodable: Unencodable) -> (Outbound<F>, mpsc::UnboundedReceiver<Outgoing<F>>) {
        let (queue, frames) = mpsc::unbounded_channel();
        let outbound = Outbound {
            queue,
            direct: Arc::default(),
            unencodable,
        };
        (outbound, frames)
    }

    /// A sending end that writes to `socket` directly when it can, and its writer, which the
    /// caller runs ([`Writer::run`]) with the same socket. Frames that cannot be encoded are
    /// dropped and told to `unencodable`.
    #[cfg(unix)]
    pub fn direct(socket: WriteHalf, unencodable: Unencodable) -> (Outbound<F>, Writer<F>) {
        let (outbound, writer) = Outbound::through_writer(unencodable);
        outbound.direct.lock().expect("outbound lock").socket = Some(socket);
        (outbound, writer)
    }

    /// A sending end that sends every frame through its writer, and that writer.
    pub fn through_writer(unencodable: Unencodable) -> (Outbound<F>, Writer<F>) {
        let (outbound, queue) = Outbound::with_queue(unencodable);
        let writer = Writer {
            queue,
            direct: outbound.direct.clone(),
            unencodable,
        };
        (outbound, writer)
    }

    /// Sends `frame`: written at once when nothing is queued and the socket takes it whole,
    /// else (the rest of it) queued for the writer task. A frame that cannot be encoded is
    /// dropped (and told); `Err` only means that the connection is gone.
    pub fn send(&self, frame: F) -> Result<(), Closed> {
        if self.queue.is_closed() {
            return Err(Closed);
        }
        // Held across the direct write: a frame queued meanwhile by another thread must not
        // overtake this one, nor be overtaken.
        let mut direct = self.direct.lock().expect("outbound lock");
        #[cfg(unix)]
        if let (0, Some(socket)) = (direct.queued, &direct.socket) {
            let bytes = match frame.encode() {
                Ok(bytes) => bytes,
                Err(e) => {
                    (self.unencodable)(&e);
                    return Ok(());
                }
            };
            let rest = match socket.try_write(&bytes) {
                Ok(n) if n == bytes.len() => return Ok(()),
                Ok(n) => bytes[n..].to_vec(),
                // Full, or an error the writer task meets next and ends the connection on.
                Err(_) => bytes,
            };
            return self.enqueue(&mut direct, Outgoing::Rest(rest));
        }
        self.enqueue(&mut direct, Outgoing::Frame(frame))
    }

    fn enqueue(&self, direct: &mut Direct, item: Outgoing<F>) -> Result<(), Closed> {
        self.queue.send(item).map_err(|_| Closed)?;
        direct.queued += 1;
        Ok(())
    }

    /// Whether the connection's writer is gone.
    pub fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }

    /// A sending end that does not keep the writer task alive: for a reader, which must not
    /// keep its own connection open.
    pub fn downgrade(&self) -> WeakOutbound<F> {
        WeakOutbound {
            queue: self.queue.downgrade(),
            direct: self.direct.clone(),
            unencodable: self.unencodable,
        }
    }
}

/// An [`Outbound`] that does not keep the writer task alive.
#[derive(Debug)]
pub struct WeakOutbound<F> {
    queue: mpsc::WeakUnboundedSender<Outgoing<F>>,
    direct: Arc<Mutex<Direct>>,
    unencodable: Unencodable,
}

impl<F> WeakOutbound<F> {
    /// The sending end, while someone still holds it.
    pub fn upgrade(&self) -> Option<Outbound<F>> {
        Some(Outbound {
            queue: self.queue.upgrade()?,
            direct: self.direct.clone(),
            unencodable: self.unencodable,
        })
    }
}

impl<F: Frame> Writer<F> {
    /// Writes queued frames to `socket` until `closing` completes or every sending end is gone,
    /// then flushes what is left and half-closes the socket (the peer then sees the end; a
    /// named pipe has no half-close). From then on the direct path is closed too. A failed
    /// write ends it at once.
    pub async fn run(mut self, mut socket: WriteHalf, closing: impl Future) {
        let mut closing = std::pin::pin!(closing);
        let mut buf = Vec::new();
        let mut open = true;
        while open {
            let first = tokio::select! {
                item = self.queue.recv() => item,
                _ = &mut closing => { open = false; self.queue.try_recv().ok() }
            };
            let Some(first) = first else { break };
            buf.clear();
            self.encode_into(&mut buf, first);
            let mut items = 1;
            // Batch whatever else is already queued into one write.
            while buf.len() < 64 * 1024 {
                match self.queue.try_recv() {
                    Ok(item) => {
                        self.encode_into(&mut buf, item);
                        items += 1;
                    }
                    Err(_) => break,
                }
            }
            if write_all(&mut socket, &buf).await.is_err() {
                self.close_direct();
                return;
            }
            self.direct.lock().expect("outbound lock").queued -= items;
            if buf.capacity() > 16 * 1024 {
                // A burst has passed: an idle connection keeps only a small buffer.
                buf = Vec::new();
            }
        }
        // Nothing written directly from here on: what is still queued is flushed below, in
        // order, and later frames find the queue closed.
        self.close_direct();
        self.queue.close();
        while let Ok(item) = self.queue.try_recv() {
            buf.clear();
            self.encode_into(&mut buf, item);
            if write_all(&mut socket, &buf).await.is_err() {
                return;
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), shutdown(&mut socket)).await;
    }

    fn encode_into(&self, buf: &mut Vec<u8>, item: Outgoing<F>) {
        match item {
            Outgoing::Frame(frame) => match frame.encode() {
                Ok(bytes) => buf.extend_from_slice(&bytes),
                Err(e) => (self.unencodable)(&e),
            },
            Outgoing::Rest(bytes) => buf.extend_from_slice(&bytes),
        }
    }

    fn close_direct(&self) {
        #[cfg(unix)]
        {
            self.direct.lock().expect("outbound lock").socket = None;
        }
    }
}

/// Writes `bytes` whole: for a handshake, before any writer task runs, and for the writer.
#[cfg(unix)]
pub async fn write_all(socket: &mut WriteHalf, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        socket.writable().await?;
        match socket.try_write(bytes) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes `bytes` whole: for a handshake, before any writer task runs, and for the writer.
#[cfg(not(unix))]
pub async fn write_all(socket: &mut WriteHalf, bytes: &[u8]) -> std::io::Result<()> {
    tokio::io::AsyncWriteExt::write_all(socket, bytes).await
}

/// Says no more will be written: the peer reads the end after what was sent.
#[cfg(unix)]
async fn shutdown(socket: &mut WriteHalf) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let stream: &tokio::net::UnixStream = socket.as_ref().as_ref();
    // SAFETY: a valid socket descriptor, kept open by `socket`; shutting down its sending
    // direction does not close it.
    let rc = unsafe { libc::shutdown(stream.as_raw_fd(), libc::SHUT_WR) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Flushes; a named pipe has no half-close, it ends when both halves are dropped.
#[cfg(not(unix))]
async fn shutdown(socket: &mut WriteHalf) -> std::io::Result<()> {
    tokio::io::AsyncWriteExt::flush(socket).await?;
    tokio::io::AsyncWriteExt::shutdown(socket).await
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn pair() -> (tokio::net::UnixStream, ReadHalf, WriteHalf) {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socket pair");
        ours.set_nonblocking(true).unwrap();
        theirs.set_nonblocking(true).unwrap();
        let (read, write) = tokio::net::UnixStream::from_std(ours).unwrap().into_split();
        (
            tokio::net::UnixStream::from_std(theirs).unwrap(),
            read,
            Arc::new(write),
        )
    }

    fn frame(id: u64) -> ClientFrame {
        ClientFrame::Request {
            id,
            request: vfslock_proto::Request::Ping,
        }
    }

    async fn read_frames(peer: &mut tokio::net::UnixStream, count: usize) -> Vec<ClientFrame> {
        let mut frames = Vec::new();
        for _ in 0..count {
            let mut prefix = [0u8; 4];
            peer.read_exact(&mut prefix).await.unwrap();
            let mut payload = vec![0u8; u32::from_be_bytes(prefix) as usize];
            peer.read_exact(&mut payload).await.unwrap();
            frames.push(codec::decode(&payload).unwrap());
        }
        frames
    }

    #[tokio::test]
    async fn frames_arrive_in_order_whether_written_directly_or_queued() {
        let (mut peer, _read, socket) = pair();
        let (out, writer) = Outbound::<ClientFrame>::direct(socket.clone(), |e| panic!("{e}"));
        // The first frame is written directly; the peer does not read yet, so the socket
        // fills and later frames (and the rest of the one it cut) queue behind. 64 Ki frames of
        // about 8 bytes are more than a socket buffer holds.
        let mut sent = Vec::new();
        for id in 0..65_536 {
            out.send(frame(id)).unwrap();
            sent.push(frame(id));
        }
        assert!(
            out.direct.lock().unwrap().queued > 0,
            "a peer that does not read must make frames queue, not block the sender"
        );
        let task = tokio::spawn(writer.run(socket, std::future::pending::<()>()));
        assert_eq!(read_frames(&mut peer, sent.len()).await, sent);
        drop(out);
        task.await.unwrap();
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).await.unwrap();
        assert!(
            rest.is_empty(),
            "the writer half-closes after the last frame"
        );
    }

    #[tokio::test]
    async fn a_closed_connection_refuses_frames_and_a_weak_end_does_not_keep_it() {
        let (_peer, _read, socket) = pair();
        let (out, writer) = Outbound::<ClientFrame>::direct(socket.clone(), |e| panic!("{e}"));
        let weak = out.downgrade();
        let (closing, closed) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(writer.run(socket, closed));
        assert!(weak.upgrade().is_some(), "held by `out`");
        closing.send(()).unwrap();
        task.await.unwrap();
        assert!(out.is_closed());
        assert_eq!(out.send(frame(1)), Err(Closed));
        drop(out);
        assert!(
            weak.upgrade().is_none(),
            "nobody holds the sending end any more"
        );
    }
}

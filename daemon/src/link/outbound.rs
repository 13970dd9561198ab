//! A session's way out: the frames its target actors and its reader send to the client.
//!
//! An answer is written to the socket by whoever produces it (usually the target actor) when
//! nothing is queued before it and the socket takes it whole, so that a request costs no wake-up
//! of a writer task. Whatever the socket does not take at once, and everything behind it, goes
//! through the session's writer task, in order; a client that stops reading therefore never
//! blocks an actor, it only grows its own queue. On platforms without the direct path (named
//! pipes) every frame goes through the writer task.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use vfslock_proto::{codec, ServerFrame};

/// What the writer task writes: a frame, or the unwritten rest of one written in part directly.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // a frame is queued as it is; boxing it would cost an allocation per frame
pub enum Outgoing {
    /// A frame to encode and write.
    Frame(ServerFrame),
    /// Bytes of a frame whose beginning is already on the socket.
    Rest(Vec<u8>),
}

/// The socket's send half, shared by the writer task and the direct writers.
#[cfg(unix)]
pub type SendHalf = tokio::net::unix::OwnedWriteHalf;

/// The sending end of a session, held by its link.
#[derive(Debug)]
pub struct Outbound {
    queue: mpsc::UnboundedSender<Outgoing>,
    direct: Arc<Mutex<Direct>>,
}

/// The direct path, and how many items the writer task has yet to write: a frame may be
/// written directly only while that is zero, so nothing overtakes what is queued.
#[derive(Debug, Default)]
struct Direct {
    #[cfg(unix)]
    socket: Option<Arc<SendHalf>>,
    queued: usize,
}

/// The writer task's end of an [`Outbound`].
pub struct Writer {
    queue: mpsc::UnboundedReceiver<Outgoing>,
    direct: Arc<Mutex<Direct>>,
}

impl Outbound {
    /// An outbound path without a direct socket (every frame through the queue), and the
    /// queue's far end: the writer task's, or a test's.
    pub fn queued() -> (Outbound, mpsc::UnboundedReceiver<Outgoing>) {
        let (queue, frames) = mpsc::unbounded_channel();
        let outbound = Outbound {
            queue,
            direct: Arc::default(),
        };
        (outbound, frames)
    }

    /// An outbound path writing to `socket` directly when it can, and its writer.
    #[cfg(unix)]
    pub fn direct(socket: Arc<SendHalf>) -> (Outbound, Writer) {
        let (outbound, queue) = Outbound::queued();
        outbound.direct.lock().expect("outbound lock").socket = Some(socket);
        let writer = Writer {
            queue,
            direct: outbound.direct.clone(),
        };
        (outbound, writer)
    }

    /// An outbound path through the writer task only, and its writer.
    #[cfg(not(unix))]
    pub fn through_writer() -> (Outbound, Writer) {
        let (outbound, queue) = Outbound::queued();
        let writer = Writer {
            queue,
            direct: outbound.direct.clone(),
        };
        (outbound, writer)
    }

    /// Sends `frame`; a closed session drops it.
    pub fn send(&self, frame: ServerFrame) {
        // Held across the direct write: a frame queued meanwhile by another actor must not
        // overtake this one, nor be overtaken.
        let mut direct = self.direct.lock().expect("outbound lock");
        #[cfg(unix)]
        if direct.queued == 0 {
            if let Some(socket) = &direct.socket {
                let Some(bytes) = encode(&frame) else { return };
                let rest = match socket.try_write(&bytes) {
                    Ok(n) if n == bytes.len() => return,
                    Ok(n) => bytes[n..].to_vec(),
                    // Full, or an error the writer task meets next and ends the session on.
                    Err(_) => bytes,
                };
                if self.queue.send(Outgoing::Rest(rest)).is_ok() {
                    direct.queued += 1;
                }
                return;
            }
        }
        if self.queue.send(Outgoing::Frame(frame)).is_ok() {
            direct.queued += 1;
        }
    }

    /// Whether the session's writer is gone.
    pub fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }
}

fn encode(frame: &ServerFrame) -> Option<Vec<u8>> {
    match codec::encode_frame(frame) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a frame; dropped");
            None
        }
    }
}

fn encode_into(buf: &mut Vec<u8>, item: &Outgoing) {
    match item {
        Outgoing::Frame(frame) => {
            if let Some(bytes) = encode(frame) {
                buf.extend_from_slice(&bytes);
            }
        }
        Outgoing::Rest(bytes) => buf.extend_from_slice(bytes),
    }
}

impl Writer {
    /// Writes queued frames to `socket` until told to close, then flushes what is left and
    /// half-closes the socket. From then on the direct path is closed too.
    pub async fn run<S: Socket>(mut self, mut socket: S, mut closing: oneshot::Receiver<()>) {
        let mut buf = Vec::new();
        let mut open = true;
        while open {
            let first = tokio::select! {
                item = self.queue.recv() => item,
                _ = &mut closing => { open = false; self.queue.try_recv().ok() }
            };
            let Some(first) = first else { break };
            buf.clear();
            encode_into(&mut buf, &first);
            let mut items = 1;
            // Batch whatever else is already queued into one write.
            while buf.len() < 64 * 1024 {
                match self.queue.try_recv() {
                    Ok(item) => {
                        encode_into(&mut buf, &item);
                        items += 1;
                    }
                    Err(_) => break,
                }
            }
            if socket.write_all(&buf).await.is_err() {
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
            encode_into(&mut buf, &item);
            if socket.write_all(&buf).await.is_err() {
                return;
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), socket.shutdown()).await;
    }

    fn close_direct(&self) {
        #[cfg(unix)]
        {
            self.direct.lock().expect("outbound lock").socket = None;
        }
    }
}

/// Where the writer task writes.
#[allow(async_fn_in_trait)] // used with concrete types inside this crate only
pub trait Socket {
    /// Writes `bytes` whole.
    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    /// Says no more will be written.
    async fn shutdown(&mut self) -> std::io::Result<()>;
}

#[cfg(unix)]
impl Socket for Arc<SendHalf> {
    async fn write_all(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            self.writable().await?;
            match self.try_write(bytes) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let half: &SendHalf = self;
        let stream: &tokio::net::UnixStream = half.as_ref();
        // SAFETY: a valid socket descriptor, kept open by `self`; shutting down its sending
        // direction does not close it.
        let rc = unsafe { libc::shutdown(stream.as_raw_fd(), libc::SHUT_WR) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

/// A named pipe's write half, written by the writer task alone.
#[cfg(not(unix))]
impl<W: tokio::io::AsyncWrite + Unpin> Socket for W {
    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        tokio::io::AsyncWriteExt::write_all(self, bytes).await
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        tokio::io::AsyncWriteExt::flush(self).await?;
        tokio::io::AsyncWriteExt::shutdown(self).await
    }
}

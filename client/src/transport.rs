//! The connection's socket, split into a read side for the reader task and a write side that
//! every handle shares.
//!
//! A lock cycle is two round trips, and on a busy host each system call and each task hop on
//! them shows in its time. So a frame is written straight from the caller when nothing is
//! queued before it (one `send`, no wake-up of the writer task), and only what the socket does
//! not take at once goes through the writer task, in order. On Unix the read side is Tokio's
//! own read half, which learns from a short read that the socket is drained and so does not
//! spend a failing `recv` before every wait.
//!
//! Sending needs no runtime, so `Drop` of a lock can still release it.

use std::sync::{Arc, Mutex};

use interprocess::local_socket::tokio::Stream;
use tokio::sync::mpsc;

/// The socket's read side, owned by the reader task.
#[cfg(unix)]
pub(crate) type ReadSide = tokio::net::unix::OwnedReadHalf;
/// The socket's read side, owned by the reader task.
#[cfg(not(unix))]
pub(crate) type ReadSide = Shared;

/// Splits a connected stream into its read side and a sender for frames.
pub(crate) fn split(stream: Stream) -> std::io::Result<(ReadSide, WriteSide)> {
    #[cfg(unix)]
    {
        let Stream::UdSocket(inner) = stream;
        let (read, write) = tokio::net::UnixStream::from(inner).into_split();
        Ok((read, WriteSide::new(write)))
    }
    #[cfg(not(unix))]
    {
        let shared = Shared(Arc::new(stream));
        Ok((Shared(shared.0.clone()), WriteSide::new(shared)))
    }
}

#[cfg(unix)]
type RawWrite = tokio::net::unix::OwnedWriteHalf;
#[cfg(not(unix))]
type RawWrite = Shared;

/// Frames waiting for the writer task: while any is, later frames queue behind it, so the
/// daemon reads frames in the order they were sent.
#[derive(Default)]
struct Backlog {
    queued: usize,
}

/// Where frames are sent: straight to the socket when nothing waits before them, else to the
/// writer task.
pub(crate) struct WriteSide {
    raw: Arc<RawWrite>,
    backlog: Arc<Mutex<Backlog>>,
    queue: Option<mpsc::UnboundedSender<Vec<u8>>>,
}

/// The writer task's end of a [`WriteSide`].
pub(crate) struct Writer {
    raw: Arc<RawWrite>,
    backlog: Arc<Mutex<Backlog>>,
    queue: mpsc::UnboundedReceiver<Vec<u8>>,
}

impl WriteSide {
    fn new(raw: RawWrite) -> WriteSide {
        WriteSide {
            raw: Arc::new(raw),
            backlog: Arc::default(),
            queue: None,
        }
    }

    /// Writes `bytes` whole during the handshake, before any writer task exists.
    pub(crate) async fn write_all(&self, bytes: &[u8]) -> std::io::Result<()> {
        write_all(&self.raw, bytes).await
    }

    /// Hands the queue's far end to a writer task, which the caller spawns.
    pub(crate) fn writer(&mut self) -> Writer {
        let (tx, rx) = mpsc::unbounded_channel();
        self.queue = Some(tx);
        Writer {
            raw: self.raw.clone(),
            backlog: self.backlog.clone(),
            queue: rx,
        }
    }

    /// Sends one frame: written at once when nothing is queued and the socket takes it, else
    /// (the rest of it) queued for the writer task. `Err` means the connection is gone.
    pub(crate) fn send(&self, bytes: Vec<u8>) -> Result<(), ()> {
        let queue = self.queue.as_ref().ok_or(())?;
        if queue.is_closed() {
            return Err(());
        }
        // Held across the write: a frame queued meanwhile by another thread must not be
        // overtaken, nor overtake this one.
        let mut backlog = self.backlog.lock().expect("backlog lock");
        let rest = if backlog.queued == 0 {
            match try_write(&self.raw, &bytes) {
                Ok(n) if n == bytes.len() => return Ok(()),
                Ok(n) => bytes[n..].to_vec(),
                // Full, or an error the writer task will meet and end the connection on.
                Err(_) => bytes,
            }
        } else {
            bytes
        };
        backlog.queued += 1;
        queue.send(rest).map_err(|_| ())
    }

    /// Makes a weak sender for the reader task, which must not keep the connection open.
    pub(crate) fn downgrade(&self) -> WeakWriteSide {
        WeakWriteSide {
            raw: self.raw.clone(),
            backlog: self.backlog.clone(),
            queue: self.queue.as_ref().map(|queue| queue.downgrade()),
        }
    }
}

/// A [`WriteSide`] that does not keep the writer task alive.
pub(crate) struct WeakWriteSide {
    raw: Arc<RawWrite>,
    backlog: Arc<Mutex<Backlog>>,
    queue: Option<mpsc::WeakUnboundedSender<Vec<u8>>>,
}

impl WeakWriteSide {
    /// The sender, while some handle still keeps the connection.
    pub(crate) fn upgrade(&self) -> Option<WriteSide> {
        let queue = self.queue.as_ref()?.upgrade()?;
        Some(WriteSide {
            raw: self.raw.clone(),
            backlog: self.backlog.clone(),
            queue: Some(queue),
        })
    }
}

impl Writer {
    /// Writes queued frames in order until every handle is gone, then half-closes the socket
    /// so that the daemon releases what this connection held.
    pub(crate) async fn run(mut self, #[cfg(not(unix))] reader: tokio::task::AbortHandle) {
        while let Some(bytes) = self.queue.recv().await {
            if write_all(&self.raw, &bytes).await.is_err() {
                return;
            }
            self.backlog.lock().expect("backlog lock").queued -= 1;
        }
        shutdown_write(&self.raw);
        // A named pipe has no half-close: stop the reader (nobody is left to hear it), so that
        // the last reference to the stream goes and the pipe closes; the daemon then sees the
        // end.
        #[cfg(not(unix))]
        reader.abort();
    }
}

#[cfg(unix)]
async fn write_all(raw: &RawWrite, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        raw.writable().await?;
        match raw.try_write(bytes) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(unix)]
fn try_write(raw: &RawWrite, bytes: &[u8]) -> std::io::Result<usize> {
    raw.try_write(bytes)
}

#[cfg(unix)]
fn shutdown_write(raw: &RawWrite) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid socket descriptor, kept open by `raw`; shutting down its sending
    // direction does not close it.
    unsafe { libc::shutdown(raw.as_ref().as_raw_fd(), libc::SHUT_WR) };
}

/// The named pipe, shared by the reader and the writer (`&Stream` reads and writes).
#[cfg(not(unix))]
pub(crate) struct Shared(Arc<Stream>);

#[cfg(not(unix))]
async fn write_all(raw: &RawWrite, bytes: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut pipe: &Stream = &raw.0;
    pipe.write_all(bytes).await
}

/// A pipe is written through the writer task only: its writes are not known to be
/// non-blocking to the caller.
#[cfg(not(unix))]
fn try_write(_raw: &RawWrite, _bytes: &[u8]) -> std::io::Result<usize> {
    Err(std::io::ErrorKind::WouldBlock.into())
}

#[cfg(not(unix))]
fn shutdown_write(_raw: &RawWrite) {}

#[cfg(not(unix))]
impl tokio::io::AsyncRead for Shared {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut &*self.0).poll_read(cx, buf)
    }
}

//! A client of protocol version 1, as the last release before version 2 shipped it: its
//! message types ([`message`], a frozen copy), its codec options and its handshake, over the
//! real socket. It shares no code with `vfslock-proto`, so that a change there cannot make it
//! more tolerant than the installed clients it stands for. The compatibility tests
//! (`tests/compat.rs`) run it against today's daemon.

pub mod message;

use std::path::Path;

use bincode::Options;
use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

pub use message::*;

/// The version this client speaks, and the only one it accepts from the daemon.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest frame the version 1 client read (its `MAX_INBOUND_FRAME`).
const MAX_INBOUND_FRAME: usize = 256 << 20;

/// bincode as version 1's codec configured it.
fn options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_limit((1u64 << 20) * 4)
        .with_big_endian()
        .with_varint_encoding()
        .reject_trailing_bytes()
}

/// Encodes `message` with its big-endian `u32` length prefix.
pub fn encode_frame<T: Serialize>(message: &T) -> Vec<u8> {
    let payload = options()
        .serialize(message)
        .expect("a version 1 message encodes");
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&payload);
    out
}

/// Decodes one payload as version 1 did: anything it does not know is an error.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, String> {
    options()
        .deserialize(payload)
        .map_err(|e| format!("malformed message: {e}"))
}

/// One connection of a version 1 client.
pub struct Client {
    stream: UnixStream,
}

impl Client {
    /// Connects, greets with version 1 and reads the welcome, refusing a daemon whose hello
    /// names any other version, as the version 1 client did.
    pub async fn connect(socket: &Path) -> Result<(Client, Welcome), String> {
        let mut stream = UnixStream::connect(socket)
            .await
            .map_err(|e| format!("connect to {}: {e}", socket.display()))?;
        let mut hello = b"VFSL".to_vec();
        hello.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
        stream
            .write_all(&hello)
            .await
            .map_err(|e| format!("send the hello: {e}"))?;
        let mut theirs = [0u8; 8];
        stream
            .read_exact(&mut theirs)
            .await
            .map_err(|e| format!("read the daemon's hello: {e}"))?;
        if &theirs[..4] != b"VFSL" {
            return Err(format!("not a vfslock endpoint: {theirs:02x?}"));
        }
        let version = u32::from_be_bytes(theirs[4..].try_into().expect("4 bytes"));
        if version != PROTOCOL_VERSION {
            return Err(format!(
                "this client speaks protocol {PROTOCOL_VERSION}, the vfslockd at {} speaks \
                 {version}: use a client and daemon of matching versions",
                socket.display()
            ));
        }
        let mut client = Client { stream };
        let payload = client.read_frame().await?;
        let welcome = decode::<Welcome>(&payload).map_err(|e| format!("bad welcome: {e}"))?;
        Ok((client, welcome))
    }

    /// Sends request `id`.
    pub async fn request(&mut self, id: RequestId, request: Request) {
        self.send(&ClientFrame::Request { id, request }).await;
    }

    /// Sends one frame.
    pub async fn send(&mut self, frame: &ClientFrame) {
        self.stream
            .write_all(&encode_frame(frame))
            .await
            .expect("send a frame to vfslockd");
    }

    /// The next frame from the daemon, decoded as version 1 decodes it; `Err` is what made
    /// the version 1 client drop its connection (a frame it cannot decode, or the end).
    pub async fn next(&mut self) -> Result<ServerFrame, String> {
        let payload = self.read_frame().await?;
        decode(&payload)
    }

    async fn read_frame(&mut self) -> Result<Vec<u8>, String> {
        let mut prefix = [0u8; 4];
        self.stream
            .read_exact(&mut prefix)
            .await
            .map_err(|e| format!("read a frame's length: {e}"))?;
        let len = u32::from_be_bytes(prefix) as usize;
        if len > MAX_INBOUND_FRAME {
            return Err(format!("a frame of {len} bytes is over the limit"));
        }
        let mut payload = vec![0u8; len];
        self.stream
            .read_exact(&mut payload)
            .await
            .map_err(|e| format!("read a frame: {e}"))?;
        Ok(payload)
    }
}

//! The wire by hand: a connection that completes the handshake itself and sends single
//! requests, for the tests that need frames the client library never sends or hides.

#![allow(dead_code)] // each test file uses its own part

use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use vfslock_proto::handshake::{Hello, HELLO_LEN, PROTOCOL_VERSION};
use vfslock_proto::{codec, frame, ClientFrame, Request, RequestId, ServerFrame, Welcome};
use vfslock_tests::within;

/// Reads one whole frame (`what`, for messages) and decodes it.
pub async fn read_frame<T: serde::de::DeserializeOwned>(stream: &mut UnixStream, what: &str) -> T {
    let mut prefix = [0u8; frame::LEN_PREFIX];
    within(what, stream.read_exact(&mut prefix))
        .await
        .unwrap_or_else(|e| panic!("read the length of {what}: {e}"));
    let mut payload = vec![0u8; u32::from_be_bytes(prefix) as usize];
    within(what, stream.read_exact(&mut payload))
        .await
        .unwrap_or_else(|e| panic!("read {what}: {e}"));
    codec::decode(&payload).unwrap_or_else(|e| panic!("decode {what}: {e}"))
}

/// Connects and completes a valid handshake by hand; returns the stream after the welcome.
pub async fn handshaken(socket: &Path) -> UnixStream {
    handshaken_at(socket, PROTOCOL_VERSION).await
}

/// Connects speaking protocol `version` and returns the stream after the welcome.
pub async fn handshaken_at(socket: &Path, version: u32) -> UnixStream {
    let mut stream = UnixStream::connect(socket).await.expect("connect");
    stream
        .write_all(&Hello { version }.encode())
        .await
        .expect("send hello");
    let mut hello = [0u8; HELLO_LEN];
    within("the daemon's hello", stream.read_exact(&mut hello))
        .await
        .expect("read hello");
    // The daemon names the client's version in its hello.
    assert_eq!(hello, Hello { version }.encode());
    let welcome: Welcome = read_frame(&mut stream, "the welcome").await;
    assert_eq!(welcome.protocol_version, version);
    stream
}

/// Sends `request` with id 1 over a hand-made connection and returns the next frame, which
/// must be its answer (an event first fails the caller's match).
pub async fn ask(stream: &mut UnixStream, request: Request) -> ServerFrame {
    let bytes = codec::encode_frame(&ClientFrame::Request { id: 1, request }).expect("encode");
    stream.write_all(&bytes).await.expect("send");
    read_frame(stream, "the answer").await
}

/// Sends `request` with id `id` and returns its answer, skipping the events that come first.
pub async fn ask_as(stream: &mut UnixStream, id: RequestId, request: Request) -> ServerFrame {
    let bytes = codec::encode_frame(&ClientFrame::Request { id, request }).expect("encode");
    stream.write_all(&bytes).await.expect("send");
    loop {
        match read_frame(stream, "the answer").await {
            ServerFrame::Event { .. } => continue,
            answer => return answer,
        }
    }
}

//! The daemon's side of the handshake: which protocol version a connection speaks.
//!
//! It is apart from the session because it is the one part of a connection that every protocol
//! version shares (the 8-byte hellos and the welcome), and because a connection refused over
//! a connection limit goes through it without ever becoming a session. The rules are
//! `vfslock_proto::handshake`'s: a client of any version from the oldest to ours is answered in
//! its own version; any other gets our hello and a close.

use std::time::Duration;

use interprocess::local_socket::tokio::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vfslock_proto::handshake::{
    negotiate, Hello, HELLO_LEN, OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use vfslock_proto::{codec, ErrorKind, ServerFrame, Welcome, WireError};

use crate::context::Context;

/// Exchanges hellos and sends the welcome; returns the protocol version the connection
/// speaks from now on.
pub async fn handshake(ctx: &Context, stream: &mut Stream) -> Result<u32, String> {
    let io_timeout = ctx.settings.limits.io_timeout;
    let mut hello = [0u8; HELLO_LEN];
    match tokio::time::timeout(io_timeout, stream.read_exact(&mut hello)).await {
        Err(_) => return Err("no handshake in time".into()),
        Ok(Err(e)) => return Err(format!("handshake: {e}")),
        Ok(Ok(_)) => {}
    }
    let theirs = Hello::decode(hello).map_err(|e| e.to_string())?;
    let Some(version) = negotiate(theirs.version) else {
        // Our hello goes out whatever the client speaks, so that it can name both versions
        // (and a newer client connect again speaking ours).
        let out = Hello::current().encode();
        let _ = tokio::time::timeout(io_timeout, stream.write_all(&out)).await;
        return Err(format!(
            "client speaks protocol {}, this daemon speaks {OLDEST_PROTOCOL_VERSION} to \
             {PROTOCOL_VERSION}",
            theirs.version
        ));
    };
    if version != PROTOCOL_VERSION {
        tracing::debug!(version, "client speaks an older protocol");
    }
    // The client's own version back: a version 1 client refuses any other.
    let mut out = Hello { version }.encode().to_vec();
    let welcome = codec::encode_frame(&Welcome {
        protocol_version: version,
        daemon_version: env!("CARGO_PKG_VERSION").into(),
        hostname: ctx.host_id.clone(),
        instance_id: ctx.instance_id.clone(),
    })
    .map_err(|e| e.to_string())?;
    out.extend_from_slice(&welcome);
    match tokio::time::timeout(io_timeout, stream.write_all(&out)).await {
        Ok(Ok(())) => Ok(version),
        Ok(Err(e)) => Err(format!("handshake: {e}")),
        Err(_) => Err("handshake reply not taken in time".into()),
    }
}

/// Answers a connection over a limit: a hello in the client's version, then an error frame
/// (request id 0) saying `why` (the limit, named), then close. A client reads the error where
/// it expected the welcome. A client of a version we do not speak gets our hello only, as in [`handshake`].
pub async fn refuse(mut stream: Stream, why: String, io_timeout: Duration) {
    let refusal = ServerFrame::Response {
        id: 0,
        result: Err(WireError::new(ErrorKind::LimitExceeded, why)),
    };
    let mut hello = [0u8; HELLO_LEN];
    let _ = tokio::time::timeout(io_timeout, async {
        stream.read_exact(&mut hello).await?;
        let version = Hello::decode(hello).ok().and_then(|h| negotiate(h.version));
        let mut bytes = Hello {
            version: version.unwrap_or(PROTOCOL_VERSION),
        }
        .encode()
        .to_vec();
        if let Some(version) = version {
            if let Ok(frame) = codec::encode_frame(&refusal.for_version(version)) {
                bytes.extend_from_slice(&frame);
            }
        }
        stream.write_all(&bytes).await
    })
    .await;
}

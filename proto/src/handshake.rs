//! The handshake: the one part of the protocol whose layout never changes.
//!
//! Both sides send [`Hello`]: 4 magic bytes and a big-endian `u32` protocol version. Keeping it
//! outside the codec means a daemon of any future version can still read an old client's hello
//! (and the other way round) and agree on a version, or say which versions met before it closes
//! the connection.
//!
//! # Negotiation
//!
//! The client's hello names the version it wants to speak. The daemon speaks every version from
//! [`OLDEST_PROTOCOL_VERSION`] to [`PROTOCOL_VERSION`] ([`negotiate`]):
//! - a version it speaks: its hello names that same version (a version 1 client refuses any
//!   other answer), its welcome follows, and the connection speaks that version both ways;
//! - any other version: its hello names its own newest version, and it closes the connection.
//!
//! A client newer than the daemon falls back ([`after_daemon_hello`]): when the daemon's hello
//! names a lower version that the client still speaks, the client connects again with a hello
//! of that version. Reconnecting, rather than going on over the same connection, is what works
//! with a version 1 daemon, which closes the connection after its hello on any mismatch.

/// The first four bytes of every connection, in both directions.
pub const MAGIC: [u8; 4] = *b"VFSL";

/// The newest protocol version this crate speaks. What each version added is listed in
/// [`crate::versions`].
pub const PROTOCOL_VERSION: u32 = 10;

/// The oldest protocol version this crate still speaks, with daemons and clients alike.
pub const OLDEST_PROTOCOL_VERSION: u32 = 1;

/// Length of an encoded [`Hello`].
pub const HELLO_LEN: usize = 8;

/// The fixed-layout greeting each side sends first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The protocol version the sender speaks.
    pub version: u32,
}

/// Why a received greeting was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HelloError {
    /// The first four bytes were not [`MAGIC`]: the peer is not speaking this protocol at all.
    #[error("the peer is not a vfslock endpoint (bad magic {0:02x?})")]
    BadMagic([u8; 4]),
}

impl Hello {
    /// The greeting for [`PROTOCOL_VERSION`].
    pub const fn current() -> Self {
        Hello {
            version: PROTOCOL_VERSION,
        }
    }

    /// Encodes the greeting into its 8 bytes.
    pub fn encode(self) -> [u8; HELLO_LEN] {
        let mut out = [0u8; HELLO_LEN];
        out[..4].copy_from_slice(&MAGIC);
        out[4..].copy_from_slice(&self.version.to_be_bytes());
        out
    }

    /// Decodes 8 received bytes.
    pub fn decode(bytes: [u8; HELLO_LEN]) -> Result<Self, HelloError> {
        let magic: [u8; 4] = bytes[..4].try_into().expect("4 bytes");
        if magic != MAGIC {
            return Err(HelloError::BadMagic(magic));
        }
        let version = u32::from_be_bytes(bytes[4..].try_into().expect("4 bytes"));
        Ok(Hello { version })
    }
}

/// The version a daemon speaks with a client whose hello named `client`: that same version when
/// the daemon speaks it, else `None` (the daemon answers with [`Hello::current`] and closes).
pub fn negotiate(client: u32) -> Option<u32> {
    (OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION)
        .contains(&client)
        .then_some(client)
}

/// What a client does after reading the daemon's hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterHello {
    /// The daemon speaks the version the client asked for: its welcome follows.
    Proceed,
    /// The daemon is older: it speaks only up to this version, which the client speaks too. The
    /// daemon closes this connection; the client connects again with a hello of this version.
    Reconnect(u32),
    /// No version in common: the daemon speaks `daemon`, which the client cannot.
    Incompatible {
        /// The version the daemon's hello named.
        daemon: u32,
    },
}

/// What a client that sent a hello of version `sent` does with a daemon's hello of version
/// `received`. A daemon never answers a version it speaks with another one, so a higher version
/// than `sent`, or a lower one after a fallback, means no version in common.
pub fn after_daemon_hello(sent: u32, received: u32) -> AfterHello {
    if received == sent {
        AfterHello::Proceed
    } else if (OLDEST_PROTOCOL_VERSION..sent).contains(&received) && sent == PROTOCOL_VERSION {
        AfterHello::Reconnect(received)
    } else {
        AfterHello::Incompatible { daemon: received }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemon_speaks_every_version_from_the_oldest_to_its_own() {
        assert_eq!(negotiate(0), None, "there is no version 0");
        for version in OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION {
            assert_eq!(negotiate(version), Some(version));
        }
        assert_eq!(negotiate(PROTOCOL_VERSION + 1), None);
        assert_eq!(negotiate(u32::MAX), None);
    }

    #[test]
    fn a_client_falls_back_once_to_an_older_daemons_version() {
        assert_eq!(
            after_daemon_hello(PROTOCOL_VERSION, PROTOCOL_VERSION),
            AfterHello::Proceed
        );
        for older in OLDEST_PROTOCOL_VERSION..PROTOCOL_VERSION {
            assert_eq!(
                after_daemon_hello(PROTOCOL_VERSION, older),
                AfterHello::Reconnect(older)
            );
        }
        // After the fallback, the daemon must name the version asked for.
        assert_eq!(after_daemon_hello(1, 1), AfterHello::Proceed);
        assert_eq!(
            after_daemon_hello(2, 1),
            AfterHello::Incompatible { daemon: 1 },
            "only a hello of the newest version falls back"
        );
        assert_eq!(
            after_daemon_hello(1, 2),
            AfterHello::Incompatible { daemon: 2 }
        );
        assert_eq!(
            after_daemon_hello(PROTOCOL_VERSION, 0),
            AfterHello::Incompatible { daemon: 0 }
        );
        assert_eq!(
            after_daemon_hello(PROTOCOL_VERSION, PROTOCOL_VERSION + 1),
            AfterHello::Incompatible {
                daemon: PROTOCOL_VERSION + 1
            }
        );
    }

    #[test]
    fn hello_round_trips_and_fixes_its_layout() {
        let bytes = Hello {
            version: 0x0102_0304,
        }
        .encode();
        assert_eq!(&bytes, b"VFSL\x01\x02\x03\x04");
        assert_eq!(
            Hello::decode(bytes),
            Ok(Hello {
                version: 0x0102_0304
            })
        );
    }

    #[test]
    fn hello_with_other_magic_is_refused() {
        assert_eq!(
            Hello::decode(*b"GET / HT"),
            Err(HelloError::BadMagic(*b"GET "))
        );
    }
}

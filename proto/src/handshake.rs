//! The handshake: the one part of the protocol whose layout never changes.
//!
//! Both sides send [`Hello`]: 4 magic bytes and a big-endian `u32` protocol version. Keeping it
//! outside the codec means a daemon of any future version can still read an old client's hello
//! (and the other way round) and say which versions met before it closes the connection.

/// The first four bytes of every connection, in both directions.
pub const MAGIC: [u8; 4] = *b"VFSL";

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

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

#[cfg(test)]
mod tests {
    use super::*;

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

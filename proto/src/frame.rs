//! Length-prefixed frames: a big-endian `u32` payload length, then the payload.
//!
//! The decoder works on a byte slice the caller owns and never reads from a socket itself, so
//! the daemon and the client can drive it from whatever transport they use. A short buffer is
//! "need more bytes", never an error; a length above the limit is an error before any byte of
//! the payload is buffered.

/// Default largest payload accepted: 1 MiB.
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// Bytes in the length prefix.
pub const LEN_PREFIX: usize = 4;

/// A frame that cannot be accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix announces more bytes than the receiver accepts.
    #[error("frame of {announced} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Bytes announced by the prefix.
        announced: u64,
        /// The receiver's limit.
        limit: usize,
    },
    /// The payload would not fit a `u32` length prefix.
    #[error("a payload of {0} bytes does not fit a frame")]
    Unencodable(usize),
}

/// Splits a byte stream into frame payloads.
#[derive(Clone, Copy, Debug)]
pub struct FrameDecoder {
    max_frame: usize,
}

impl FrameDecoder {
    /// A decoder that refuses payloads longer than `max_frame` bytes.
    pub const fn new(max_frame: usize) -> Self {
        FrameDecoder { max_frame }
    }

    /// The largest payload this decoder accepts.
    pub const fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Reads the length prefix at the start of `buf`, if it is all there, and checks it.
    ///
    /// Callers that read into a growable buffer use this to reserve exactly what the frame
    /// needs, after the limit check.
    pub fn announced_len(&self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        let Some(prefix) = buf.get(..LEN_PREFIX) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(prefix.try_into().expect("4 bytes")) as usize;
        if len > self.max_frame {
            return Err(FrameError::TooLarge {
                announced: len as u64,
                limit: self.max_frame,
            });
        }
        Ok(Some(len))
    }

    /// Returns the first whole frame's payload in `buf` and the bytes it spans (prefix
    /// included), `Ok(None)` when `buf` does not yet hold a whole frame.
    pub fn next_frame<'a>(&self, buf: &'a [u8]) -> Result<Option<(&'a [u8], usize)>, FrameError> {
        let Some(len) = self.announced_len(buf)? else {
            return Ok(None);
        };
        let end = LEN_PREFIX + len;
        Ok(buf.get(LEN_PREFIX..end).map(|payload| (payload, end)))
    }
}

/// Prepends the length prefix to `payload`.
pub fn encode(payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    let len = u32::try_from(payload.len()).map_err(|_| FrameError::Unencodable(payload.len()))?;
    let mut out = Vec::with_capacity(LEN_PREFIX + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_found_only_once_complete() {
        let framed = encode(b"hello").unwrap();
        assert_eq!(&framed[..4], &[0, 0, 0, 5], "the prefix is big-endian");
        let decoder = FrameDecoder::new(16);
        for cut in 0..framed.len() {
            assert_eq!(decoder.next_frame(&framed[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(
            decoder.next_frame(&framed),
            Ok(Some((&b"hello"[..], framed.len())))
        );
    }

    #[test]
    fn an_oversized_prefix_is_refused_before_the_payload_arrives() {
        let decoder = FrameDecoder::new(16);
        let prefix = 17u32.to_be_bytes();
        assert_eq!(
            decoder.next_frame(&prefix),
            Err(FrameError::TooLarge {
                announced: 17,
                limit: 16
            })
        );
        let huge = u32::MAX.to_be_bytes();
        assert!(decoder.announced_len(&huge).is_err());
    }

    #[test]
    fn two_frames_in_one_buffer_come_out_in_order() {
        let mut buf = encode(b"a").unwrap();
        buf.extend(encode(b"").unwrap());
        let decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let (first, used) = decoder.next_frame(&buf).unwrap().unwrap();
        assert_eq!(first, b"a");
        let (second, used2) = decoder.next_frame(&buf[used..]).unwrap().unwrap();
        assert_eq!(second, b"");
        assert_eq!(used + used2, buf.len());
    }
}

//! Bytes from a peer into the frame decoder.
//!
//! Input layout: byte 0 picks the decoder's limit (0..=255 bytes, small so that both the
//! "too large" and the "whole frame" paths are reached); the rest is the byte stream. When the
//! stream starts with a well-formed handshake greeting, it is consumed first, as a connection
//! would. Frames are then split off one after the other until the decoder asks for more bytes
//! or refuses a prefix; each payload is also offered to both message decoders.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vfslock_proto::frame::{FrameDecoder, FrameError, LEN_PREFIX};
use vfslock_proto::handshake::{Hello, HELLO_LEN};
use vfslock_proto::{codec, ClientFrame, ServerFrame};

fuzz_target!(|data: &[u8]| {
    let Some((&limit, mut stream)) = data.split_first() else {
        return;
    };
    let limit = usize::from(limit);

    if let Some(greeting) = stream.get(..HELLO_LEN) {
        let greeting: [u8; HELLO_LEN] = greeting.try_into().expect("8 bytes");
        if let Ok(hello) = Hello::decode(greeting) {
            assert_eq!(hello.encode(), greeting, "a hello re-encodes to its bytes");
            stream = &stream[HELLO_LEN..];
        }
    }

    let decoder = FrameDecoder::new(limit);
    loop {
        let announced = decoder.announced_len(stream);
        match decoder.next_frame(stream) {
            Ok(Some((payload, used))) => {
                assert!(payload.len() <= limit, "{} > limit {limit}", payload.len());
                assert_eq!(used, LEN_PREFIX + payload.len());
                assert!(used <= stream.len());
                assert_eq!(&stream[LEN_PREFIX..used], payload);
                assert_eq!(announced, Ok(Some(payload.len())));
                let _ = codec::decode::<ClientFrame>(payload);
                let _ = codec::decode::<ServerFrame>(payload);
                stream = &stream[used..];
            }
            Ok(None) => {
                // Only a short buffer is "need more bytes".
                match announced {
                    Ok(None) => assert!(stream.len() < LEN_PREFIX),
                    Ok(Some(len)) => {
                        assert!(len <= limit);
                        assert!(stream.len() < LEN_PREFIX + len);
                    }
                    Err(e) => panic!("announced_len refused ({e}) what next_frame waits on"),
                }
                break;
            }
            Err(FrameError::TooLarge {
                announced: n,
                limit: l,
            }) => {
                assert_eq!(l, limit);
                assert!(n > limit as u64);
                let prefix: [u8; 4] = stream[..LEN_PREFIX].try_into().expect("a prefix");
                assert_eq!(n, u64::from(u32::from_be_bytes(prefix)));
                break;
            }
            Err(e) => panic!("the decoder returned an encoder error: {e}"),
        }
    }
});

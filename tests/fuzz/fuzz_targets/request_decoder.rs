//! Bytes from a client into the message decoder (a frame's payload, after the frame layer).
//!
//! Whatever decodes must survive encode → decode unchanged, and its encoding must be a fixed
//! point (decoding it and encoding again gives the same bytes). The same bytes are also decoded
//! as the daemon's messages, which the client library reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::{de::DeserializeOwned, Serialize};
use std::fmt::Debug;
use vfslock_proto::{codec, ClientFrame, ServerFrame, Welcome};

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(data: &[u8]) {
    let Ok(message) = codec::decode::<T>(data) else {
        return;
    };
    let encoded = codec::encode(&message).expect("a decoded message encodes");
    let again: T = codec::decode(&encoded).expect("an encoded message decodes");
    assert_eq!(again, message);
    assert_eq!(
        codec::encode(&again).expect("encodes"),
        encoded,
        "the encoding is not a fixed point"
    );
    let framed = codec::encode_frame(&message).expect("a decoded message fits a frame");
    assert_eq!(&framed[vfslock_proto::frame::LEN_PREFIX..], &encoded[..]);
}

fuzz_target!(|data: &[u8]| {
    round_trip::<ClientFrame>(data);
    round_trip::<ServerFrame>(data);
    round_trip::<Welcome>(data);
});

//! Fuzz target: bytes from the peer link through the frame codec, the path every byte a
//! peer (or a stranger on the peer port) sends takes before authentication.
//!
//! Beyond "no panic": a frame header is only accepted with a length within the bound; any
//! payload that parses re-encodes, and the re-encoded frame decodes (under the same key) to
//! the same frame and counter. The MAC is skipped for the parse (a fuzzer can't forge one),
//! which is exactly what makes this the interesting part: what the replicator would parse if
//! the key were known.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::peer::auth::MacKey;
use shared::peer::frame::{self, Frame, MAX_FRAME_PAYLOAD};

fuzz_target!(|data: &[u8]| {
    let key = MacKey::hello(b"0123456789abcdef0123456789abcdef", "fuzz");
    // As a stream: frames back to back, as the link reads them.
    let mut rest = data;
    while let Ok(Some(raw)) = frame::split(rest) {
        assert!(raw.payload.len() <= MAX_FRAME_PAYLOAD);
        // A split frame never claims more bytes than the buffer holds.
        assert!(raw.len() <= rest.len());
        if let Ok(parsed) = raw.parse() {
            roundtrip(&parsed, raw.header.counter, &key);
        }
        rest = &rest[raw.len()..];
    }
    // As a bare payload of each kind, so mutations are not all spent on the header.
    if let Some((&kind, payload)) = data.split_first() {
        if let Ok(parsed) = Frame::parse_payload(frame::Kind::from_u8(kind), payload) {
            roundtrip(&parsed, 1, &key);
        }
    }
});

fn roundtrip(parsed: &Frame, counter: u64, key: &MacKey) {
    let bytes = frame::encode(parsed, counter, key).expect("a parsed frame is always encodable");
    let again = frame::decode(&bytes, key)
        .expect("its own encoding decodes")
        .expect("and is complete");
    assert_eq!(&again.frame, parsed);
    assert_eq!(again.counter, counter);
    assert_eq!(again.len, bytes.len());
}

//! lbd's HTTP/1 fast path on arbitrary bytes: the request head parser (a fallback or a
//! partial head must leave the buffer as it was), the response head parser and its rewrite
//! for the client, and the chunked-body scanner. None may panic.
#![no_main]

use bytes::BytesMut;
use lbd::l7::plain::chunked::ChunkedScanner;
use lbd::l7::plain::head::{
    header_slots, parse_request, parse_response, write_request_head, Parsed, ResponseEdits,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    match parse_request(&mut buf, 64 * 1024) {
        Parsed::Partial | Parsed::Fallback(_) => assert_eq!(&buf[..], data),
        Parsed::Fast(req) => {
            assert_eq!(&buf[..], &data[req.head_len..]);
            let mut out = Vec::new();
            write_request_head(&mut out, &req.method, req.target.as_str(), &req.headers);
        }
        Parsed::Bad(_) => assert!(buf.len() < data.len()),
    }
    for request_is_head in [false, true] {
        let mut slots = header_slots();
        if let Ok(Some(head)) = parse_response(data, &mut slots, request_is_head, 64 * 1024) {
            assert!(head.head_len <= data.len());
            let mut out = Vec::new();
            head.write_for_client(&mut out, &ResponseEdits::default());
            assert!(out.ends_with(b"\r\n\r\n"));
        }
    }
    let mut scanner = ChunkedScanner::new();
    let _ = scanner.feed(data);
});

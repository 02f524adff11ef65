//! Fuzz target: a raw-socket receive buffer through `wire::ipv4::parse` and
//! `wire::vrrp::Repr::parse`, the path every packet from the network takes.
//!
//! Beyond "no panic", anything that parses must survive a re-emit: emitting
//! the parsed repr in the matched checksum mode and parsing again gives the
//! same repr and mode.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use shared::wire::ipv4;
use shared::wire::vrrp::{Packet, Repr};

fn check(payload: &[u8], src: Ipv4Addr, dst: Ipv4Addr) {
    let packet = Packet::new_unchecked(payload);
    let _ = (packet.addrs().count(), packet.checksum_mode(src, dst));
    if let Ok((repr, mode)) = Repr::parse(&packet, src, dst) {
        let bytes = repr
            .to_bytes(src, dst, mode)
            .expect("a parsed repr is always encodable");
        let again = Repr::parse(&Packet::new_unchecked(&bytes[..]), src, dst);
        assert_eq!(again, Ok((repr, mode)));
    }
}

fuzz_target!(|data: &[u8]| {
    // As a whole datagram (the seed corpus is captured datagrams)...
    if let Ok(dgram) = ipv4::parse(data) {
        assert_eq!(&data[dgram.payload_range()], dgram.payload);
        check(dgram.payload, dgram.src, dgram.dst);
    }
    // ...and as a bare VRRP message, so mutations are not all spent on the IP header.
    check(
        data,
        Ipv4Addr::new(192, 0, 2, 1),
        Ipv4Addr::new(224, 0, 0, 18),
    );
});

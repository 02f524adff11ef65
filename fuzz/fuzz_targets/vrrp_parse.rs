//! Fuzz target: a raw-socket receive buffer through `wire::ipv4::parse` and
//! `wire::vrrp::Repr::parse`, the path every packet from the network takes.
//!
//! Beyond "no panic", anything that parses must survive a re-emit: emitting
//! the parsed repr in the matched checksum mode and parsing again gives the
//! same repr and mode.
//!
//! The same bytes also go through the authentication trailer's `split` and `open` (the
//! receive path with `auth_key_file`): no panic, `split` loses no byte, and random bytes
//! never verify.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use shared::wire::{auth, ipv4};
use shared::wire::vrrp::{Packet, Repr};

fn check_auth(payload: &[u8], src: Ipv4Addr, dst: Ipv4Addr) {
    let key = auth::Key::new(&[0x5a; auth::MIN_KEY_LEN]).expect("32 bytes");
    let (vrrp, rest) = auth::split(payload);
    assert_eq!(vrrp.len() + rest.len(), payload.len());
    assert!(auth::open(&key, src, dst, vrrp, rest).is_err());
}

fn check(payload: &[u8], src: Ipv4Addr, dst: Ipv4Addr) {
    check_auth(payload, src, dst);
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

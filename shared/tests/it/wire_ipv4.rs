//! The IPv4 helpers: parse what a raw socket receives, build what we send.

use std::net::Ipv4Addr;

use shared::wire::checksum;
use shared::wire::ipv4::{self, HEADER_LEN};
use shared::wire::Error;

const SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const DST: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);

#[test]
fn build_header_fields() {
    let h = ipv4::build_header(SRC, DST, 16).expect("header");
    assert_eq!(h.len(), HEADER_LEN);
    assert_eq!(h[0], 0x45, "version 4, IHL 5");
    assert_eq!(h[1], 0xc0, "DSCP CS6");
    assert_eq!(u16::from_be_bytes([h[2], h[3]]), 36, "total length");
    assert_eq!(&h[4..8], &[0, 0, 0, 0], "id 0, no flags, offset 0");
    assert_eq!(h[8], 255, "TTL");
    assert_eq!(h[9], 112, "protocol VRRP");
    assert_eq!(&h[12..16], &SRC.octets());
    assert_eq!(&h[16..20], &DST.octets());
    // A correct header checksum sums to negative zero.
    assert_eq!(checksum::ones_complement_sum(&h), 0xffff);
}

#[test]
fn build_then_parse() {
    let payload = [1u8, 2, 3, 4, 5];
    let dgram = ipv4::build_datagram(SRC, DST, &payload).expect("build");
    let parsed = ipv4::parse(&dgram).expect("parse");
    assert_eq!(parsed.src, SRC);
    assert_eq!(parsed.dst, DST);
    assert_eq!(parsed.ttl, 255);
    assert_eq!(parsed.protocol, 112);
    assert_eq!(parsed.header_len, 20);
    assert_eq!(parsed.payload, &payload);
    assert_eq!(&dgram[parsed.payload_range()], &payload);
}

#[test]
fn build_rejects_oversized_payload() {
    assert!(ipv4::build_header(SRC, DST, ipv4::MAX_PAYLOAD_LEN).is_ok());
    assert!(matches!(
        ipv4::build_header(SRC, DST, ipv4::MAX_PAYLOAD_LEN + 1),
        Err(Error::BadLength { .. })
    ));
    assert!(ipv4::build_header(SRC, DST, usize::MAX).is_err());
}

#[test]
fn trailing_bytes_after_total_length_are_ignored() {
    let mut dgram = ipv4::build_datagram(SRC, DST, &[9, 9]).expect("build");
    dgram.extend_from_slice(&[0; 30]); // e.g. Ethernet padding
    let parsed = ipv4::parse(&dgram).expect("parse");
    assert_eq!(parsed.payload, &[9, 9]);
}

#[test]
fn options_are_skipped() {
    let mut dgram = ipv4::build_datagram(SRC, DST, &[7; 8]).expect("build");
    // Insert 4 bytes of options (a Router Alert) and fix IHL and length.
    dgram.splice(20..20, [0x94, 0x04, 0x00, 0x00]);
    dgram[0] = 0x46;
    dgram[3] += 4;
    let parsed = ipv4::parse(&dgram).expect("parse");
    assert_eq!(parsed.header_len, 24);
    assert_eq!(parsed.payload, &[7; 8]);
    assert_eq!(parsed.payload_range(), 24..32);
}

#[test]
fn malformed_headers() {
    let good = ipv4::build_datagram(SRC, DST, &[0; 16]).expect("build");

    let mut v6 = good.clone();
    v6[0] = 0x65;
    assert_eq!(
        ipv4::parse(&v6),
        Err(Error::BadIpHeader("version is not 4"))
    );

    let mut short_ihl = good.clone();
    short_ihl[0] = 0x44;
    assert_eq!(
        ipv4::parse(&short_ihl),
        Err(Error::BadIpHeader("IHL is below 5"))
    );

    let mut short_total = good.clone();
    short_total[2..4].copy_from_slice(&19u16.to_be_bytes());
    assert!(matches!(
        ipv4::parse(&short_total),
        Err(Error::BadIpHeader(_))
    ));

    let mut long_total = good.clone();
    long_total[2..4].copy_from_slice(&37u16.to_be_bytes());
    assert_eq!(ipv4::parse(&long_total), Err(Error::Truncated));

    let mut big_ihl = good.clone();
    big_ihl[0] = 0x4f; // 60-byte header in a 36-byte buffer
    assert_eq!(ipv4::parse(&big_ihl), Err(Error::Truncated));

    let mut more_frags = good.clone();
    more_frags[6] = 0x20;
    assert_eq!(ipv4::parse(&more_frags), Err(Error::Fragmented));

    let mut offset = good.clone();
    offset[7] = 0x01;
    assert_eq!(ipv4::parse(&offset), Err(Error::Fragmented));

    for len in 0..good.len() {
        assert!(ipv4::parse(&good[..len]).is_err(), "prefix {len}");
    }
}

//! VRRPv3 codec: construct, deconstruct, round trip, checksum modes and
//! malformed input (smoltcp's wire test pattern).

use std::net::Ipv4Addr;

use shared::wire::vrrp::{self, ChecksumMode, MessageType, Packet, Repr, Version};
use shared::wire::Error;

const SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const DST: Ipv4Addr = vrrp::MULTICAST_ADDR;

/// VRID 51, priority 150, 100 cs, VIPs 192.0.2.100 and .101, checksum with
/// the pseudo-header for 192.0.2.1 -> 224.0.0.18. These are the bytes
/// keepalived 2.2.7 sent (see testdata/keepalived-v3), so emitting them is
/// also an interop check.
static PACKET_PSEUDO: [u8; 16] = [
    0x31, 0x33, 0x96, 0x02, 0x00, 0x64, 0x11, 0x07, 0xc0, 0x00, 0x02, 0x64, 0xc0, 0x00, 0x02, 0x65,
];

/// The same message with the checksum over the VRRP message only (computed
/// independently of this crate, with a throwaway Python RFC 1071 sum).
static PACKET_PLAIN: [u8; 16] = [
    0x31, 0x33, 0x96, 0x02, 0x00, 0x64, 0xb3, 0x9b, 0xc0, 0x00, 0x02, 0x64, 0xc0, 0x00, 0x02, 0x65,
];

fn repr() -> Repr {
    Repr {
        version: Version::V3,
        msg_type: MessageType::Advertisement,
        vrid: 51,
        priority: 150,
        max_adver_int_cs: 100,
        addrs: vec![Ipv4Addr::new(192, 0, 2, 100), Ipv4Addr::new(192, 0, 2, 101)],
    }
}

#[test]
fn deconstruct() {
    let packet = Packet::new_checked(&PACKET_PSEUDO[..]).expect("valid");
    assert_eq!(packet.version(), 3);
    assert_eq!(packet.msg_type(), MessageType::Advertisement);
    assert_eq!(packet.vrid(), 51);
    assert_eq!(packet.priority(), 150);
    assert_eq!(packet.addr_count(), 2);
    assert_eq!(packet.reserved(), 0);
    assert_eq!(packet.max_adver_int(), 100);
    assert_eq!(packet.checksum(), 0x1107);
    assert_eq!(packet.addr(0), Some(Ipv4Addr::new(192, 0, 2, 100)));
    assert_eq!(packet.addr(1), Some(Ipv4Addr::new(192, 0, 2, 101)));
    assert_eq!(packet.addr(2), None);
    assert_eq!(packet.addrs().count(), 2);
    assert_eq!(packet.total_len(), 16);
    assert!(packet.verify_checksum(SRC, DST, ChecksumMode::PseudoHeader));
    assert!(!packet.verify_checksum(SRC, DST, ChecksumMode::NoPseudoHeader));
}

#[test]
fn construct_pseudo_header() {
    let mut bytes = [0xa5u8; 16];
    let mut packet = Packet::new_unchecked(&mut bytes[..]);
    repr()
        .emit(&mut packet, SRC, DST, ChecksumMode::PseudoHeader)
        .expect("emit");
    assert_eq!(bytes, PACKET_PSEUDO);
}

#[test]
fn construct_no_pseudo_header() {
    let mut bytes = [0xa5u8; 16];
    let mut packet = Packet::new_unchecked(&mut bytes[..]);
    repr()
        .emit(&mut packet, SRC, DST, ChecksumMode::NoPseudoHeader)
        .expect("emit");
    assert_eq!(bytes, PACKET_PLAIN);
}

#[test]
fn construct_leaves_bytes_past_buffer_len() {
    let mut bytes = [0xa5u8; 20];
    let mut packet = Packet::new_unchecked(&mut bytes[..]);
    repr()
        .emit(&mut packet, SRC, DST, ChecksumMode::PseudoHeader)
        .expect("emit");
    assert_eq!(bytes[..16], PACKET_PSEUDO);
    assert_eq!(bytes[16..], [0xa5; 4]);
}

#[test]
fn to_bytes_matches_emit() {
    let bytes = repr()
        .to_bytes(SRC, DST, ChecksumMode::PseudoHeader)
        .expect("emit");
    assert_eq!(bytes, PACKET_PSEUDO);
    assert_eq!(repr().buffer_len(), 16);
}

#[test]
fn parse_pseudo_header() {
    let packet = Packet::new_checked(&PACKET_PSEUDO[..]).expect("valid");
    let (parsed, mode) = Repr::parse(&packet, SRC, DST).expect("parse");
    assert_eq!(parsed, repr());
    assert_eq!(mode, ChecksumMode::PseudoHeader);
}

#[test]
fn parse_no_pseudo_header() {
    let packet = Packet::new_checked(&PACKET_PLAIN[..]).expect("valid");
    let (parsed, mode) = Repr::parse(&packet, SRC, DST).expect("parse");
    assert_eq!(parsed, repr());
    assert_eq!(mode, ChecksumMode::NoPseudoHeader);
}

#[test]
fn pseudo_header_depends_on_addresses() {
    // The same bytes from another source verify only if they carry no pseudo-header.
    let other = Ipv4Addr::new(192, 0, 2, 9);
    let packet = Packet::new_checked(&PACKET_PSEUDO[..]).expect("valid");
    assert_eq!(Repr::parse(&packet, other, DST), Err(Error::BadChecksum));
    let packet = Packet::new_checked(&PACKET_PLAIN[..]).expect("valid");
    assert!(Repr::parse(&packet, other, DST).is_ok());
}

#[test]
fn round_trip_both_modes() {
    for mode in [ChecksumMode::PseudoHeader, ChecksumMode::NoPseudoHeader] {
        for addrs in [vec![], repr().addrs, vec![Ipv4Addr::new(10, 0, 0, 1); 255]] {
            let r = Repr {
                addrs,
                max_adver_int_cs: vrrp::MAX_ADVER_INT_CS,
                ..repr()
            };
            let bytes = r.to_bytes(SRC, DST, mode).expect("emit");
            let packet = Packet::new_checked(&bytes[..]).expect("valid");
            assert_eq!(Repr::parse(&packet, SRC, DST), Ok((r, mode)));
        }
    }
}

#[test]
fn bad_checksum_rejected() {
    let mut bytes = PACKET_PSEUDO;
    bytes[7] ^= 0x01;
    let packet = Packet::new_checked(&bytes[..]).expect("valid");
    assert_eq!(Repr::parse(&packet, SRC, DST), Err(Error::BadChecksum));

    // A flipped payload bit is caught too.
    let mut bytes = PACKET_PSEUDO;
    bytes[15] ^= 0x80;
    let packet = Packet::new_checked(&bytes[..]).expect("valid");
    assert_eq!(Repr::parse(&packet, SRC, DST), Err(Error::BadChecksum));
}

#[test]
fn every_truncated_prefix_is_an_error() {
    for len in 0..PACKET_PSEUDO.len() {
        let prefix = &PACKET_PSEUDO[..len];
        assert_eq!(
            Packet::new_checked(prefix).map(|_| ()),
            Err(Error::Truncated),
            "prefix of {len} bytes"
        );
        let packet = Packet::new_unchecked(prefix);
        assert_eq!(
            Repr::parse(&packet, SRC, DST),
            Err(Error::Truncated),
            "prefix of {len} bytes"
        );
    }
}

#[test]
fn getters_on_short_unchecked_buffer_do_not_panic() {
    for len in 0..PACKET_PSEUDO.len() {
        let packet = Packet::new_unchecked(&PACKET_PSEUDO[..len]);
        let _ = (
            packet.version(),
            packet.msg_type(),
            packet.vrid(),
            packet.priority(),
            packet.addr_count(),
            packet.reserved(),
            packet.max_adver_int(),
            packet.checksum(),
            packet.addr(0),
            packet.addr(255),
            packet.addrs().count(),
            packet.message(),
        );
        // Addresses that are announced but cut off are not reported.
        assert!(packet.addrs().count() <= 2);
    }
}

#[test]
fn trailing_bytes_are_bad_length() {
    let mut bytes = PACKET_PSEUDO.to_vec();
    bytes.extend_from_slice(&[0, 0, 0, 0]);
    // The view accepts it (output buffers may be larger), parse does not.
    let packet = Packet::new_checked(&bytes[..]).expect("view");
    assert_eq!(
        Repr::parse(&packet, SRC, DST),
        Err(Error::BadLength {
            expected: 16,
            actual: 20
        })
    );
}

#[test]
fn count_larger_than_buffer_is_truncated() {
    let mut bytes = PACKET_PSEUDO;
    bytes[3] = 3;
    assert_eq!(
        Packet::new_checked(&bytes[..]).map(|_| ()),
        Err(Error::Truncated)
    );
}

#[test]
fn unknown_codes_are_kept() {
    let r = Repr {
        version: Version::Unknown(7),
        msg_type: MessageType::Unknown(0xf),
        ..repr()
    };
    let bytes = r
        .to_bytes(SRC, DST, ChecksumMode::PseudoHeader)
        .expect("emit");
    assert_eq!(bytes[0], 0x7f);
    let packet = Packet::new_checked(&bytes[..]).expect("valid");
    assert_eq!(packet.version(), 7);
    let (parsed, _) = Repr::parse(&packet, SRC, DST).expect("parse");
    assert_eq!(parsed.version, Version::Unknown(7));
    assert_eq!(parsed.msg_type, MessageType::Unknown(15));

    assert_eq!(Version::from(2), Version::V2);
    assert_eq!(u8::from(Version::V2), 2);
    assert_eq!(u8::from(Version::V3), 3);
    assert_eq!(MessageType::from(1), MessageType::Advertisement);
    assert_eq!(u8::from(MessageType::Advertisement), 1);
}

#[test]
fn reserved_bits_are_ignored_on_receive_and_zeroed_on_send() {
    let mut bytes = [0xa5u8; 16];
    let mut packet = Packet::new_unchecked(&mut bytes[..]);
    repr()
        .emit(&mut packet, SRC, DST, ChecksumMode::PseudoHeader)
        .expect("emit");
    assert_eq!(packet.reserved(), 0);
    packet.set_reserved(0xf);
    packet.fill_checksum(SRC, DST, ChecksumMode::PseudoHeader);
    assert_eq!(packet.reserved(), 0xf);
    assert_eq!(packet.max_adver_int(), 100);
    let packet = Packet::new_checked(&bytes[..]).expect("valid");
    let (parsed, _) = Repr::parse(&packet, SRC, DST).expect("parse");
    assert_eq!(parsed, repr());
}

#[test]
fn setters() {
    let mut bytes = [0u8; 12];
    let mut packet = Packet::new_unchecked(&mut bytes[..]);
    packet.set_version(3);
    packet.set_msg_type(MessageType::Advertisement);
    packet.set_vrid(1);
    packet.set_priority(255);
    packet.set_addr_count(1);
    packet.set_max_adver_int(0xffff); // masked to 12 bits
    packet.set_addr(0, Ipv4Addr::new(1, 2, 3, 4)).expect("fits");
    assert_eq!(
        packet.set_addr(1, Ipv4Addr::new(5, 6, 7, 8)),
        Err(Error::Truncated)
    );
    assert_eq!(packet.max_adver_int(), 0x0fff);
    assert_eq!(packet.reserved(), 0);
    assert_eq!(bytes, [0x31, 1, 255, 1, 0x0f, 0xff, 0, 0, 1, 2, 3, 4]);
}

#[test]
fn emit_rejects_unencodable_reprs() {
    let mut buf = vec![0u8; 2048];
    let too_many = Repr {
        addrs: vec![Ipv4Addr::LOCALHOST; 256],
        ..repr()
    };
    assert_eq!(
        too_many.emit(
            &mut Packet::new_unchecked(&mut buf[..]),
            SRC,
            DST,
            ChecksumMode::PseudoHeader
        ),
        Err(Error::TooManyAddrs(256))
    );
    let slow = Repr {
        max_adver_int_cs: 4096,
        ..repr()
    };
    assert_eq!(
        slow.to_bytes(SRC, DST, ChecksumMode::PseudoHeader),
        Err(Error::IntervalTooLarge(4096))
    );
    let odd = Repr {
        version: Version::Unknown(16),
        ..repr()
    };
    assert_eq!(
        odd.to_bytes(SRC, DST, ChecksumMode::PseudoHeader),
        Err(Error::CodeTooLarge(16))
    );
    let mut small = [0xa5u8; 15];
    assert_eq!(
        repr().emit(
            &mut Packet::new_unchecked(&mut small[..]),
            SRC,
            DST,
            ChecksumMode::PseudoHeader
        ),
        Err(Error::BufferTooSmall {
            needed: 16,
            actual: 15
        })
    );
    // Nothing was written on failure.
    assert_eq!(small, [0xa5; 15]);
}

#[test]
fn checksum_mode_default_is_pseudo_header() {
    assert_eq!(ChecksumMode::default(), ChecksumMode::PseudoHeader);
    assert_ne!(
        ChecksumMode::PseudoHeader.as_str(),
        ChecksumMode::NoPseudoHeader.as_str()
    );
}

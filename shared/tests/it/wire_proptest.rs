//! Property tests for the wire codec: what cargo-fuzz (fuzz/vrrp_parse) does
//! on nightly, in a bounded form that runs in CI on stable.

use std::net::Ipv4Addr;

use proptest::prelude::*;
use shared::wire::ipv4;
use shared::wire::vrrp::{self, ChecksumMode, MessageType, Packet, Repr, Version};

fn any_ipv4() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}

fn any_mode() -> impl Strategy<Value = ChecksumMode> {
    prop_oneof![
        Just(ChecksumMode::PseudoHeader),
        Just(ChecksumMode::NoPseudoHeader)
    ]
}

/// Any repr that can be encoded: 4-bit codes, 12-bit interval, <= 255 addresses.
fn valid_repr() -> impl Strategy<Value = Repr> {
    (
        0u8..16,
        0u8..16,
        any::<u8>(),
        any::<u8>(),
        0u16..=vrrp::MAX_ADVER_INT_CS,
        prop::collection::vec(any_ipv4(), 0..=255),
    )
        .prop_map(|(v, t, vrid, priority, max_adver_int_cs, addrs)| Repr {
            version: Version::from(v),
            msg_type: MessageType::from(t),
            vrid,
            priority,
            max_adver_int_cs,
            addrs,
        })
}

/// Exercises every read path on untrusted bytes; the property is "no panic".
fn poke(bytes: &[u8], src: Ipv4Addr, dst: Ipv4Addr) {
    let unchecked = Packet::new_unchecked(bytes);
    let _ = (
        unchecked.version(),
        unchecked.msg_type(),
        unchecked.max_adver_int(),
        unchecked.addrs().count(),
        unchecked.checksum_mode(src, dst),
    );
    let _ = Repr::parse(&unchecked, src, dst);
    if let Ok(packet) = Packet::new_checked(bytes) {
        let _ = Repr::parse(&packet, src, dst);
    }
    if let Ok(dgram) = ipv4::parse(bytes) {
        assert!(dgram.payload_range().end <= bytes.len());
        assert_eq!(&bytes[dgram.payload_range()], dgram.payload);
        let _ = Repr::parse(&Packet::new_unchecked(dgram.payload), dgram.src, dgram.dst);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..1200),
        src in any_ipv4(),
        dst in any_ipv4(),
    ) {
        poke(&bytes, src, dst);
    }

    /// Arbitrary bytes behind a plausible IPv4 header reach the VRRP parser
    /// far more often than fully random bytes do.
    #[test]
    fn arbitrary_payload_behind_valid_ip_header_never_panics(
        payload in prop::collection::vec(any::<u8>(), 0..1100),
        src in any_ipv4(),
        dst in any_ipv4(),
    ) {
        let dgram = ipv4::build_datagram(src, dst, &payload).expect("small payload");
        poke(&dgram, src, dst);
        let parsed = ipv4::parse(&dgram).expect("we built it");
        prop_assert_eq!(parsed.payload, &payload[..]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn parse_emit_round_trip(
        repr in valid_repr(),
        src in any_ipv4(),
        dst in any_ipv4(),
        mode in any_mode(),
    ) {
        let bytes = repr.to_bytes(src, dst, mode).expect("valid repr");
        prop_assert_eq!(bytes.len(), repr.buffer_len());
        let packet = Packet::new_checked(&bytes[..]).expect("emitted packet is complete");
        let (parsed, got_mode) = Repr::parse(&packet, src, dst).expect("emitted packet parses");
        prop_assert_eq!(&parsed, &repr);
        // A message can verify in both modes when the pseudo-header happens to
        // sum to zero; then PseudoHeader is reported.
        if got_mode != mode {
            prop_assert_eq!(got_mode, ChecksumMode::PseudoHeader);
            prop_assert!(packet.verify_checksum(src, dst, mode));
        }
    }

    #[test]
    fn mutating_one_byte_never_panics_and_is_detected(
        repr in valid_repr(),
        src in any_ipv4(),
        dst in any_ipv4(),
        mode in any_mode(),
        pos in any::<prop::sample::Index>(),
        xor in 1u8..=255,
    ) {
        let mut bytes = repr.to_bytes(src, dst, mode).expect("valid repr");
        let i = pos.index(bytes.len());
        bytes[i] ^= xor;
        poke(&bytes, src, dst);
        // A single changed byte is always caught by the checksum in the mode
        // it was sent with (RFC 1071 detects every single-byte error), unless
        // it changed the count and so the length.
        let packet = Packet::new_unchecked(&bytes[..]);
        if i != vrrp::field::ADDR_COUNT {
            prop_assert!(!packet.verify_checksum(src, dst, mode));
            if let Ok((_, got_mode)) = Repr::parse(&packet, src, dst) {
                // Only possible by chance through the other checksum mode.
                prop_assert_ne!(got_mode, mode);
            }
        }
    }

    #[test]
    fn truncating_an_emitted_packet_is_an_error(
        repr in valid_repr(),
        src in any_ipv4(),
        dst in any_ipv4(),
        mode in any_mode(),
        cut in any::<prop::sample::Index>(),
    ) {
        let bytes = repr.to_bytes(src, dst, mode).expect("valid repr");
        let len = cut.index(bytes.len());
        let packet = Packet::new_unchecked(&bytes[..len]);
        prop_assert_eq!(Repr::parse(&packet, src, dst), Err(shared::wire::Error::Truncated));
    }
}

// ----- the authentication trailer (`shared::wire::auth`) -----

mod auth_trailer {
    use super::*;
    use shared::wire::auth::{self, Key, Trailer, TRAILER_LEN};

    fn any_key() -> impl Strategy<Value = Key> {
        prop::collection::vec(any::<u8>(), auth::MIN_KEY_LEN..=64)
            .prop_map(|m| Key::new(&m).expect("long enough"))
    }

    /// An advert as a sender with `key` puts it on the wire: VRRP message, then trailer.
    fn sealed(
        repr: &Repr,
        key: &Key,
        seq: u64,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        mode: ChecksumMode,
    ) -> Vec<u8> {
        let mut payload = repr.to_bytes(src, dst, mode).expect("valid repr");
        auth::Repr::new(key, seq).append(&mut payload, key, src, dst);
        payload
    }

    fn open(
        key: &Key,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        payload: &[u8],
    ) -> Result<auth::Repr, auth::Error> {
        let (vrrp, rest) = auth::split(payload);
        auth::open(key, src, dst, vrrp, rest)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn round_trip(
            repr in valid_repr(),
            key in any_key(),
            seq in any::<u64>(),
            src in any_ipv4(),
            dst in any_ipv4(),
            mode in any_mode(),
        ) {
            let payload = sealed(&repr, &key, seq, src, dst, mode);
            let (vrrp, rest) = auth::split(&payload);
            prop_assert_eq!(rest.len(), TRAILER_LEN);
            // The VRRP part is untouched by the trailer, checksum included.
            let (parsed, got_mode) =
                Repr::parse(&Packet::new_unchecked(vrrp), src, dst).expect("vrrp part parses");
            prop_assert_eq!(parsed, repr);
            // Checksums verifying in both modes report PseudoHeader (see wire::vrrp).
            prop_assert!(got_mode == mode || got_mode == ChecksumMode::PseudoHeader);
            prop_assert_eq!(open(&key, src, dst, &payload), Ok(auth::Repr::new(&key, seq)));
            let view = Trailer::new_checked(rest).expect("exact length");
            prop_assert_eq!((view.version(), view.key_id(), view.seq()), (auth::VERSION, key.id(), seq));
        }

        #[test]
        fn any_single_bit_flip_fails(
            repr in valid_repr(),
            key in any_key(),
            seq in any::<u64>(),
            src in any_ipv4(),
            dst in any_ipv4(),
            bit in any::<prop::sample::Index>(),
        ) {
            let mut payload = sealed(&repr, &key, seq, src, dst, ChecksumMode::PseudoHeader);
            // The bit is anywhere in the IP source, the destination or the payload.
            let bits = (8 + payload.len()) * 8;
            let b = bit.index(bits);
            let (byte, mask) = (b / 8, 1u8 << (b % 8));
            let (mut s, mut d) = (src.octets(), dst.octets());
            match byte {
                0..=3 => s[byte] ^= mask,
                4..=7 => d[byte - 4] ^= mask,
                _ => payload[byte - 8] ^= mask,
            }
            let got = open(&key, Ipv4Addr::from(s), Ipv4Addr::from(d), &payload);
            prop_assert!(got.is_err(), "bit {} flipped and still verified", b);
        }

        #[test]
        fn truncation_fails(
            repr in valid_repr(),
            key in any_key(),
            seq in any::<u64>(),
            src in any_ipv4(),
            dst in any_ipv4(),
            cut in any::<prop::sample::Index>(),
        ) {
            let payload = sealed(&repr, &key, seq, src, dst, ChecksumMode::PseudoHeader);
            let len = cut.index(payload.len());
            prop_assert!(open(&key, src, dst, &payload[..len]).is_err());
        }

        #[test]
        fn a_wrong_key_fails(
            repr in valid_repr(),
            key in any_key(),
            other in any_key(),
            seq in any::<u64>(),
            src in any_ipv4(),
            dst in any_ipv4(),
        ) {
            prop_assume!(key != other);
            let payload = sealed(&repr, &key, seq, src, dst, ChecksumMode::PseudoHeader);
            prop_assert_eq!(
                open(&other, src, dst, &payload).map_err(|e| e.as_str()),
                Err("auth_bad_tag")
            );
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in prop::collection::vec(any::<u8>(), 0..1200),
            key in any_key(),
            src in any_ipv4(),
            dst in any_ipv4(),
        ) {
            let (vrrp, rest) = auth::split(&bytes);
            prop_assert_eq!(vrrp.len() + rest.len(), bytes.len());
            let _ = auth::open(&key, src, dst, vrrp, rest);
            let view = Trailer::new_unchecked(&bytes[..]);
            let _ = (view.version(), view.key_id(), view.reserved(), view.seq(), view.tag());
            let _ = Trailer::new_checked(&bytes[..]);
        }
    }
}

//! RFC 5798 §7.1 receive validation: every `Discard` reason from a crafted packet, the
//! accepted cases, and no panic on any prefix or random bytes.

use std::net::Ipv4Addr;

use proptest::prelude::*;
use shared::wire::vrrp::{ChecksumMode, MessageType, Repr, Version, MULTICAST_ADDR};
use vrrpd::fsm::{Advert, FsmConfig};
use vrrpd::rx::{
    validate, validate_with, ChecksumPolicy, Discard, DiscardCounters, Expect, Policy,
};

const US: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 9);
const VIP1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
const VIP2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 101);
const VIPS: &[Ipv4Addr] = &[VIP1, VIP2];
const VRID: u8 = 7;

fn expect() -> Expect {
    Expect::new(VRID, US)
}

fn strict() -> Policy<'static> {
    Policy {
        strict_addrs: Some(VIPS),
        ..Policy::default()
    }
}

fn repr() -> Repr {
    Repr::advertisement(VRID, 120, 100, VIPS.to_vec())
}

fn bytes_from(src: Ipv4Addr, r: &Repr, mode: ChecksumMode) -> Vec<u8> {
    r.to_bytes(src, MULTICAST_ADDR, mode)
        .expect("valid repr emits")
}

fn good(mode: ChecksumMode) -> Vec<u8> {
    bytes_from(PEER, &repr(), mode)
}

fn check(bytes: &[u8]) -> Result<(Advert, ChecksumMode), Discard> {
    validate(255, PEER, MULTICAST_ADDR, bytes, &expect())
}

#[test]
fn accepts_a_good_advert_in_either_checksum_mode() {
    for mode in [ChecksumMode::PseudoHeader, ChecksumMode::NoPseudoHeader] {
        let (adv, got) = check(&good(mode)).expect("accepted");
        assert_eq!(got, mode);
        assert_eq!(
            adv,
            Advert {
                src: PEER,
                priority: 120,
                max_adver_int_cs: 100,
                addrs: VIPS.to_vec()
            }
        );
    }
}

#[test]
fn ttl_must_be_255() {
    let bytes = good(ChecksumMode::PseudoHeader);
    for ttl in [0, 1, 64, 254] {
        assert_eq!(
            validate(ttl, PEER, MULTICAST_ADDR, &bytes, &expect()).map(|_| ()),
            Err(Discard::Ttl)
        );
    }
}

#[test]
fn version_must_be_3() {
    for v in [0u8, 1, 2, 4, 15] {
        let mut bytes = good(ChecksumMode::PseudoHeader);
        bytes[0] = (v << 4) | 1;
        assert_eq!(
            check(&bytes).map(|_| ()),
            Err(Discard::Version),
            "version {v}"
        );
    }
    // A real VRRPv2 advert (RFC 3768 layout with 8 bytes of auth data) is a version discard,
    // not a length one.
    let v2 = [
        0x21, VRID, 100, 1, 0, 1, 0xaa, 0xbb, 10, 0, 0, 100, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    assert_eq!(check(&v2).map(|_| ()), Err(Discard::Version));
}

#[test]
fn type_must_be_advertisement() {
    let r = Repr {
        msg_type: MessageType::Unknown(2),
        ..repr()
    };
    let bytes = bytes_from(PEER, &r, ChecksumMode::PseudoHeader);
    assert_eq!(check(&bytes).map(|_| ()), Err(Discard::Type));
}

#[test]
fn truncated_packets() {
    assert_eq!(check(&[]).map(|_| ()), Err(Discard::Truncated));
    let bytes = good(ChecksumMode::PseudoHeader);
    // Header cut short, and addresses cut short.
    for len in [1, 4, 7, 8, 11, 15] {
        assert_eq!(
            check(&bytes[..len]).map(|_| ()),
            Err(Discard::Truncated),
            "len {len}"
        );
    }
}

#[test]
fn trailing_bytes_are_a_length_error() {
    let mut bytes = good(ChecksumMode::PseudoHeader);
    bytes.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(check(&bytes).map(|_| ()), Err(Discard::Length));
}

#[test]
fn bad_checksum() {
    let mut bytes = good(ChecksumMode::PseudoHeader);
    bytes[7] ^= 0x01;
    assert_eq!(check(&bytes).map(|_| ()), Err(Discard::Checksum));
    // A flipped payload bit, too.
    let mut bytes = good(ChecksumMode::NoPseudoHeader);
    bytes[2] ^= 0x40;
    assert_eq!(check(&bytes).map(|_| ()), Err(Discard::Checksum));
    // The pseudo-header covers the source: the same bytes from another source fail.
    let bytes = good(ChecksumMode::PseudoHeader);
    let other = Ipv4Addr::new(10, 0, 0, 10);
    assert_eq!(
        validate(255, other, MULTICAST_ADDR, &bytes, &expect()).map(|_| ()),
        Err(Discard::Checksum)
    );
}

#[test]
fn checksum_mode_policy() {
    let only = |checksum| Policy {
        checksum,
        ..Policy::default()
    };
    let plain = good(ChecksumMode::NoPseudoHeader);
    let pseudo = good(ChecksumMode::PseudoHeader);
    let run = |p: Policy<'_>, b: &[u8]| {
        validate_with(255, PEER, MULTICAST_ADDR, b, &expect(), &p).map(|r| r.1)
    };
    let only_pseudo = only(ChecksumPolicy::PseudoHeaderOnly);
    let only_plain = only(ChecksumPolicy::NoPseudoHeaderOnly);
    assert_eq!(run(only_pseudo, &plain), Err(Discard::ChecksumMode));
    assert_eq!(run(only_pseudo, &pseudo), Ok(ChecksumMode::PseudoHeader));
    assert_eq!(run(only_plain, &pseudo), Err(Discard::ChecksumMode));
    assert_eq!(run(only_plain, &plain), Ok(ChecksumMode::NoPseudoHeader));
    assert_eq!(
        run(Policy::default(), &plain),
        Ok(ChecksumMode::NoPseudoHeader)
    );
}

#[test]
fn other_vrid_is_not_ours() {
    let r = Repr {
        vrid: VRID + 1,
        ..repr()
    };
    let bytes = bytes_from(PEER, &r, ChecksumMode::PseudoHeader);
    assert_eq!(check(&bytes).map(|_| ()), Err(Discard::OtherVrid));
    assert!(!Discard::OtherVrid.is_error());
}

#[test]
fn own_advert() {
    let bytes = bytes_from(US, &repr(), ChecksumMode::PseudoHeader);
    assert_eq!(
        validate(255, US, MULTICAST_ADDR, &bytes, &expect()).map(|_| ()),
        Err(Discard::Own)
    );
    assert!(!Discard::Own.is_error());
}

#[test]
fn impossible_source() {
    for src in [Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, MULTICAST_ADDR] {
        let bytes = bytes_from(src, &repr(), ChecksumMode::PseudoHeader);
        assert_eq!(
            validate(255, src, MULTICAST_ADDR, &bytes, &expect()).map(|_| ()),
            Err(Discard::Source),
            "{src}"
        );
    }
}

#[test]
fn zero_interval() {
    let r = Repr {
        max_adver_int_cs: 0,
        ..repr()
    };
    let bytes = bytes_from(PEER, &r, ChecksumMode::PseudoHeader);
    assert_eq!(check(&bytes).map(|_| ()), Err(Discard::Interval));
}

#[test]
fn other_interval_is_accepted_for_the_backup_to_learn() {
    let r = Repr {
        max_adver_int_cs: 4095,
        ..repr()
    };
    let bytes = bytes_from(PEER, &r, ChecksumMode::PseudoHeader);
    assert_eq!(check(&bytes).map(|(a, _)| a.max_adver_int_cs), Ok(4095));
}

#[test]
fn zero_addresses() {
    let r = Repr {
        addrs: vec![],
        ..repr()
    };
    let bytes = bytes_from(PEER, &r, ChecksumMode::PseudoHeader);
    assert_eq!(check(&bytes).map(|_| ()), Err(Discard::AddrCount));
}

#[test]
fn address_list_differences_are_accepted_unless_strict() {
    let fewer = bytes_from(
        PEER,
        &Repr {
            addrs: vec![VIP1],
            ..repr()
        },
        ChecksumMode::PseudoHeader,
    );
    let other = bytes_from(
        PEER,
        &Repr {
            addrs: vec![VIP1, Ipv4Addr::new(10, 0, 0, 102)],
            ..repr()
        },
        ChecksumMode::PseudoHeader,
    );
    let dup = bytes_from(
        PEER,
        &Repr {
            addrs: vec![VIP1, VIP1],
            ..repr()
        },
        ChecksumMode::PseudoHeader,
    );
    let reordered = bytes_from(
        PEER,
        &Repr {
            addrs: vec![VIP2, VIP1],
            ..repr()
        },
        ChecksumMode::PseudoHeader,
    );
    let run = |p: Policy<'_>, b: &[u8]| {
        validate_with(255, PEER, MULTICAST_ADDR, b, &expect(), &p).map(|_| ())
    };
    assert_eq!(run(strict(), &fewer), Err(Discard::AddrCount));
    assert_eq!(run(strict(), &other), Err(Discard::AddrMismatch));
    assert_eq!(run(strict(), &dup), Err(Discard::AddrMismatch));
    assert_eq!(run(strict(), &reordered), Ok(()));
    for b in [&fewer, &other, &dup, &reordered] {
        assert_eq!(run(Policy::default(), b), Ok(()), "lenient by default");
        assert_eq!(
            check(b).map(|_| ()),
            Ok(()),
            "validate uses the default policy"
        );
    }
}

#[test]
fn priority_zero_and_255_pass_validation() {
    for p in [0u8, 255] {
        let bytes = bytes_from(
            PEER,
            &Repr {
                priority: p,
                ..repr()
            },
            ChecksumMode::PseudoHeader,
        );
        assert_eq!(check(&bytes).map(|(a, _)| a.priority), Ok(p));
    }
}

#[test]
fn expect_constructors() {
    let e = Expect::new(VRID, US);
    assert_eq!((e.vrid, e.primary_addr), (VRID, US));
    assert_eq!(Policy::default().strict_addrs, None);
    assert_eq!(Policy::default().checksum, ChecksumPolicy::Either);
    let cfg = FsmConfig {
        vrid: 9,
        priority: 100,
        advert_interval_cs: 100,
        preempt: true,
        preempt_delay: std::time::Duration::ZERO,
        primary_addr: US,
        vips: VIPS.to_vec(),
        fast_takeover_on_zero: false,
    };
    assert_eq!(Expect::from_config(&cfg), Expect::new(9, US));
}

#[test]
fn labels_are_unique_and_counted() {
    let mut labels: Vec<&str> = Discard::ALL.iter().map(|d| d.as_str()).collect();
    labels.sort_unstable();
    labels.dedup();
    assert_eq!(labels.len(), Discard::ALL.len());
    assert_eq!(Discard::OtherVrid.as_str(), "vrid");
    let mut c = DiscardCounters::default();
    c.record(Discard::Ttl);
    c.record(Discard::Ttl);
    c.record(Discard::AddrMismatch);
    assert_eq!(c.get(Discard::Ttl), 2);
    assert_eq!(c.get(Discard::Checksum), 0);
    assert_eq!(c.total(), 3);
    let seen: Vec<(&str, u64)> = c.iter().filter(|(_, n)| *n > 0).collect();
    assert_eq!(seen, vec![("ttl", 2), ("addr_mismatch", 1)]);
}

#[test]
fn every_prefix_is_discarded_without_panic() {
    let bytes = good(ChecksumMode::PseudoHeader);
    for len in 0..bytes.len() {
        assert!(check(&bytes[..len]).is_err(), "prefix {len}");
    }
    assert!(check(&bytes).is_ok());
}

#[test]
fn version_field_of_emitted_repr_is_3() {
    assert_eq!(repr().version, Version::V3);
}

proptest! {
    #[test]
    fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), ttl in any::<u8>()) {
        let _ = validate(ttl, PEER, MULTICAST_ADDR, &bytes, &expect());
    }

    #[test]
    fn accepted_adverts_round_trip(
        priority in any::<u8>(),
        interval in 1u16..=4095,
        addrs in proptest::collection::vec(any::<u32>().prop_map(Ipv4Addr::from), 1..8),
        pseudo in any::<bool>(),
    ) {
        let mode = if pseudo { ChecksumMode::PseudoHeader } else { ChecksumMode::NoPseudoHeader };
        let r = Repr::advertisement(VRID, priority, interval, addrs.clone());
        let bytes = bytes_from(PEER, &r, mode);
        let (adv, _) = check(&bytes).expect("accepted");
        prop_assert_eq!(adv, Advert { src: PEER, priority, max_adver_int_cs: interval, addrs });
    }
}

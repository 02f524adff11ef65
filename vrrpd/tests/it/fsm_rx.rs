//! RFC 5798 §7.1 receive validation: every `Discard` reason from a crafted packet, the
//! accepted cases, and no panic on any prefix or random bytes.

use std::net::Ipv4Addr;

use proptest::prelude::*;
use shared::wire::vrrp::{ChecksumMode, MessageType, Repr, Version, MULTICAST_ADDR};
use vrrpd::fsm::{Advert, FsmConfig};
use vrrpd::rx::{
    source_allowed, validate, validate_with, ChecksumPolicy, Discard, DiscardCounters, DiscardLog,
    Expect, Policy,
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
        adopt_interval_cs: None,
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

#[test]
fn source_allowed_is_any_when_empty_else_the_list() {
    let other = Ipv4Addr::new(10, 0, 0, 66);
    assert!(source_allowed(other, &[]));
    assert!(source_allowed(PEER, &[PEER]));
    assert!(!source_allowed(other, &[PEER]));
    assert!(!source_allowed(other, &[PEER, VIP1]));
}

/// Adverts from sources outside `accept_from` are discarded, whatever they say, and before
/// the checksum is even looked at; other VRIDs and our own adverts keep their reasons.
#[test]
fn accept_from_discards_other_sources() {
    let forger = Ipv4Addr::new(10, 0, 0, 66);
    let policy = Policy {
        accept_from: &[PEER],
        ..Policy::default()
    };
    let run = |src: Ipv4Addr, b: &[u8]| {
        validate_with(255, src, MULTICAST_ADDR, b, &expect(), &policy).map(|_| ())
    };
    let forged = bytes_from(forger, &repr(), ChecksumMode::PseudoHeader);
    assert_eq!(run(forger, &forged), Err(Discard::SourceNotAllowed));
    let mut bad_sum = forged.clone();
    bad_sum[6] ^= 0xff;
    assert_eq!(
        run(forger, &bad_sum),
        Err(Discard::SourceNotAllowed),
        "discarded before the checksum is computed"
    );
    assert_eq!(run(PEER, &good(ChecksumMode::PseudoHeader)), Ok(()));
    let other_vrid = bytes_from(
        forger,
        &Repr::advertisement(VRID + 1, 120, 100, VIPS.to_vec()),
        ChecksumMode::PseudoHeader,
    );
    assert_eq!(run(forger, &other_vrid), Err(Discard::OtherVrid));
    let own = bytes_from(US, &repr(), ChecksumMode::PseudoHeader);
    assert_eq!(run(US, &own), Err(Discard::Own));
    assert_eq!(Discard::SourceNotAllowed.as_str(), "source_not_allowed");
    assert!(Discard::SourceNotAllowed.is_error());
}

/// Strict interval mode discards adverts outside the window; the default lets the FSM clamp.
#[test]
fn strict_interval_window() {
    let with_interval = |cs| {
        bytes_from(
            PEER,
            &Repr::advertisement(VRID, 120, cs, VIPS.to_vec()),
            ChecksumMode::PseudoHeader,
        )
    };
    let strict = Policy {
        interval_window: Some((25, 100)),
        ..Policy::default()
    };
    let run = |p: &Policy<'_>, cs| {
        validate_with(255, PEER, MULTICAST_ADDR, &with_interval(cs), &expect(), p).map(|_| ())
    };
    for (cs, ok) in [
        (24, false),
        (25, true),
        (100, true),
        (101, false),
        (4095, false),
    ] {
        let want = if ok {
            Ok(())
        } else {
            Err(Discard::IntervalRange)
        };
        assert_eq!(run(&strict, cs), want, "{cs} cs");
        assert_eq!(run(&Policy::default(), cs), Ok(()), "{cs} cs, lenient");
    }
    assert_eq!(
        run(&strict, 0),
        Err(Discard::Interval),
        "0 stays its own reason"
    );
}

/// One log line per reason per period, with the count of the ones held back.
#[test]
fn discard_log_is_rate_limited_per_reason() {
    let ms = std::time::Duration::from_millis;
    let mut log = DiscardLog::new(ms(5000));
    assert_eq!(log.admit(Discard::SourceNotAllowed, ms(0)), Some(0));
    for t in 1..=999 {
        assert_eq!(log.admit(Discard::SourceNotAllowed, ms(t)), None);
    }
    assert_eq!(
        log.admit(Discard::Ttl, ms(1000)),
        Some(0),
        "reasons are independent"
    );
    assert_eq!(log.admit(Discard::SourceNotAllowed, ms(4999)), None);
    assert_eq!(log.admit(Discard::SourceNotAllowed, ms(5000)), Some(1000));
    assert_eq!(log.admit(Discard::SourceNotAllowed, ms(10_000)), Some(0));
}

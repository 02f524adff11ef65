//! Frame codec: round trips, truncation, oversize lengths, fuzzed input, tampering.

use proptest::prelude::*;
use shared::peer::auth::MacKey;
use shared::peer::frame::{
    self, decode, encode, peek_header, split, Frame, FrameError, Hello, Kind, Resume, HEADER_LEN,
    MAX_FRAME_PAYLOAD, MAX_KEY_LEN, MAX_VALUE_LEN, TAG_LEN,
};
use shared::peer::{Digest, Record, Table};

fn key() -> MacKey {
    MacKey::hello(b"0123456789abcdef-test", "cluster-1")
}

fn hello(resume: Option<Resume>) -> Frame {
    Frame::Hello(Hello {
        cluster_id: "cluster-1".into(),
        node_id: "lb-a".into(),
        boot_id: 0x1122_3344_5566_7788,
        epoch: 9,
        schema_hash: 0xdead_beef,
        nonce: [0xa5; 32],
        resume,
    })
}

fn rec(table: Table, k: &[u8], v: &[u8]) -> Record {
    Record {
        table,
        key: k.to_vec(),
        value: v.to_vec(),
    }
}

/// One of every kind (and both HELLO shapes).
fn samples() -> Vec<Frame> {
    vec![
        hello(None),
        hello(Some(Resume {
            peer_boot_id: 42,
            last_seq_received: 1000,
        })),
        Frame::Update { records: vec![] },
        Frame::Update {
            records: vec![
                (1, rec(Table::Sticky, b"pool\0cookie", b"10.0.0.1:80")),
                (0, rec(Table::RateLimit, b"", b"")),
                (u64::MAX, rec(Table::Admin, &[0xff; MAX_KEY_LEN], &[7; 300])),
            ],
        },
        Frame::Ack { seq: 77 },
        Frame::SyncStart,
        Frame::SyncDone {
            count: 3,
            digest: Digest { count: 3, hash: 99 },
        },
        Frame::Ping { token: 1 },
        Frame::Pong { token: u64::MAX },
        Frame::Close {
            reason: "shutting down — bye".into(),
        },
    ]
}

#[test]
fn every_kind_round_trips() {
    for (i, f) in samples().into_iter().enumerate() {
        let bytes = encode(&f, i as u64 + 1, &key()).unwrap();
        let d = decode(&bytes, &key()).unwrap().expect("complete frame");
        assert_eq!(d.frame, f);
        assert_eq!(d.counter, i as u64 + 1);
        assert_eq!(d.len, bytes.len());
    }
}

#[test]
fn frames_decode_one_after_another_from_one_buffer() {
    let mut buf = Vec::new();
    for (i, f) in samples().iter().enumerate() {
        buf.extend(encode(f, i as u64, &key()).unwrap());
    }
    let mut off = 0;
    let mut got = Vec::new();
    while let Some(d) = decode(&buf[off..], &key()).unwrap() {
        off += d.len;
        got.push(d.frame);
    }
    assert_eq!(off, buf.len());
    assert_eq!(got, samples());
}

#[test]
fn every_truncated_prefix_needs_more_bytes() {
    for f in samples() {
        let bytes = encode(&f, 5, &key()).unwrap();
        for n in 0..bytes.len() {
            assert_eq!(
                decode(&bytes[..n], &key()),
                Ok(None),
                "{} prefix of {n}/{} bytes",
                f.kind(),
                bytes.len()
            );
        }
    }
}

#[test]
fn oversize_length_is_refused_from_the_header_alone() {
    let mut h = Vec::from(&b"LP"[..]);
    h.push(frame::VERSION);
    h.push(Kind::Update.as_u8());
    h.extend_from_slice(&u32::MAX.to_be_bytes());
    // No counter, payload or tag yet: refused anyway.
    assert_eq!(
        decode(&h, &key()),
        Err(FrameError::Oversize {
            len: u32::MAX as usize,
            max: MAX_FRAME_PAYLOAD
        })
    );
    // The largest allowed length is fine and simply needs more bytes.
    let mut ok = h.clone();
    ok[4..8].copy_from_slice(&(MAX_FRAME_PAYLOAD as u32).to_be_bytes());
    assert_eq!(decode(&ok, &key()), Ok(None));
}

#[test]
fn encode_refuses_what_decode_would_refuse() {
    let big_key = Frame::Update {
        records: vec![(1, rec(Table::Sticky, &[0; MAX_KEY_LEN + 1], b"v"))],
    };
    assert!(matches!(
        encode(&big_key, 1, &key()),
        Err(FrameError::FieldTooLong { .. })
    ));
    let big_value = Frame::Update {
        records: vec![(1, rec(Table::Sticky, b"k", &vec![0; MAX_VALUE_LEN + 1]))],
    };
    assert!(matches!(
        encode(&big_value, 1, &key()),
        Err(FrameError::FieldTooLong { .. })
    ));
    // 20 maximal records exceed 1 MiB.
    let too_many = Frame::Update {
        records: (0..20)
            .map(|i| (i, rec(Table::Sticky, b"k", &vec![0; MAX_VALUE_LEN])))
            .collect(),
    };
    assert!(matches!(
        encode(&too_many, 1, &key()),
        Err(FrameError::Oversize { .. })
    ));
}

#[test]
fn a_hostile_record_count_does_not_allocate_or_panic() {
    // UPDATE claiming 2^32-1 records in a 4-byte payload, correctly MAC'd.
    let payload = u32::MAX.to_be_bytes();
    assert_eq!(
        Frame::parse_payload(Kind::Update, &payload),
        Err(FrameError::Truncated { kind: "UPDATE" })
    );
}

#[test]
fn malformed_payloads_are_named() {
    let cases: Vec<(Kind, Vec<u8>, FrameError)> = vec![
        (
            Kind::Ack,
            vec![0; 9],
            FrameError::TrailingBytes {
                kind: "ACK",
                extra: 1,
            },
        ),
        (
            Kind::Update,
            [&1u32.to_be_bytes()[..], &[0; 8], &[9]].concat(),
            FrameError::UnknownTable(9),
        ),
        (
            Kind::Close,
            vec![2, 0xff, 0xfe],
            FrameError::InvalidUtf8("close reason"),
        ),
        (Kind::Unknown(200), vec![], FrameError::UnknownKind(200)),
    ];
    for (kind, payload, want) in cases {
        assert_eq!(Frame::parse_payload(kind, &payload), Err(want));
    }
}

#[test]
fn every_bit_flip_is_caught() {
    let bytes = encode(
        &Frame::Update {
            records: vec![(3, rec(Table::Sticky, b"k", b"v"))],
        },
        9,
        &key(),
    )
    .unwrap();
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[i] ^= 1 << bit;
            let r = decode(&b, &key());
            match i {
                // Magic and version: refused as not-our-protocol.
                0..=2 => assert!(
                    matches!(
                        r,
                        Err(FrameError::BadMagic(_) | FrameError::UnsupportedVersion(_))
                    ),
                    "byte {i} bit {bit}: {r:?}"
                ),
                // Length: never accepted; either waits for more bytes, is oversize, or the
                // tag no longer lines up.
                4..=7 => assert!(
                    matches!(
                        r,
                        Ok(None) | Err(FrameError::Oversize { .. } | FrameError::BadMac)
                    ),
                    "byte {i} bit {bit}: {r:?}"
                ),
                // Kind, counter, payload, tag: the MAC catches it.
                _ => assert_eq!(r, Err(FrameError::BadMac), "byte {i} bit {bit}"),
            }
        }
    }
}

#[test]
fn a_frame_under_another_key_fails_the_mac() {
    let bytes = encode(&Frame::Ping { token: 1 }, 1, &key()).unwrap();
    let other = MacKey::hello(b"0123456789abcdef-test", "cluster-2");
    assert_eq!(decode(&bytes, &other), Err(FrameError::BadMac));
}

#[test]
fn split_reports_header_and_payload() {
    let bytes = encode(&Frame::Ack { seq: 1 }, 4, &key()).unwrap();
    let raw = split(&bytes).unwrap().unwrap();
    assert_eq!(raw.header.kind, Kind::Ack);
    assert_eq!(raw.header.counter, 4);
    assert_eq!(raw.payload, &1u64.to_be_bytes());
    assert_eq!(raw.len(), HEADER_LEN + 8 + TAG_LEN);
    assert_eq!(peek_header(&bytes[..HEADER_LEN]).unwrap(), Some(raw.header));
}

fn arb_record() -> impl Strategy<Value = Record> {
    (
        prop::sample::select(Table::ALL.to_vec()),
        prop::collection::vec(any::<u8>(), 0..64),
        prop::collection::vec(any::<u8>(), 0..256),
    )
        .prop_map(|(table, key, value)| Record { table, key, value })
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (
            "[a-z0-9-]{0,40}",
            "[a-z0-9-]{0,40}",
            any::<[u64; 3]>(),
            any::<[u8; 32]>(),
            any::<Option<(u64, u64)>>()
        )
            .prop_map(|(c, n, [b, e, s], nonce, r)| Frame::Hello(Hello {
                cluster_id: c,
                node_id: n,
                boot_id: b,
                epoch: e,
                schema_hash: s,
                nonce,
                resume: r.map(|(p, l)| Resume {
                    peer_boot_id: p,
                    last_seq_received: l
                }),
            })),
        prop::collection::vec((any::<u64>(), arb_record()), 0..8)
            .prop_map(|records| Frame::Update { records }),
        any::<u64>().prop_map(|seq| Frame::Ack { seq }),
        Just(Frame::SyncStart),
        any::<[u64; 3]>().prop_map(|[c, dc, h]| Frame::SyncDone {
            count: c,
            digest: Digest { count: dc, hash: h }
        }),
        any::<u64>().prop_map(|token| Frame::Ping { token }),
        any::<u64>().prop_map(|token| Frame::Pong { token }),
        "\\PC{0,60}".prop_filter_map("≤255 bytes", |s: String| (s.len() <= 255)
            .then_some(Frame::Close { reason: s })),
    ]
}

proptest! {
    #[test]
    fn arbitrary_frames_round_trip(f in arb_frame(), counter in any::<u64>()) {
        let bytes = encode(&f, counter, &key()).unwrap();
        let d = decode(&bytes, &key()).unwrap().unwrap();
        prop_assert_eq!(d.frame, f);
        prop_assert_eq!(d.counter, counter);
        prop_assert_eq!(d.len, bytes.len());
        // And every prefix just asks for more.
        for n in 0..bytes.len() {
            prop_assert_eq!(decode(&bytes[..n], &key()), Ok(None));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode(&bytes, &key());
        let _ = split(&bytes);
        for k in 0..=9u8 {
            let _ = Frame::parse_payload(Kind::from_u8(k), &bytes);
        }
    }

    #[test]
    fn arbitrary_payloads_behind_a_valid_header_never_panic(
        kind in 0u8..10,
        payload in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        // Build a well-formed, correctly MAC'd frame around random payload bytes, so the
        // payload parser (not the MAC) is what gets fuzzed.
        let mut b = Vec::from(&b"LP"[..]);
        b.push(frame::VERSION);
        b.push(kind);
        b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        b.extend_from_slice(&1u64.to_be_bytes());
        b.extend_from_slice(&payload);
        let tag = key().tag(&b);
        b.extend_from_slice(&tag);
        if let Ok(Some(d)) = decode(&b, &key()) {
            // Whatever parsed must re-encode to the same bytes (the format is canonical).
            prop_assert_eq!(encode(&d.frame, 1, &key()).unwrap(), b);
        }
    }
}

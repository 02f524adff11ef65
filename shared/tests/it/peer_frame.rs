//! Frame codec: round trips, truncation, oversize lengths, fuzzed input, tampering, and the
//! encryption of every frame after HELLO (ChaCha20-Poly1305, counter as nonce, header as AAD).

use proptest::prelude::*;
use shared::peer::auth::{AeadKey, MacKey};
use shared::peer::frame::{
    self, decode, decode_hello, encode, encode_hello, peek_header, split, Decoded, Frame,
    FrameError, Hello, Kind, Resume, TicketKey, AEAD_TAG_LEN, HEADER_LEN, MAX_FRAME_PAYLOAD,
    MAX_KEY_LEN, MAX_VALUE_LEN,
};
use shared::peer::{Digest, Record, Role, Table};

const PSK: &[u8] = b"0123456789abcdef-test";

fn hello_key() -> MacKey {
    MacKey::hello(PSK, "cluster-1")
}

/// The dialer's session key of one connection.
fn key() -> AeadKey {
    AeadKey::session(PSK, &[1; 32], &[2; 32], Role::Dialer)
}

/// Encode any kind the way the link does: HELLO MAC'd, the rest encrypted.
fn enc(f: &Frame, counter: u64) -> Result<Vec<u8>, FrameError> {
    match f {
        Frame::Hello(h) => encode_hello(h, &hello_key()),
        other => encode(other, counter, &key()),
    }
}

/// Decode any kind the way the link does (the kind byte picks the key).
fn dec(buf: &[u8]) -> Result<Option<Decoded>, FrameError> {
    match split(buf)? {
        Some(raw) if raw.header.kind == Kind::Hello => decode_hello(buf, &hello_key()),
        Some(_) => decode(buf, &key()),
        None => Ok(None),
    }
}

/// The expected counter: HELLO is always 0.
fn counter_of(f: &Frame, counter: u64) -> u64 {
    if matches!(f, Frame::Hello(_)) {
        0
    } else {
        counter
    }
}

fn hello(resume: Option<Resume>) -> Frame {
    Frame::Hello(Hello {
        cluster_id: "cluster-1".into(),
        node_id: "lb-a".into(),
        boot_id: 0x1122_3344_5566_7788,
        attempt: 3,
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
        Frame::TicketKeys { keys: vec![] },
        Frame::TicketKeys {
            keys: vec![
                TicketKey {
                    id: [1; 16],
                    secret: [2; 32],
                    remaining_ms: 3,
                };
                frame::MAX_TICKET_KEYS
            ],
        },
    ]
}

#[test]
fn every_kind_round_trips() {
    for (i, f) in samples().into_iter().enumerate() {
        let bytes = enc(&f, i as u64 + 1).unwrap();
        let d = dec(&bytes).unwrap().expect("complete frame");
        assert_eq!(d.frame, f);
        assert_eq!(d.counter, counter_of(&f, i as u64 + 1));
        assert_eq!(d.len, bytes.len());
    }
}

#[test]
fn frames_decode_one_after_another_from_one_buffer() {
    let mut buf = Vec::new();
    for (i, f) in samples().iter().enumerate() {
        buf.extend(enc(f, i as u64).unwrap());
    }
    let mut off = 0;
    let mut got = Vec::new();
    while let Some(d) = dec(&buf[off..]).unwrap() {
        off += d.len;
        got.push(d.frame);
    }
    assert_eq!(off, buf.len());
    assert_eq!(got, samples());
}

#[test]
fn every_truncated_prefix_needs_more_bytes() {
    for f in samples() {
        let bytes = enc(&f, 5).unwrap();
        for n in 0..bytes.len() {
            assert_eq!(
                dec(&bytes[..n]),
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
        dec(&h),
        Err(FrameError::Oversize {
            len: u32::MAX as usize,
            max: MAX_FRAME_PAYLOAD
        })
    );
    // The largest allowed length is fine and simply needs more bytes.
    let mut ok = h.clone();
    ok[4..8].copy_from_slice(&(MAX_FRAME_PAYLOAD as u32).to_be_bytes());
    assert_eq!(dec(&ok), Ok(None));
}

#[test]
fn encode_refuses_what_decode_would_refuse() {
    let big_key = Frame::Update {
        records: vec![(1, rec(Table::Sticky, &[0; MAX_KEY_LEN + 1], b"v"))],
    };
    assert!(matches!(
        enc(&big_key, 1),
        Err(FrameError::FieldTooLong { .. })
    ));
    let big_value = Frame::Update {
        records: vec![(1, rec(Table::Sticky, b"k", &vec![0; MAX_VALUE_LEN + 1]))],
    };
    assert!(matches!(
        enc(&big_value, 1),
        Err(FrameError::FieldTooLong { .. })
    ));
    // 20 maximal records exceed 1 MiB.
    let too_many = Frame::Update {
        records: (0..20)
            .map(|i| (i, rec(Table::Sticky, b"k", &vec![0; MAX_VALUE_LEN])))
            .collect(),
    };
    assert!(matches!(
        enc(&too_many, 1),
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
            let r = dec(&b);
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
    let Frame::Hello(h) = hello(None) else {
        unreachable!()
    };
    let bytes = encode_hello(&h, &hello_key()).unwrap();
    let other = MacKey::hello(PSK, "cluster-2");
    assert_eq!(decode_hello(&bytes, &other), Err(FrameError::BadMac));
}

#[test]
fn split_reports_header_and_payload() {
    let bytes = enc(&Frame::Ack { seq: 1 }, 4).unwrap();
    let raw = split(&bytes).unwrap().unwrap();
    assert_eq!(raw.header.kind, Kind::Ack);
    assert_eq!(raw.header.counter, 4);
    assert_eq!(raw.body.len(), 8);
    assert_ne!(
        raw.body,
        &1u64.to_be_bytes(),
        "the payload travels encrypted"
    );
    assert_eq!(raw.tag.len(), AEAD_TAG_LEN);
    assert_eq!(raw.len(), HEADER_LEN + 8 + AEAD_TAG_LEN);
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
            any::<[u64; 4]>(),
            any::<[u8; 32]>(),
            any::<Option<(u64, u64)>>()
        )
            .prop_map(|(c, n, [b, a, e, s], nonce, r)| Frame::Hello(Hello {
                cluster_id: c,
                node_id: n,
                boot_id: b,
                attempt: a,
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
        prop::collection::vec(
            (any::<[u8; 16]>(), any::<[u8; 32]>(), any::<u64>()),
            0..=frame::MAX_TICKET_KEYS
        )
        .prop_map(|keys| Frame::TicketKeys {
            keys: keys
                .into_iter()
                .map(|(id, secret, remaining_ms)| TicketKey {
                    id,
                    secret,
                    remaining_ms
                })
                .collect()
        }),
    ]
}

proptest! {
    #[test]
    fn arbitrary_frames_round_trip(f in arb_frame(), counter in any::<u64>()) {
        let bytes = enc(&f, counter).unwrap();
        let d = dec(&bytes).unwrap().unwrap();
        prop_assert_eq!(d.counter, counter_of(&f, counter));
        prop_assert_eq!(d.frame, f);
        prop_assert_eq!(d.len, bytes.len());
        // And every prefix just asks for more.
        for n in 0..bytes.len() {
            prop_assert_eq!(dec(&bytes[..n]), Ok(None));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = dec(&bytes);
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
        // Build a well-formed, correctly sealed frame around random payload bytes, so the
        // payload parser (not the AEAD or the MAC) is what gets fuzzed.
        let mut b = Vec::from(&b"LP"[..]);
        b.push(frame::VERSION);
        b.push(kind);
        b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        b.extend_from_slice(&1u64.to_be_bytes());
        if kind == Kind::Hello.as_u8() {
            b.extend_from_slice(&payload);
            let tag = hello_key().tag(&b);
            b.extend_from_slice(&tag);
        } else {
            let mut body = payload.clone();
            let tag = key().seal_in_place(1, &b, &mut body).unwrap();
            b.extend_from_slice(&body);
            b.extend_from_slice(&tag);
        }
        if let Ok(Some(d)) = dec(&b) {
            // Whatever parsed must re-encode to the same bytes (the format is canonical).
            prop_assert_eq!(enc(&d.frame, 1).unwrap(), b);
        }
    }
}

#[test]
fn record_bytes_never_appear_on_the_wire() {
    let secret = b"SECRET-4f1c9a2e";
    let f = Frame::Update {
        records: vec![(1, rec(Table::Sticky, secret, b"x-api-key: k-77aa"))],
    };
    let bytes = enc(&f, 1).unwrap();
    for needle in [&secret[..], b"x-api-key", b"k-77aa"] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "{:?} in the frame",
            String::from_utf8_lossy(needle)
        );
    }
    assert_eq!(dec(&bytes).unwrap().unwrap().frame, f);
}

#[test]
fn the_counter_is_the_nonce_and_is_authenticated() {
    let f = Frame::Ping { token: 5 };
    let (a, b) = (enc(&f, 1).unwrap(), enc(&f, 2).unwrap());
    assert_ne!(
        a[HEADER_LEN..],
        b[HEADER_LEN..],
        "a new counter, a new keystream"
    );
    // The counter is associated data: moving a frame to another counter breaks it.
    let mut moved = a.clone();
    moved[8..16].copy_from_slice(&2u64.to_be_bytes());
    assert_eq!(dec(&moved), Err(FrameError::BadMac));
}

#[test]
fn a_session_frame_under_the_other_direction_key_fails() {
    let bytes = enc(&Frame::Ping { token: 1 }, 1).unwrap();
    let acceptor = AeadKey::session(PSK, &[1; 32], &[2; 32], Role::Acceptor);
    assert_eq!(decode(&bytes, &acceptor), Err(FrameError::BadMac));
    let other_session = AeadKey::session(PSK, &[1; 32], &[3; 32], Role::Dialer);
    assert_eq!(decode(&bytes, &other_session), Err(FrameError::BadMac));
}

#[test]
fn a_hello_is_never_sealed_with_the_session_key_nor_opened_with_it() {
    let Frame::Hello(h) = hello(None) else {
        unreachable!()
    };
    assert_eq!(
        encode(&Frame::Hello(h.clone()), 0, &key()),
        Err(FrameError::KeyMismatch("HELLO"))
    );
    let bytes = encode_hello(&h, &hello_key()).unwrap();
    assert_eq!(decode(&bytes, &key()), Err(FrameError::BadMac));
}

#[test]
fn an_old_version_frame_is_refused_with_an_upgrade_hint() {
    let mut bytes = enc(&Frame::Ping { token: 1 }, 1).unwrap();
    bytes[2] = 1;
    let e = dec(&bytes).unwrap_err();
    assert_eq!(e, FrameError::UnsupportedVersion(1));
    assert!(e.to_string().contains("upgrade both nodes"), "{e}");
}

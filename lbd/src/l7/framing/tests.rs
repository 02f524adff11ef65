use super::*;
use proptest::prelude::*;

const MAX: usize = 16 * 1024;

/// Feed `chunks` in order; return every head seen and the final tracker.
fn run(chunks: &[&[u8]]) -> (Vec<Head>, FramingTracker) {
    let mut t = FramingTracker::new(MAX);
    let mut heads = Vec::new();
    for c in chunks {
        t.feed(c, &mut |h| heads.push(h));
    }
    (heads, t)
}

fn suspects(heads: &[Head]) -> Vec<Option<Suspect>> {
    heads.iter().map(|h| h.suspect).collect()
}

const GET: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n\r\n";
const CL_TE: &[u8] =
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
const TE_CL: &[u8] =
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n";

#[test]
fn plain_get_is_clean_and_ends_in_head_state() {
    let (heads, t) = run(&[GET]);
    assert_eq!(
        heads,
        vec![Head {
            seq: 0,
            suspect: None
        }]
    );
    assert_eq!(t.state, State::Head);
    assert!(
        t.head.capacity() == 0,
        "a head in one read must not allocate"
    );
}

#[test]
fn content_length_with_transfer_encoding_is_flagged_in_both_orders() {
    for req in [CL_TE, TE_CL] {
        let (heads, t) = run(&[req, GET]);
        assert_eq!(
            suspects(&heads),
            vec![Some(Suspect::ContentLengthWithTransferEncoding), None],
            "{}",
            String::from_utf8_lossy(req)
        );
        // The body was followed as chunked, like hyper does: the GET after it is a head.
        assert_eq!(t.state, State::Head);
    }
}

#[test]
fn invalid_content_length_after_transfer_encoding_is_still_flagged() {
    // hyper skips a Content-Length line after Transfer-Encoding without parsing it.
    let req =
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: zz\r\n\r\n0\r\n\r\n";
    let (heads, _) = run(&[req]);
    assert_eq!(
        suspects(&heads),
        vec![Some(Suspect::ContentLengthWithTransferEncoding)]
    );
}

#[test]
fn duplicate_content_length_is_flagged_even_when_equal() {
    let req = b"POST / HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabc";
    let (heads, t) = run(&[req, GET]);
    assert_eq!(
        suspects(&heads),
        vec![Some(Suspect::DuplicateContentLength), None]
    );
    assert!(t.is_tracking());
}

#[test]
fn framing_hyper_rejects_stops_tracking() {
    for req in [
        &b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n",
    ] {
        let (heads, t) = run(&[req]);
        assert!(heads.is_empty(), "{}", String::from_utf8_lossy(req));
        assert_eq!(t.stopped(), Some(StopReason::RejectedFraming));
    }
}

#[test]
fn last_transfer_encoding_line_decides_like_hyper() {
    // hyper reads this as chunked (the last line decides), so the body is followed as
    // chunked; the `gzip` before it is what lbd refuses.
    let req = b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let (heads, t) = run(&[req, GET]);
    assert_eq!(
        suspects(&heads),
        vec![Some(Suspect::UnsupportedTransferCoding), None]
    );
    assert_eq!(t.state, State::Head);
}

#[test]
fn transfer_codings_besides_one_final_chunked_are_flagged() {
    let cases: &[(&str, Option<Suspect>)] = &[
        ("chunked", None),
        ("Chunked", None),
        (" chunked ", None),
        ("gzip, chunked", Some(Suspect::UnsupportedTransferCoding)),
        (
            "x-unknown,chunked",
            Some(Suspect::UnsupportedTransferCoding),
        ),
        (
            "identity, chunked",
            Some(Suspect::UnsupportedTransferCoding),
        ),
        ("chunked, chunked", Some(Suspect::ChunkedTwice)),
        ("gzip, chunked, chunked", Some(Suspect::ChunkedTwice)),
    ];
    for (te, want) in cases {
        let req = format!("POST / HTTP/1.1\r\nTransfer-Encoding: {te}\r\n\r\n0\r\n\r\n");
        let (heads, t) = run(&[req.as_bytes(), GET]);
        assert_eq!(suspects(&heads), vec![*want, None], "{te:?}");
        assert_eq!(t.state, State::Head, "{te:?}");
    }
    // Two lines are one list (RFC 9110 §5.3).
    let req = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let (heads, _) = run(&[req]);
    assert_eq!(suspects(&heads), vec![Some(Suspect::ChunkedTwice)]);
    // hyper refuses a final coding other than chunked itself (400).
    for te in ["identity", "chunked, identity", "gzip", "", "chunked,"] {
        let req = format!("POST / HTTP/1.1\r\nTransfer-Encoding: {te}\r\n\r\n");
        let (heads, t) = run(&[req.as_bytes()]);
        assert!(heads.is_empty(), "{te:?}");
        assert_eq!(t.stopped(), Some(StopReason::RejectedFraming), "{te:?}");
    }
}

#[test]
fn malformed_chunk_lines_name_their_request() {
    for line in [
        &b"0x5\r\nhello\r\n0\r\n\r\n"[..],
        b"-1\r\nx\r\n0\r\n\r\n",
        b"10000000000000000\r\n",
        b"ffffffffffffffff0\r\n",
        b" 5\r\nhello\r\n0\r\n\r\n",
        b"\t5\r\nhello\r\n0\r\n\r\n",
        b"5\nhello\r\n0\r\n\r\n",
        b"5\r\nhello\n0\r\n\r\n",
        b"5g\r\nhello\r\n0\r\n\r\n",
        b"\r\n",
    ] {
        let head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        // The first request is fine; the second one's body is not.
        let all = [GET, head, line].concat();
        for cut in 0..=all.len() {
            let (heads, t) = run(&[&all[..cut], &all[cut..]]);
            assert_eq!(heads.len(), 2, "{}", String::from_utf8_lossy(line));
            assert_eq!(t.stopped(), Some(StopReason::MalformedChunk));
            assert_eq!(
                t.malformed_body(),
                Some(1),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }
    // The largest size that fits 64 bits is a valid chunk line, however long it takes.
    let big = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nabc";
    let (_, t) = run(&[big]);
    assert!(t.is_tracking());
    assert_eq!(t.malformed_body(), None);
}

#[test]
fn content_length_body_is_skipped_across_reads() {
    let mut req = b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n".to_vec();
    // A body that looks like a smuggled request must not be parsed as a head.
    let body = b"GET / HTTP";
    assert_eq!(body.len(), 10);
    let (heads, t) = run(&[&req, &body[..4], &body[4..], GET]);
    assert_eq!(heads.len(), 2);
    assert_eq!(heads[1].seq, 1);
    assert_eq!(t.state, State::Head);
    req.extend_from_slice(body);
    req.extend_from_slice(GET);
    let (heads, _) = run(&[&req]);
    assert_eq!(heads.len(), 2);
}

#[test]
fn chunked_body_with_extensions_and_trailers() {
    let req = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
        4;name=value;x\r\nWiki\r\n\
        A \t;ext\r\n0123456789\r\n\
        0;last\r\nX-Trailer: 1\r\nOther: 2\r\n\r\n";
    let mut all = req.to_vec();
    all.extend_from_slice(GET);
    // Every split position of the whole stream gives the same result.
    for cut in 0..=all.len() {
        let (heads, t) = run(&[&all[..cut], &all[cut..]]);
        assert_eq!(suspects(&heads), vec![None, None], "cut at {cut}");
        assert_eq!(t.state, State::Head, "cut at {cut}");
    }
    // And byte by byte.
    let chunks: Vec<&[u8]> = all.chunks(1).collect();
    let (heads, _) = run(&chunks);
    assert_eq!(heads.len(), 2);
}

#[test]
fn heads_split_at_every_position() {
    for req in [GET, CL_TE, TE_CL] {
        let mut all = req.to_vec();
        all.extend_from_slice(GET);
        let want = run(&[&all]).0;
        assert_eq!(want.len(), 2);
        for cut in 0..=all.len() {
            let (heads, t) = run(&[&all[..cut], &all[cut..]]);
            assert_eq!(heads, want, "cut at {cut}");
            assert!(t.is_tracking(), "cut at {cut}");
        }
        for a in 0..all.len() {
            for b in a..all.len() {
                let (heads, _) = run(&[&all[..a], &all[a..b], &all[b..]]);
                assert_eq!(heads, want, "cuts at {a}, {b}");
            }
        }
    }
}

#[test]
fn bare_lf_line_endings_and_leading_empty_lines() {
    // httparse (and so hyper) accepts LF-only heads and skips empty lines before one.
    let all = b"\r\n\nGET / HTTP/1.1\nHost: x\n\nPOST / HTTP/1.1\nContent-Length: 1\ncontent-length: 1\n\nzGET / HTTP/1.1\n\r\n";
    for cut in 0..=all.len() {
        let (heads, t) = run(&[&all[..cut], &all[cut..]]);
        assert_eq!(
            suspects(&heads),
            vec![None, Some(Suspect::DuplicateContentLength), None],
            "cut at {cut}"
        );
        assert_eq!(t.state, State::Head);
    }
    let (_, t) = run(&[b"\r\rGET"]);
    assert_eq!(t.stopped(), Some(StopReason::MalformedHead));
}

#[test]
fn pipelined_requests_get_consecutive_sequence_numbers() {
    let mut all = Vec::new();
    for _ in 0..3 {
        all.extend_from_slice(GET);
    }
    all.extend_from_slice(CL_TE);
    all.extend_from_slice(GET);
    let (heads, _) = run(&[&all]);
    let seqs: Vec<u64> = heads.iter().map(|h| h.seq).collect();
    assert_eq!(seqs, vec![0, 1, 2, 3, 4]);
    assert_eq!(
        heads[3].suspect,
        Some(Suspect::ContentLengthWithTransferEncoding)
    );
}

#[test]
fn garbage_and_tunnels_stop_tracking() {
    let (_, t) = run(&[b"\x81\x85\x37\xfa\x21\x3d"]);
    assert_eq!(t.stopped(), Some(StopReason::MalformedHead));
    let (_, t) = run(&[b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n"]);
    assert_eq!(t.stopped(), Some(StopReason::MalformedHead));
    let (heads, t) = run(&[b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", GET]);
    assert!(heads.is_empty());
    assert_eq!(t.stopped(), Some(StopReason::Tunnel));
    let (_, t) = run(&[b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"]);
    assert_eq!(t.stopped(), Some(StopReason::MalformedChunk));
    let (_, t) = run(&[b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n"]);
    assert_eq!(t.stopped(), Some(StopReason::MalformedChunk));
    let (_, t) =
        run(&[b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n"]);
    assert_eq!(t.stopped(), Some(StopReason::MalformedChunk));
}

#[test]
fn websocket_upgrade_then_frames_stops_but_refused_upgrade_keeps_tracking() {
    let up = b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
    let (heads, t) = run(&[up, b"\x81\x85\x37\xfa\x21\x3dhello"]);
    assert_eq!(heads.len(), 1);
    assert!(!t.is_tracking());
    let (heads, t) = run(&[up, CL_TE]);
    assert_eq!(heads.len(), 2);
    assert_eq!(
        heads[1].suspect,
        Some(Suspect::ContentLengthWithTransferEncoding)
    );
    assert!(t.is_tracking());
}

#[test]
fn heads_over_the_limit_stop_tracking() {
    let mut t = FramingTracker::new(64);
    let mut n = 0;
    t.feed(b"GET / HTTP/1.1\r\nX-Long: ", &mut |_| n += 1);
    t.feed(&[b'a'; 100], &mut |_| n += 1);
    assert_eq!(t.stopped(), Some(StopReason::HeadTooLarge));
    let mut t = FramingTracker::new(64);
    t.feed(&b"\r\n".repeat(40), &mut |_| n += 1);
    assert_eq!(t.stopped(), Some(StopReason::HeadTooLarge));
    let mut t = FramingTracker::new(64);
    t.feed(&[b'G'; 100], &mut |_| n += 1);
    assert_eq!(t.stopped(), Some(StopReason::HeadTooLarge));
    assert_eq!(n, 0);
}

#[test]
fn verdicts_are_handed_out_in_request_order() {
    let v = FramingVerdicts::new();
    v.flag(1, Suspect::DuplicateContentLength);
    v.flag(3, Suspect::ContentLengthWithTransferEncoding);
    assert_eq!(v.next_request(), None);
    assert_eq!(v.next_request(), Some(Suspect::DuplicateContentLength));
    assert_eq!(v.next_request(), None);
    assert_eq!(
        v.next_request(),
        Some(Suspect::ContentLengthWithTransferEncoding)
    );
    assert_eq!(v.next_request(), None);
    for i in 0..100 {
        v.flag(1000 + i, Suspect::DuplicateContentLength);
    }
    assert_eq!(v.flagged.lock().expect("lock").len(), MAX_FLAGGED);
}

#[tokio::test]
async fn io_wrapper_flags_what_passes_through() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (client, server) = tokio::io::duplex(64);
    let verdicts = Arc::new(FramingVerdicts::new());
    let mut io = FramingIo::new(server, Arc::clone(&verdicts), MAX);
    let mut stream = GET.to_vec();
    stream.extend_from_slice(TE_CL);
    let want = stream.clone();
    let writer = tokio::spawn(async move {
        let mut client = client;
        // Small writes: the heads arrive split across reads.
        for piece in stream.chunks(7) {
            client.write_all(piece).await.expect("write");
        }
        client
    });
    let mut got = vec![0u8; want.len()];
    io.read_exact(&mut got).await.expect("read");
    assert_eq!(got, want, "bytes pass through unchanged");
    let _client = writer.await.expect("join");
    assert_eq!(verdicts.next_request(), None);
    assert_eq!(
        verdicts.next_request(),
        Some(Suspect::ContentLengthWithTransferEncoding)
    );
    io.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        .await
        .expect("write through");
}

#[tokio::test]
async fn io_wrapper_flags_a_malformed_chunked_body_for_its_request() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client, server) = tokio::io::duplex(1024);
    let verdicts = Arc::new(FramingVerdicts::new());
    let mut io = FramingIo::new(server, Arc::clone(&verdicts), MAX);
    let stream = [
        GET,
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n",
    ]
    .concat();
    client.write_all(&stream).await.expect("write");
    let mut got = vec![0u8; stream.len()];
    io.read_exact(&mut got).await.expect("read");
    assert_eq!(verdicts.next_request(), None);
    assert_eq!(verdicts.next_request(), Some(Suspect::MalformedChunkedBody));
}

/// The tracker and hyper must agree on where every request starts: serve a pipelined
/// stream of mixed framings with hyper through [`FramingIo`] and check each request the
/// service sees gets the verdict meant for it.
#[tokio::test]
async fn sequence_numbers_match_the_requests_hyper_parses() {
    use http_body_util::BodyExt;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use std::sync::Mutex as StdMutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let stream: &[&[u8]] = &[
        b"\r\nGET /0 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabc",
        b"POST /2 HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\n\n3;x=y\r\nGET\r\n0\r\nT: 1\r\n\r\n",
        b"POST /3 HTTP/1.1\r\nHost: x\r\nContent-Length: 26\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
        b"GET /4 HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n",
        b"POST /5 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ];
    let want: Vec<(String, Option<Suspect>)> = vec![
        ("/0".into(), None),
        ("/1".into(), Some(Suspect::DuplicateContentLength)),
        ("/2".into(), None),
        ("/3".into(), None),
        ("/4".into(), None),
        (
            "/5".into(),
            Some(Suspect::ContentLengthWithTransferEncoding),
        ),
    ];
    let all: Vec<u8> = stream.concat();
    for piece in [all.len(), 1, 5, 64] {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let verdicts = Arc::new(FramingVerdicts::new());
        let seen = Arc::new(StdMutex::new(Vec::new()));
        let svc = {
            let (verdicts, seen) = (Arc::clone(&verdicts), Arc::clone(&seen));
            service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let (verdicts, seen) = (Arc::clone(&verdicts), Arc::clone(&seen));
                async move {
                    let v = verdicts.next_request();
                    let path = req.uri().path().to_string();
                    let _ = req.into_body().collect().await;
                    seen.lock().expect("seen").push((path, v));
                    Ok::<_, std::convert::Infallible>(http::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                    ))
                }
            })
        };
        let io = TokioIo::new(FramingIo::new(server, Arc::clone(&verdicts), MAX));
        let conn = tokio::spawn(
            hyper::server::conn::http1::Builder::new()
                .pipeline_flush(true)
                .serve_connection(io, svc),
        );
        for p in all.chunks(piece) {
            client.write_all(p).await.expect("write");
        }
        let mut out = Vec::new();
        // hyper closes after the CL+TE request (RFC 9112 §6.1).
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client.read_to_end(&mut out),
        )
        .await
        .expect("hyper closes the connection")
        .expect("read");
        let _ = conn.await;
        assert_eq!(*seen.lock().expect("seen"), want, "pieces of {piece}");
    }
}

fn token() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"GET / HTTP/1.1\r\n".to_vec()),
        Just(b"POST /x HTTP/1.0\r\n".to_vec()),
        Just(b"Content-Length: 3\r\n".to_vec()),
        Just(b"Transfer-Encoding: chunked\r\n".to_vec()),
        Just(b"Host: x\r\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"3;e\r\nabc\r\n".to_vec()),
        Just(b"0\r\n\r\n".to_vec()),
        Just(b"T: 1\r\n".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..12),
    ]
}

proptest! {
    #[test]
    fn never_panics_and_split_points_do_not_matter(
        parts in proptest::collection::vec(token(), 0..40),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let all: Vec<u8> = parts.concat();
        let whole = run(&[&all]);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (all.len() + 1)).collect();
        cuts.sort_unstable();
        let mut chunks = Vec::new();
        let mut prev = 0;
        for c in cuts {
            chunks.push(&all[prev..c]);
            prev = c;
        }
        chunks.push(&all[prev..]);
        let split = run(&chunks);
        // Garbage may be noticed at a different byte (early on a partial head, or at
        // its end), but the heads reported never depend on how the bytes were split.
        prop_assert_eq!(&whole.0, &split.0);
        if whole.1.is_tracking() && split.1.is_tracking() {
            prop_assert_eq!(whole.1.state, split.1.state);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut t = FramingTracker::new(256);
        let mut n = 0u64;
        for c in data.chunks(17) {
            t.feed(c, &mut |_| n += 1);
        }
        prop_assert!(n <= t.heads());
    }
}

use super::*;
use proptest::prelude::*;

/// Feed `data` in one piece.
fn scan(data: &[u8]) -> Result<Scan, ChunkedError> {
    ChunkedScanner::new().feed(data)
}

/// Feed `data` in pieces split at `cuts` (ascending); return the end offset in `data`
/// (None if the body did not end) or the first error.
fn scan_split(data: &[u8], cuts: &[usize]) -> Result<Option<usize>, ChunkedError> {
    let mut s = ChunkedScanner::new();
    let mut start = 0;
    for end in cuts.iter().copied().chain([data.len()]) {
        let end = end.clamp(start, data.len());
        match s.feed(&data[start..end])? {
            Scan::More => {}
            Scan::Done(n) => {
                assert!(s.is_done());
                assert!(n <= end - start);
                return Ok(Some(start + n));
            }
        }
        start = end;
    }
    assert!(!s.is_done());
    Ok(None)
}

/// Feed `data` one byte at a time.
fn scan_bytewise(data: &[u8]) -> Result<Option<usize>, ChunkedError> {
    let cuts: Vec<usize> = (1..data.len()).collect();
    scan_split(data, &cuts)
}

const SAMPLE: &[u8] = b"5\r\nhello\r\n1A;name=\"v;al\" ; x\r\nabcdefghijklmnopqrstuvwxyz\r\n\
                        0;last\r\nExpires: never\r\nX-Sum:\t1\r\n\r\n";

#[test]
fn simple_bodies() {
    assert_eq!(scan(b"0\r\n\r\n"), Ok(Scan::Done(5)));
    assert_eq!(scan(b"000\r\n\r\n"), Ok(Scan::Done(7)));
    let body = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    assert_eq!(scan(body), Ok(Scan::Done(body.len())));
    let body = b"a\r\n0123456789\r\nF\r\n0123456789abcde\r\n0\r\n\r\n";
    assert_eq!(scan(body), Ok(Scan::Done(body.len())));
}

#[test]
fn chunk_data_is_not_interpreted() {
    // Data that looks like framing is skipped by count.
    let body = b"7\r\n0\r\n\r\n\n\r\r\n0\r\n\r\n";
    assert_eq!(scan(body), Ok(Scan::Done(body.len())));
}

#[test]
fn incomplete_body_wants_more() {
    let mut s = ChunkedScanner::new();
    assert_eq!(s.feed(b""), Ok(Scan::More));
    assert_eq!(s.feed(b"5\r\nhel"), Ok(Scan::More));
    assert!(!s.is_done());
    assert_eq!(s.feed(b"lo\r\n0\r\n\r"), Ok(Scan::More));
    assert!(!s.is_done());
    assert_eq!(s.feed(b"\n"), Ok(Scan::Done(1)));
    assert!(s.is_done());
}

#[test]
fn extensions() {
    for body in [
        &b"5;a\r\nhello\r\n0\r\n\r\n"[..],
        b"5;a=b;c=\"d;e\"\r\nhello\r\n0\r\n\r\n",
        b"5 ;a\r\nhello\r\n0\r\n\r\n",
        b"5\t \t; a = b\r\nhello\r\n0\r\n\r\n",
        b"5;\r\nhello\r\n0;end=1\r\n\r\n",
        b"0 ; x\r\n\r\n",
        b"5;\xc3\xa9\r\nhello\r\n0\r\n\r\n",
    ] {
        assert_eq!(scan(body), Ok(Scan::Done(body.len())), "{body:?}");
    }
}

#[test]
fn trailers() {
    for body in [
        &b"0\r\nExpires: never\r\n\r\n"[..],
        b"5\r\nhello\r\n0\r\nA: 1\r\nB:2\r\nC:\r\n\r\n",
        b"0\r\nX-Checksum: abc\tdef \xff\r\n\r\n",
    ] {
        assert_eq!(scan(body), Ok(Scan::Done(body.len())), "{body:?}");
    }
}

#[test]
fn sample_at_every_split_point() {
    let end = Some(SAMPLE.len());
    assert_eq!(scan(SAMPLE), Ok(Scan::Done(SAMPLE.len())));
    assert_eq!(scan_bytewise(SAMPLE), Ok(end));
    for cut in 0..=SAMPLE.len() {
        assert_eq!(scan_split(SAMPLE, &[cut]), Ok(end), "cut at {cut}");
    }
}

#[test]
fn done_leaves_following_message() {
    let mut stream = SAMPLE.to_vec();
    stream.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(scan(&stream), Ok(Scan::Done(SAMPLE.len())));
    for cut in 0..=stream.len() {
        assert_eq!(scan_split(&stream, &[cut]), Ok(Some(SAMPLE.len())));
    }
    assert_eq!(scan_bytewise(&stream), Ok(Some(SAMPLE.len())));
    // Another chunked body right after: only the first is claimed.
    assert_eq!(scan(b"0\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), Ok(Scan::Done(5)));
}

#[test]
fn after_done_returns_done_zero() {
    let mut s = ChunkedScanner::new();
    assert_eq!(s.feed(b"0\r\n\r\nrest"), Ok(Scan::Done(5)));
    assert_eq!(s.feed(b"more bytes"), Ok(Scan::Done(0)));
    assert_eq!(s.feed(b""), Ok(Scan::Done(0)));
    assert!(s.is_done());
}

#[test]
fn errors_are_sticky() {
    let mut s = ChunkedScanner::new();
    assert_eq!(s.feed(b"x"), Err(ChunkedError::BadSize));
    assert_eq!(s.feed(b"0\r\n\r\n"), Err(ChunkedError::BadSize));
    assert_eq!(s.feed(b""), Err(ChunkedError::BadSize));
    assert!(!s.is_done());
}

#[test]
fn bad_size() {
    for body in [
        &b"\r\n"[..],
        b"g\r\n",
        b";a\r\n",
        b" 5\r\n",
        b"-5\r\n",
        b"+5\r\n",
        b"0x5\r\n",
        b"5 \r\n",
        b"5\t\r\n",
        b"5 a\r\n",
        b"5z\r\nhello\r\n",
        b"5\r\nhello\r\nzz\r\n",
    ] {
        assert_eq!(scan(body), Err(ChunkedError::BadSize), "{body:?}");
        assert_eq!(scan_bytewise(body), Err(ChunkedError::BadSize), "{body:?}");
    }
}

#[test]
fn size_overflow() {
    // 16 digits is the limit, whatever their value.
    let max = b"FFFFFFFFFFFFFFFF\r\n";
    assert_eq!(scan(max), Ok(Scan::More));
    let zeros = b"0000000000000005\r\nhello\r\n0\r\n\r\n";
    assert_eq!(scan(zeros), Ok(Scan::Done(zeros.len())));
    for body in [
        &b"10000000000000000\r\n"[..],
        b"00000000000000005\r\n",
        b"FFFFFFFFFFFFFFFFF",
    ] {
        assert_eq!(scan(body), Err(ChunkedError::SizeOverflow), "{body:?}");
        assert_eq!(scan_bytewise(body), Err(ChunkedError::SizeOverflow));
    }
}

#[test]
fn size_line_too_long() {
    // Exactly at the limit is fine.
    let mut ok = b"5;".to_vec();
    ok.resize(MAX_SIZE_LINE, b'x');
    ok.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
    assert_eq!(scan(&ok), Ok(Scan::Done(ok.len())));
    // One more byte is not, and the error comes before any CR is seen.
    let mut long = b"5;".to_vec();
    long.resize(MAX_SIZE_LINE + 1, b'x');
    assert_eq!(scan(&long), Err(ChunkedError::SizeLineTooLong));
    assert_eq!(scan_bytewise(&long), Err(ChunkedError::SizeLineTooLong));
    // Whitespace counts too.
    let mut ws = b"5".to_vec();
    ws.resize(MAX_SIZE_LINE + 1, b' ');
    assert_eq!(scan(&ws), Err(ChunkedError::SizeLineTooLong));
    // The limit is per line: many long lines in a row are fine.
    let mut many = Vec::new();
    for _ in 0..3 {
        many.extend_from_slice(b"1;");
        many.resize(many.len() + MAX_SIZE_LINE - 2, b'y');
        many.extend_from_slice(b"\r\nA\r\n");
    }
    many.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(scan(&many), Ok(Scan::Done(many.len())));
}

#[test]
fn bad_extension() {
    for body in [
        &b"5;a\x00\r\n"[..],
        b"5;\x7f\r\n",
        b"5;a=\x1b\r\n",
        b"0;\x0b\r\n",
    ] {
        assert_eq!(scan(body), Err(ChunkedError::BadExtension), "{body:?}");
    }
}

#[test]
fn bad_crlf() {
    for body in [
        // Bare LF after the size, in an extension, after data, ending trailers, at the end.
        &b"5\nhello\r\n0\r\n\r\n"[..],
        b"5;a\nhello\r\n",
        b"5\r\nhello\n0\r\n\r\n",
        b"0\r\nA: 1\n\r\n",
        b"0\r\n\n",
        // CR followed by something other than LF.
        b"5\rhello",
        b"5;a\r\r\n",
        b"5\r\nhello\rx",
        b"0\r\nA: 1\rx",
        b"0\r\n\rx",
        // Data longer than its size.
        b"5\r\nhello!\r\n0\r\n\r\n",
        // Data shorter than its size (its CR is taken as data, then LF is not CR).
        b"5\r\nhell\r\n0\r\n\r\n",
    ] {
        assert_eq!(scan(body), Err(ChunkedError::BadCrlf), "{body:?}");
        assert_eq!(scan_bytewise(body), Err(ChunkedError::BadCrlf), "{body:?}");
    }
}

#[test]
fn bad_trailer() {
    for body in [
        &b"0\r\nno-colon\r\n\r\n"[..],
        b"0\r\n: empty-name\r\n\r\n",
        b"0\r\nA: 1\r\n folded\r\n\r\n",
        b"0\r\n\tA: 1\r\n\r\n",
        b"0\r\nA: \x00\r\n\r\n",
        b"0\r\n\x01A: 1\r\n\r\n",
    ] {
        assert_eq!(scan(body), Err(ChunkedError::BadTrailer), "{body:?}");
        assert_eq!(scan_bytewise(body), Err(ChunkedError::BadTrailer));
    }
}

#[test]
fn trailers_too_long() {
    // A section of exactly MAX_TRAILERS bytes (lines with their CRLFs) is accepted.
    let mut ok = b"0\r\n".to_vec();
    let line_len = 1024;
    for i in 0..MAX_TRAILERS / line_len {
        let mut line = format!("T{i}:").into_bytes();
        line.resize(line_len - 2, b'v');
        ok.extend_from_slice(&line);
        ok.extend_from_slice(b"\r\n");
    }
    assert_eq!(ok.len() - 3, MAX_TRAILERS);
    ok.extend_from_slice(b"\r\n");
    assert_eq!(scan(&ok), Ok(Scan::Done(ok.len())));
    // One more byte in the section is not.
    let mut long = b"0\r\nBig:".to_vec();
    long.resize(3 + MAX_TRAILERS + 1, b'v');
    assert_eq!(scan(&long), Err(ChunkedError::TrailersTooLong));
    // Many short lines count in total.
    let mut many = b"0\r\n".to_vec();
    while many.len() < MAX_TRAILERS + 100 {
        many.extend_from_slice(b"A:1\r\n");
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(scan(&many), Err(ChunkedError::TrailersTooLong));
    assert_eq!(scan_bytewise(&many), Err(ChunkedError::TrailersTooLong));
}

#[test]
fn huge_chunk_is_skipped_by_count() {
    let mut s = ChunkedScanner::new();
    assert_eq!(s.feed(b"FFFFFFFFFFFFFFFF\r\n"), Ok(Scan::More));
    let block = vec![b'\n'; 64 * 1024];
    for _ in 0..16 {
        assert_eq!(s.feed(&block), Ok(Scan::More));
    }
    assert!(!s.is_done());
}

/// One chunk of a generated body: its data, how its size is spelled, its extension.
#[derive(Debug, Clone)]
struct GenChunk {
    data: Vec<u8>,
    upper: bool,
    zeros: usize,
    ext: Option<String>,
}

fn gen_chunk() -> impl Strategy<Value = GenChunk> {
    (
        proptest::collection::vec(any::<u8>(), 1..300),
        any::<bool>(),
        0usize..4,
        proptest::option::of("[ \t]{0,2};[a-z]{1,5}(=[a-z0-9\"; ]{0,8})?"),
    )
        .prop_map(|(data, upper, zeros, ext)| GenChunk {
            data,
            upper,
            zeros,
            ext,
        })
}

fn size_line(size: usize, upper: bool, zeros: usize, ext: Option<&str>) -> Vec<u8> {
    let hex = if upper {
        format!("{size:X}")
    } else {
        format!("{size:x}")
    };
    let mut line = "0".repeat(zeros).into_bytes();
    line.extend_from_slice(hex.as_bytes());
    line.extend_from_slice(ext.unwrap_or("").as_bytes());
    line.extend_from_slice(b"\r\n");
    line
}

fn encode(chunks: &[GenChunk], last_ext: Option<&str>, trailers: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in chunks {
        out.extend(size_line(c.data.len(), c.upper, c.zeros, c.ext.as_deref()));
        out.extend_from_slice(&c.data);
        out.extend_from_slice(b"\r\n");
    }
    out.extend(size_line(0, false, 0, last_ext));
    for t in trailers {
        out.extend_from_slice(t.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

proptest! {
    #[test]
    fn prop_end_offset_is_encoded_length(
        chunks in proptest::collection::vec(gen_chunk(), 0..8),
        last_ext in proptest::option::of(";[a-z]{1,5}"),
        trailers in proptest::collection::vec("[A-Za-z-]{1,10}:[ -~]{0,20}", 0..4),
        next in proptest::collection::vec(any::<u8>(), 0..40),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let body = encode(&chunks, last_ext.as_deref(), &trailers);
        let mut stream = body.clone();
        stream.extend_from_slice(&next);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|i| i.index(stream.len() + 1)).collect();
        cuts.sort_unstable();
        prop_assert_eq!(scan_split(&stream, &cuts), Ok(Some(body.len())));
        // A strict prefix of the body never ends it.
        let short = &body[..body.len() - 1];
        prop_assert_eq!(scan_split(short, &cuts), Ok(None));
    }

    #[test]
    fn prop_arbitrary_bytes_never_panic(
        data in proptest::collection::vec(any::<u8>(), 0..512),
        cut in any::<prop::sample::Index>(),
    ) {
        let cut = cut.index(data.len() + 1);
        let mut s = ChunkedScanner::new();
        if let Ok(Scan::Done(n)) = s.feed(&data[..cut]) {
            prop_assert!(n <= cut);
        }
        if let Ok(Scan::Done(n)) = s.feed(&data[cut..]) {
            prop_assert!(n <= data.len() - cut);
        }
    }

    #[test]
    fn prop_framing_like_bytes_never_panic(
        data in proptest::collection::vec(
            prop::sample::select(&b"0123456789aAfF;=\" \t\r\n:xZ\x00"[..]), 0..256),
    ) {
        // One piece and byte by byte must agree.
        let whole = match ChunkedScanner::new().feed(&data) {
            Ok(Scan::Done(n)) => Ok(Some(n)),
            Ok(Scan::More) => Ok(None),
            Err(e) => Err(e),
        };
        prop_assert_eq!(scan_bytewise(&data), whole);
    }
}

use super::*;

fn parse<'h, 'b>(
    s: &'b [u8],
    storage: &'h mut HeaderSlots<'b>,
    head_req: bool,
) -> Result<Option<ResponseHead<'h, 'b>>, BadResponse> {
    parse_response(s, storage, head_req, 64 * 1024)
}

#[test]
fn response_framing_follows_rfc_9112() {
    let cases: &[(&str, bool, Framing, bool)] = &[
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            false,
            Framing::Length(5),
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
            false,
            Framing::Length(5),
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            true,
            Framing::Empty,
            true,
        ),
        (
            "HTTP/1.1 204 No Content\r\n\r\n",
            false,
            Framing::Empty,
            true,
        ),
        (
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            false,
            Framing::Empty,
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\n\r\n",
            false,
            Framing::Chunked,
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            false,
            Framing::UntilClose,
            false,
        ),
        ("HTTP/1.1 200 OK\r\n\r\n", false, Framing::UntilClose, false),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            false,
            Framing::Length(0),
            false,
        ),
        (
            "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
            false,
            Framing::Length(0),
            false,
        ),
        (
            "HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n",
            false,
            Framing::Length(0),
            true,
        ),
    ];
    for &(s, head_req, framing, reusable) in cases {
        let mut st = header_slots();
        let r = parse(s.as_bytes(), &mut st, head_req)
            .expect("valid")
            .expect("complete");
        assert_eq!((r.framing, r.reusable), (framing, reusable), "{s:?}");
        assert_eq!(r.head_len, s.len());
    }
}

#[test]
fn bad_responses_are_refused() {
    for (s, want) in [
        ("HTTP/1.1 abc\r\n\r\n", BadResponse::Malformed),
        ("garbage\r\n\r\n", BadResponse::Malformed),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            BadResponse::BadLength,
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            BadResponse::BadLength,
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            BadResponse::BadLength,
        ),
    ] {
        let mut st = header_slots();
        assert_eq!(
            parse(s.as_bytes(), &mut st, false).err(),
            Some(want),
            "{s:?}"
        );
    }
    let mut st = header_slots();
    let long = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(100));
    assert_eq!(
        parse_response(long.as_bytes(), &mut st, false, 64).err(),
        Some(BadResponse::TooLarge)
    );
    let mut st = header_slots();
    assert!(matches!(
        parse(b"HTTP/1.1 200 OK\r\nX: 1\r\n", &mut st, false),
        Ok(None)
    ));
}

#[test]
fn fields_with_bare_cr_folding_or_nul_are_malformed() {
    for s in [
        &b"HTTP/1.1 200 OK\r\nX: a\rInjected: 1\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nX: a\r\r\n\r\n",
        b"HTTP/1.1 200 O\rK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\r\n Injected: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\r\n\tInjected: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\nX: a\n Injected: 1\n\n",
        b"HTTP/1.1 200 OK\r\nX: a\0b\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX\0: a\r\n\r\n",
    ] {
        let mut st = header_slots();
        assert_eq!(
            parse(s, &mut st, false).err(),
            Some(BadResponse::Malformed),
            "{:?}",
            String::from_utf8_lossy(s)
        );
    }
}

#[test]
fn bare_lf_line_ends_are_rewritten_as_crlf() {
    let s = b"HTTP/1.1 200 OK\nX-A: a\r\nX-B: b\nContent-Length: 2\n\r\n";
    let mut st = header_slots();
    let r = parse(s, &mut st, false).expect("valid").expect("complete");
    assert_eq!(r.head_len, s.len());
    let mut out = Vec::new();
    r.write_for_client(&mut out, &ResponseEdits::default());
    let text = String::from_utf8_lossy(&out);
    let (fields, date) = text.split_once("date: ").expect("a date is added");
    assert_eq!(
        fields,
        "HTTP/1.1 200 OK\r\nX-A: a\r\nX-B: b\r\nContent-Length: 2\r\n"
    );
    assert!(date.ends_with(" GMT\r\n\r\n"), "{date:?}");
}

#[test]
fn the_client_head_drops_hop_by_hop_and_adds_lbds_edits() {
    let s = b"HTTP/1.1 200 OK\r\nConnection: x-secret, keep-alive\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: x\r\nVia: 1.0 a\r\nTransfer-Encoding: chunked\r\nContent-Length: 7\r\nSet-Cookie: s=1\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nX-Keep: yes\r\n\r\n";
    let mut st = header_slots();
    let r = parse(s, &mut st, false).expect("valid").expect("complete");
    let via = HeaderValue::from_static("1.1 lbd");
    let node = (
        HeaderName::from_static("x-node"),
        HeaderValue::from_static("a"),
    );
    let mut out = Vec::new();
    r.write_for_client(
        &mut out,
        &ResponseEdits {
            via: Some(&via),
            node: Some((&node.0, &node.1)),
            close: true,
            set_cookies: None,
            hsts: None,
        },
    );
    assert_eq!(
        String::from_utf8_lossy(&out),
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nSet-Cookie: s=1\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nX-Keep: yes\r\nvia: 1.0 a, 1.1 lbd\r\nx-node: a\r\nconnection: close\r\n\r\n"
    );
}

#[test]
fn sticky_set_cookies_replace_the_backends_and_a_missing_date_is_added() {
    let s = b"HTTP/1.1 404 Whatever\r\nSet-Cookie: a=1\r\nContent-Length: 0\r\n\r\n";
    let mut st = header_slots();
    let r = parse(s, &mut st, false).expect("valid").expect("complete");
    let mut cookies = HeaderMap::new();
    r.set_cookies(&mut cookies);
    cookies.append(header::SET_COOKIE, HeaderValue::from_static("lbd=x"));
    let mut out = Vec::new();
    r.write_for_client(
        &mut out,
        &ResponseEdits {
            set_cookies: Some(&cookies),
            ..Default::default()
        },
    );
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nset-cookie: a=1\r\nset-cookie: lbd=x\r\ndate: "), "{text}");
    assert!(text.ends_with(" GMT\r\n\r\n"), "{text}");
}

#[test]
fn local_responses_are_complete_messages() {
    let mut h = HeaderMap::new();
    h.insert("retry-after", HeaderValue::from_static("2"));
    let mut out = Vec::new();
    write_local_response(
        &mut out,
        StatusCode::TOO_MANY_REQUESTS,
        &h,
        b"slow down\n",
        true,
    );
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 429 Too Many Requests\r\nretry-after: 2\r\ncontent-type: text/plain\r\ncontent-length: 10\r\ndate: "), "{text}");
    assert!(
        text.ends_with("connection: close\r\n\r\nslow down\n"),
        "{text}"
    );
}

// ---- property tests -------------------------------------------------------------------

use proptest::prelude::*;

/// A generated response head, kept as parts for the reference model.
#[derive(Debug, Clone)]
struct GenResponse {
    v11: bool,
    status: u16,
    reason: String,
    /// (name as written, value) in wire order.
    headers: Vec<(String, String)>,
}

impl GenResponse {
    fn wire(&self) -> Vec<u8> {
        let v = if self.v11 { "HTTP/1.1" } else { "HTTP/1.0" };
        let mut out = format!("{v} {} {}\r\n", self.status, self.reason).into_bytes();
        for (n, val) in &self.headers {
            out.extend_from_slice(format!("{n}: {val}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn list<'a>(&'a self, name: &'a str) -> Vec<&'a str> {
        self.values(name)
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect()
    }

    /// Connection options, lowercased.
    fn connection_tokens(&self) -> Vec<String> {
        self.list("connection")
            .iter()
            .map(|t| t.to_ascii_lowercase())
            .collect()
    }

    /// RFC 9112 §6.3 (framing) and §9.3 (persistence), written independently of the code
    /// under test: (framing, reusable), or the error.
    fn model(&self, request_is_head: bool) -> Result<(Framing, bool), BadResponse> {
        let mut length = None;
        for t in self.list("content-length") {
            let ok = !t.is_empty() && t.len() <= 19 && t.bytes().all(|b| b.is_ascii_digit());
            let n: u64 = match t.parse() {
                Ok(n) if ok => n,
                _ => return Err(BadResponse::BadLength),
            };
            if length.is_some_and(|l| l != n) {
                return Err(BadResponse::BadLength);
            }
            length = Some(n);
        }
        let has_te = self.values("transfer-encoding").next().is_some();
        let te_chunked = self
            .list("transfer-encoding")
            .last()
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
        let framing = if request_is_head
            || (100..200).contains(&self.status)
            || self.status == 204
            || self.status == 304
        {
            Framing::Empty
        } else if has_te && te_chunked {
            Framing::Chunked
        } else if has_te {
            Framing::UntilClose
        } else if let Some(n) = length {
            Framing::Length(n)
        } else {
            Framing::UntilClose
        };
        let tokens = self.connection_tokens();
        let close = tokens.iter().any(|t| t == "close");
        let keep_alive = tokens.iter().any(|t| t == "keep-alive");
        let persistent = !close && (self.v11 || keep_alive);
        Ok((framing, persistent && framing != Framing::UntilClose))
    }
}

fn recase(name: &str, mask: u64) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

fn gen_value() -> impl Strategy<Value = String> {
    "([!-~]([ \t!-~]{0,20}[!-~])?)?"
}

/// Names the "other headers" may not take: they are what the model looks at.
const SPECIAL: [&str; 11] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "date",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "proxy-authenticate",
    "via",
];

/// Custom names both the other headers and `Connection` use, so named headers occur.
const CUSTOM: [&str; 3] = ["x-foo", "x-bar", "set-cookie"];

fn gen_named(name: &'static str, value: BoxedStrategy<String>) -> BoxedStrategy<(String, String)> {
    (any::<u64>(), value)
        .prop_map(move |(mask, v)| (recase(name, mask), v))
        .boxed()
}

/// `connection_pool`: the options a `Connection` header draws from.
fn gen_response(connection_pool: Vec<&'static str>) -> impl Strategy<Value = GenResponse> {
    let length = prop::collection::vec(
        prop::sample::select(vec!["0", "5", "5", "7", "05", "12345678901"]),
        1..=2,
    )
    .prop_map(|v| v.join(", "))
    .boxed();
    let bad_length = prop::sample::select(vec!["x", "-1", "5 5", "+5", "99999999999999999999"])
        .prop_map(str::to_owned)
        .boxed();
    let te = prop::collection::vec(
        prop::sample::select(vec![
            "gzip", "deflate", "br", "identity", "chunked", "Chunked",
        ]),
        1..=3,
    )
    .prop_map(|v| v.join(", "))
    .boxed();
    let connection = prop::collection::vec(prop::sample::select(connection_pool), 1..=3)
        .prop_map(|v| v.join(", "))
        .boxed();
    let hop = prop::sample::select(vec![
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "proxy-authenticate",
    ]);
    let other = prop_oneof![
        4 => ("[a-z0-9!#$%&'*+.^_|~-]{1,16}", any::<u64>(), gen_value())
            .prop_filter("special name", |(n, _, _)| !SPECIAL.contains(&n.as_str()))
            .prop_map(|(n, mask, v)| (recase(&n, mask), v)),
        2 => (prop::sample::select(CUSTOM.to_vec()), any::<u64>(), gen_value())
            .prop_map(|(n, mask, v)| (recase(n, mask), v)),
        1 => (hop, any::<u64>(), gen_value()).prop_map(|(n, mask, v)| (recase(n, mask), v)),
    ];
    (
        any::<bool>(),
        // The statuses the rules name, and their neighbours, much more often than chance.
        prop_oneof![
            prop::sample::select(vec![100u16, 101, 199, 200, 203, 204, 205, 303, 304, 305]),
            100u16..=599,
        ],
        "[A-Za-z][A-Za-z ]{0,20}|",
        prop::collection::vec(gen_named("content-length", length), 0..=2),
        prop::collection::vec(gen_named("content-length", bad_length), 0..=1),
        any::<bool>(),
        prop::collection::vec(gen_named("transfer-encoding", te), 0..=2),
        prop::collection::vec(gen_named("connection", connection), 0..=2),
        prop::option::of(Just((
            "Date".to_owned(),
            "Mon, 01 Jan 2024 00:00:00 GMT".to_owned(),
        ))),
        prop::collection::vec(other, 0..10),
    )
        .prop_flat_map(
            |(v11, status, reason, lengths, bad, use_bad, te, conn, date, others)| {
                let mut headers = lengths;
                if use_bad {
                    headers.extend(bad);
                }
                headers.extend(te);
                headers.extend(conn);
                headers.extend(date);
                headers.extend(others);
                Just(headers)
                    .prop_shuffle()
                    .prop_map(move |headers| GenResponse {
                        v11,
                        status,
                        reason: reason.clone(),
                        headers,
                    })
            },
        )
}

fn check_framing(resp: &GenResponse, request_is_head: bool) -> Result<(), TestCaseError> {
    let wire = resp.wire();
    let mut st = header_slots();
    let got = parse_response(&wire, &mut st, request_is_head, 64 * 1024);
    let want = resp.model(request_is_head);
    match (got, want) {
        (Ok(Some(h)), Ok((framing, reusable))) => {
            prop_assert_eq!(h.status, resp.status);
            prop_assert_eq!(h.head_len, wire.len());
            prop_assert_eq!(h.framing, framing, "framing of {:?}", resp);
            prop_assert_eq!(h.reusable, reusable, "reusable of {:?}", resp);
        }
        (Err(e), Err(w)) => prop_assert_eq!(e, w),
        (got, want) => {
            return Err(TestCaseError::fail(format!(
                "got {got:?}, model says {want:?} for {resp:?}"
            )))
        }
    }
    Ok(())
}

fn connection_pool() -> Vec<&'static str> {
    vec![
        "close",
        "Close",
        "keep-alive",
        "Keep-Alive",
        "x-foo",
        "X-Bar",
        "set-cookie",
        "x-none",
    ]
}

/// Header lines of a head httparse accepts, as (name, value) byte strings.
/// A head's header lines as (name, value).
type Fields = Vec<(String, Vec<u8>)>;

fn fields_of(head: &[u8]) -> Result<(u16, Fields), TestCaseError> {
    let mut slots = [httparse::EMPTY_HEADER; 128];
    let mut resp = httparse::Response::new(&mut slots);
    match resp.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        other => {
            return Err(TestCaseError::fail(format!(
                "client head {:?} does not parse as one head: {other:?}",
                String::from_utf8_lossy(head)
            )))
        }
    }
    let fields = resp
        .headers
        .iter()
        .map(|h| (h.name.to_owned(), h.value.to_vec()))
        .collect();
    Ok((resp.code.unwrap_or(0), fields))
}

fn check_client_head(
    resp: &GenResponse,
    request_is_head: bool,
    close: bool,
) -> Result<(), TestCaseError> {
    let wire = resp.wire();
    let mut st = header_slots();
    let Ok(Some(h)) = parse_response(&wire, &mut st, request_is_head, 64 * 1024) else {
        // Refused heads are check_framing's business.
        return Ok(());
    };
    let mut out = Vec::new();
    h.write_for_client(
        &mut out,
        &ResponseEdits {
            close,
            ..Default::default()
        },
    );
    let prefix = format!("HTTP/1.1 {} ", resp.status);
    prop_assert!(out.starts_with(prefix.as_bytes()));
    prop_assert!(out.ends_with(b"\r\n\r\n"));
    let (code, fields) = fields_of(&out)?;
    prop_assert_eq!(code, resp.status);
    // Connection options can't drop the framing or the Date (END_TO_END).
    let named: Vec<String> = resp
        .connection_tokens()
        .into_iter()
        .filter(|t| !END_TO_END.contains(&t.as_bytes()))
        .collect();
    let count = |name: &str| {
        fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    };
    for (n, v) in &fields {
        let lower = n.to_ascii_lowercase();
        if lower == "connection" {
            prop_assert_eq!(n.as_str(), "connection", "only lbd's own connection line");
            prop_assert_eq!(&v[..], b"close");
        } else {
            prop_assert!(
                !HOP_BY_HOP.contains(&lower.as_bytes()),
                "hop-by-hop {} kept",
                n
            );
        }
        // lbd's own Date is not the backend's (counted below).
        prop_assert!(
            lower == "date" || !named.contains(&lower),
            "{} is named by Connection",
            n
        );
    }
    prop_assert!(count("connection") <= 1);
    prop_assert!(count("content-length") == 0 || count("transfer-encoding") == 0);
    prop_assert_eq!(count("date"), 1);

    // Every other backend line, in order, then lbd's own lines.
    let has_te = resp.values("transfer-encoding").next().is_some();
    let mut want: Fields = Vec::new();
    for (n, v) in &resp.headers {
        let lower = n.to_ascii_lowercase();
        if HOP_BY_HOP.contains(&lower.as_bytes()) || named.contains(&lower) {
            continue;
        }
        if lower == "transfer-encoding" {
            if h.framing != Framing::Empty {
                want.push((lower, v.clone().into_bytes()));
            }
            continue;
        }
        if has_te && lower == "content-length" {
            continue;
        }
        want.push((n.clone(), v.clone().into_bytes()));
    }
    let mut tail = fields.len().saturating_sub(want.len());
    prop_assert_eq!(&fields[..want.len().min(fields.len())], &want[..]);
    let lbd_date = resp.values("date").next().is_none();
    if lbd_date {
        prop_assert_eq!(
            fields.get(want.len()).map(|(n, _)| n.as_str()),
            Some("date")
        );
        tail -= 1;
    }
    let lbd_close = close || h.framing == Framing::UntilClose;
    prop_assert_eq!(
        tail,
        usize::from(lbd_close),
        "lbd's lines after the backend's"
    );
    Ok(())
}

proptest! {
    #[test]
    fn prop_arbitrary_bytes_never_panic(
        data in prop::collection::vec(any::<u8>(), 0..400),
        request_is_head in any::<bool>(),
        max_head in prop_oneof![0usize..64, Just(64 * 1024)],
    ) {
        let mut st = header_slots();
        match parse_response(&data, &mut st, request_is_head, max_head) {
            Ok(Some(h)) => {
                prop_assert!(h.head_len <= data.len());
                let mut out = Vec::new();
                h.write_for_client(&mut out, &ResponseEdits::default());
                fields_of(&out)?;
            }
            Ok(None) => prop_assert!(data.len() <= max_head),
            Err(_) => {}
        }
    }

    #[test]
    fn prop_header_shaped_bytes_never_panic_and_rewrite_to_a_valid_head(
        status in "[0-9]{3}",
        tail in "([ -~\t]{0,30}\r\n){0,8}(\r\n)?",
        request_is_head in any::<bool>(),
        max_head in prop_oneof![0usize..64, Just(64 * 1024)],
    ) {
        let data = format!("HTTP/1.1 {status} X\r\n{tail}").into_bytes();
        let mut st = header_slots();
        match parse_response(&data, &mut st, request_is_head, max_head) {
            Ok(Some(h)) => {
                prop_assert!(h.head_len <= data.len());
                let mut out = Vec::new();
                h.write_for_client(&mut out, &ResponseEdits::default());
                fields_of(&out)?;
            }
            Ok(None) => prop_assert!(data.len() <= max_head),
            Err(_) => {}
        }
    }

    #[test]
    fn prop_framing_and_reuse_follow_rfc_9112(
        resp in gen_response(connection_pool())
            .prop_filter("HTTP/1.0 with close and keep-alive: see the ignored test", |r| {
                let t = r.connection_tokens();
                r.v11 || !(t.contains(&"close".into()) && t.contains(&"keep-alive".into()))
            }),
        request_is_head in any::<bool>(),
    ) {
        check_framing(&resp, request_is_head)?;
    }

    #[test]
    fn prop_framing_and_reuse_follow_rfc_9112_with_any_connection_options(
        resp in gen_response(connection_pool()),
        request_is_head in any::<bool>(),
    ) {
        check_framing(&resp, request_is_head)?;
    }

    #[test]
    fn prop_client_head_is_clean_and_keeps_the_rest_in_order(
        resp in gen_response(connection_pool()),
        request_is_head in any::<bool>(),
        close in any::<bool>(),
    ) {
        check_client_head(&resp, request_is_head, close)?;
    }

    #[test]
    fn prop_client_head_is_clean_when_connection_names_framing_headers(
        resp in gen_response(vec![
            "close", "keep-alive", "x-foo", "content-length", "Transfer-Encoding", "date",
        ]),
        request_is_head in any::<bool>(),
        close in any::<bool>(),
    ) {
        check_client_head(&resp, request_is_head, close)?;
        // The client must still be able to find the body's end.
        let wire = resp.wire();
        let mut st = header_slots();
        if let Ok(Some(h)) = parse_response(&wire, &mut st, request_is_head, 64 * 1024) {
            let mut out = Vec::new();
            h.write_for_client(&mut out, &ResponseEdits::default());
            check_client_framing(&out, h.framing)?;
        }
    }
}

/// The client head tells the client where the body ends the way lbd will relay it.
fn check_client_framing(out: &[u8], framing: Framing) -> Result<(), TestCaseError> {
    let (_, fields) = fields_of(out)?;
    let has = |name: &str| fields.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let ok = match framing {
        Framing::Empty => true,
        Framing::Chunked => has("transfer-encoding"),
        Framing::Length(_) => has("content-length") || has("connection"),
        Framing::UntilClose => has("connection"),
    };
    prop_assert!(
        ok,
        "{:?} lost in {:?}",
        framing,
        String::from_utf8_lossy(out)
    );
    Ok(())
}

#[test]
fn http10_close_wins_over_a_later_keep_alive() {
    for s in [
        "HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: close, keep-alive\r\n\r\n",
        "HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n",
    ] {
        let mut st = header_slots();
        let r = parse(s.as_bytes(), &mut st, false).expect("valid").expect("complete");
        assert!(!r.reusable, "RFC 9112 §9.3: close means not persistent: {s:?}");
    }
}

#[test]
fn a_connection_option_naming_content_length_keeps_the_framing() {
    let s = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: content-length\r\n\r\n";
    let mut st = header_slots();
    let r = parse(s, &mut st, false).expect("valid").expect("complete");
    assert_eq!(r.framing, Framing::Length(5));
    let mut out = Vec::new();
    r.write_for_client(&mut out, &ResponseEdits::default());
    let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
    assert!(
        text.contains("content-length: 5\r\n") || text.contains("connection: close\r\n"),
        "the client cannot find the end of the body: {text:?}"
    );
}

#[test]
fn a_connection_option_naming_transfer_encoding_keeps_the_framing() {
    let s =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: transfer-encoding\r\n\r\n";
    let mut st = header_slots();
    let r = parse(s, &mut st, false).expect("valid").expect("complete");
    assert_eq!(r.framing, Framing::Chunked);
    let mut out = Vec::new();
    r.write_for_client(&mut out, &ResponseEdits::default());
    let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
    assert!(
        text.contains("transfer-encoding: chunked\r\n"),
        "the client gets a chunked body without being told: {text:?}"
    );
}

#[test]
fn a_connection_option_naming_date_still_leaves_one_date() {
    let s = b"HTTP/1.1 200 OK\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nContent-Length: 0\r\nConnection: date\r\n\r\n";
    let mut st = header_slots();
    let r = parse(s, &mut st, false).expect("valid").expect("complete");
    let mut out = Vec::new();
    r.write_for_client(&mut out, &ResponseEdits::default());
    let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
    assert_eq!(text.matches("\r\ndate: ").count(), 1, "{text:?}");
}

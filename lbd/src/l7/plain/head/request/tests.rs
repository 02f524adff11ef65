use super::*;

fn bytes_of(s: &str) -> BytesMut {
    BytesMut::from(s.as_bytes())
}

fn fast(s: &str) -> (Box<RequestHead>, BytesMut) {
    let mut b = bytes_of(s);
    match parse_request(&mut b, 1024) {
        Parsed::Fast(r) => (r, b),
        other => panic!("expected the fast path for {s:?}, got {other:?}"),
    }
}

fn fallback(s: &str) -> &'static str {
    let mut b = bytes_of(s);
    let before = b.len();
    match parse_request(&mut b, 1024) {
        Parsed::Fallback(why) => {
            assert_eq!(b.len(), before, "a fallback must not consume bytes");
            why
        }
        other => panic!("expected a fallback for {s:?}, got {other:?}"),
    }
}

#[test]
fn a_plain_request_is_parsed_and_its_head_taken_off_the_buffer() {
    let (r, rest) = fast(
        "POST /a/b?x=1 HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\nX-A: 1\r\nX-A: 2\r\n\r\nabcGET",
    );
    assert_eq!(r.method, Method::POST);
    assert_eq!(r.target.as_str(), "/a/b?x=1");
    assert_eq!(r.target.path(), "/a/b");
    assert_eq!(r.content_length, 3);
    assert!(!r.close);
    assert_eq!(
        r.headers.get("host").map(|v| v.as_bytes()),
        Some(&b"example.com"[..])
    );
    assert_eq!(r.headers.get_all("x-a").iter().count(), 2);
    assert_eq!(&rest[..], b"abcGET", "the body and what follows stay");
}

#[test]
fn connection_close_is_noticed() {
    let (r, _) = fast("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Close\r\n\r\n");
    assert!(r.close);
}

#[test]
fn a_partial_head_waits() {
    let mut b = bytes_of("GET / HTTP/1.1\r\nHost: a\r\n");
    assert!(matches!(parse_request(&mut b, 1024), Parsed::Partial));
}

#[test]
fn everything_unusual_goes_to_hyper_untouched() {
    for s in [
        "GET / HTTP/1.0\r\nHost: a\r\n\r\n",
        "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        "CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2048\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        "\x01\x02garbage\r\n\r\n",
    ] {
        fallback(s);
    }
}

#[test]
fn upstream_head_is_origin_form_with_every_header() {
    let (r, _) = fast("GET /p?q HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n");
    let mut out = Vec::new();
    write_request_head(&mut out, &r.method, r.target.as_str(), &r.headers);
    assert_eq!(
        String::from_utf8_lossy(&out),
        "GET /p?q HTTP/1.1\r\nhost: a\r\naccept: */*\r\n\r\n"
    );
}

// ---- property tests -------------------------------------------------------------------

use proptest::prelude::*;

const MAX_BODY: usize = 64;

/// Header names the generator must not produce: each changes what parse_request decides.
const RESERVED: [&str; 6] = [
    "host",
    "content-length",
    "transfer-encoding",
    "expect",
    "upgrade",
    "connection",
];

/// A generated valid request, kept as parts so tests can check the parse against it.
#[derive(Debug, Clone)]
struct GenRequest {
    method: String,
    target: String,
    /// (name as written, value), Host and Content-Length included, in wire order.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    content_length: Option<usize>,
}

impl GenRequest {
    fn head_with(&self, method: &str, target: &str, version: &str) -> Vec<u8> {
        let mut out = format!("{method} {target} {version}\r\n").into_bytes();
        for (n, v) in &self.headers {
            out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    fn head(&self) -> Vec<u8> {
        self.head_with(&self.method, &self.target, "HTTP/1.1")
    }

    fn wire(&self) -> Vec<u8> {
        let mut out = self.head();
        out.extend_from_slice(&self.body);
        out
    }
}

/// Flip the case of the letters `mask` selects.
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

fn gen_method() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "PURGE", "MKCOL",
            "PROPFIND",
        ])
        .prop_map(str::to_owned),
        "[A-Za-z][A-Za-z0-9!#$%&'*+.^_|~-]{0,12}",
    ]
    .prop_filter("CONNECT goes to hyper", |m| m != "CONNECT")
}

fn gen_target() -> impl Strategy<Value = String> {
    "/[A-Za-z0-9._~!$&'()*+,;=:@/-]{0,40}(\\?[A-Za-z0-9._~!$&'()*+,;=:@/?-]{0,30})?"
}

/// A header value of visible ASCII; inner spaces and tabs, none at the ends (httparse
/// trims those, so they could not round-trip).
fn gen_value() -> impl Strategy<Value = String> {
    "([!-~]([ \t!-~]{0,20}[!-~])?)?"
}

fn gen_other_header() -> impl Strategy<Value = (String, String)> {
    (
        "[a-z0-9!#$%&'*+.^_|~-]{1,16}"
            .prop_filter("reserved name", |n| !RESERVED.contains(&n.as_str())),
        any::<u64>(),
        gen_value(),
    )
        .prop_map(|(n, mask, v)| (recase(&n, mask), v))
}

fn gen_request() -> impl Strategy<Value = GenRequest> {
    (
        gen_method(),
        gen_target(),
        "[a-z0-9.-]{1,30}(:[0-9]{1,5})?",
        any::<u64>(),
        // A few fixed names so repeated names (and their order) get exercised.
        prop::collection::vec(
            prop_oneof![
                gen_other_header(),
                (
                    prop::sample::select(vec!["X-Rep", "x-rep", "Accept"]),
                    gen_value()
                )
                    .prop_map(|(n, v)| (n.to_owned(), v)),
            ],
            0..=20,
        ),
        any::<prop::sample::Index>(),
        prop::option::of((0..=MAX_BODY, any::<u64>(), any::<prop::sample::Index>())),
        prop::collection::vec(any::<u8>(), MAX_BODY),
    )
        .prop_map(
            |(method, target, host, host_mask, mut headers, host_at, cl, bytes)| {
                let host_at = host_at.index(headers.len() + 1);
                headers.insert(host_at, (recase("host", host_mask), host));
                let content_length = cl.map(|(n, mask, at)| {
                    let at = at.index(headers.len() + 1);
                    headers.insert(at, (recase("content-length", mask), n.to_string()));
                    n
                });
                let body = bytes[..content_length.unwrap_or(0)].to_vec();
                GenRequest {
                    method,
                    target,
                    headers,
                    body,
                    content_length,
                }
            },
        )
}

/// The head length httparse finds, if the head is complete.
fn httparse_head_len(data: &[u8]) -> Option<usize> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::Request::new(&mut slots).parse(data) {
        Ok(httparse::Status::Complete(n)) => Some(n),
        _ => None,
    }
}

/// Run parse_request on `data` and check what it did to the buffer.
fn check_buffer_contract(data: &[u8]) -> Result<(), TestCaseError> {
    let mut buf = BytesMut::from(data);
    match parse_request(&mut buf, MAX_BODY) {
        Parsed::Partial | Parsed::Fallback(_) => {
            prop_assert_eq!(&buf[..], data, "Partial/Fallback must leave the buffer");
        }
        Parsed::Fast(r) => {
            prop_assert_eq!(Some(r.head_len), httparse_head_len(data));
            prop_assert_eq!(&buf[..], &data[r.head_len..]);
        }
        Parsed::Bad(_) => {
            let n = httparse_head_len(data);
            prop_assert!(n.is_some(), "Bad without a complete head");
            prop_assert_eq!(&buf[..], &data[n.unwrap_or(0)..]);
        }
    }
    Ok(())
}

/// Lowercased names with their values, in the order a HeaderMap iterates them.
fn map_fields(h: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    h.iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect()
}

/// Per distinct lowercased name, in first-appearance order, its values in wire order:
/// what a HeaderMap keeps of a header list (different names may be regrouped, the order
/// of one name's values may not).
fn grouped(fields: &[(String, Vec<u8>)]) -> Vec<(String, Vec<Vec<u8>>)> {
    let mut out: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
    for (n, v) in fields {
        let n = n.to_ascii_lowercase();
        match out.iter_mut().find(|(m, _)| *m == n) {
            Some((_, vs)) => vs.push(v.clone()),
            None => out.push((n, vec![v.clone()])),
        }
    }
    out
}

proptest! {
    #[test]
    fn prop_arbitrary_bytes_keep_the_buffer_contract(
        data in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        check_buffer_contract(&data)?;
    }

    #[test]
    fn prop_arbitrary_bytes_after_a_request_line_keep_the_buffer_contract(
        method in gen_method(),
        target in gen_target(),
        tail in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..300),
            // Mostly header-shaped bytes, so more heads complete.
            "([ -~\t]{0,30}\r\n){0,6}(\r\n)?[ -~]{0,10}".prop_map(String::into_bytes),
        ],
    ) {
        let mut data = format!("{method} {target} HTTP/1.1\r\n").into_bytes();
        data.extend_from_slice(&tail);
        check_buffer_contract(&data)?;
    }

    #[test]
    fn prop_valid_requests_are_fast_and_round_trip(
        req in gen_request(),
        rest in prop::collection::vec(any::<u8>(), 0..20),
    ) {
        let mut wire = req.wire();
        wire.extend_from_slice(&rest);
        let mut buf = BytesMut::from(&wire[..]);
        let r = match parse_request(&mut buf, MAX_BODY) {
            Parsed::Fast(r) => r,
            other => return Err(TestCaseError::fail(format!("{other:?} for {req:?}"))),
        };
        prop_assert_eq!(r.head_len, req.head().len());
        let mut after = req.body.clone();
        after.extend_from_slice(&rest);
        prop_assert_eq!(&buf[..], &after[..]);
        prop_assert_eq!(r.method.as_str(), req.method.as_str());
        prop_assert_eq!(r.target.as_str(), req.target.as_str());
        prop_assert_eq!(r.content_length, req.content_length.unwrap_or(0));
        prop_assert!(!r.close);
        let want: Vec<(String, Vec<u8>)> = req
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), v.clone().into_bytes()))
            .collect();
        prop_assert_eq!(grouped(&map_fields(&r.headers)), grouped(&want));
        prop_assert_eq!(r.headers.len(), req.headers.len());

        let mut up = Vec::new();
        write_request_head(&mut up, &r.method, r.target.as_str(), &r.headers);
        prop_assert_eq!(httparse_head_len(&up), Some(up.len()));
        let mut buf = BytesMut::from(&up[..]);
        let again = match parse_request(&mut buf, MAX_BODY) {
            Parsed::Fast(a) => a,
            other => return Err(TestCaseError::fail(format!("re-parse gave {other:?}"))),
        };
        prop_assert!(buf.is_empty());
        prop_assert_eq!(&again.method, &r.method);
        prop_assert_eq!(again.target.as_str(), r.target.as_str());
        prop_assert_eq!(map_fields(&again.headers), map_fields(&r.headers));
        prop_assert_eq!(again.content_length, r.content_length);
    }

    #[test]
    fn prop_anything_unusual_falls_back_untouched(
        req in gen_request(),
        kind in 0usize..9,
        at in any::<prop::sample::Index>(),
        mask in any::<u64>(),
        value in gen_value(),
        big in (MAX_BODY as u64 + 1)..u64::MAX,
        others in prop::collection::vec("[a-z-]{1,8}", 0..3),
    ) {
        let mut req = req;
        let method = req.method.clone();
        let mut target = req.target.clone();
        let mut version = "HTTP/1.1";
        let add = |name: &str, v: String, req: &mut GenRequest| {
            let i = at.index(req.headers.len() + 1);
            req.headers.insert(i, (recase(name, mask), v));
        };
        match kind {
            0 => add("transfer-encoding", value, &mut req),
            1 => add("expect", value, &mut req),
            2 => add("upgrade", value, &mut req),
            3 => add("host", value, &mut req),
            4 => {
                if req.content_length.is_none() {
                    req.headers.push(("Content-Length".into(), "0".into()));
                }
                add("content-length", "0".into(), &mut req);
            }
            5 => {
                let mut tokens = others.clone();
                let i = at.index(tokens.len() + 1);
                tokens.insert(i, recase("upgrade", mask.rotate_left(7)));
                add("connection", tokens.join(", "), &mut req);
            }
            6 => version = "HTTP/1.0",
            7 => target = format!("http://example.com{target}"),
            _ => add("content-length", big.to_string(), &mut req),
        }
        let mut wire = req.head_with(&method, &target, version);
        wire.extend_from_slice(&req.body);
        let mut buf = BytesMut::from(&wire[..]);
        let got = parse_request(&mut buf, MAX_BODY);
        prop_assert!(matches!(got, Parsed::Fallback(_)), "kind {}: {:?}", kind, got);
        prop_assert_eq!(&buf[..], &wire[..]);
    }

    #[test]
    fn prop_a_split_head_is_partial_until_complete(
        req in gen_request(),
        cut in any::<prop::sample::Index>(),
    ) {
        let wire = req.wire();
        let head_len = req.head().len();
        let cut = cut.index(wire.len() + 1);
        let mut buf = BytesMut::from(&wire[..cut]);
        let got = parse_request(&mut buf, MAX_BODY);
        if cut < head_len {
            prop_assert!(matches!(got, Parsed::Partial), "cut {}: {:?}", cut, got);
            prop_assert_eq!(&buf[..], &wire[..cut]);
        } else {
            prop_assert!(matches!(got, Parsed::Fast(_)), "cut {}: {:?}", cut, got);
            prop_assert_eq!(&buf[..], &wire[head_len..cut]);
        }
    }

    #[test]
    fn prop_every_prefix_of_a_head_is_partial(req in gen_request()) {
        let head = req.head();
        for cut in 0..head.len() {
            let mut buf = BytesMut::from(&head[..cut]);
            let got = parse_request(&mut buf, MAX_BODY);
            prop_assert!(matches!(got, Parsed::Partial), "cut {}: {:?}", cut, got);
            prop_assert_eq!(&buf[..], &head[..cut]);
        }
    }
}

//! Downstream HTTP/2 limits (`[http2]`) through the real binary, over h2c: the advertised
//! stream limit, rapid reset (CVE-2023-44487) answered with GOAWAY (h2's pending-reset cap and
//! lbd's resets per second), and CONTINUATION floods cut off with lbd's memory bounded.

use super::*;

/// lbd with `[http2]` set to `http2`, in front of one backend.
async fn lbd_with(backend: &TestBackend, http2: &str) -> Lbd {
    let body = format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\n[http2]\n{http2}\n[[pool]]\nname = \"web\"\n\
         [[pool.backend]]\naddress = \"{}\"\n",
        backend.addr
    );
    Lbd::start(&body).await
}

fn get() -> http::Request<()> {
    http::Request::get("http://h2.test/")
        .body(())
        .expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_limit_is_advertised_and_requests_are_served() {
    let backend = TestBackend::start("b1").await;
    let lbd = lbd_with(&backend, "max_concurrent_streams = 7").await;
    let tcp = tokio::net::TcpStream::connect(lbd.listen)
        .await
        .expect("connect");
    let (client, mut conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let mut client = client.ready().await.expect("ready");
    let (resp, _) = client.send_request(get(), true).expect("send");
    // Drive the connection until the response is in: lbd's SETTINGS came before it.
    let mut resp = std::pin::pin!(resp);
    let resp = tokio::time::timeout(WAIT, async {
        tokio::select! {
            r = &mut resp => r,
            ended = &mut conn => panic!("the connection ended first: {ended:?}"),
        }
    })
    .await
    .expect("in time")
    .expect("response");
    assert_eq!(resp.status(), 200);
    assert_eq!(conn.max_concurrent_send_streams(), 7);
}

/// The series of `lbd_http2_connections_cut_total` for `cause`.
fn cut_series(cause: &str) -> String {
    format!("lbd_http2_connections_cut_total{{cause=\"{cause}\"}}")
}

/// An h2 client connection to lbd, driven in a task whose result is the connection's end.
async fn h2_client(
    lbd: &Lbd,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = tokio::net::TcpStream::connect(lbd.listen)
        .await
        .expect("connect");
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let closed = tokio::spawn(conn);
    (client.ready().await.expect("ready"), closed)
}

/// Open a stream and reset it at once; false when the connection no longer takes streams.
async fn open_and_reset(client: &mut h2::client::SendRequest<bytes::Bytes>) -> bool {
    let Ok((_, mut stream)) = client.send_request(get(), false) else {
        return false;
    };
    stream.send_reset(h2::Reason::CANCEL);
    futures_ready(client).await.is_ok()
}

/// Wait for the connection driven by `closed` to end in lbd's GOAWAY ENHANCE_YOUR_CALM.
async fn ends_in_goaway(closed: tokio::task::JoinHandle<Result<(), h2::Error>>) {
    let ended = tokio::time::timeout(WAIT, closed)
        .await
        .expect("lbd ended the connection")
        .expect("task");
    let err = ended.expect_err("the connection ends in an error");
    // GOAWAY ENHANCE_YOUR_CALM, or, when our writes were still going out as lbd closed, the
    // broken pipe that hides it; with the caps raised the connection does not end at all.
    assert!(
        err.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) || err.is_io(),
        "{err:?}"
    );
}

/// Requests still work after a cut connection, and exactly one connection was cut for `cause`.
async fn lbd_is_fine_and_counted_one(lbd: &Lbd, cause: &str) {
    assert_eq!(
        request(lbd.listen, "GET", "/", &[]).await.map(|r| r.status),
        Ok(200)
    );
    let series = cut_series(cause);
    eventually(&format!("{series} == 1"), WAIT, || async {
        metric(lbd.admin, &series).await == Some(1.0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_reset_as_fast_as_they_open_end_the_connection_with_goaway() {
    let backend = TestBackend::start("b1").await;
    // h2's pending-reset cap, on its own: lbd's per-second cap is out of reach.
    let lbd = lbd_with(
        &backend,
        "max_pending_reset_streams = 5\nmax_resets_per_second = 100000",
    )
    .await;
    let (mut client, closed) = h2_client(&lbd).await;
    // Open and reset at once, many times, without waiting for anything.
    for _ in 0..200 {
        if !open_and_reset(&mut client).await {
            break;
        }
    }
    ends_in_goaway(closed).await;
    lbd_is_fine_and_counted_one(&lbd, "enhance_your_calm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_over_the_per_second_cap_get_goaway() {
    use tokio::io::AsyncWriteExt;
    let backend = TestBackend::start("b1").await;
    // lbd's own count, on its own: h2's pending-reset cap is out of reach.
    let lbd = lbd_with(
        &backend,
        "max_resets_per_second = 20\nmax_pending_reset_streams = 10000",
    )
    .await;
    // 50 GETs each reset at once, in one write (raw frames: with everything read by lbd, its
    // close is a FIN after the GOAWAY, not a reset that would hide it).
    let mut flood = opening();
    for id in (1..100).step_by(2) {
        flood.extend(frame(KIND_HEADERS, END_STREAM | END_HEADERS, id, GET_BLOCK));
        flood.extend(frame(KIND_RST_STREAM, 0, id, &0x8u32.to_be_bytes()));
    }
    let tcp = tokio::net::TcpStream::connect(lbd.listen)
        .await
        .expect("connect");
    let (mut r, mut w) = tcp.into_split();
    w.write_all(&flood).await.expect("flood");
    let code = tokio::time::timeout(WAIT, read_goaway(&mut r))
        .await
        .expect("lbd answered within the deadline");
    assert_eq!(code, Some(H2_ENHANCE_YOUR_CALM));
    lbd_is_fine_and_counted_one(&lbd, "resets_per_second").await;
    assert_eq!(
        metric(lbd.admin, &cut_series("enhance_your_calm")).await,
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_below_the_per_second_cap_keep_the_connection() {
    let backend = TestBackend::start("b1").await;
    let lbd = lbd_with(
        &backend,
        "max_resets_per_second = 20\nmax_pending_reset_streams = 10000",
    )
    .await;
    let (mut client, mut closed) = h2_client(&lbd).await;
    // 40 resets at 10 a second: twice the burst, half the rate.
    let mut pace = tokio::time::interval(Duration::from_millis(100));
    // A stalled test runtime must not catch up in a burst.
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for i in 0..40 {
        pace.tick().await;
        assert!(open_and_reset(&mut client).await, "reset {i} refused");
    }
    // The same connection still serves a request.
    let (resp, _) = client.send_request(get(), true).expect("send");
    let resp = tokio::time::timeout(WAIT, resp)
        .await
        .expect("in time")
        .expect("response");
    assert_eq!(resp.status(), 200);
    assert!(
        tokio::time::timeout(Duration::from_millis(1), &mut closed)
            .await
            .is_err(),
        "the connection ended"
    );
    assert_eq!(
        metric(lbd.admin, &cut_series("resets_per_second")).await,
        Some(0.0)
    );
}

// ---- CONTINUATION floods, as raw frames ----

const KIND_HEADERS: u8 = 0x1;
const KIND_RST_STREAM: u8 = 0x3;
const KIND_GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
/// HPACK for `GET http://h2.test/`: indexed `:method GET`, `:scheme http`, `:path /`, and
/// `:authority` as a literal without indexing.
const GET_BLOCK: &[u8] = b"\x82\x86\x84\x01\x07h2.test";
const KIND_CONTINUATION: u8 = 0x9;
const H2_ENHANCE_YOUR_CALM: u32 = 0xb;
const H2_COMPRESSION_ERROR: u32 = 0x9;

/// The client preface and an empty SETTINGS.
fn opening() -> Vec<u8> {
    let mut o = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    o.extend(frame(0x4, 0, 0, &[]));
    o
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Read lbd's frames until its GOAWAY; its error code, or None if the connection closed
/// without one.
async fn read_goaway(r: &mut tokio::net::tcp::OwnedReadHalf) -> Option<u32> {
    use tokio::io::AsyncReadExt;
    loop {
        let mut head = [0u8; 9];
        r.read_exact(&mut head).await.ok()?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload).await.ok()?;
        if head[3] == KIND_GOAWAY {
            let code: [u8; 4] = payload.get(4..8)?.try_into().ok()?;
            return Some(u32::from_be_bytes(code));
        }
    }
}

/// Send the preface, SETTINGS, a HEADERS without END_HEADERS whose block starts with
/// `block_start`, then up to `frames` CONTINUATION frames carrying `each` (none with
/// END_HEADERS), and see how lbd ends it. Returns the GOAWAY code and the bytes written
/// before lbd stopped reading.
async fn continuation_flood(
    lbd: &Lbd,
    block_start: &[u8],
    each: &[u8],
    frames: usize,
) -> (Option<u32>, usize) {
    use tokio::io::AsyncWriteExt;
    let tcp = tokio::net::TcpStream::connect(lbd.listen)
        .await
        .expect("connect");
    let (mut r, mut w) = tcp.into_split();
    let mut opening = opening();
    opening.extend(frame(KIND_HEADERS, 0, 1, block_start));
    w.write_all(&opening).await.expect("opening");
    let batch: Vec<u8> = (0..64)
        .flat_map(|_| frame(KIND_CONTINUATION, 0, 1, each))
        .collect();
    let writer = tokio::spawn(async move {
        let mut written = 0;
        for _ in 0..frames / 64 {
            if w.write_all(&batch).await.is_err() {
                break;
            }
            written += batch.len();
        }
        written
    });
    let goaway = tokio::time::timeout(WAIT, read_goaway(&mut r))
        .await
        .expect("lbd answered the flood within the deadline");
    // lbd closed the connection: the writer stops (a reset socket) within the deadline.
    let written = tokio::time::timeout(WAIT, writer)
        .await
        .expect("the flood was cut off")
        .expect("writer");
    (goaway, written)
}

/// Flood lbd through `flood`, and check it was cut with a GOAWAY, counted, and cost lbd
/// little memory.
async fn flood_is_cut_with_memory_bounded(
    block_start: &[u8],
    each: &[u8],
    frames: usize,
    codes: &[u32],
) {
    let backend = TestBackend::start("b1").await;
    let lbd = lbd_with(&backend, "").await;
    // Warm up (allocator arenas, the hyper path) so the baseline is a served lbd.
    assert_eq!(
        request(lbd.listen, "GET", "/", &[]).await.map(|r| r.status),
        Ok(200)
    );
    let before = rss_kib(lbd.pid());
    let (code, written) = continuation_flood(&lbd, block_start, each, frames).await;
    let after = rss_kib(lbd.pid());
    let code = code.expect("lbd sent a GOAWAY");
    assert!(codes.contains(&code), "GOAWAY code {code:#x}");
    // The attacker's bytes lbd never read wait in socket buffers, not in lbd.
    assert!(
        after < before + 8 * 1024,
        "lbd's RSS grew from {before} KiB to {after} KiB"
    );
    let attempted = frames * (9 + each.len());
    assert!(
        written < attempted,
        "lbd read all {attempted} bytes of the flood ({written} written)"
    );
    lbd_is_fine_and_counted_one(&lbd, "header_block").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_run_of_empty_continuation_frames_is_cut_off() {
    // `:method: GET` (static index 2), then empty CONTINUATION frames forever: a million
    // of them (9 MB) if lbd never stopped.
    flood_is_cut_with_memory_bounded(&[0x82], &[], 1 << 20, &[H2_ENHANCE_YOUR_CALM]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_header_block_in_continuation_frames_is_cut_off() {
    // A literal header `x` whose value claims 1 MiB (HPACK integers here stop at 2^21), sent
    // 16 KiB a frame, and more frames after it: 64 MiB if lbd never stopped.
    let mut start = vec![0x00, 0x01, b'x', 0x7f];
    let mut n: u32 = (1 << 20) - 127;
    while n >= 128 {
        start.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    start.push(n as u8);
    let each = vec![b'a'; 16_384];
    flood_is_cut_with_memory_bounded(
        &start,
        &each,
        4096,
        &[H2_ENHANCE_YOUR_CALM, H2_COMPRESSION_ERROR],
    )
    .await;
}

/// Wait until the client may open another stream.
async fn futures_ready(
    client: &mut h2::client::SendRequest<bytes::Bytes>,
) -> Result<(), h2::Error> {
    std::future::poll_fn(|cx| client.poll_ready(cx)).await
}

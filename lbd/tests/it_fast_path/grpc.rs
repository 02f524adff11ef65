//! HTTP/2 to backends (`[[pool]] protocol = "h2"`) and gRPC through the real binary: a
//! small gRPC server and client built on tonic's generic `Grpc` (a raw-bytes codec, no
//! protobuf code generation), unary and bidirectional streaming calls with their trailers,
//! error statuses, HTTP/1 clients in front of an h2 pool (on both HTTP paths: the fast path
//! hands such requests to hyper), a backend's small stream limit, the refusal of gRPC to an
//! HTTP/1.1 pool, and gRPC health checks.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes};
use futures::Stream;
use http::uri::PathAndQuery;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder, Streaming};
use tonic::{Code, Status};

use super::*;

// ---- the codec: gRPC messages as raw bytes ----

/// Messages are the bytes themselves: what is sent is what arrives.
#[derive(Debug, Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

// ---- the backend ----

const UNARY: &str = "/test.Echo/Unary";
const BIDI: &str = "/test.Echo/Bidi";
const HEALTH: &str = "/grpc.health.v1.Health/Check";
/// The service name the health checks ask about.
const SERVICE: &str = "test.Echo";

/// Echoes the message; `not-found` is answered with NOT_FOUND.
struct Unary;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl tonic::server::UnaryService<Bytes> for Unary {
    type Response = Bytes;
    type Future = BoxFuture<Result<tonic::Response<Bytes>, Status>>;

    fn call(&mut self, req: tonic::Request<Bytes>) -> Self::Future {
        let m = req.into_inner();
        Box::pin(async move {
            if &m[..] == b"not-found" {
                Err(Status::not_found("no such thing"))
            } else {
                Ok(tonic::Response::new(m))
            }
        })
    }
}

/// Answers each message at once with `echo:MESSAGE`; `abort` ends the call with ABORTED
/// (after the messages: the status goes in the trailers).
struct Bidi;

type MessageStream = Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>>;

impl tonic::server::StreamingService<Bytes> for Bidi {
    type Response = Bytes;
    type ResponseStream = MessageStream;
    type Future = std::future::Ready<Result<tonic::Response<MessageStream>, Status>>;

    fn call(&mut self, req: tonic::Request<Streaming<Bytes>>) -> Self::Future {
        let answers = futures::stream::unfold(Some(req.into_inner()), |inbound| async move {
            let mut inbound = inbound?;
            match inbound.message().await {
                Ok(Some(m)) if &m[..] == b"abort" => {
                    Some((Err(Status::aborted("told to stop")), None))
                }
                Ok(Some(m)) => {
                    let mut echo = b"echo:".to_vec();
                    echo.extend_from_slice(&m);
                    Some((Ok(Bytes::from(echo)), Some(inbound)))
                }
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        });
        std::future::ready(Ok(tonic::Response::new(Box::pin(answers))))
    }
}

/// `grpc.health.v1.Health/Check`: the backend's status for [`SERVICE`], SERVICE_UNKNOWN for
/// any other name (the messages written by hand, as lbd does).
struct Health(Arc<AtomicU8>);

impl tonic::server::UnaryService<Bytes> for Health {
    type Response = Bytes;
    type Future = std::future::Ready<Result<tonic::Response<Bytes>, Status>>;

    fn call(&mut self, req: tonic::Request<Bytes>) -> Self::Future {
        let m = req.into_inner();
        // HealthCheckRequest { service = 1 }: 0x0a, a one-byte length, the name.
        let asked = m.get(2..).unwrap_or_default();
        let status = if asked == SERVICE.as_bytes() {
            self.0.load(Ordering::SeqCst)
        } else {
            3
        };
        std::future::ready(Ok(tonic::Response::new(Bytes::from(vec![0x08, status]))))
    }
}

const SERVING: u8 = 1;
const NOT_SERVING: u8 = 2;

/// An HTTP/2 (h2c) backend: the gRPC methods above, and for any other path a plain answer
/// naming what arrived (`h2 METHOD AUTHORITY PATH`), after `?delay_ms=N`.
struct H2Backend {
    addr: SocketAddr,
    health: Arc<AtomicU8>,
    /// Connections accepted.
    conns: Arc<AtomicUsize>,
    /// The most requests in progress at once on any one connection.
    most_at_once: Arc<AtomicUsize>,
    /// gRPC calls that arrived with `te: trailers` (gRPC servers may insist on it).
    te_trailers: Arc<AtomicUsize>,
    /// Notified: every open connection says GOAWAY and ends.
    goaway: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for H2Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type GrpcReply = http::Response<tonic::body::Body>;

impl H2Backend {
    /// A backend announcing `max_streams` concurrent streams per connection (`None`: h2's
    /// default).
    async fn start(max_streams: Option<u32>) -> H2Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let health = Arc::new(AtomicU8::new(SERVING));
        let conns = Arc::new(AtomicUsize::new(0));
        let most_at_once = Arc::new(AtomicUsize::new(0));
        let te_trailers = Arc::new(AtomicUsize::new(0));
        let goaway = Arc::new(tokio::sync::Notify::new());
        let (h, c, m, te, g) = (
            health.clone(),
            conns.clone(),
            most_at_once.clone(),
            te_trailers.clone(),
            goaway.clone(),
        );
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let (h, m, te) = (h.clone(), m.clone(), te.clone());
                let goaway = g.clone();
                let at_once = Arc::new(AtomicUsize::new(0));
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                        let (h, m, at_once) = (h.clone(), m.clone(), at_once.clone());
                        if req.headers().get("te").is_some_and(|v| v == "trailers") {
                            te.fetch_add(1, Ordering::SeqCst);
                        }
                        async move {
                            let now = at_once.fetch_add(1, Ordering::SeqCst) + 1;
                            m.fetch_max(now, Ordering::SeqCst);
                            let reply = answer(req, h).await;
                            at_once.fetch_sub(1, Ordering::SeqCst);
                            Ok::<_, std::convert::Infallible>(reply)
                        }
                    });
                    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .max_concurrent_streams(max_streams)
                        .serve_connection(TokioIo::new(tcp), svc);
                    let mut conn = std::pin::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => return,
                        _ = goaway.notified() => {}
                    }
                    // A graceful shutdown: GOAWAY, then the connection ends.
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                });
            }
        });
        H2Backend {
            addr,
            health,
            conns,
            most_at_once,
            te_trailers,
            goaway,
            task,
        }
    }
}

async fn answer(req: http::Request<Incoming>, health: Arc<AtomicU8>) -> GrpcReply {
    match req.uri().path() {
        UNARY => tonic::server::Grpc::new(Raw).unary(Unary, req).await,
        BIDI => tonic::server::Grpc::new(Raw).streaming(Bidi, req).await,
        HEALTH => {
            tonic::server::Grpc::new(Raw)
                .unary(Health(health), req)
                .await
        }
        path => {
            let delay = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("delay_ms="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let text = format!(
                "h2 {} {} {path}",
                req.method(),
                req.uri().authority().map_or("-", |a| a.as_str())
            );
            let mut reply =
                http::Response::new(tonic::body::Body::new(Full::new(Bytes::from(text))));
            if req.version() != http::Version::HTTP_2 {
                *reply.status_mut() = http::StatusCode::HTTP_VERSION_NOT_SUPPORTED;
            }
            reply
        }
    }
}

// ---- the client ----

/// A tower service over one HTTP/2 client connection, for tonic's generic client.
#[derive(Clone)]
struct H2Client(hyper::client::conn::http2::SendRequest<tonic::body::Body>);

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for H2Client {
    type Response = http::Response<Incoming>;
    type Error = hyper::Error;
    type Future = BoxFuture<Result<http::Response<Incoming>, hyper::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(req))
    }
}

type Client = tonic::client::Grpc<H2Client>;

/// A gRPC client over an established stream (h2c, or TLS that negotiated h2).
async fn client_on<S>(stream: S) -> Client
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake with lbd");
    tokio::spawn(conn);
    tonic::client::Grpc::with_origin(H2Client(tx), http::Uri::from_static("http://grpc.test"))
}

async fn h2c_client(lbd: &Lbd) -> Client {
    client_on(TcpStream::connect(lbd.listen).await.expect("connect")).await
}

async fn unary(client: &mut Client, message: &'static str) -> Result<Bytes, Status> {
    client
        .ready()
        .await
        .map_err(|e| Status::unknown(e.to_string()))?;
    let call = client.unary(
        tonic::Request::new(Bytes::from_static(message.as_bytes())),
        PathAndQuery::from_static(UNARY),
        Raw,
    );
    tokio::time::timeout(WAIT, call)
        .await
        .expect("answered in time")
        .map(tonic::Response::into_inner)
}

/// A bidirectional call: the sender of its messages and the stream of answers.
async fn bidi(
    client: &mut Client,
) -> (
    futures::channel::mpsc::UnboundedSender<Bytes>,
    Streaming<Bytes>,
) {
    let (tx, rx) = futures::channel::mpsc::unbounded();
    client.ready().await.expect("ready");
    let call = client.streaming(
        tonic::Request::new(rx),
        PathAndQuery::from_static(BIDI),
        Raw,
    );
    let answers = tokio::time::timeout(WAIT, call)
        .await
        .expect("response head in time")
        .expect("call accepted")
        .into_inner();
    (tx, answers)
}

async fn next_answer(answers: &mut Streaming<Bytes>) -> Result<Option<Bytes>, Status> {
    tokio::time::timeout(WAIT, answers.message())
        .await
        .expect("an answer in time")
}

/// Send `n` messages one at a time, each only after the previous one's answer came back:
/// neither direction may be buffered whole.
async fn interleave(client: &mut Client, n: usize) {
    let (tx, mut answers) = bidi(client).await;
    for i in 0..n {
        tx.unbounded_send(Bytes::from(format!("m{i}")))
            .expect("send");
        let got = next_answer(&mut answers).await.expect("no error");
        assert_eq!(
            got.as_deref(),
            Some(format!("echo:m{i}").as_bytes()),
            "answer {i}"
        );
    }
    drop(tx);
    assert_eq!(next_answer(&mut answers).await.expect("ends OK"), None);
    // tonic reads the call's status from the trailers: grpc-status 0 arrived.
    let trailers = answers.trailers().await.expect("trailers");
    assert!(trailers.is_some(), "the call ended with trailers");
}

// ---- lbd ----

/// A pool "web" of these backends with `protocol = "h2"` (passive ejection off) and `extra`.
fn h2_pool(backends: &[&H2Backend], extra: &str) -> String {
    let mut s = format!(
        "[[pool]]\nname = \"web\"\nprotocol = \"h2\"\n{extra}[pool.passive]\nconsecutive_failures = 0\n"
    );
    for b in backends {
        s.push_str(&format!("[[pool.backend]]\naddress = \"{}\"\n", b.addr));
    }
    s
}

async fn lbd_h2(global: &str, backends: &[&H2Backend]) -> Lbd {
    Lbd::start(&config(global, &h2_pool(backends, ""))).await
}

/// A raw HTTP/2 POST of one gRPC message through lbd; the response head, the message and
/// the trailers, as they arrived.
async fn raw_grpc_post(
    lbd: &Lbd,
    message: &[u8],
) -> (http::response::Parts, Bytes, http::HeaderMap) {
    let tcp = TcpStream::connect(lbd.listen).await.expect("connect");
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let mut framed = vec![0];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    let req = http::Request::post(format!("http://grpc.test{UNARY}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from(framed)))
        .expect("request");
    let resp = tokio::time::timeout(WAIT, tx.send_request(req))
        .await
        .expect("in time")
        .expect("response");
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.expect("body");
    let trailers = collected.trailers().cloned().unwrap_or_default();
    (parts, collected.to_bytes(), trailers)
}

// ---- the tests ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unary_call_goes_through_with_its_trailers() {
    let backend = H2Backend::start(None).await;
    let lbd = lbd_h2(FAST_PATH_ON, &[&backend]).await;
    let mut client = h2c_client(&lbd).await;
    for _ in 0..3 {
        assert_eq!(
            unary(&mut client, "hello").await.expect("OK"),
            &b"hello"[..]
        );
    }
    // The same on the wire: the message, then grpc-status 0 in a trailers frame, and
    // lbd's node header where headers go.
    let (head, body, trailers) = raw_grpc_post(&lbd, b"wire").await;
    assert_eq!(head.status, 200);
    assert_eq!(
        head.headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/grpc"[..])
    );
    assert_eq!(&body[..], b"\0\0\0\0\x04wire");
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
    assert!(
        !head.headers.contains_key("grpc-status"),
        "the status is a trailer"
    );
    assert_eq!(
        backend.te_trailers.load(Ordering::SeqCst),
        4,
        "every call reached the backend with te: trailers"
    );
    // Four calls multiplexed on one upstream connection.
    assert_eq!(backend.conns.load(Ordering::SeqCst), 1);
    let opened = format!(
        "lbd_backend_connections_opened_total{{pool=\"web\",backend=\"{}\"}}",
        backend.addr
    );
    assert_eq!(metric(lbd.admin, &opened).await, Some(1.0));
    let open_now = format!(
        "lbd_backend_h2_connections{{pool=\"web\",backend=\"{}\"}}",
        backend.addr
    );
    assert_eq!(metric(lbd.admin, &open_now).await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_statuses_and_messages_reach_the_client() {
    let backend = H2Backend::start(None).await;
    let lbd = lbd_h2(FAST_PATH_ON, &[&backend]).await;
    let mut client = h2c_client(&lbd).await;
    // A "trailers-only" error: the status in the response head.
    let err = unary(&mut client, "not-found")
        .await
        .expect_err("NOT_FOUND");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert_eq!(err.message(), "no such thing");
    // An error after messages: the status in the trailers.
    let (tx, mut answers) = bidi(&mut client).await;
    tx.unbounded_send(Bytes::from_static(b"one")).expect("send");
    assert_eq!(
        next_answer(&mut answers).await.expect("OK").as_deref(),
        Some(&b"echo:one"[..])
    );
    tx.unbounded_send(Bytes::from_static(b"abort"))
        .expect("send");
    let err = next_answer(&mut answers).await.expect_err("ABORTED");
    assert_eq!(err.code(), Code::Aborted, "{err:?}");
    assert_eq!(err.message(), "told to stop");
    // A gRPC error is an HTTP 200: not a backend failure.
    assert_eq!(
        metric(lbd.admin, "lbd_responses_total{class=\"5xx\"}").await,
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidirectional_streaming_interleaves_messages_both_ways() {
    let backend = H2Backend::start(None).await;
    let lbd = lbd_h2(FAST_PATH_ON, &[&backend]).await;
    let mut client = h2c_client(&lbd).await;
    interleave(&mut client, 25).await;
    // Two calls at once on one client connection, each streaming.
    let (mut a, mut b) = (client.clone(), client.clone());
    tokio::join!(interleave(&mut a, 10), interleave(&mut b, 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_with_alpn_h2_streams_both_ways() {
    let backend = H2Backend::start(None).await;
    let dir = tempfile::tempdir().expect("dir");
    let ca = super::tls::Ca::new();
    let cert = ca.issue(
        dir.path(),
        "grpc",
        &["grpc.test"],
        &rcgen::PKCS_ECDSA_P256_SHA256,
    );
    let lbd = Lbd::start_with_listener(
        &config(FAST_PATH_ON, &h2_pool(&[&backend], "")),
        &super::tls::tls_table(&[&cert], ""),
    )
    .await;
    let connector = super::tls::connector(&[b"h2"], super::tls::ring());
    let tls = super::tls::handshake(lbd.listen, Some("grpc.test"), &connector)
        .await
        .expect("TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut client = client_on(tls).await;
    assert_eq!(
        unary(&mut client, "secure").await.expect("OK"),
        &b"secure"[..]
    );
    let err = unary(&mut client, "not-found")
        .await
        .expect_err("NOT_FOUND");
    assert_eq!(err.code(), Code::NotFound);
    interleave(&mut client, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_to_an_http1_pool_is_refused_as_unavailable() {
    let backend = TestBackend::start("h1").await;
    let lbd = Lbd::start(&config(FAST_PATH_ON, &pool("web", &[&backend], ""))).await;
    let mut client = h2c_client(&lbd).await;
    let err = unary(&mut client, "hello").await.expect_err("refused");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("protocol = \"h2\""), "{err:?}");
    assert_eq!(backend.hits(), 0, "nothing reached the HTTP/1.1 backend");
    // On the wire: 502 with the gRPC status in the head.
    let (head, _, _) = raw_grpc_post(&lbd, b"x").await;
    assert_eq!(head.status, 502);
    assert_eq!(
        head.headers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"14"[..])
    );
    assert_eq!(
        metric(
            lbd.admin,
            "lbd_proxy_errors_total{kind=\"grpc_needs_h2_pool\",side=\"internal\"}"
        )
        .await,
        Some(2.0)
    );
    // Plain HTTP/1.1 requests to the same pool are untouched.
    assert_eq!(get(lbd.listen, "/").await.map(|r| r.status), Ok(200));
}

/// HTTP/1.1 clients in front of an h2 pool: lbd speaks HTTP/2 to the backend, with the
/// client's Host as the `:authority`. On the fast path each such request is handed to hyper
/// (counted), and plain requests to an HTTP/1 pool of the same lbd stay on the fast path.
pub(super) async fn http1_clients_reach_an_h2_pool(global: &str) {
    let backend = H2Backend::start(None).await;
    let plain = TestBackend::start("h1").await;
    let rest = format!(
        "{}{}[[route]]\nname = \"plain\"\npath_prefix = \"/plain\"\npool = \"h1\"\n",
        h2_pool(&[&backend], ""),
        pool("h1", &[&plain], "")
    );
    let lbd = Lbd::start(&config(global, &rest)).await;
    for i in 0..3 {
        let path = format!("/a/{i}?x=1");
        let r = request(lbd.listen, "GET", &path, &[("host", "app.test")])
            .await
            .expect("answer");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body, format!("h2 GET app.test /a/{i}"));
    }
    let r = request(lbd.listen, "POST", "/p", &[("host", "app.test")])
        .await
        .expect("answer");
    assert_eq!(r.body, "h2 POST app.test /p");
    assert_eq!(
        backend.conns.load(Ordering::SeqCst),
        1,
        "one multiplexed connection"
    );
    let r = request(lbd.listen, "GET", "/plain", &[])
        .await
        .expect("answer");
    assert_eq!(r.status, 200);
    // One keep-alive connection, pipelined: HTTP/1 pool, h2 pool, HTTP/1 pool. The fast path
    // serves the first and hands the connection over at the second, bytes and all.
    let mut c = Wire::connect(lbd.listen).await;
    c.send(
        &[
            get_req("/plain/1"),
            get_req("/a/pipelined"),
            get_req("/plain/2"),
        ]
        .concat(),
    )
    .await;
    let first = c.response("plain before", "GET").await;
    let second = c.response("h2 pool", "GET").await;
    let third = c.response("plain after", "GET").await;
    assert_eq!((first.status, third.status), (200, 200));
    assert_eq!(
        (second.status, second.text()),
        (200, "h2 GET test.local /a/pipelined".to_string())
    );
    let handoffs = metric(lbd.admin, "lbd_http1_fast_path_handoffs_total")
        .await
        .unwrap_or(0.0);
    let fast = metric(lbd.admin, "lbd_http1_fast_path_requests_total")
        .await
        .unwrap_or(0.0);
    if global == FAST_PATH_ON {
        assert_eq!(
            handoffs, 5.0,
            "each connection reaching the h2 pool handed over"
        );
        assert_eq!(
            fast, 2.0,
            "HTTP/1 pool requests before any hand-off stayed on the fast path"
        );
        let why = "routed to a TLS or HTTP/2 pool";
        assert!(lbd.log_with(why).await.contains(why));
    } else {
        assert_eq!(fast, 0.0);
    }
}

/// A backend that speaks both HTTP/1.1 and h2c (prior knowledge) and answers with the
/// version the request came in.
async fn both_versions_backend() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: http::Request<Incoming>| async move {
                    let body = format!("{:?}", req.version());
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(
                        body,
                    ))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, task)
}

/// A reload that switches a pool from HTTP/1.1 to HTTP/2 and back takes effect for the next
/// request, on both HTTP paths, with the same client connection kept open throughout.
pub(super) async fn a_reload_switches_a_pools_protocol(global: &str) {
    let (addr, task) = both_versions_backend().await;
    let pool = |protocol: &str| {
        format!(
            "[[pool]]\nname = \"web\"\nprotocol = \"{protocol}\"\n[[pool.backend]]\naddress = \"{addr}\"\n"
        )
    };
    let lbd = Lbd::start(&config(global, &pool("http1"))).await;
    let mut c = Wire::connect(lbd.listen).await;
    c.send(&get_req("/")).await;
    assert_eq!(c.response("before", "GET").await.text(), "HTTP/1.1");
    for (protocol, want) in [("h2", "HTTP/2.0"), ("http1", "HTTP/1.1")] {
        let reloads = metric(lbd.admin, "lbd_config_reloads_total{result=\"ok\"}")
            .await
            .unwrap_or(0.0);
        lbd.write_config(&config(global, &pool(protocol)));
        lbd.signal("HUP");
        let admin = lbd.admin;
        eventually("the reload is done", WAIT, || async move {
            metric(admin, "lbd_config_reloads_total{result=\"ok\"}").await > Some(reloads)
        })
        .await;
        c.send(&get_req("/")).await;
        assert_eq!(
            c.response(protocol, "GET").await.text(),
            want,
            "after {protocol}"
        );
    }
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_stream_limit_opens_more_connections_and_nothing_fails() {
    let backend = H2Backend::start(Some(2)).await;
    let lbd = lbd_h2(FAST_PATH_ON, &[&backend]).await;
    // Warm one connection so its limit is known, then 10 slow requests at once.
    let r = request(lbd.listen, "GET", "/warm", &[])
        .await
        .expect("answer");
    assert_eq!(r.status, 200);
    let calls = (0..10).map(|i| {
        let listen = lbd.listen;
        tokio::spawn(async move {
            request(listen, "GET", &format!("/slow/{i}?delay_ms=1000"), &[]).await
        })
    });
    for (i, call) in futures::future::join_all(calls)
        .await
        .into_iter()
        .enumerate()
    {
        let r = call.expect("task").expect("answer");
        assert_eq!(r.status, 200, "request {i}: {r:?}");
    }
    assert!(
        backend.most_at_once.load(Ordering::SeqCst) <= 2,
        "never more streams on a connection than the backend allows"
    );
    // 10 at once at 2 streams each need 5 connections; lbd opens one at a time and looks
    // again, so a burst never opens more than it needs.
    let conns = backend.conns.load(Ordering::SeqCst);
    assert!(
        (2..=5).contains(&conns),
        "10 requests at 2 streams each: 5 connections (fewer only if some came late), saw {conns}"
    );
    let opened = format!(
        "lbd_backend_connections_opened_total{{pool=\"web\",backend=\"{}\"}}",
        backend.addr
    );
    assert_eq!(metric(lbd.admin, &opened).await, Some(conns as f64));
    assert_eq!(
        metric(lbd.admin, "lbd_responses_total{class=\"5xx\"}").await,
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_checks_follow_the_serving_status() {
    let backend = H2Backend::start(None).await;
    let health = format!(
        "[pool.health]\nkind = \"grpc\"\ngrpc_service = \"{SERVICE}\"\ninterval_ms = 100\ntimeout_ms = 100\nrise = 1\nfall = 1\n"
    );
    let lbd = Lbd::start(&config(FAST_PATH_ON, &h2_pool(&[&backend], &health))).await;
    let healthy = format!(
        "lbd_backend_healthy{{pool=\"web\",backend=\"{}\"}}",
        backend.addr
    );
    let is = |want: f64| {
        let healthy = healthy.clone();
        let admin = lbd.admin;
        move || {
            let healthy = healthy.clone();
            async move { metric(admin, &healthy).await == Some(want) }
        }
    };
    backend.health.store(NOT_SERVING, Ordering::SeqCst);
    eventually("NOT_SERVING marks it down", WAIT, is(0.0)).await;
    assert_eq!(get(lbd.listen, "/").await.map(|r| r.status), Ok(503));
    backend.health.store(SERVING, Ordering::SeqCst);
    eventually("SERVING marks it up", WAIT, is(1.0)).await;
    assert_eq!(get(lbd.listen, "/").await.map(|r| r.status), Ok(200));
    // A health check naming a service the backend does not know: SERVICE_UNKNOWN, down.
    let other = health.replace(SERVICE, "other.Service");
    lbd.write_config(&config(FAST_PATH_ON, &h2_pool(&[&backend], &other)));
    lbd.signal("HUP");
    eventually("SERVICE_UNKNOWN marks it down", WAIT, is(0.0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_backend_ends_with_goaway_is_replaced() {
    let backend = H2Backend::start(None).await;
    let lbd = lbd_h2(FAST_PATH_ON, &[&backend]).await;
    let r = request(lbd.listen, "GET", "/one", &[])
        .await
        .expect("answer");
    assert_eq!(r.status, 200);
    assert_eq!(backend.conns.load(Ordering::SeqCst), 1);
    backend.goaway.notify_waiters();
    let series = format!(
        "lbd_upstream_conn_discarded_total{{pool=\"web\",backend=\"{}\",reason=\"h2_goaway\"}}",
        backend.addr
    );
    let admin = lbd.admin;
    eventually("the GOAWAY connection is counted", WAIT, || {
        let series = series.clone();
        async move { metric(admin, &series).await == Some(1.0) }
    })
    .await;
    // The next request goes on a new connection, and nothing failed.
    let r = request(lbd.listen, "GET", "/two", &[])
        .await
        .expect("answer");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(backend.conns.load(Ordering::SeqCst), 2);
    let open_now = format!(
        "lbd_backend_h2_connections{{pool=\"web\",backend=\"{}\"}}",
        backend.addr
    );
    assert_eq!(metric(lbd.admin, &open_now).await, Some(1.0));
}

//! Downstream HTTP/2 limits (`[http2]`) through the real binary, over h2c: the advertised
//! stream limit, and rapid reset (CVE-2023-44487) answered with GOAWAY.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_reset_as_fast_as_they_open_end_the_connection_with_goaway() {
    let backend = TestBackend::start("b1").await;
    let lbd = lbd_with(&backend, "max_pending_reset_streams = 5").await;
    let tcp = tokio::net::TcpStream::connect(lbd.listen)
        .await
        .expect("connect");
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let closed = tokio::spawn(conn);
    let mut client = client.ready().await.expect("ready");
    // Open and reset at once, many times, without waiting for anything.
    for _ in 0..200 {
        let Ok((_, mut stream)) = client.send_request(get(), false) else {
            break;
        };
        stream.send_reset(h2::Reason::CANCEL);
        if futures_ready(&mut client).await.is_err() {
            break;
        }
    }
    let ended = tokio::time::timeout(WAIT, closed)
        .await
        .expect("lbd ended the connection")
        .expect("task");
    let err = ended.expect_err("the connection ends in an error");
    // GOAWAY ENHANCE_YOUR_CALM, or, when our writes were still going out as lbd closed, the
    // broken pipe that hides it; with the cap raised the connection does not end at all.
    assert!(
        err.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) || err.is_io(),
        "{err:?}"
    );
    // lbd itself is fine.
    assert_eq!(
        request(lbd.listen, "GET", "/", &[]).await.map(|r| r.status),
        Ok(200)
    );
}

/// Wait until the client may open another stream.
async fn futures_ready(
    client: &mut h2::client::SendRequest<bytes::Bytes>,
) -> Result<(), h2::Error> {
    std::future::poll_fn(|cx| client.poll_ready(cx)).await
}

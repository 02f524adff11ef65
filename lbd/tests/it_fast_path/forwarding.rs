//! Scenarios about who the client is and what it asked for: the forwarding headers the
//! backend receives from an untrusted and a trusted peer, the real client address behind
//! trusted proxies (rate-limit buckets, `ip_hash`, the access log), and path normalisation
//! before routing, rate limiting and the upstream request.
//!
//! Tests run on loopback, so a trusted proxy is simulated with
//! `trusted_proxies = ["127.0.0.0/8"]`: the test client is then a proxy whose
//! X-Forwarded-For lbd believes.

use super::*;

/// Every forwarding header a client can try to spoof, as request header lines.
const SPOOFED: &str = "X-Forwarded-For: 203.0.113.9, 127.0.0.5\r\n\
X-Real-IP: 6.6.6.6\r\n\
X-Forwarded-Proto: https\r\n\
x-forwarded-proto: HTTPS\r\n\
X-Forwarded-Host: evil.example\r\n\
X-Forwarded-Port: 443\r\n\
Forwarded: for=6.6.6.6;proto=https\r\n";

fn get_with(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test.local\r\n{extra}\r\n").into_bytes()
}

/// All values of `name` the backend received, in order.
fn values(m: &Message, name: &str) -> Vec<String> {
    m.headers
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .collect()
}

/// Send one request on a fresh connection and return the backend's view of it.
async fn seen_by_backend(lbd: &Lbd, web: &RawBackend, req: &[u8]) -> Message {
    let before = web.seen().len();
    let mut c = Wire::connect(lbd.listen).await;
    let r = c.exchange("request", "GET", req).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = web.seen();
    assert_eq!(seen.len(), before + 1, "one request reached the backend");
    seen[before].req.clone()
}

fn echo_backend() -> impl Fn(&Message, u64) -> Reply + Send + Sync + 'static {
    |req, _| Reply::KeepAlive(echo(req))
}

pub(crate) async fn an_untrusted_peers_forwarding_headers_are_replaced(global: &str) {
    let web = RawBackend::start(echo_backend()).await;
    let headers = "[headers]\nx_real_ip = true\nx_forwarded_port = true\n";
    let lbd = Lbd::start(&config(
        global,
        &format!("{headers}{}", raw_pool("web", &[web.addr])),
    ))
    .await;
    let m = seen_by_backend(&lbd, &web, &get_with("/", SPOOFED)).await;
    // Appended to, never replaced: the client's own claims stay on the left.
    assert_eq!(
        values(&m, "x-forwarded-for"),
        ["203.0.113.9, 127.0.0.5, 127.0.0.1"]
    );
    assert_eq!(values(&m, "x-real-ip"), ["127.0.0.1"]);
    assert_eq!(values(&m, "x-forwarded-proto"), ["http"]);
    assert_eq!(values(&m, "x-forwarded-host"), ["test.local"]);
    assert_eq!(
        values(&m, "x-forwarded-port"),
        [lbd.listen.port().to_string()]
    );
    assert!(values(&m, "forwarded").is_empty(), "{:?}", m.headers);
    drop(lbd);

    // With every added header switched off, the spoofed ones are still removed: no
    // configuration lets a plain-HTTP client claim https.
    let headers = "[headers]\nx_forwarded_proto = false\nx_forwarded_host = false\n";
    let lbd = Lbd::start(&config(
        global,
        &format!("{headers}{}", raw_pool("web", &[web.addr])),
    ))
    .await;
    let m = seen_by_backend(&lbd, &web, &get_with("/", SPOOFED)).await;
    for name in [
        "x-real-ip",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
        "forwarded",
    ] {
        assert!(values(&m, name).is_empty(), "{name}: {:?}", m.headers);
    }
    assert_stayed_on_the_fast_path(global, &lbd).await;
}

pub(crate) async fn a_trusted_proxys_forwarding_headers_are_kept_and_name_the_client(global: &str) {
    let web = RawBackend::start(echo_backend()).await;
    let headers = "[headers]\nx_real_ip = true\nx_forwarded_port = true\nforwarded = true\n\
                   trusted_proxies = [\"127.0.0.0/8\"]\n";
    let lbd = Lbd::start(&config(
        &format!("{global}\naccess_log = \"json\""),
        &format!("{headers}{}", raw_pool("web", &[web.addr])),
    ))
    .await;
    let m = seen_by_backend(&lbd, &web, &get_with("/", SPOOFED)).await;
    assert_eq!(
        values(&m, "x-forwarded-for"),
        ["203.0.113.9, 127.0.0.5, 127.0.0.1"]
    );
    // 127.0.0.1 and 127.0.0.5 are trusted: the client is the hop before them.
    assert_eq!(values(&m, "x-real-ip"), ["203.0.113.9"]);
    assert_eq!(values(&m, "x-forwarded-proto"), ["https", "HTTPS"]);
    assert_eq!(values(&m, "x-forwarded-host"), ["evil.example"]);
    assert_eq!(values(&m, "x-forwarded-port"), ["443"]);
    assert_eq!(
        values(&m, "forwarded"),
        ["for=6.6.6.6;proto=https, for=127.0.0.1;proto=http;host=\"test.local\""]
    );
    // The access log names the real client, and the peer it came through.
    eventually("an access log line", Duration::from_secs(5), || async {
        !lbd.access_log_text().is_empty()
    })
    .await;
    let text = lbd.access_log_text();
    let line: serde_json::Value =
        serde_json::from_str(text.lines().next().unwrap_or("")).expect("json line");
    assert_eq!(line["client"], "203.0.113.9", "{text}");
    assert!(
        line["peer"]
            .as_str()
            .unwrap_or("")
            .starts_with("127.0.0.1:"),
        "{text}"
    );
    assert_stayed_on_the_fast_path(global, &lbd).await;
}

/// The status of one request with `extra` header lines, on a fresh connection.
async fn status_of(lbd: &Lbd, path: &str, extra: &str) -> u16 {
    let mut c = Wire::connect(lbd.listen).await;
    c.exchange(path, "GET", &get_with(path, extra)).await.status
}

fn xff(ip: &str) -> String {
    format!("X-Forwarded-For: {ip}\r\n")
}

pub(crate) async fn rate_limits_key_on_the_real_client(global: &str) {
    let web = RawBackend::start(echo_backend()).await;
    // So slow that nothing refills during the test.
    let limit =
        "[[rate_limit]]\nname = \"per-client\"\nkey = \"client_ip\"\nrate = 0.001\nburst = 2\n";
    let trusted = "[headers]\ntrusted_proxies = [\"127.0.0.0/8\"]\n";
    let lbd = Lbd::start(&config(
        global,
        &format!("{trusted}{}{limit}", raw_pool("web", &[web.addr])),
    ))
    .await;
    // Two clients behind one trusted proxy: a bucket each.
    let a = xff("198.51.100.1");
    let b = xff("198.51.100.2");
    assert_eq!(status_of(&lbd, "/", &a).await, 200);
    assert_eq!(status_of(&lbd, "/", &a).await, 200);
    assert_eq!(
        status_of(&lbd, "/", &a).await,
        429,
        "client a's bucket is empty"
    );
    assert_eq!(status_of(&lbd, "/", &b).await, 200, "client b has its own");
    // The proxy itself (no X-Forwarded-For) is another client again.
    assert_eq!(status_of(&lbd, "/", "").await, 200);
    // IPv6: one /64 is one bucket.
    assert_eq!(status_of(&lbd, "/", &xff("2001:db8:0:1::1")).await, 200);
    assert_eq!(status_of(&lbd, "/", &xff("2001:db8:0:1::2")).await, 200);
    assert_eq!(
        status_of(&lbd, "/", &xff("2001:db8:0:1:ffff::3")).await,
        429,
        "the same /64"
    );
    assert_eq!(status_of(&lbd, "/", &xff("2001:db8:0:2::1")).await, 200);
    drop(lbd);

    // Without trusted proxies, X-Forwarded-For picks no bucket: it is all one client.
    let lbd = Lbd::start(&config(
        global,
        &format!("{}{limit}", raw_pool("web", &[web.addr])),
    ))
    .await;
    assert_eq!(status_of(&lbd, "/", &xff("198.51.100.1")).await, 200);
    assert_eq!(status_of(&lbd, "/", &xff("198.51.100.2")).await, 200);
    assert_eq!(status_of(&lbd, "/", &xff("198.51.100.3")).await, 429);
    assert_stayed_on_the_fast_path(global, &lbd).await;
}

pub(crate) async fn ip_hash_balances_by_the_real_client(global: &str) {
    let one = RawBackend::start(echo_backend()).await;
    let two = RawBackend::start(echo_backend()).await;
    let pool = raw_pool("web", &[one.addr, two.addr]).replacen(
        "\n[pool.passive]",
        "\nalgorithm = \"ip_hash\"\n[pool.passive]",
        1,
    );
    let trusted = "[headers]\ntrusted_proxies = [\"127.0.0.0/8\"]\n";
    let lbd = Lbd::start(&config(global, &format!("{trusted}{pool}"))).await;
    // Sixteen clients behind one proxy: hashed by the peer they would all land on one
    // backend; by the real client both get some (all on one: a 2^-15 chance).
    for round in 0..2 {
        for i in 0..16 {
            let ip = format!("198.51.100.{i}");
            let before = (one.seen().len(), two.seen().len());
            assert_eq!(status_of(&lbd, "/", &xff(&ip)).await, 200);
            let on_one = one.seen().len() > before.0;
            if round == 1 {
                // The same client goes to the same backend as in round 0.
                let first = one
                    .seen()
                    .iter()
                    .any(|s| s.req.header("x-forwarded-for") == Some(&*format!("{ip}, 127.0.0.1")));
                assert_eq!(on_one, first, "client {ip} moved");
            }
        }
    }
    assert!(
        !one.seen().is_empty() && !two.seen().is_empty(),
        "one backend got every client: {} / {}",
        one.seen().len(),
        two.seen().len()
    );
}

pub(crate) async fn paths_are_normalised_before_routing_and_rate_limits(global: &str) {
    let web = RawBackend::start(echo_backend()).await;
    let login = RawBackend::start(echo_backend()).await;
    let rest = format!(
        "{}{}\
         [[route]]\nname = \"login\"\npath_exact = \"/login\"\npool = \"login\"\n\
         [[rate_limit]]\nname = \"login\"\nkey = \"route\"\nrate = 0.001\nburst = 3\nroutes = [\"login\"]\n",
        raw_pool("web", &[web.addr]),
        raw_pool("login", &[login.addr]),
    );
    let lbd = Lbd::start(&config(global, &rest)).await;
    let mut c = Wire::connect(lbd.listen).await;
    for (sent, upstream) in [
        ("/x/../login", "/login"),
        ("/%6Cogin?next=/a/../b%2e", "/login?next=/a/../b%2e"),
        ("/./x/%2E%2e/login", "/login"),
    ] {
        let r = c.exchange(sent, "GET", &get_req(sent)).await;
        assert_eq!(r.status, 200, "{sent}: {}", r.text());
        assert_eq!(r.text(), echo_text("GET", upstream, 0), "{sent}");
    }
    // The route's limit counted all three.
    let r = c.exchange("4th", "GET", &get_req("/a/../login")).await;
    assert_eq!(r.status, 429);
    assert_eq!(
        login.targets(),
        ["/login", "/login?next=/a/../b%2e", "/login"]
    );
    // Other normalisations, on the default pool.
    for (sent, upstream) in [
        ("/../x", "/x"),
        ("/a/./b/../c/", "/a/c/"),
        ("/a%2fb%7e", "/a%2Fb~"),
        ("//a//b", "//a//b"),
    ] {
        let r = c.exchange(sent, "GET", &get_req(sent)).await;
        assert_eq!(r.text(), echo_text("GET", upstream, 0), "{sent}");
    }
    assert_eq!(web.targets(), ["/x", "/a/c/", "/a%2Fb~", "//a//b"]);
    // A malformed escape: 400, counted, nothing sent upstream.
    let mut c = Wire::connect(lbd.listen).await;
    let r = c.exchange("bad escape", "GET", &get_req("/a%zz")).await;
    assert_eq!(r.status, 400);
    assert_eq!(web.targets().len(), 4);
    let rejected = metric(
        lbd.admin,
        "lbd_proxy_errors_total{kind=\"bad_path\",side=\"client\"}",
    )
    .await;
    assert_eq!(rejected, Some(1.0));
    assert_stayed_on_the_fast_path(global, &lbd).await;
    drop(lbd);

    // The other policies: merged slashes, refused %2F.
    let lbd = Lbd::start(&config(
        global,
        &format!(
            "[paths]\nmerge_slashes = true\nencoded_slash = \"reject\"\n{}",
            raw_pool("web", &[web.addr])
        ),
    ))
    .await;
    let mut c = Wire::connect(lbd.listen).await;
    let r = c.exchange("merge", "GET", &get_req("//a//b/..//c")).await;
    assert_eq!(r.text(), echo_text("GET", "/a/c", 0));
    let r = c.exchange("%2F", "GET", &get_req("/a%2Fb")).await;
    assert_eq!(r.status, 400);
}

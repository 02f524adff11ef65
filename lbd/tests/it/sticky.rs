//! Sticky sessions against the real lbd: insert mode (lbd's signed cookie) and learn mode
//! (the application's session cookie), including re-pinning when the pinned backend goes away.

use crate::common;

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Round robin over three backends: without a pin, consecutive requests spread.
fn insert_config(backends: &[&TestBackend], extra_pool: &str) -> String {
    format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\n{}[pool.sticky]\nmode = \"insert\"\nttl_s = 600\n",
        pool("web", backends, extra_pool)
    )
}

/// The `LBSTICKY` value a response sets, if any.
fn sticky_cookie(r: &Resp) -> Option<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("LBSTICKY="))
        .map(|v| v.split(';').next().unwrap_or("").to_string())
}

fn set_cookie_line(r: &Resp) -> String {
    r.headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

async fn get_with_cookie(addr: SocketAddr, path: &str, cookie: &str) -> Resp {
    request(addr, "GET", path, &[("cookie", cookie)])
        .await
        .expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_mode_pins_rejects_forgeries_and_repins_after_a_failure() {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let c = TestBackend::start("c").await;
    let lbd = Lbd::start(&insert_config(&[&a, &b, &c], "")).await;
    eventually(
        "the per-process key warning",
        Duration::from_secs(5),
        || async { lbd.log_text().contains("no global.cookie_secret_file") },
    )
    .await;

    // Without a cookie round robin spreads, and every answer offers a cookie.
    let mut spread = HashSet::new();
    for _ in 0..6 {
        let r = get(lbd.listen, "/").await.expect("request");
        assert_eq!(r.status, 200);
        assert!(sticky_cookie(&r).is_some(), "no cookie offered: {r:?}");
        spread.insert(r.backend().to_string());
    }
    assert!(spread.len() >= 2, "round robin should spread: {spread:?}");

    let first = get(lbd.listen, "/").await.expect("request");
    let pinned = first.backend().to_string();
    let value = sticky_cookie(&first).expect("first response sets the cookie");
    let line = set_cookie_line(&first);
    for attr in ["Path=/", "Max-Age=600", "HttpOnly", "SameSite=Lax"] {
        assert!(line.contains(attr), "{attr} missing in {line:?}");
    }
    assert!(
        !line.contains("Secure"),
        "secure defaults to false: {line:?}"
    );

    let cookie = format!("other=1; LBSTICKY={value}");
    for i in 0..50 {
        let r = get_with_cookie(lbd.listen, "/pinned", &cookie).await;
        assert_eq!(
            (r.status, r.backend()),
            (200, pinned.as_str()),
            "request {i} left its pin"
        );
        assert_eq!(sticky_cookie(&r), None, "a valid pin is not re-issued");
    }

    // A tampered cookie is ignored: normal pick, and a fresh valid cookie for that backend.
    let mut forged = value.clone().into_bytes();
    forged[5] = if forged[5] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).expect("ascii");
    let mut landed = HashSet::new();
    for _ in 0..6 {
        let r = get_with_cookie(lbd.listen, "/", &format!("LBSTICKY={forged}")).await;
        let fresh = sticky_cookie(&r).expect("a forged cookie gets a fresh one");
        assert_ne!(fresh, forged);
        landed.insert(r.backend().to_string());
        let again = get_with_cookie(lbd.listen, "/", &format!("LBSTICKY={fresh}")).await;
        assert_eq!(again.backend(), r.backend(), "the fresh cookie pins");
    }
    assert!(
        landed.len() >= 2,
        "forged cookies must not pin anywhere: {landed:?}"
    );
    for garbage in ["", "x", "%%%", &"A".repeat(32), &"A".repeat(500)] {
        let r = get_with_cookie(lbd.listen, "/", &format!("LBSTICKY={garbage}")).await;
        assert_eq!(r.status, 200);
        assert!(sticky_cookie(&r).is_some());
    }

    // The pinned backend dies: its clients move to another backend and get a new cookie.
    let victim = [&a, &b, &c]
        .into_iter()
        .find(|t| t.name == pinned)
        .expect("pinned backend");
    victim.stop();
    let moved = get_with_cookie(lbd.listen, "/after", &cookie).await;
    assert_eq!(moved.status, 200, "the request is retried elsewhere");
    assert_ne!(moved.backend(), pinned);
    let new_value = sticky_cookie(&moved).expect("re-pinned with a new cookie");
    assert_ne!(new_value, value);
    for _ in 0..20 {
        let r = get_with_cookie(lbd.listen, "/after", &format!("LBSTICKY={new_value}")).await;
        assert_eq!(r.backend(), moved.backend(), "sticks to the new backend");
        // The old cookie keeps being moved while its backend is down.
        let old = get_with_cookie(lbd.listen, "/after", &cookie).await;
        assert_eq!(old.status, 200);
        assert_ne!(old.backend(), pinned);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_mode_follows_health_and_a_secret_file_survives_a_restart() {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let c = TestBackend::start("c").await;
    let health = "[pool.health]\nkind = \"http\"\npath = \"/healthz\"\ninterval_ms = 100\ntimeout_ms = 100\nfall = 1\nrise = 1\n";
    let secret_dir = tempfile::tempdir().expect("tempdir");
    let secret = secret_dir.path().join("cookie.key");
    std::fs::write(&secret, "an-example-shared-secret-of-32-bytes\n").expect("write key");
    let cfg = insert_config(&[&a, &b, &c], health).replacen(
        "#GLOBAL",
        &format!("#GLOBAL\ncookie_secret_file = \"{}\"", secret.display()),
        1,
    );
    let lbd = Lbd::start(&cfg).await;
    let first = get(lbd.listen, "/").await.expect("request");
    let pinned = first.backend().to_string();
    let value = sticky_cookie(&first).expect("cookie");
    let cookie = format!("LBSTICKY={value}");

    // Another lbd process with the same key file honours the cookie (a failover).
    let other = Lbd::start(&cfg).await;
    for _ in 0..10 {
        let r = get_with_cookie(other.listen, "/", &cookie).await;
        assert_eq!(r.backend(), pinned, "the peer node honours the cookie");
        assert_eq!(sticky_cookie(&r), None);
    }
    drop(other);

    let victim = [&a, &b, &c]
        .into_iter()
        .find(|t| t.name == pinned)
        .expect("pinned backend");
    victim.set_healthy(false);
    let up = format!("lbd_backend_up{{pool=\"web\",backend=\"{}\"}}", victim.addr);
    eventually(
        "the pinned backend is down",
        Duration::from_secs(5),
        || async { metric(lbd.admin, &up).await == Some(0.0) },
    )
    .await;
    let moved = get_with_cookie(lbd.listen, "/", &cookie).await;
    assert_ne!(moved.backend(), pinned);
    assert!(sticky_cookie(&moved).is_some(), "a new cookie is issued");
    // Back up: the old cookie is valid again (its backend is usable), so it sticks there.
    victim.set_healthy(true);
    eventually(
        "the pinned backend is back",
        Duration::from_secs(5),
        || async { metric(lbd.admin, &up).await == Some(1.0) },
    )
    .await;
    let r = get_with_cookie(lbd.listen, "/", &cookie).await;
    assert_eq!(r.backend(), pinned);

    // An operator drain moves pinned clients too, until the backend is undrained.
    let target = format!("pool=web&backend={}", victim.addr);
    let drained = request(
        lbd.admin,
        "POST",
        &format!("/backends/drain?{target}"),
        &[ADMIN_AUTH],
    )
    .await
    .expect("drain");
    assert_eq!(drained.status, 200, "{}", drained.body);
    for _ in 0..5 {
        let r = get_with_cookie(lbd.listen, "/", &cookie).await;
        assert_ne!(
            r.backend(),
            pinned,
            "a drained backend takes no pinned request"
        );
        assert!(sticky_cookie(&r).is_some());
    }
    let undrained = request(
        lbd.admin,
        "POST",
        &format!("/backends/undrain?{target}"),
        &[ADMIN_AUTH],
    )
    .await
    .expect("undrain");
    assert_eq!(undrained.status, 200, "{}", undrained.body);
    let r = get_with_cookie(lbd.listen, "/", &cookie).await;
    assert_eq!(r.backend(), pinned);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_metrics_count_pinned_requests() {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let lbd = Lbd::start(&insert_config(&[&a, &b], "")).await;
    let first = get(lbd.listen, "/").await.expect("request");
    let value = sticky_cookie(&first).expect("cookie");
    let pinned = if first.backend() == "a" { &a } else { &b };
    for _ in 0..30 {
        get_with_cookie(lbd.listen, "/", &format!("LBSTICKY={value}")).await;
    }
    let series = |name: &str| format!("{name}{{pool=\"web\",backend=\"{}\"}}", pinned.addr);
    let sticky = metric(lbd.admin, &series("lbd_backend_sticky_requests_total")).await;
    let total = metric(lbd.admin, &series("lbd_backend_requests_total")).await;
    assert_eq!(sticky, Some(30.0), "{}", metrics(lbd.admin).await);
    assert_eq!(total, Some(31.0));
}

/// A backend with an application session: `/login/ID` sets `JSESSIONID=ID`; every answer
/// names the backend; `/healthz` follows `healthy`.
#[derive(Clone)]
struct AppBackend {
    name: String,
    addr: SocketAddr,
    hits: Arc<AtomicU64>,
    healthy: Arc<AtomicBool>,
}

impl AppBackend {
    async fn start(name: &str) -> AppBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let me = AppBackend {
            name: name.to_string(),
            addr: listener.local_addr().expect("addr"),
            hits: Arc::default(),
            healthy: Arc::new(AtomicBool::new(true)),
        };
        let srv = me.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let srv = srv.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let srv = srv.clone();
                        async move { Ok::<_, Infallible>(srv.answer(req.uri().path())) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        me
    }

    fn answer(&self, path: &str) -> Response<Full<Bytes>> {
        let mut r = Response::new(Full::new(Bytes::from(format!("{}\n", self.name))));
        if path == "/healthz" {
            if !self.healthy.load(Ordering::SeqCst) {
                *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            }
            return r;
        }
        self.hits.fetch_add(1, Ordering::SeqCst);
        let h = r.headers_mut();
        h.insert("x-backend", self.name.parse().expect("value"));
        if let Some(id) = path.strip_prefix("/login/") {
            h.append("set-cookie", "theme=dark; Path=/".parse().expect("value"));
            h.append(
                "set-cookie",
                format!("JSESSIONID={id}; Path=/; HttpOnly")
                    .parse()
                    .expect("value"),
            );
        }
        r
    }

    fn set_healthy(&self, up: bool) {
        self.healthy.store(up, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learn_mode_follows_the_application_session() {
    let apps = [
        AppBackend::start("a").await,
        AppBackend::start("b").await,
        AppBackend::start("c").await,
    ];
    let mut body = "default_pool = \"app\"\n[global]\n#GLOBAL\n[[pool]]\nname = \"app\"\n\
        [pool.sticky]\nmode = \"learn\"\ncookie = \"JSESSIONID\"\nttl_s = 600\n\
        [pool.health]\nkind = \"http\"\npath = \"/healthz\"\ninterval_ms = 100\ntimeout_ms = 100\nfall = 1\nrise = 1\n"
        .to_string();
    for a in &apps {
        body.push_str(&format!("[[pool.backend]]\naddress = \"{}\"\n", a.addr));
    }
    let lbd = Lbd::start(&body).await;

    // Sessions the backends create: each sticks to the backend that created it, and
    // sessions land on different backends.
    let mut owners = Vec::new();
    for id in ["s1", "s2", "s3", "s4"] {
        let login = get(lbd.listen, &format!("/login/{id}"))
            .await
            .expect("login");
        assert_eq!(login.status, 200);
        owners.push((id, login.backend().to_string()));
    }
    let distinct: HashSet<&str> = owners.iter().map(|(_, o)| o.as_str()).collect();
    assert!(distinct.len() >= 2, "sessions spread: {owners:?}");
    for round in 0..10 {
        for (id, owner) in &owners {
            let r =
                get_with_cookie(lbd.listen, "/page", &format!("theme=dark; JSESSIONID={id}")).await;
            assert_eq!(r.backend(), owner, "session {id} round {round}");
        }
    }
    // Requests without the cookie, or with an unknown one, are balanced as usual...
    let spread: HashSet<String> = {
        let mut s = HashSet::new();
        for _ in 0..6 {
            s.insert(
                get(lbd.listen, "/")
                    .await
                    .expect("get")
                    .backend()
                    .to_string(),
            );
        }
        s
    };
    assert!(spread.len() >= 2, "{spread:?}");
    // ...and a session cookie the table didn't know is learned once served.
    let first = get_with_cookie(lbd.listen, "/", "JSESSIONID=client-made").await;
    for _ in 0..10 {
        let r = get_with_cookie(lbd.listen, "/", "JSESSIONID=client-made").await;
        assert_eq!(r.backend(), first.backend());
    }

    // The owner of s1 goes down: s1 moves, and the table follows the new backend, so the
    // session stays there even after the old owner returns.
    let (_, owner) = &owners[0];
    let victim = apps.iter().find(|a| &a.name == owner).expect("owner");
    victim.set_healthy(false);
    let up = format!("lbd_backend_up{{pool=\"app\",backend=\"{}\"}}", victim.addr);
    eventually("the owner is down", Duration::from_secs(5), || async {
        metric(lbd.admin, &up).await == Some(0.0)
    })
    .await;
    let moved = get_with_cookie(lbd.listen, "/page", "JSESSIONID=s1").await;
    assert_eq!(moved.status, 200);
    assert_ne!(moved.backend(), owner);
    let victim_hits = victim.hits.load(Ordering::SeqCst);
    victim.set_healthy(true);
    eventually("the owner is back", Duration::from_secs(5), || async {
        metric(lbd.admin, &up).await == Some(1.0)
    })
    .await;
    for _ in 0..10 {
        let r = get_with_cookie(lbd.listen, "/page", "JSESSIONID=s1").await;
        assert_eq!(
            r.backend(),
            moved.backend(),
            "re-learned on the new backend"
        );
    }
    assert_eq!(
        victim.hits.load(Ordering::SeqCst),
        victim_hits,
        "the old owner got none of s1's requests"
    );
}

/// A learn-mode pool under a flood of invented session ids: 8 KiB ids are served
/// but never learned, 200-byte ids fill the table only up to its byte bound (evicting each
/// other), and a session used twice before the flood keeps its backend throughout.
async fn learn_table_holds_its_bounds_under_a_session_id_flood(fast_path: bool) {
    let apps = [
        AppBackend::start("a").await,
        AppBackend::start("b").await,
        AppBackend::start("c").await,
    ];
    let mut body = format!(
        "default_pool = \"app\"\n[global]\n#GLOBAL\nhttp1_fast_path = {fast_path}\n\
         [[pool]]\nname = \"app\"\n[pool.sticky]\nmode = \"learn\"\ncookie = \"JSESSIONID\"\n\
         ttl_s = 600\nmax_entries = 1000\nmax_bytes = 65536\nmax_key_bytes = 256\n"
    );
    for a in &apps {
        body.push_str(&format!("[[pool.backend]]\naddress = \"{}\"\n", a.addr));
    }
    let lbd = Lbd::start(&body).await;
    let gauge = |name: &str| format!("{name}{{pool=\"app\"}}");

    let login = get(lbd.listen, "/login/established").await.expect("login");
    let owner = login.backend().to_string();
    let pinned = || async {
        get_with_cookie(lbd.listen, "/page", "JSESSIONID=established")
            .await
            .backend()
            .to_string()
    };
    assert_eq!(pinned().await, owner, "the second request confirms the pin");
    assert_eq!(
        metric(lbd.admin, &gauge("lbd_sticky_table_entries")).await,
        Some(1.0)
    );

    // 10,000 distinct 8 KiB session ids (under [limits] max_header_bytes = 16 KiB): each is
    // served, none is learned.
    let statuses = flood_keepalive(lbd.listen, 8, 10_000, "/", |i| {
        let id = format!("{i:08}{}", "L".repeat(8 * 1024 - 8));
        vec![("cookie".into(), format!("JSESSIONID={id}"))]
    })
    .await
    .expect("flood");
    assert_eq!(statuses.get(&200), Some(&10_000), "{statuses:?}");
    assert_eq!(
        metric(lbd.admin, "lbd_sticky_keys_too_long_total").await,
        Some(10_000.0)
    );
    assert_eq!(
        metric(lbd.admin, &gauge("lbd_sticky_table_entries")).await,
        Some(1.0),
        "no 8 KiB id was stored"
    );
    assert_eq!(pinned().await, owner);

    // 3,000 distinct 200-byte ids: learned, but only as many as 64 KiB holds.
    let statuses = flood_keepalive(lbd.listen, 8, 3_000, "/", |i| {
        let id = format!("{i:08}{}", "S".repeat(192));
        vec![("cookie".into(), format!("JSESSIONID={id}"))]
    })
    .await
    .expect("flood");
    assert_eq!(statuses.get(&200), Some(&3_000), "{statuses:?}");
    let text = metrics(lbd.admin).await;
    let value = |series: &str| {
        metric_in(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    let bytes = value(&gauge("lbd_sticky_table_bytes"));
    let entries = value(&gauge("lbd_sticky_table_entries"));
    assert!(bytes <= 65536.0, "{bytes} bytes over the bound");
    assert!(entries <= 1000.0, "{entries} entries over the bound");
    assert!(
        entries >= 60.0,
        "the table is used up to its byte bound: {entries}"
    );
    assert!(value("lbd_sticky_evictions_total") >= 3_000.0 - entries);
    for _ in 0..5 {
        assert_eq!(
            pinned().await,
            owner,
            "the established pin survived the flood"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learn_table_bounds_hold_under_a_flood_on_the_fast_path() {
    learn_table_holds_its_bounds_under_a_session_id_flood(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learn_table_bounds_hold_under_a_flood_on_the_hyper_path() {
    learn_table_holds_its_bounds_under_a_session_id_flood(false).await;
}

/// `global.soft_state_file`: learned pins, an emptied rate-limit bucket and a drain survive
/// a kill -9 of lbd, restarted with the same file.
async fn soft_state_survives_kill_9(fast_path: bool) {
    let apps = [
        AppBackend::start("a").await,
        AppBackend::start("b").await,
        AppBackend::start("c").await,
    ];
    let mut body = format!(
        "default_pool = \"app\"\n[global]\n#GLOBAL\nhttp1_fast_path = {fast_path}\n\
         soft_state_file = \"state/softstate\"\nsoft_state_flush_ms = 10\n\
         [[rate_limit]]\nname = \"api-key\"\nkey = \"header:x-api-key\"\nrate = 0.01\nburst = 2\n\
         [[pool]]\nname = \"app\"\n[pool.sticky]\nmode = \"learn\"\ncookie = \"JSESSIONID\"\nttl_s = 600\n"
    );
    for a in &apps {
        body.push_str(&format!("[[pool.backend]]\naddress = \"{}\"\n", a.addr));
    }
    // The state directory must exist and be private (lbd creates the file, not the
    // directory: a packaged install gets it from systemd's StateDirectory=).
    let (listen, admin) = two_free_addrs();
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("mkdir");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let mut lbd = Lbd::start_in(dir, listen, admin, &body).await;
    let file = state.join("softstate");
    let mode = std::fs::metadata(&file).expect("created at start").mode() & 0o777;
    assert_eq!(mode, 0o600, "created private");

    // c is drained first: the sessions land on a and b (a drained backend's sessions move).
    let drained = admin_post(
        lbd.admin,
        &format!("/backends/drain?pool=app&backend={}", apps[2].addr),
    )
    .await
    .expect("drain");
    assert_eq!(drained.status, 200, "{drained:?}");
    let mut owners = Vec::new();
    for i in 0..12 {
        let id = format!("s{i}");
        let login = get(lbd.listen, &format!("/login/{id}"))
            .await
            .expect("login");
        assert_eq!(login.status, 200);
        owners.push((id, login.backend().to_string()));
    }
    let distinct: HashSet<&str> = owners.iter().map(|(_, o)| o.as_str()).collect();
    assert!(distinct.len() >= 2, "sessions spread: {owners:?}");
    let api = |addr| async move {
        request(addr, "GET", "/", &[("x-api-key", "KEY-1")])
            .await
            .expect("request")
            .status
    };
    assert_eq!(api(lbd.listen).await, 200);
    assert_eq!(api(lbd.listen).await, 200);
    assert_eq!(api(lbd.listen).await, 429, "the bucket is empty");
    // Everything reached the file. Any flush that ends after `written` was read carries
    // every change made before it; one more change makes sure such a flush happens.
    let written = "lbd_soft_state_file_records_written_total";
    let before = metric(lbd.admin, written).await.unwrap_or(0.0);
    assert_eq!(
        get(lbd.listen, "/login/one-more")
            .await
            .expect("login")
            .status,
        200
    );
    eventually("the writer flushed", Duration::from_secs(5), || async {
        metric(lbd.admin, written).await.is_some_and(|n| n > before)
    })
    .await;

    lbd.kill9_and_restart().await;
    let loaded = metric(
        lbd.admin,
        "lbd_soft_state_file_loaded_records{outcome=\"merged\"}",
    )
    .await;
    assert!(loaded.is_some_and(|n| n >= 14.0), "loaded {loaded:?}");
    for (id, owner) in &owners {
        let r = get_with_cookie(lbd.listen, "/page", &format!("JSESSIONID={id}")).await;
        assert_eq!(
            r.backend(),
            owner,
            "session {id} kept its backend across the kill -9"
        );
    }
    assert_eq!(api(lbd.listen).await, 429, "the bucket is still empty");
    // The drain survived too: new clients never reach c.
    let before = apps[2].hits.load(Ordering::SeqCst);
    for _ in 0..9 {
        assert_eq!(get(lbd.listen, "/").await.expect("get").status, 200);
    }
    assert_eq!(
        apps[2].hits.load(Ordering::SeqCst),
        before,
        "c stays drained"
    );
    assert_eq!(
        metric(lbd.admin, "lbd_soft_state_file_write_errors_total").await,
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_state_survives_kill_9_on_the_fast_path() {
    soft_state_survives_kill_9(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_state_survives_kill_9_on_the_hyper_path() {
    soft_state_survives_kill_9(false).await;
}

/// A state file others can read is refused at start, naming the file and its mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_world_readable_state_file_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_mode(&dir.path().join("softstate"), "", 0o644);
    write_mode(&dir.path().join(ADMIN_TOKEN_FILE), ADMIN_TOKEN, 0o600);
    let (listen, admin) = two_free_addrs();
    let config = dir.path().join("lbd.toml");
    std::fs::write(
        &config,
        config_with(
            listen,
            admin,
            "default_pool = \"p\"\n[global]\n#GLOBAL\nsoft_state_file = \"softstate\"\n\
             [[pool]]\nname = \"p\"\n[[pool.backend]]\naddress = \"127.0.0.1:9\"\n",
        ),
    )
    .expect("config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lbd"))
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .expect("run lbd");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let shown = dir.path().join("softstate").display().to_string();
    assert!(
        err.contains(&format!("soft state file {shown}: has mode 0644")),
        "{err}"
    );
}

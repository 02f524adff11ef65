//! Sticky sessions: pin a client to a backend by cookie (pure, plus the soft-state calls).
//!
//! Two modes per pool (`[pool.sticky]`, [`crate::config::StickyConfig`]):
//!
//! - **insert**: lbd sets its own cookie naming the backend. The value is
//!   `base64url(token ‖ mac)`, 32 characters: `token` is 8 bytes, a stable hash of
//!   (pool name, backend address) ([`backend_token`]), and `mac` the first 16 bytes of
//!   HMAC-SHA256 over a context string, the pool name and the token, keyed with
//!   `global.cookie_secret_file` ([`CookieKey`]). The value carries no time: it is a pure
//!   function of (key, pool, backend), so both nodes with the same key file issue and accept
//!   the same cookies, and each backend's whole `Set-Cookie` header is built once per config
//!   snapshot ([`StickyRt::new`]) instead of per response. Expiry is the browser's
//!   (`Max-Age`); a replayed old cookie only pins to a backend, which is no secret. A
//!   forged, truncated or foreign cookie fails the MAC and is ignored like no cookie.
//!   lbd's cookie is forwarded to the backend untouched (stripping it would cost a header
//!   rewrite per request for no protection: the backend learns nothing it couldn't see in
//!   the response's `Set-Cookie`).
//! - **learn**: the application's session cookie (e.g. `JSESSIONID`) is looked up in the
//!   replicated sticky table ([`crate::softstate::SoftState::sticky_lookup`]). The table
//!   learns a value when a backend's response sets that cookie, and when a request carrying it
//!   was served (a value the table doesn't know yet, or one re-pinned after its backend went
//!   down); every served request re-learns its value, which keeps the entry's TTL running
//!   from its last use rather than its first. A cookie value longer than the pool's
//!   `max_key_bytes` is never looked up or learned (the request is balanced and served as if
//!   it had none; counted in `lbd_sticky_keys_too_long_total`): a client cannot grow the
//!   table with invented multi-kilobyte session ids.
//!
//! Either way a pin is only followed while the backend is usable (the balancer's own
//! eligibility test: healthy, not ejected, not drained, weight > 0, below `max_conns`, not
//! already tried); otherwise the pool's algorithm picks and the response re-pins (a fresh
//! cookie, or the table updated to the new backend).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hmac::{Hmac, Mac};
use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue};
use sha2::Sha256;

use crate::clock;
use crate::config::{StickyConfig, StickyMode};
use crate::softstate::SoftState;
use crate::upstream::backend::Backend;
use crate::upstream::balance::{find_cookie, hash};

type HmacSha256 = Hmac<Sha256>;

/// Bytes of the backend token in the cookie.
const TOKEN_LEN: usize = 8;
/// Bytes of the truncated MAC: 128 bits, beyond guessing even at line rate.
const MAC_LEN: usize = 16;
const RAW_LEN: usize = TOKEN_LEN + MAC_LEN;
/// Length of the cookie value: base64url, without padding, of the token and the MAC (24 bytes).
pub const VALUE_LEN: usize = RAW_LEN / 3 * 4;
/// Separates backend tokens from every other use of [`hash::stable_hash`].
const SEED_STICKY: u64 = 0x6c62_7374_6963_0003;
/// Domain separation: a MAC made for anything else never validates as a sticky cookie.
const MAC_CONTEXT: &[u8] = b"lbd sticky cookie v1\0";

/// The insert-mode cookie key: HMAC-SHA256 with the key already absorbed, cloned per use.
#[derive(Clone)]
pub struct CookieKey {
    mac: HmacSha256,
}

impl std::fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieKey(..)")
    }
}

/// HMAC rejected the key (it accepts any length, so this doesn't happen in practice).
#[derive(Debug, thiserror::Error)]
#[error("the cookie key cannot be used for HMAC-SHA256")]
pub struct BadKey;

impl CookieKey {
    pub fn new(secret: &[u8]) -> Result<CookieKey, BadKey> {
        let mac = <HmacSha256 as Mac>::new_from_slice(secret).map_err(|_| BadKey)?;
        Ok(CookieKey { mac })
    }

    /// This process's random key, for configs without `cookie_secret_file`: the same for the
    /// whole process (reloads keep honouring issued cookies), different on every start.
    pub fn process_random() -> Result<CookieKey, BadKey> {
        static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
        let secret = SECRET.get_or_init(rand::random);
        CookieKey::new(secret)
    }

    fn mac_for(&self, pool: &str, token: &[u8; TOKEN_LEN]) -> HmacSha256 {
        let mut m = self.mac.clone();
        m.update(MAC_CONTEXT);
        m.update(pool.as_bytes());
        m.update(&[0]);
        m.update(token);
        m
    }

    /// The cookie value naming backend `token` of `pool`.
    pub fn encode(&self, pool: &str, token: u64) -> String {
        let token = token.to_be_bytes();
        let tag = self.mac_for(pool, &token).finalize().into_bytes();
        let mut raw = [0u8; RAW_LEN];
        raw[..TOKEN_LEN].copy_from_slice(&token);
        raw[TOKEN_LEN..].copy_from_slice(&tag[..MAC_LEN]);
        base64url_encode(&raw)
    }

    /// The backend token a cookie value names, if its MAC is valid for `pool`.
    pub fn decode(&self, pool: &str, value: &[u8]) -> Option<u64> {
        let raw = base64url_decode::<RAW_LEN>(value)?;
        let mut token = [0u8; TOKEN_LEN];
        token.copy_from_slice(&raw[..TOKEN_LEN]);
        // Constant-time comparison of the truncated tag.
        self.mac_for(pool, &token)
            .verify_truncated_left(&raw[TOKEN_LEN..])
            .ok()?;
        Some(u64::from_be_bytes(token))
    }
}

/// A backend's identity in insert-mode cookies: stable across restarts, nodes and reorderings
/// of the pool, different per pool.
pub fn backend_token(pool: &str, addr: SocketAddr) -> u64 {
    let mut bytes = Vec::with_capacity(pool.len() + 48);
    bytes.extend_from_slice(pool.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(addr.to_string().as_bytes());
    hash::stable_hash(&bytes, SEED_STICKY)
}

/// `NAME=VALUE; Path=..; Max-Age=..; HttpOnly; Secure; SameSite=..`.
pub fn set_cookie_header(cfg: &StickyConfig, value: &str) -> Option<HeaderValue> {
    let mut s = format!(
        "{}={}; Path={}; Max-Age={}",
        cfg.cookie,
        value,
        cfg.path,
        cfg.ttl.as_secs()
    );
    if cfg.http_only {
        s.push_str("; HttpOnly");
    }
    if cfg.secure {
        s.push_str("; Secure");
    }
    s.push_str("; SameSite=");
    s.push_str(cfg.same_site.as_str());
    HeaderValue::from_str(&s).ok()
}

/// One pool's stickiness in a snapshot, with everything per backend precomputed.
#[derive(Debug)]
pub struct StickyRt {
    pub mode: StickyMode,
    /// The cookie name (lbd's in insert mode, the application's in learn mode).
    pub cookie: String,
    pub ttl: Duration,
    key: CookieKey,
    /// Insert: each backend's token, parallel to the pool's backends.
    tokens: Vec<u64>,
    /// Insert: each backend's complete `Set-Cookie` value.
    set_cookie: Vec<HeaderValue>,
    /// Learn: each backend's address as the table stores it.
    addrs: Vec<String>,
    /// Learn: the longest cookie value looked up or learned.
    max_key_bytes: usize,
}

/// What the request said about its pin.
#[derive(Debug, Default)]
pub struct RequestPin {
    /// The backend (index in the pool) the request is pinned to, if any backend of the pool
    /// matches; usability is checked by the caller.
    pub target: Option<usize>,
    /// Learn: the application cookie's value, to (re-)learn once served.
    pub learn_value: Option<Vec<u8>>,
    /// Learn: the request's cookie value was over `max_key_bytes` (not looked up).
    pub key_too_long: bool,
}

impl StickyRt {
    pub fn new(
        cfg: &StickyConfig,
        pool: &str,
        backends: &[Arc<Backend>],
        key: CookieKey,
    ) -> StickyRt {
        let (mut tokens, mut set_cookie, mut addrs) = (Vec::new(), Vec::new(), Vec::new());
        match cfg.mode {
            StickyMode::Insert => {
                for b in backends {
                    let token = backend_token(pool, b.addr);
                    let value = key.encode(pool, token);
                    // Cookie name and path are validated tokens, the value is base64url:
                    // always a valid header value.
                    set_cookie.push(
                        set_cookie_header(cfg, &value)
                            .unwrap_or_else(|| HeaderValue::from_static("")),
                    );
                    tokens.push(token);
                }
            }
            StickyMode::Learn => addrs = backends.iter().map(|b| b.addr.to_string()).collect(),
        }
        StickyRt {
            mode: cfg.mode,
            cookie: cfg.cookie.clone(),
            ttl: cfg.ttl,
            key,
            tokens,
            set_cookie,
            addrs,
            max_key_bytes: cfg.max_key_bytes,
        }
    }

    /// Insert mode: the backend a request's cookie validly names.
    pub fn insert_target(&self, pool: &str, headers: &HeaderMap) -> Option<usize> {
        let value = find_cookie(headers, &self.cookie)?;
        let token = self.key.decode(pool, value)?;
        self.tokens.iter().position(|&t| t == token)
    }

    /// Learn mode: the application cookie's value, if the request has a non-empty one.
    pub fn learn_value<'h>(&self, headers: &'h HeaderMap) -> Option<&'h [u8]> {
        if !headers.contains_key(COOKIE) {
            return None;
        }
        find_cookie(headers, &self.cookie).filter(|v| !v.is_empty())
    }

    /// Learn mode: the backend index for an address from the table.
    pub fn backend_of(&self, addr: &str) -> Option<usize> {
        self.addrs.iter().position(|a| a == addr)
    }

    /// Learn mode: the address the table stores for backend `index`.
    pub fn addr_of(&self, index: usize) -> Option<&str> {
        self.addrs.get(index).map(String::as_str)
    }

    /// Insert mode: the `Set-Cookie` for a response from backend `served`, unless the request
    /// already carried a valid cookie for it.
    pub fn insert_set_cookie(&self, pin: &RequestPin, served: usize) -> Option<&HeaderValue> {
        if pin.target == Some(served) {
            return None;
        }
        self.set_cookie.get(served).filter(|v| !v.is_empty())
    }

    /// The request's pin: insert mode checks the cookie's MAC, learn mode asks the table.
    pub fn request_pin(&self, pool: &str, headers: &HeaderMap, soft: &SoftState) -> RequestPin {
        match self.mode {
            StickyMode::Insert => RequestPin {
                target: self.insert_target(pool, headers),
                ..RequestPin::default()
            },
            StickyMode::Learn => match self.learn_value(headers) {
                None => RequestPin::default(),
                Some(value) if value.len() > self.max_key_bytes => RequestPin {
                    key_too_long: true,
                    ..RequestPin::default()
                },
                Some(value) => RequestPin {
                    target: soft
                        .sticky_lookup(pool, value, clock::now())
                        .and_then(|addr| self.backend_of(&addr)),
                    learn_value: Some(value.to_vec()),
                    key_too_long: false,
                },
            },
        }
    }

    /// Re-pin on the response from backend `served`: insert mode adds lbd's cookie unless the
    /// request already had a valid one for this backend; learn mode records a session cookie the
    /// backend set, else the one the request carried (a new session, a re-pin after its backend
    /// went away, or a refresh of the entry's TTL).
    pub fn on_response(
        &self,
        pool: &str,
        pin: Option<&RequestPin>,
        served: usize,
        headers: &mut HeaderMap,
        soft: &SoftState,
    ) {
        match self.mode {
            StickyMode::Insert => {
                let empty = RequestPin::default();
                if let Some(v) = self.insert_set_cookie(pin.unwrap_or(&empty), served) {
                    headers.append(SET_COOKIE, v.clone());
                }
            }
            StickyMode::Learn => {
                let Some(addr) = self.addr_of(served) else {
                    return;
                };
                let value = set_cookie_value(headers, &self.cookie)
                    .or_else(|| pin.and_then(|p| p.learn_value.as_deref()));
                match value {
                    Some(v) if v.len() <= self.max_key_bytes => {
                        soft.sticky_learn(pool, v, addr, self.ttl, clock::now());
                    }
                    Some(_) => soft.count_sticky_key_too_long(),
                    None if pin.is_some_and(|p| p.key_too_long) => {
                        soft.count_sticky_key_too_long();
                    }
                    None => {}
                }
            }
        }
    }
}

/// The value a response's `Set-Cookie` gives cookie `name` (the last one wins, as in a
/// browser); `None` when not set or set empty (a deletion).
pub fn set_cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    let name = name.as_bytes();
    headers
        .get_all(SET_COOKIE)
        .iter()
        .rev()
        .find_map(|v| {
            // RFC 6265 §5.2: the name-value pair is everything before the first ';'.
            let bytes = v.as_bytes();
            let pair = bytes.split(|&b| b == b';').next()?;
            let eq = pair.iter().position(|&b| b == b'=')?;
            if pair[..eq].trim_ascii() != name {
                return None;
            }
            let v = pair[eq + 1..].trim_ascii();
            Some(match v {
                [b'"', inner @ .., b'"'] => inner,
                _ => v,
            })
        })
        .filter(|v| !v.is_empty())
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// base64url without padding (RFC 4648 §5); input length a multiple of 3.
fn base64url_encode(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len().div_ceil(3) * 4);
    for chunk in raw.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(char::from(B64[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

fn b64_value(c: u8) -> Option<u32> {
    Some(u32::from(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => return None,
    }))
}

/// Exactly `N` bytes (N a multiple of 3) from unpadded base64url, else `None`.
fn base64url_decode<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if !N.is_multiple_of(3) || text.len() != N / 3 * 4 {
        return None;
    }
    let mut out = [0u8; N];
    for (chunk, dst) in text.chunks(4).zip(out.chunks_mut(3)) {
        let mut n = 0u32;
        for &c in chunk {
            n = n << 6 | b64_value(c)?;
        }
        dst[0] = (n >> 16) as u8;
        dst[1] = (n >> 8) as u8;
        dst[2] = n as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SameSite;

    fn cfg(mode: StickyMode) -> StickyConfig {
        StickyConfig {
            mode,
            cookie: "LBSTICKY".into(),
            ttl: Duration::from_secs(3600),
            secure: false,
            http_only: true,
            same_site: SameSite::Lax,
            path: "/".into(),
            max_entries: 10,
            max_bytes: 1 << 20,
            max_key_bytes: 64,
        }
    }

    fn key(k: &[u8]) -> CookieKey {
        CookieKey::new(k).expect("hmac takes any key")
    }

    #[test]
    fn base64url_round_trip_and_rejects() {
        let raw: [u8; 24] = std::array::from_fn(|i| (i * 37 + 250) as u8);
        let s = base64url_encode(&raw);
        assert_eq!(s.len(), VALUE_LEN);
        assert!(s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(base64url_decode::<24>(s.as_bytes()), Some(raw));
        assert_eq!(base64url_encode(b"\xfb\xff\xbf"), "-_-_");
        assert_eq!(base64url_decode::<24>(&s.as_bytes()[1..]), None);
        let mut bad = s.clone().into_bytes();
        bad[3] = b'+';
        assert_eq!(base64url_decode::<24>(&bad), None);
        assert_eq!(base64url_decode::<24>(b""), None);
    }

    #[test]
    fn cookie_round_trips_and_binds_key_pool_and_token() {
        let k = key(b"0123456789abcdef");
        let t = backend_token("web", "127.0.0.1:8080".parse().expect("addr"));
        let v = k.encode("web", t);
        assert_eq!(v.len(), VALUE_LEN);
        assert_eq!(k.decode("web", v.as_bytes()), Some(t));
        // Deterministic: another node with the same key issues the same value.
        assert_eq!(key(b"0123456789abcdef").encode("web", t), v);
        // Another key, another pool: rejected.
        assert_eq!(key(b"fedcba9876543210").decode("web", v.as_bytes()), None);
        assert_eq!(k.decode("api", v.as_bytes()), None);
        // Any flipped character is rejected.
        for i in 0..v.len() {
            let mut b = v.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            assert_eq!(k.decode("web", &b), None, "flip at {i}");
        }
        // A forged token with a MAC from another token is rejected.
        let other = k.encode("web", t ^ 1);
        // The first 12 characters are the token and one MAC byte.
        let forged = format!("{}{}", &other[..12], &v[12..]);
        assert_ne!(forged, v);
        assert_eq!(k.decode("web", forged.as_bytes()), None);
    }

    #[test]
    fn tokens_differ_per_pool_and_address() {
        let a: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let b: SocketAddr = "127.0.0.1:2".parse().expect("addr");
        assert_ne!(backend_token("web", a), backend_token("web", b));
        assert_ne!(backend_token("web", a), backend_token("api", a));
        assert_eq!(backend_token("web", a), backend_token("web", a));
    }

    fn backends(addrs: &[&str]) -> Vec<Arc<Backend>> {
        use crate::upstream::backend::{BackendId, BackendSpec};
        use crate::upstream::health::HealthTracker;
        addrs
            .iter()
            .enumerate()
            .map(|(i, a)| {
                Arc::new(Backend::new(
                    BackendId(i),
                    BackendSpec {
                        name: String::new(),
                        addr: a.parse().expect("addr"),
                        weight: 1,
                        max_conns: 0,
                    },
                    HealthTracker::default(),
                ))
            })
            .collect()
    }

    fn cookie_headers(cookie: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_str(cookie).expect("value"));
        h
    }

    #[test]
    fn insert_runtime_pins_by_cookie_and_reissues_only_when_needed() {
        let bs = backends(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]);
        let st = StickyRt::new(
            &cfg(StickyMode::Insert),
            "web",
            &bs,
            key(b"k".repeat(16).as_slice()),
        );
        // The Set-Cookie lbd issues for backend 2 pins a later request to backend 2.
        let issued = st
            .insert_set_cookie(&RequestPin::default(), 2)
            .expect("no cookie yet: issue one")
            .to_str()
            .expect("ascii")
            .to_string();
        let value = issued
            .strip_prefix("LBSTICKY=")
            .and_then(|v| v.split(';').next())
            .expect("name=value first");
        let h = cookie_headers(&format!("a=1; LBSTICKY={value}; b=2"));
        let target = st.insert_target("web", &h);
        assert_eq!(target, Some(2));
        let pin = RequestPin {
            target,
            ..RequestPin::default()
        };
        assert!(
            st.insert_set_cookie(&pin, 2).is_none(),
            "valid pin: no re-issue"
        );
        assert!(st.insert_set_cookie(&pin, 0).is_some(), "moved: re-pin");
        // The same cookie means nothing to another pool, or under another key.
        assert_eq!(st.insert_target("api", &h), None);
        let other = StickyRt::new(
            &cfg(StickyMode::Insert),
            "web",
            &bs,
            key(b"other key 123456"),
        );
        assert_eq!(other.insert_target("web", &h), None);
        // Reordering the pool keeps the pin on the same address.
        let reordered = backends(&["127.0.0.1:3", "127.0.0.1:1", "127.0.0.1:2"]);
        let st2 = StickyRt::new(
            &cfg(StickyMode::Insert),
            "web",
            &reordered,
            key(b"k".repeat(16).as_slice()),
        );
        assert_eq!(st2.insert_target("web", &h), Some(0));
        // No cookie, garbage: no pin.
        assert_eq!(st.insert_target("web", &HeaderMap::new()), None);
        assert_eq!(
            st.insert_target("web", &cookie_headers("LBSTICKY=zzz")),
            None
        );
    }

    #[test]
    fn learn_runtime_reads_the_application_cookie() {
        let bs = backends(&["127.0.0.1:1", "127.0.0.1:2"]);
        let mut c = cfg(StickyMode::Learn);
        c.cookie = "JSESSIONID".into();
        let st = StickyRt::new(&c, "app", &bs, key(b"0123456789abcdef"));
        let h = cookie_headers("theme=x; JSESSIONID=abc");
        assert_eq!(st.learn_value(&h), Some(&b"abc"[..]));
        assert_eq!(st.learn_value(&cookie_headers("JSESSIONID=")), None);
        assert_eq!(st.learn_value(&HeaderMap::new()), None);
        assert_eq!(st.backend_of("127.0.0.1:2"), Some(1));
        assert_eq!(st.backend_of("127.0.0.1:9"), None);
        assert_eq!(st.addr_of(0), Some("127.0.0.1:1"));
        // Learn mode never issues its own cookie.
        assert!(st.insert_set_cookie(&RequestPin::default(), 0).is_none());
    }

    #[test]
    fn learn_runtime_never_looks_up_or_learns_over_long_values() {
        let bs = backends(&["127.0.0.1:1", "127.0.0.1:2"]);
        let mut c = cfg(StickyMode::Learn);
        c.cookie = "S".into();
        let st = StickyRt::new(&c, "app", &bs, key(b"0123456789abcdef"));
        let soft = SoftState::new("a", crate::softstate::Limits::default());
        let long = format!("S={}", "x".repeat(65));
        let pin = st.request_pin("app", &cookie_headers(&long), &soft);
        assert!(pin.key_too_long && pin.target.is_none() && pin.learn_value.is_none());
        st.on_response("app", Some(&pin), 0, &mut HeaderMap::new(), &soft);
        // A backend setting an over-long value is not learned either.
        let mut set = HeaderMap::new();
        set.insert(SET_COOKIE, HeaderValue::from_str(&long).expect("value"));
        st.on_response("app", None, 1, &mut set, &soft);
        let (usage, counters) = soft.sticky_table();
        assert_eq!((usage.entries, counters.keys_too_long), (0, 2));
        // At the cap: learned, and the next request is pinned.
        let ok = format!("S={}", "x".repeat(64));
        let pin = st.request_pin("app", &cookie_headers(&ok), &soft);
        st.on_response("app", Some(&pin), 1, &mut HeaderMap::new(), &soft);
        let again = st.request_pin("app", &cookie_headers(&ok), &soft);
        assert_eq!(again.target, Some(1));
    }

    #[test]
    fn set_cookie_attributes() {
        let mut c = cfg(StickyMode::Insert);
        let h = set_cookie_header(&c, "abc").expect("valid");
        assert_eq!(
            h.to_str().expect("ascii"),
            "LBSTICKY=abc; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax"
        );
        c.secure = true;
        c.http_only = false;
        c.same_site = SameSite::None;
        c.path = "/app".into();
        let h = set_cookie_header(&c, "abc").expect("valid");
        assert_eq!(
            h.to_str().expect("ascii"),
            "LBSTICKY=abc; Path=/app; Max-Age=3600; Secure; SameSite=None"
        );
    }

    #[test]
    fn set_cookie_value_parsing() {
        let mut h = HeaderMap::new();
        h.append(SET_COOKIE, HeaderValue::from_static("other=1; Path=/"));
        assert_eq!(set_cookie_value(&h, "JSESSIONID"), None);
        h.append(
            SET_COOKIE,
            HeaderValue::from_static("JSESSIONID=abc123; Path=/; HttpOnly"),
        );
        assert_eq!(set_cookie_value(&h, "JSESSIONID"), Some(&b"abc123"[..]));
        h.append(SET_COOKIE, HeaderValue::from_static(" JSESSIONID = \"q\" "));
        assert_eq!(set_cookie_value(&h, "JSESSIONID"), Some(&b"q"[..]));
        h.append(
            SET_COOKIE,
            HeaderValue::from_static("JSESSIONID=; Max-Age=0"),
        );
        assert_eq!(set_cookie_value(&h, "JSESSIONID"), None);
        assert_eq!(set_cookie_value(&h, "jsessionid"), None);
    }
}

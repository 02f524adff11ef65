//! A tiny HTTP/1.1 backend for the pair scenarios:
//! `backend NAME ADDR:PORT [--session-cookie COOKIE]`.
//!
//! Every request gets `200 OK` with `x-backend: NAME` and the body `NAME\n`, on a
//! keep-alive connection (closed only when the client asks, or after an idle minute).
//! With `--session-cookie COOKIE` it behaves like an application server with sessions
//! (`JSESSIONID`): a request that doesn't carry `COOKIE` gets a new session,
//! `Set-Cookie: COOKIE=NAME.<boot>.<n>; Path=/`, unique across backends and restarts, which
//! is what lbd's sticky *learn* mode maps to this backend.
//! One thread per connection: the proxy keeps a handful of pooled connections open, so
//! that is a few threads, and plain std keeps this binary free of any runtime that could
//! itself be the cause of a measured gap.
//!
//! `GET /slow?ms=M&bytes=N` answers after M ms (at most 10 s) with a body of N bytes (at
//! most 1 MiB): a request that is still in flight while the VIP moves, whose body the client
//! can check to the last byte.
//!
//! The request body, if any, is read by `Content-Length` and discarded; chunked request
//! bodies aren't supported (the load client and lbd's health checks send none).
#![allow(clippy::disallowed_types)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest request head accepted, so a broken client can't make us buffer without bound.
const MAX_HEAD: usize = 16 * 1024;
const IDLE: Duration = Duration::from_secs(60);
/// Bounds on `/slow`, so a typo can't park a thread for an hour or allocate a gigabyte.
const MAX_SLOW: Duration = Duration::from_secs(10);
const MAX_SLOW_BODY: usize = 1 << 20;

/// What every connection's thread shares.
struct App {
    name: String,
    /// `--session-cookie`: the session cookie's name, if sessions are on.
    session_cookie: Option<String>,
    /// Distinguishes this run's sessions from an earlier run's (a restarted backend).
    boot: u64,
    next_session: AtomicU64,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(name), Some(addr)) = (args.first(), args.get(1)) else {
        eprintln!("usage: backend NAME ADDR:PORT [--session-cookie COOKIE]");
        std::process::exit(2);
    };
    let session_cookie = match args.get(2..).unwrap_or_default() {
        [] => None,
        [flag, cookie] if flag == "--session-cookie" && valid_token(cookie) => Some(cookie.clone()),
        rest => {
            eprintln!("backend: bad options {rest:?}: usage: backend NAME ADDR:PORT [--session-cookie COOKIE]");
            std::process::exit(2);
        }
    };
    let boot = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let app = Arc::new(App {
        name: name.clone(),
        session_cookie,
        boot,
        next_session: AtomicU64::new(1),
    });
    let addr: SocketAddr = match addr.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("backend: bad address {addr:?}: {e}");
            std::process::exit(2);
        }
    };
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("backend: cannot bind {addr}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("backend {name} listening on {addr}");
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                let app = Arc::clone(&app);
                // A connection's failure ends only that connection.
                let _ = thread::Builder::new().spawn(move || serve(stream, &app));
            }
            Err(e) => {
                eprintln!("backend: accept: {e}");
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Serves requests on one connection until the client closes it or asks to.
fn serve(stream: TcpStream, app: &App) {
    let name = app.name.as_str();
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(IDLE));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let plain = format!("{name}\n");
    loop {
        let Some(head) = read_head(&mut reader) else {
            return;
        };
        let content_length = header(&head, "content-length")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if content_length > 0 {
            let mut sink = std::io::sink();
            let mut body_reader = (&mut reader).take(content_length);
            if std::io::copy(&mut body_reader, &mut sink).ok() != Some(content_length) {
                return;
            }
        }
        let close = header(&head, "connection")
            .map(|v| v.eq_ignore_ascii_case("close"))
            .unwrap_or(false)
            || head.lines().next().is_some_and(|l| l.ends_with("HTTP/1.0"));
        let set_cookie = app
            .session_cookie
            .as_deref()
            .filter(|c| !has_cookie(&head, c))
            .map(|c| {
                let n = app.next_session.fetch_add(1, Ordering::Relaxed);
                format!(
                    "set-cookie: {c}={name}.{}.{n}; Path=/; HttpOnly\r\n",
                    app.boot
                )
            })
            .unwrap_or_default();
        let body = match slow_request(&head) {
            Some((delay, bytes)) => {
                thread::sleep(delay);
                "x".repeat(bytes)
            }
            None => plain.clone(),
        };
        let response = format!(
            "HTTP/1.1 200 OK\r\nx-backend: {name}\r\ncontent-type: text/plain\r\n\
             content-length: {}\r\n{set_cookie}{}\r\n{body}",
            body.len(),
            if close { "connection: close\r\n" } else { "" }
        );
        if writer.write_all(response.as_bytes()).is_err() || close {
            return;
        }
    }
}

/// `GET /slow?ms=M&bytes=N`: the delay and body size asked for (bounded).
fn slow_request(head: &str) -> Option<(Duration, usize)> {
    let target = head.lines().next()?.split_whitespace().nth(1)?;
    let query = target
        .strip_prefix("/slow")?
        .strip_prefix('?')
        .unwrap_or("");
    let mut delay = Duration::ZERO;
    let mut bytes = 1;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("ms", v)) => delay = Duration::from_millis(v.parse().ok()?),
            Some(("bytes", v)) => bytes = v.parse().ok()?,
            _ => {}
        }
    }
    Some((delay.min(MAX_SLOW), bytes.min(MAX_SLOW_BODY)))
}

/// Reads one request head (up to the blank line); `None` on EOF, error or oversize.
fn read_head(reader: &mut BufReader<TcpStream>) -> Option<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).ok()?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return None;
        }
        if line == "\r\n" || line == "\n" {
            if head.is_empty() {
                // Tolerate stray blank lines between requests (RFC 9112 §2.2).
                continue;
            }
            return Some(head);
        }
        head.push_str(&line);
    }
}

/// The value of header `name` (case-insensitive) in a request head.
fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Whether the request carries cookie `name` (in any of its `Cookie` headers).
fn has_cookie(head: &str, name: &str) -> bool {
    head.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case("cookie"))
        .flat_map(|(_, v)| v.split(';'))
        .any(|pair| pair.split_once('=').is_some_and(|(k, _)| k.trim() == name))
}

/// A cookie name we can put in a header unquoted (RFC 6265 token, conservatively).
fn valid_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

//! A tiny HTTP/1.1 backend for the pair scenarios: `backend NAME ADDR:PORT`.
//!
//! Every request gets `200 OK` with `x-backend: NAME` and the body `NAME\n`, on a
//! keep-alive connection (closed only when the client asks, or after an idle minute).
//! One thread per connection: the proxy keeps a handful of pooled connections open, so
//! that is a few threads, and plain std keeps this binary free of any runtime that could
//! itself be the cause of a measured gap.
//!
//! The request body, if any, is read by `Content-Length` and discarded; chunked request
//! bodies aren't supported (the load client and lbd's health checks send none).
#![allow(clippy::disallowed_types)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

/// Longest request head accepted, so a broken client can't make us buffer without bound.
const MAX_HEAD: usize = 16 * 1024;
const IDLE: Duration = Duration::from_secs(60);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(name), Some(addr)) = (args.first(), args.get(1)) else {
        eprintln!("usage: backend NAME ADDR:PORT");
        std::process::exit(2);
    };
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
                let name = name.clone();
                // A connection's failure ends only that connection.
                let _ = thread::Builder::new().spawn(move || serve(stream, &name));
            }
            Err(e) => {
                eprintln!("backend: accept: {e}");
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Serves requests on one connection until the client closes it or asks to.
fn serve(stream: TcpStream, name: &str) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(IDLE));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let body = format!("{name}\n");
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
        let response = format!(
            "HTTP/1.1 200 OK\r\nx-backend: {name}\r\ncontent-type: text/plain\r\n\
             content-length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "connection: close\r\n" } else { "" }
        );
        if writer.write_all(response.as_bytes()).is_err() || close {
            return;
        }
    }
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

//! A TCP relay that adds a fixed one-way delay in each direction: the peer-link fault runs'
//! stand-in for `tc netem delay`, which this kernel does not have (no sch_netem).
//!
//! ```text
//! tcpdelay LISTEN_ADDR TARGET_ADDR DELAY_MS
//! ```
//!
//! Every accepted connection gets its own connection to the target. Each direction is a
//! reader thread that stamps every chunk it reads with `now + delay` and a writer thread
//! that writes it at that time, so bytes keep their order and each arrives `delay` late
//! (the round trip grows by twice the delay), whatever the traffic. The queue between them is
//! bounded, so a slow receiver slows the sender as TCP would. The delay is at the byte-stream
//! level, not per packet: loss is added separately (nftables) on the link itself.
//!
//! Runs until killed; the test topology kills it by PID with everything else it started.
#![allow(clippy::disallowed_types)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread;
use std::time::{Duration, Instant};

/// Chunks in flight per direction before the reader blocks (backpressure).
const QUEUE: usize = 1024;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [listen, target, delay] => listen
            .parse::<SocketAddr>()
            .ok()
            .zip(target.parse::<SocketAddr>().ok())
            .zip(delay.parse::<u64>().ok()),
        _ => None,
    };
    let Some(((listen, target), delay_ms)) = parsed else {
        eprintln!("usage: tcpdelay LISTEN_ADDR TARGET_ADDR DELAY_MS");
        std::process::exit(2);
    };
    let listener = match TcpListener::bind(listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tcpdelay: bind {listen}: {e}");
            std::process::exit(1);
        }
    };
    let delay = Duration::from_millis(delay_ms);
    eprintln!("tcpdelay: {listen} -> {target}, {delay_ms} ms each way");
    for conn in listener.incoming() {
        let Ok(client) = conn else { continue };
        thread::spawn(move || relay(client, target, delay));
    }
}

fn relay(client: TcpStream, target: SocketAddr, delay: Duration) {
    let server = match TcpStream::connect_timeout(&target, Duration::from_secs(2)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tcpdelay: connect {target}: {e}");
            return;
        }
    };
    for s in [&client, &server] {
        let _ = s.set_nodelay(true);
    }
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let a = thread::spawn(move || direction(client, s2, delay));
    direction(server, c2, delay);
    let _ = a.join();
}

/// Copy `from` to `to`, each chunk `delay` late. Ends both sockets when either side ends.
fn direction(from: TcpStream, to: TcpStream, delay: Duration) {
    let (tx, rx) = sync_channel::<(Instant, Vec<u8>)>(QUEUE);
    let Ok(to_for_writer) = to.try_clone() else {
        return;
    };
    let writer = thread::spawn(move || write_delayed(rx, to_for_writer, delay));
    read_stamped(&from, &tx);
    drop(tx);
    let _ = writer.join();
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

fn read_stamped(mut from: &TcpStream, tx: &SyncSender<(Instant, Vec<u8>)>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                    return;
                }
            }
        }
    }
}

fn write_delayed(rx: Receiver<(Instant, Vec<u8>)>, mut to: TcpStream, delay: Duration) {
    for (read_at, chunk) in rx {
        let due = read_at + delay;
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
        if to.write_all(&chunk).is_err() {
            return;
        }
    }
}

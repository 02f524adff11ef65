#!/usr/bin/env python3
"""Idle keep-alive clients for scripts/bench-idle-conns.sh.

Opens --conns connections to 127.0.0.1:--port, at most --concurrency at a time. Each sends ONE
request (GET / HTTP/1.1, keep-alive), reads the whole response (status 200, Content-Length
framing), and then sits idle, watching only for the proxy closing it. When every connection is
open or has failed, prints one line:

    ready opened=N answered=N failed_connect=N failed_response=N not_tried=N open=N seconds=S

then holds the connections until SIGTERM / SIGINT (or --hold-max seconds), prints

    done open=N closed_by_peer=N

and closes them all with RST (SO_LINGER 0: no TIME_WAIT left on the client's ports).
--tls: each connection is TLS (any certificate accepted), the request goes over it
(scripts/bench-tls.sh's memory per idle TLS connection).
--hold-max 0 closes right after the ready line (a warm-up). Every wait is bounded: the connect
and the response by --timeout each, the opening phase by --deadline, the hold by --hold-max.
After --give-up failed connections (default: --concurrency, one wave) no new ones are started
(not_tried): a proxy at its connection limit leaves the rest unanswered, and waiting for each
would let the connections already held reach the proxy's idle timeout before being measured.
"""

import argparse
import asyncio
import resource
import signal
import socket
import ssl
import struct
import sys
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--conns", type=int, required=True)
    p.add_argument("--concurrency", type=int, default=500)
    p.add_argument("--timeout", type=float, default=5.0, help="per connect, and per response")
    p.add_argument("--deadline", type=float, default=120.0, help="for opening all connections")
    p.add_argument("--hold-max", type=float, default=300.0)
    p.add_argument("--give-up", type=int, default=0, help="failures before no new connections (0: --concurrency)")
    p.add_argument("--tls", action="store_true", help="TLS connections (no certificate check)")
    a = p.parse_args()
    if a.give_up <= 0:
        a.give_up = a.concurrency
    if not (1 <= a.conns <= 100000 and 1 <= a.concurrency <= 10000):
        p.error("--conns must be 1..100000, --concurrency 1..10000")
    return a


class Stats:
    def __init__(self):
        self.opened = 0
        self.answered = 0
        self.failed_connect = 0
        self.failed_response = 0
        self.open = 0
        self.closed_by_peer = 0
        self.not_tried = 0

    def failed(self):
        return self.failed_connect + self.failed_response


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or status[1] != "200":
        raise ValueError(f"status line {lines[0]!r}")
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    if length is None:
        raise ValueError("no Content-Length")
    await reader.readexactly(length)


async def watch(reader, stats):
    """Until the proxy closes the connection (or the task is cancelled at the end)."""
    try:
        data = await reader.read(1)
    except (ConnectionError, OSError):
        data = b""
    if not data:
        stats.open -= 1
        stats.closed_by_peer += 1


# Clients come from 200 loopback source addresses (127.0.1.1 .. 127.0.1.200): browsers and
# phones are many addresses, and lbd's shipped max_conns_per_client (1000) would otherwise
# refuse all but the first 1000 connections from 127.0.0.1.
SOURCES = [f"127.0.1.{i}" for i in range(1, 201)]


def tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


async def one(args, stats, gate, held, request, index):
    source = SOURCES[index % len(SOURCES)]
    async with gate:
        if stats.failed() >= args.give_up:
            stats.not_tried += 1
            return
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", args.port, local_addr=(source, 0),
                                        ssl=args.ssl, server_hostname="bench.test" if args.ssl else None),
                args.timeout,
            )
        except (OSError, asyncio.TimeoutError):
            stats.failed_connect += 1
            return
        stats.opened += 1
        try:
            writer.write(request)
            await asyncio.wait_for(read_response(reader), args.timeout)
        except (OSError, ValueError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError):
            stats.failed_response += 1
            abort(writer)
            return
    stats.answered += 1
    stats.open += 1
    held.append((writer, asyncio.ensure_future(watch(reader, stats))))


def abort(writer):
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


async def main():
    args = parse_args()
    args.ssl = tls_context() if args.tls else None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    stats = Stats()
    gate = asyncio.Semaphore(args.concurrency)
    held = []
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: idle-conns\r\n\r\n"
    start = time.monotonic()
    tasks = [asyncio.ensure_future(one(args, stats, gate, held, request, i)) for i in range(args.conns)]
    done, pending = await asyncio.wait(tasks, timeout=args.deadline)
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.wait(pending, timeout=args.timeout)
    print(f"ready opened={stats.opened} answered={stats.answered} "
          f"failed_connect={stats.failed_connect} failed_response={stats.failed_response} "
          f"not_tried={stats.not_tried} "
          f"open={stats.open} seconds={time.monotonic() - start:.2f}"
          + (f" unfinished={len(pending)}" if pending else ""), flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.hold_max > 0:
        try:
            await asyncio.wait_for(stop.wait(), args.hold_max)
        except asyncio.TimeoutError:
            pass
    print(f"done open={stats.open} closed_by_peer={stats.closed_by_peer}", flush=True)
    for writer, watcher in held:
        watcher.cancel()
        abort(writer)
    await asyncio.sleep(0)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)

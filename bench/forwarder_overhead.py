"""Benchmark: what the owner-only forwarder of `seamless-stack tunnel` costs, and that the cost
does not grow with the machine's socket table. A tiny local HTTP/1.1 server is reached
directly and through the forwarder (hashserver route: the secret added to every request),
each in a process of its own as in real use, in interleaved batches (this machine is noisy):

  - per request:    median latency of REQUESTS keep-alive GETs on one connection
                    (`http.client`), direct and via the forwarder;
  - per connection: median of CONNECTIONS x (new connection + first request + close): the
                    forwarder's admission (sock_diag lookups) and its upstream connection;
  - lookup:         one sock_diag lookup of a live connection, and the /proc/net/tcp
                    fallback for comparison;

once with the socket table as it is and once crowded with TIME_WAIT rows (loopback
connections closed by the client side first, which is the side that keeps TIME_WAIT for
60 s). Prints the figures and `ratio forwarder/direct` (per request, crowded table).

Unlike the other benchmarks it drives a module (`seamless_stack.forward`), not the CLI:
the forwarder has no CLI of its own outside `tunnel`, which needs a stack.

    .venv/bin/python -m bench.forwarder_overhead [--requests 2000] [--connections 300] [--time-wait 5000]
    .venv/bin/python -m bench.forwarder_overhead --smoke     # 200 requests, 30 connections, 500 TIME_WAIT rows
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import multiprocessing
import os
import socket
import statistics
import time

from bench.common import log
from seamless_stack.forward import Forwarder, Route
from seamless_stack.peer import peer_owner, proc_net_tcp_owner

BATCHES = 10  # interleaved batches per measurement; the side that goes first alternates


def _upstream(conn) -> None:
    """A keep-alive HTTP/1.1 server answering every request head with a 2-byte body."""
    async def serve(reader, writer):
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main():
        server = await asyncio.start_server(serve, "127.0.0.1", 0, backlog=1024)
        conn.send(server.sockets[0].getsockname()[1])
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # until told to stop

    asyncio.run(main())


def _forwarder(conn, listen: int, upstream: int) -> None:
    forwarder = Forwarder([Route("hashserver", listen, ("127.0.0.1", upstream), secret="bench")]).start()
    conn.send("ready")
    conn.recv()  # until told to stop
    conn.send((forwarder.refused, forwarder.forbidden))
    forwarder.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def table_rows() -> tuple[int, int]:
    """(TIME_WAIT rows, all rows) of /proc/net/tcp and tcp6."""
    time_wait = total = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        total += len(rows)
        time_wait += sum(1 for row in rows if row.split()[3] == "06")
    return time_wait, total


def crowd(count: int) -> None:
    """COUNT TIME_WAIT rows on loopback: the client closes first, the server then answers
    the FIN, so the client's side sits in TIME_WAIT (60 s on Linux)."""
    with socket.create_server(("127.0.0.1", 0), backlog=128) as server:
        address = server.getsockname()
        for _ in range(count):
            client = socket.create_connection(address, timeout=10)
            accepted, _ = server.accept()
            client.close()
            accepted.settimeout(10)
            accepted.recv(1)  # the client's FIN
            accepted.close()


def per_request(port: int, count: int) -> list[float]:
    """Seconds per GET, COUNT of them on one keep-alive connection (opened untimed)."""
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    samples = []
    try:
        client.request("GET", "/warm")
        client.getresponse().read()
        for _ in range(count):
            start = time.perf_counter()
            client.request("GET", "/healthcheck")
            response = client.getresponse()
            response.read()
            samples.append(time.perf_counter() - start)
            if response.status != 200:
                raise SystemExit(f"got {response.status} from port {port}")
    finally:
        client.close()
    return samples


def per_connection(port: int, count: int) -> list[float]:
    """Seconds for a new connection, its first request and its close, COUNT times."""
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        client.request("GET", "/healthcheck")
        response = client.getresponse()
        response.read()
        client.close()
        samples.append(time.perf_counter() - start)
        if response.status != 200:
            raise SystemExit(f"got {response.status} from port {port}")
    return samples


def interleaved(measure, direct: int, via: int, count: int) -> tuple[list[float], list[float]]:
    """Samples of MEASURE against both ports, in BATCHES batches, alternating which goes first."""
    first, second = [], []
    per_batch = max(1, count // BATCHES)
    for batch in range(BATCHES):
        order = [(direct, first), (via, second)]
        for port, samples in (order if batch % 2 == 0 else reversed(order)):
            samples.extend(measure(port, per_batch))
    return first, second


def lookup_times(count: int) -> tuple[float, float]:
    """Median seconds of one sock_diag lookup and one /proc/net/tcp fallback lookup, of a live
    loopback connection, and a check that both name us."""
    with socket.create_server(("127.0.0.1", 0)) as server, socket.create_connection(server.getsockname()):
        accepted, peer = server.accept()
        with accepted:
            listen = server.getsockname()[1]
            times = {}
            for name, lookup in (("sock_diag", peer_owner), ("proc", proc_net_tcp_owner)):
                samples = []
                for _ in range(count):
                    start = time.perf_counter()
                    uid = lookup(peer, listen)
                    samples.append(time.perf_counter() - start)
                if uid != os.getuid():
                    raise SystemExit(f"{name} lookup named UID {uid}")
                times[name] = statistics.median(samples)
    return times["sock_diag"], times["proc"]


def measure(label: str, direct: int, via: int, args: argparse.Namespace) -> float:
    """Print one table state's figures; return via/direct per request."""
    time_wait, rows = table_rows()
    log(f"{label}: {time_wait} TIME_WAIT rows of {rows}")
    d_req, v_req = interleaved(per_request, direct, via, args.requests)
    d_con, v_con = interleaved(per_connection, direct, via, args.connections)
    diag, proc = lookup_times(min(args.requests, 500))
    ms = lambda samples: statistics.median(samples) * 1000  # noqa: E731
    print(f"{label} ({time_wait} TIME_WAIT rows, {rows} rows in all):")
    print(f"  forwarder overhead per request: {ms(v_req) - ms(d_req):.3f} ms "
          f"(direct {ms(d_req):.3f} ms, via forwarder {ms(v_req):.3f} ms) at {time_wait} TIME_WAIT rows")
    print(f"  forwarder admission per connection (connect + first request + close): {ms(v_con) - ms(d_con):.3f} ms "
          f"(direct {ms(d_con):.3f} ms, via forwarder {ms(v_con):.3f} ms) at {time_wait} TIME_WAIT rows")
    print(f"  one peer lookup: sock_diag {diag * 1e6:.0f} us, /proc/net/tcp fallback {proc * 1e6:.0f} us", flush=True)
    return statistics.median(v_req) / statistics.median(d_req)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="keep-alive requests per side and table state")
    parser.add_argument("--connections", type=int, default=300, help="new connections per side and table state")
    parser.add_argument("--time-wait", type=int, default=5000, help="TIME_WAIT rows to add for the crowded table")
    parser.add_argument("--smoke", action="store_true", help="200 requests, 30 connections, 500 TIME_WAIT rows")
    args = parser.parse_args(argv)
    if args.smoke:
        args.requests, args.connections, args.time_wait = 200, 30, 500
    for name in ("requests", "connections", "time_wait"):
        if not 1 <= getattr(args, name) <= 20000:
            parser.error(f"--{name.replace('_', '-')} must be in 1..20000")

    context = multiprocessing.get_context("fork")  # before this process has any thread
    up_conn, up_child = context.Pipe()
    upstream = context.Process(target=_upstream, args=(up_child,), daemon=True)
    upstream.start()
    fw_conn = None
    forwarder = None
    try:
        if not up_conn.poll(30):
            raise SystemExit("the upstream server did not start")
        direct = up_conn.recv()
        via = free_port()
        fw_conn, fw_child = context.Pipe()
        forwarder = context.Process(target=_forwarder, args=(fw_child, via, direct), daemon=True)
        forwarder.start()
        if not fw_conn.poll(30):
            raise SystemExit("the forwarder did not start")
        fw_conn.recv()
        log(f"upstream on {direct}, forwarder on {via}")

        measure("socket table as it is", direct, via, args)
        log(f"adding {args.time_wait} TIME_WAIT rows")
        crowd(args.time_wait)
        ratio = measure(f"after {args.time_wait} more TIME_WAIT rows", direct, via, args)

        fw_conn.send("stop")
        if fw_conn.poll(30):
            refused, forbidden = fw_conn.recv()
            if refused or forbidden:
                raise SystemExit(f"the forwarder refused {refused} and forbade {forbidden} of our requests")
        print(f"ratio forwarder/direct  {ratio:.2f}", flush=True)
    finally:
        for conn, process in ((fw_conn, forwarder), (up_conn, upstream)):
            if process is None:
                continue
            try:
                conn.send("stop")
            except OSError:
                pass
            process.join(10)
            if process.is_alive():
                process.terminate()
                process.join(10)


if __name__ == "__main__":
    main()

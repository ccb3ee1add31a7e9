"""The configuration route's forwarder: owner-only admission by the kernel's record of the
client's socket (sock_diag, /proc/net/tcp as the fallback), keep-alive HTTP with the secret
in every request head, browser-shaped requests refused. Real sockets on 127.0.0.1, a real
HTTP/1.1 upstream server."""

import asyncio
import base64
import errno
import http.client
import os
import socket
import ssl
import subprocess
import struct
import threading
import time
from dataclasses import dataclass

import pytest

from seamless_stack.forward import Forwarder, Route, forbidden
from seamless_stack.http_framing import HEAD_LIMIT, BadRequest, parse_head
from seamless_stack.peer import (DiagSocket, diag_reply, diag_request, owner_of, peer_owner, proc_net_tcp_owner,
                                 sock_diag_available)

TOKEN = b"Basic " + base64.b64encode(b"seamless:s3cret")


def wait_for(predicate, timeout: float = 10, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


# --- sock_diag messages, hand-built ---------------------------------------------------------

def test_the_request_names_the_clients_socket_by_its_4_tuple():
    request = diag_request(("127.0.0.1", 0xD431), 0x1F90, seq=7)
    expected = (struct.pack("=IHHII", 72, 20, 1, 7, 0)  # nlmsghdr: SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST
                + bytes([socket.AF_INET, socket.IPPROTO_TCP, 0, 0]) + struct.pack("=I", 1 << 1)  # ESTABLISHED only
                + b"\xd4\x31" + b"\x1f\x90"  # client port as source, listen port as destination (big-endian)
                + b"\x7f\x00\x00\x01" + bytes(12) + b"\x7f\x00\x00\x01" + bytes(12)
                + bytes(4) + b"\xff" * 8)  # any interface, no cookie
    assert request == expected
    v6 = diag_request(("::1", 0xD431, 0, 0), 0x1F90)
    assert v6[16] == socket.AF_INET6 and v6[28:44] == socket.inet_pton(socket.AF_INET6, "::1")
    assert diag_request(("::ffff:127.0.0.1", 0xD431, 0, 0), 0x1F90) == diag_request(("127.0.0.1", 0xD431), 0x1F90), \
        "an IPv4-mapped peer is looked up as IPv4"


def diag_message(state: int, uid: int, inode: int, sport: int = 0xD431, dport: int = 0x1F90, seq: int = 1) -> bytes:
    loopback = b"\x7f\x00\x00\x01" + bytes(12)
    body = (bytes([socket.AF_INET, state, 0, 0]) + struct.pack("!HH", sport, dport) + loopback + loopback
            + struct.pack("=I", 0) + struct.pack("=II", 0x1234, 0x5678)  # interface, cookie
            + struct.pack("=IIIII", 0, 0, 0, uid, inode)
            + struct.pack("=HH", 8, 8) + bytes(4))  # an attribute, as the kernel adds some
    return struct.pack("=IHHII", 16 + len(body), 20, 0, seq, 4242) + body


def netlink_error(code: int, seq: int = 1) -> bytes:
    return struct.pack("=IHHIIi", 36, 2, 0, seq, 4242, -code) + bytes(16)


CLIENT = ("127.0.0.1", 0xD431)


def test_only_a_live_established_socket_with_an_inode_has_an_owner():
    established = diag_reply(diag_message(1, 1000, 98765))
    assert established == [DiagSocket(socket.AF_INET, 1, 0xD431, 0x1F90, b"\x7f\0\0\1" + bytes(12), b"\x7f\0\0\1" + bytes(12), 1000, 98765)]
    assert owner_of(established, CLIENT, 0x1F90) == 1000
    assert owner_of(established, CLIENT, 0x1F91) is None, "another socket's record"
    assert owner_of(diag_reply(diag_message(6, 0, 0)), CLIENT, 0x1F90) is None, "TIME_WAIT: UID 0, no inode"
    assert owner_of(diag_reply(diag_message(4, 0, 0)), CLIENT, 0x1F90) is None, "closed, FIN_WAIT1"
    assert owner_of(diag_reply(diag_message(1, 0, 0)), CLIENT, 0x1F90) is None, "no inode"
    assert owner_of(diag_reply(diag_message(1, 1000, 1) + diag_message(1, 1000, 2)), CLIENT, 0x1F90) is None, "not exactly one"
    assert diag_reply(diag_message(1, 1000, 1, seq=9), seq=1) == [], "an answer to another request"
    assert diag_reply(netlink_error(errno.ENOENT)) == [], "no such socket"
    with pytest.raises(OSError):
        diag_reply(netlink_error(errno.EPERM))
    with pytest.raises(OSError):
        diag_reply(diag_message(1, 1000, 1)[:40])


def test_peer_owner_of_a_real_socket_while_it_lives_and_after_it_closed():
    """Also as root: a closed client's socket shows UID 0, which must not count as ours."""
    assert sock_diag_available(), "this kernel answers sock_diag"
    with socket.create_server(("127.0.0.1", 0)) as server:
        listen = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", listen))
        accepted, peer = server.accept()
        with accepted:
            assert peer_owner(peer, listen) == os.getuid() == proc_net_tcp_owner(peer, listen)
            assert peer_owner((peer[0], peer[1] ^ 1), listen) is None
            client.close()
            assert peer_owner(peer, listen) is None and proc_net_tcp_owner(peer, listen) is None


# --- the /proc/net/tcp fallback ---------------------------------------------------------------

HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
CLIENT_ROW = "   1: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 52311 1 0 20 4 30 10 -1\n"
SERVER_ROW = "   2: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000  2000        0 52312 1 0 20 4 30 10 -1\n"
TIME_WAIT_ROW = "   0: 0100007F:D431 0100007F:1F90 06 00000000:00000000 03:00000DA3 00000000     0        0 0 3 0000000000000000\n"


def test_the_fallback_takes_the_established_row_not_the_first(tmp_path):
    table = tmp_path / "tcp"
    table.write_text(HEADER + TIME_WAIT_ROW + CLIENT_ROW + SERVER_ROW)
    assert proc_net_tcp_owner(CLIENT, 0x1F90, (str(table),)) == 1000, "the client's live row, not a dead one nor the server's"
    assert proc_net_tcp_owner(("127.0.0.1", 0xD432), 0x1F90, (str(table),)) is None
    table.write_text(HEADER + TIME_WAIT_ROW + SERVER_ROW)
    assert proc_net_tcp_owner(CLIENT, 0x1F90, (str(table),)) is None, "a TIME_WAIT row (UID 0) is nobody's, also for root"
    table.write_text(HEADER + CLIENT_ROW.replace(" 52311 ", " 0 "))
    assert proc_net_tcp_owner(CLIENT, 0x1F90, (str(table),)) is None, "no inode"


# --- request heads ---------------------------------------------------------------------------

def test_the_head_keeps_the_clients_connection_header_and_swaps_its_credentials():
    head = (b"GET /abc HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nAuthorization: Basic Zm9v\r\nProxy-Authorization: x\r\n"
            b"Connection: keep-alive\r\n\r\n")
    request = parse_head(head)
    out = request.upstream_head("s3cret")
    assert out == (b"GET /abc HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nConnection: keep-alive\r\n"
                   b"Authorization: " + TOKEN + b"\r\n\r\n")
    assert (request.length, request.chunked, request.upgrade) == (0, False, False)
    assert parse_head(b"PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\n\r\n").length == 12
    assert parse_head(b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n").chunked
    assert parse_head(b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n").upgrade


@pytest.mark.parametrize("head", [
    b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: abc\r\n\r\n",
    b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
    b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: -3\r\n\r\n",
    b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: h\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n",
    b"GET /x HTTP/1.1\r\nBad Name: v\r\n\r\n",
    b"GET http://elsewhere/x HTTP/1.1\r\nHost: h\r\n\r\n",
    b"CONNECT elsewhere:443 HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /x HTTP/2.0\r\nHost: h\r\n\r\n",
])
def test_ambiguous_or_foreign_heads_are_refused(head):
    with pytest.raises(BadRequest):
        parse_head(head)


def test_browsers_are_told_apart_by_host_and_origin():
    secret = Route("hashserver", 8000, ("h", 1), secret="s")
    dashboard = Route("dashboard", 8000, ("h", 1), http=True)
    head = lambda *fields: parse_head(b"GET / HTTP/1.1\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n")  # noqa: E731
    assert forbidden(head(b"Host: 127.0.0.1:8000"), secret) is None
    assert forbidden(head(b"Host: localhost:8000"), secret) is None
    for host in (b"Host: 127.0.0.1", b"Host: evil.example:8000", b"Host: 127.0.0.1:8001"):
        assert forbidden(head(host), secret), host
    assert forbidden(head(), secret), "no Host"
    assert forbidden(head(b"Host: 127.0.0.1:8000", b"Host: 127.0.0.1:8000"), secret), "two Hosts"
    assert forbidden(head(b"Host: 127.0.0.1:8000", b"Origin: http://127.0.0.1:8000"), secret), "no Origin at all with the secret"
    assert forbidden(head(b"Host: 127.0.0.1:8000", b"Origin: http://127.0.0.1:8000"), dashboard) is None, "the dashboard's own page"
    assert forbidden(head(b"Host: 127.0.0.1:8000", b"Origin: http://evil.example"), dashboard)
    assert not Route("scheduler", 1, ("h", 1)).http and secret.http, "a secret implies HTTP"


# --- end to end ------------------------------------------------------------------------------

@dataclass
class Received:
    connection: int
    head: bytes
    headers: dict[str, str]
    body: bytes
    trailers: bytes


class Upstream:
    """A tiny HTTP/1.1 server on its own loop: keeps connections alive (until `Connection:
    close`), echoes each body, records what arrived on which connection; after an Upgrade,
    echoes raw bytes."""

    def __init__(self, tls: "ssl.SSLContext | None" = None, idle_close: float | None = None):
        self.tls, self.idle_close = tls, idle_close  # idle_close: close a connection silent that long
        self.requests: list[Received] = []
        self.connections = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _start(self):
        return await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)

    async def _serve(self, reader, writer):
        self.connections += 1
        number = self.connections
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.idle_close)
                except (asyncio.IncompleteReadError, ConnectionError, asyncio.TimeoutError):
                    return
                headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:-2])
                headers = {k.lower(): v for k, v in headers.items()}
                body, trailers = b"", b""
                if "content-length" in headers:
                    body = await reader.readexactly(int(headers["content-length"]))
                elif headers.get("transfer-encoding") == "chunked":
                    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                        body += await reader.readexactly(size)
                        assert await reader.readexactly(2) == b"\r\n"
                    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
                        trailers += line
                self.requests.append(Received(number, head, headers, body, trailers))
                if headers.get("upgrade"):
                    writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
                    while data := await reader.read(65536):
                        writer.write(data)
                        await writer.drain()
                    return
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                await writer.drain()
                if headers.get("connection") == "close":
                    return
        finally:
            writer.close()

    def stop(self):
        async def close():
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def upstream():
    server = Upstream()
    yield server
    server.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def forwarder(upstream):
    """A forwarder for the hashserver route, owned by us; `make(uid=...)` for others."""
    started = []

    def make(uid=None, route=None):
        route = route or Route("hashserver", free_port(), ("127.0.0.1", upstream.port), secret="s3cret")
        started.append(Forwarder([route], uid=uid).start())
        return started[-1]
    yield make
    for each in started:
        each.stop()


def listen_port(forwarder: Forwarder) -> int:
    return forwarder.routes[0].listen


def exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes, read until the forwarder closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:  # closed with our bytes unread
            pass
    return answer


def test_requests_on_one_client_connection_share_one_upstream_connection_each_with_the_secret(upstream, forwarder):
    fwd = forwarder()
    port = listen_port(fwd)
    blob = os.urandom(3 << 20)
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        client.request("GET", "/healthcheck", headers={"Connection": "keep-alive", "Authorization": "Basic Zm9v"})
        assert client.getresponse().read() == b""
        client.request("PUT", "/buffer", body=blob)  # Content-Length
        assert client.getresponse().read() == blob
        pieces = [os.urandom(n) for n in (1, 1000, 70000, 5)]
        client.request("POST", "/chunked", body=iter(pieces), encode_chunked=True)
        assert client.getresponse().read() == b"".join(pieces)
        client.request("GET", "/promise/abc")
        assert client.getresponse().status == 200
    finally:
        client.close()
    wait_for(lambda: len(upstream.requests) == 4, what="four requests upstream")
    assert upstream.connections == 1 and {r.connection for r in upstream.requests} == {1}
    assert [r.head.split(b" ")[1] for r in upstream.requests] == [b"/healthcheck", b"/buffer", b"/chunked", b"/promise/abc"]
    for received in upstream.requests:
        assert received.headers["authorization"] == TOKEN.decode() and received.head.lower().count(b"authorization:") == 1
        assert received.headers["host"] == f"127.0.0.1:{port}"
    assert upstream.requests[0].headers["connection"] == "keep-alive", "the client's Connection header, passed on"
    assert upstream.requests[1].body == blob and upstream.requests[2].body == b"".join(pieces)
    assert fwd.refused == 0


def test_chunk_extensions_and_trailers_and_a_second_connection(upstream, forwarder):
    port = listen_port(forwarder())
    host = f"Host: localhost:{port}\r\n".encode()
    request = (b"POST /a HTTP/1.1\r\n" + host + b"Transfer-Encoding: chunked\r\n\r\n"
               b"3;ext=1\r\nabc\r\n0\r\nX-Sum: 3\r\nAuthorization: Basic Zm9v\r\n\r\n"
               b"GET /b HTTP/1.1\r\n" + host + b"Connection: close\r\n\r\n")
    answer = exchange(port, request)
    assert answer.count(b"HTTP/1.1 200 OK") == 2 and b"abc" in answer
    assert upstream.requests[0].body == b"abc" and upstream.requests[0].trailers == b"X-Sum: 3\r\n", "the client's credentials dropped"
    assert upstream.requests[1].headers["connection"] == "close"
    exchange(port, b"GET /c HTTP/1.1\r\n" + host + b"Connection: close\r\n\r\n")
    wait_for(lambda: len(upstream.requests) == 3)
    assert [r.connection for r in upstream.requests] == [1, 1, 2], "one upstream connection per client connection"


def test_an_upgrade_becomes_a_blind_pipe(upstream, forwarder):
    port = listen_port(forwarder())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n" % port)
        answer = b""
        while not answer.endswith(b"\r\n\r\n"):
            answer += sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 101")
        raw = b"GET / HTTP/1.1\r\nnot parsed any more\r\n\r\n"
        sock.sendall(raw)
        echoed = b""
        while len(echoed) < len(raw):
            echoed += sock.recv(65536)
        assert echoed == raw
    assert len(upstream.requests) == 1 and upstream.requests[0].headers["authorization"] == TOKEN.decode()


def test_browser_shaped_requests_get_403_and_nothing_goes_upstream(upstream, forwarder):
    fwd = forwarder()
    port = listen_port(fwd)
    for fields in (f"Host: 127.0.0.1:{port}\r\nOrigin: http://evil.example", "Host: evil.example",
                   f"Host: evil.example:{port}", "Host: 127.0.0.1"):
        answer = exchange(port, f"GET /healthcheck HTTP/1.1\r\n{fields}\r\n\r\n".encode())
        assert answer.startswith(b"HTTP/1.1 403 Forbidden\r\n"), (fields, answer)
    assert fwd.forbidden == 4 and upstream.requests == [] and upstream.connections == 0


@pytest.mark.parametrize("request_bytes", [
    b"POST /x HTTP/1.1\r\nHost: HOST\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc",
    b"POST /x HTTP/1.1\r\nHost: HOST\r\nContent-Length: 3x\r\n\r\nabc",
    b"GET /x HTTP/1.1\r\nHost: HOST\r\nX-Big: " + b"a" * HEAD_LIMIT + b"\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: HOST\nX: y\r\n\r\n",
])
def test_malformed_requests_close_the_connection_with_nothing_upstream(upstream, forwarder, request_bytes):
    port = listen_port(forwarder())
    assert exchange(port, request_bytes.replace(b"HOST", b"127.0.0.1:%d" % port)) == b""
    assert upstream.requests == [] and upstream.connections == 0


def test_a_forwarder_of_another_uid_refuses_us(upstream, forwarder):
    assert sock_diag_available(), "the real sock_diag path"
    stranger = forwarder(uid=os.getuid() + 1)
    assert exchange(listen_port(stranger), b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n") == b""
    assert stranger.refused == 1 and upstream.connections == 0


def hold(forwarder: Forwarder) -> threading.Event:
    """Block the forwarder's loop until the returned event is set."""
    held, gate = threading.Event(), threading.Event()
    forwarder._loop.call_soon_threadsafe(lambda: (held.set(), gate.wait(30)))
    assert held.wait(10)
    return gate


def test_a_client_admitted_on_arrival_is_checked_again_before_its_request_goes_upstream(upstream, forwarder):
    fwd = forwarder()
    checks = []
    owner = fwd._owner
    fwd._owner = lambda *args: checks.append(1) or owner(*args)
    port = listen_port(fwd)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        wait_for(lambda: checks, what="the check on arrival")
        gate = hold(fwd)
        try:
            sock.sendall(b"GET /x HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port)
        finally:
            sock.close()
            gate.set()
    wait_for(lambda: fwd.refused == 1, what="the refusal")
    assert len(checks) == 2 and upstream.connections == 0


def send_and_close(port: int, count: int) -> None:
    request = b"GET /healthcheck HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(request)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the forwarder's owner UID 0 is the spoofed one")
def test_clients_that_send_and_close_are_never_forwarded_to_a_root_owned_forwarder(upstream, forwarder):
    """A closed client's socket shows UID 0 and no inode: that must not pass for root's."""
    fwd = forwarder(uid=0)
    port = listen_port(fwd)
    # 1. Root's own clients, all gone before the forwarder looks (its loop held meanwhile).
    gate = hold(fwd)
    try:
        send_and_close(port, 50)
    finally:
        gate.set()
    wait_for(lambda: fwd.refused == 50, what="50 refusals")
    # 2. Another user's clients, racing the forwarder as an attacker would.
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(65534)
            os.setuid(65534)
            send_and_close(port, 50)
        finally:
            os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    wait_for(lambda: fwd.refused == 100, what="100 refusals")
    assert upstream.requests == [] and upstream.connections == 0
    # 3. Root's live keep-alive client is root's.
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for path in ("/a", "/b", "/c"):
            client.request("GET", path)
            response = client.getresponse()
            assert response.status == 200 and response.read() == b""
    finally:
        client.close()
    assert len(upstream.requests) == 3 and upstream.connections == 1 and fwd.refused == 100


def test_stop_ends_open_connections_too():
    """A Dask client keeps its connection open: stop() must not wait for it to hang up."""
    holder = socket.create_server(("127.0.0.1", 0))  # accepts, and never answers nor closes
    accepted = []
    threading.Thread(target=lambda: accepted.append(holder.accept()), daemon=True).start()
    listen = free_port()
    forwarder = Forwarder([Route("scheduler", listen, holder.getsockname())]).start()
    with socket.create_connection(("127.0.0.1", listen), timeout=10) as held:
        held.sendall(b"hello")
        wait_for(lambda: accepted, what="the forwarder to connect upstream")
        started = time.monotonic()
        forwarder.stop()
        assert time.monotonic() - started < 5 and not forwarder._thread.is_alive()
        held.settimeout(5)
        try:
            assert held.recv(100) == b"", "the held connection is closed"
        except ConnectionResetError:
            pass
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", listen)) != 0, "stop() closes the port"
    holder.close()


# --- spares: HTTPS connections opened before a client needs them -------------------------------

@pytest.fixture
def tls_pair(tmp_path):
    """A server context with a fresh self-signed certificate for 127.0.0.1, and a client context trusting it."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")], check=True, capture_output=True)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return server, ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))


def get(port: int, path: str) -> int:
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        client.request("GET", path, headers={"Connection": "close"})
        return client.getresponse().status
    finally:
        client.close()


def test_a_new_client_connection_gets_an_upstream_connection_opened_before_it_came(tls_pair):
    from seamless_stack.forward import SPARES

    upstream = Upstream(tls=tls_pair[0])
    fwd = Forwarder([Route("hashserver", free_port(), ("127.0.0.1", upstream.port), tls=tls_pair[1], secret="s3cret")]).start()
    try:
        port = listen_port(fwd)
        assert get(port, "/first") == 200  # the route is in use: spares are opened
        wait_for(lambda: upstream.connections == 1 + SPARES, what="the spares")
        assert get(port, "/second") == 200
        second = next(r for r in upstream.requests if r.head.startswith(b"GET /second"))
        assert 1 < second.connection <= 1 + SPARES, "served on a connection that was open before the client came"
        assert second.headers["authorization"] == TOKEN.decode()
        wait_for(lambda: upstream.connections == 2 + SPARES, what="the spare taken, replaced")
    finally:
        fwd.stop()
        upstream.stop()


def test_spares_the_service_closed_are_never_handed_out(tls_pair):
    upstream = Upstream(tls=tls_pair[0], idle_close=0.2)  # as the services close silent connections (after 30 s)
    fwd = Forwarder([Route("hashserver", free_port(), ("127.0.0.1", upstream.port), tls=tls_pair[1], secret="s3cret")]).start()
    try:
        port = listen_port(fwd)
        for attempt in range(5):
            assert get(port, f"/n{attempt}") == 200, "a dead spare would leave the client without an answer"
            time.sleep(0.4)  # the spares opened meanwhile are closed by then
    finally:
        fwd.stop()
        upstream.stop()

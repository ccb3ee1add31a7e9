"""The configuration route's forwarder: owner-only admission, the secret added to HTTP heads,
bytes passed through unchanged. Real sockets on 127.0.0.1, a real upstream server."""

import base64
import http.server
import os
import socket
import threading
import time

import pytest

from seamless_stack.forward import Forwarder, Route, peer_uid, with_secret

PROC_NET_TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 1 1 0 20 4 30 10 -1
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000  2000        0 2 1 0 20 4 30 10 -1
"""


def test_peer_uid_reads_the_client_sockets_row(tmp_path):
    table = tmp_path / "tcp"
    table.write_text(PROC_NET_TCP)
    assert peer_uid(("127.0.0.1", 0xD431), 0x1F90, (str(table),)) == 1000, "the client's row, not the server's"
    assert peer_uid(("127.0.0.1", 0xD432), 0x1F90, (str(table),)) is None


def test_with_secret_replaces_the_clients_own_credentials_and_keep_alive():
    head = b"GET /abc HTTP/1.1\r\nHost: x\r\nAuthorization: Basic Zm9v\r\nConnection: keep-alive\r\n\r\n"
    out = with_secret(head, "s3cret").decode()
    token = base64.b64encode(b"seamless:s3cret").decode()
    assert out.startswith("GET /abc HTTP/1.1\r\nHost: x\r\n") and out.endswith("\r\n\r\n")
    assert f"Authorization: Basic {token}" in out and "Zm9v" not in out
    assert "Connection: close" in out and "keep-alive" not in out


class Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (self.headers.get("Authorization") or "none").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def upstream():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:  # closed with our request unread
            pass
    return data


def test_the_owner_gets_through_with_the_secret_others_do_not(upstream):
    listen = free_port()
    forwarder = Forwarder([Route("hashserver", listen, ("127.0.0.1", upstream), secret="s3cret")]).start()
    try:
        answer = get(listen)
        assert answer.startswith(b"HTTP/1.0 200") and answer.endswith(base64.b64encode(b"seamless:s3cret"))
    finally:
        forwarder.stop()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", listen)) != 0, "stop() closes the port"
    stranger = Forwarder([Route("hashserver", listen, ("127.0.0.1", upstream), secret="s3cret")], uid=os.getuid() + 1).start()
    try:
        assert get(listen) == b"", "a connection from another UID is closed at once"
        assert stranger.refused == 1
    finally:
        stranger.stop()


def test_stop_ends_open_connections_too():
    """A Dask client keeps its connection open: stop() must not wait for it to hang up."""
    holder = socket.create_server(("127.0.0.1", 0))  # accepts, and never answers nor closes
    accepted = []
    threading.Thread(target=lambda: accepted.append(holder.accept()), daemon=True).start()
    listen = free_port()
    forwarder = Forwarder([Route("scheduler", listen, holder.getsockname())]).start()
    with socket.create_connection(("127.0.0.1", listen), timeout=10) as held:
        held.sendall(b"hello")
        for _ in range(100):
            if accepted:
                break
            time.sleep(0.05)
        assert accepted, "the forwarder connected upstream"
        started = time.monotonic()
        forwarder.stop()
        assert time.monotonic() - started < 5 and not forwarder._thread.is_alive()
        held.settimeout(5)
        try:
            assert held.recv(100) == b"", "the held connection is closed"
        except ConnectionResetError:
            pass
    holder.close()

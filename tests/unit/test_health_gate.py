"""The health gate's polling: all waits together, fail fast on a dead service, time out,
and progress in the user's words."""

import http.server
import threading

import pytest

from seamless_stack.health import HttpWait, ServiceFailed, SeamlessWorkersWait, wait_until_ready
from seamless_stack.ports import allocate_ports, port_is_free


class Flip:
    """A wait that becomes ready after n checks."""

    def __init__(self, service, n):
        self.service, self.n = service, n

    def check(self):
        self.n -= 1
        return self.n <= 0, "ok" if self.n <= 0 else "starting"


def test_all_waits_pass_together():
    lines = []
    assert wait_until_ready([Flip("hashserver", 2), Flip("database", 3)], timeout=5, progress=lines.append, interval=0.01) < 5
    assert lines[0].endswith("hashserver starting, database starting")


def test_a_dead_service_fails_the_gate_at_once():
    with pytest.raises(ServiceFailed, match="database failed: container exited") as caught:
        wait_until_ready([Flip("database", 10**6)], timeout=60, interval=0.01,
                         find_failure=lambda: ("database", "container exited"))
    assert caught.value.service == "database"


def test_timeout_names_what_is_missing():
    with pytest.raises(ServiceFailed, match="not ready after 0s: scheduler starting"):
        wait_until_ready([Flip("scheduler", 10**6)], timeout=0.05, interval=0.01)


def test_a_service_that_does_not_listen_yet_is_starting_not_an_errno():
    port = allocate_ports(["x"], (62900, 62999), is_free=port_is_free)["x"]
    assert HttpWait("hashserver", f"http://127.0.0.1:{port}/healthcheck", "OK").check() == (False, "starting")
    assert SeamlessWorkersWait("worker", f"http://127.0.0.1:{port}/ready", 2).check() == (False, "scheduler starting")


def test_a_server_with_another_stacks_certificate_is_an_answer_not_a_service_starting(tmp_path):
    import ssl

    from seamless_stack import credentials
    ours, theirs = (credentials.ensure(tmp_path / f"{n}.tls", n).folder for n in ("ours", "theirs"))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(f"{theirs}/server.crt", f"{theirs}/server.key")
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"https://127.0.0.1:{server.server_address[1]}/healthcheck"
        ok, detail = HttpWait("database", url, "OK", credentials.client_ssl_context(str(ours))).check()
        assert not ok and detail.startswith("answers") and "certificate verify failed" in detail, detail
        assert HttpWait("database", url, "OK", credentials.client_ssl_context(str(theirs))).check() == (True, "ok")
    finally:
        server.shutdown()


def test_worker_readiness_in_words():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"plugin": true, "seamless_workers": 1, "workers": 2}')

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ok, detail = SeamlessWorkersWait("worker", f"http://127.0.0.1:{server.server_port}/r", 2).check()
    finally:
        server.shutdown()
    assert not ok and detail == "1/2 workers ready (2 connected)"

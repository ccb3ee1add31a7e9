"""The guard's deny-by-default rule, on ASGI scopes as uvicorn hands them over (the integration
tests knock on every door of a real stack; these pin the rule itself)."""
import asyncio
import base64
import importlib.machinery
import importlib.util
import os

import pytest

from seamless_stack.resources import images_dir


def load_guard():
    path = str(images_dir() / "guard" / "seamless-stack-guard")
    loader = importlib.machinery.SourceFileLoader("seamless_stack_guard", path)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("seamless_stack_guard", loader))
    loader.exec_module(module)
    return module


guard = load_guard()
SECRET = b"s" * 32
AUTH = b"Basic " + base64.b64encode(b"seamless:" + SECRET)


def call(scope: dict):
    """Run the middleware; what the app saw, what was sent, and whether the body was read."""
    seen, sent, read = [], [], []

    async def app(scope, receive, send):
        seen.append(scope)

    async def receive():
        read.append(True)
        return {"type": "http.request", "body": b"x", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(guard.RequireSecret(app, SECRET)(scope, receive, send))
    return seen, sent, read


def http(method="GET", path="/healthcheck", raw=None, query=b"", headers=()):
    return {"type": "http", "method": method, "path": path, "raw_path": raw if raw is not None else path.encode(),
            "query_string": query, "headers": list(headers)}


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_the_guard_itself_answers_the_health_check(method):
    seen, sent, read = call(http(method))
    assert seen == [] and read == [] and sent[0]["status"] == 200
    assert sent[1]["body"] == (b"OK" if method == "GET" else b"")


@pytest.mark.parametrize("scope", [
    http("PUT"), http("POST"), http("DELETE"), http("OPTIONS"),
    http(query=b"x=1"), http(path="/healthcheck/"), http(path="/healthcheck", raw=b"/%68ealthcheck"),
    http(path="/HEALTHCHECK"), http(path="/"), http(path="/promise/ab"),
    http(headers=[(b"authorization", b"Basic " + base64.b64encode(b"seamless:wrong"))], path="/x"),
])
def test_everything_else_without_the_secret_is_refused_unread(scope):
    seen, sent, read = call(scope)
    assert seen == [] and read == [], "neither the app nor the body"
    assert sent[0]["status"] == 401 and (b"connection", b"close") in sent[0]["headers"]


def test_websockets_need_the_secret_too():
    seen, sent, _ = call({"type": "websocket", "path": "/ws", "raw_path": b"/ws", "query_string": b"", "headers": []})
    assert seen == [] and sent == [{"type": "websocket.close", "code": 1008}]
    seen, _, _ = call({"type": "websocket", "path": "/ws", "headers": [(b"authorization", AUTH)]})
    assert len(seen) == 1


def test_with_the_secret_every_request_reaches_the_app_and_lifespan_always_does():
    for scope in (http("PUT", "/healthcheck", headers=[(b"authorization", AUTH)]), {"type": "lifespan"}):
        seen, sent, _ = call(scope)
        assert seen == [scope] and sent == []


def test_the_servers_files_are_owner_only(tmp_path, monkeypatch):
    chmods = []
    monkeypatch.setattr(os, "chmod", lambda path, mode, *a, **k: chmods.append(mode))
    old = os.umask(0o022)
    try:
        guard.owner_only_modes()
        os.chmod(tmp_path, 0o3775)
        os.chmod(tmp_path, 0o444)
        assert os.umask(0o022) == 0o077
    finally:
        os.umask(old)
    assert chmods == [0o3700, 0o400]


def test_stream_cap_closes_what_comes_beyond_the_limit_and_counts_only_open_streams():
    import runpy
    site = runpy.run_path(str(images_dir() / "site" / "sitecustomize.py"))

    class Stream:  # the two methods of tornado's IOStream the cap uses
        def __init__(self):
            self.open = True

        def closed(self):
            return not self.open

        def close(self):
            self.open = False

    cap, streams = site["StreamCap"](3), [Stream() for _ in range(5)]
    assert [cap.admit(s) for s in streams] == [True, True, True, False, False]
    assert [s.open for s in streams] == [True, True, True, False, False]
    streams[0].close()
    late = Stream()
    assert cap.admit(late) and late.open, "a closed stream frees its place"


def test_open_files_sets_the_guards_limit_and_only_raises_a_dask_processs():
    import subprocess
    import sys
    site = images_dir() / "site" / "sitecustomize.py"
    script = ("import resource, runpy; s = runpy.run_path(%r); n = resource.RLIMIT_NOFILE; "
              "resource.setrlimit(n, (256, resource.getrlimit(n)[1])); s['open_files'](512); a = resource.getrlimit(n)[0]; "
              "s['open_files'](300); b = resource.getrlimit(n)[0]; s['open_files'](400, exact=True); print(a, b, *resource.getrlimit(n))")
    out = subprocess.run([sys.executable, "-c", script % str(site)], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["512", "512", "400", "400"]


def test_partial_buffers_of_unfinished_uploads_are_swept_once_nobody_writes_them(tmp_path, capsys):
    checksum = "ab" * 32
    folder = tmp_path / "ab"
    folder.mkdir()
    old, fresh = folder / f"{checksum}-k2x_9q0z", folder / f"{checksum}-a1b2c3d4"
    kept = [folder / checksum, folder / f"{checksum}-short", folder / "notes.txt", fresh]
    for path in [old, *kept]:
        path.write_bytes(b"x")
    os.utime(old, (1, 1))  # untouched for decades
    assert guard.sweep_partial_buffers(str(tmp_path)) == 1
    assert not old.exists() and all(path.exists() for path in kept), "a fresh one may be another server's upload"
    assert "removed 1 partial buffer file" in capsys.readouterr().err


def test_the_hashserver_keeps_the_reserve_status_counts_with():
    """The guard refuses a write leaving less than RESERVE_MB; `status` fails above it, so a
    folder the hashserver fills makes `status` fail."""
    from seamless_stack.storage import FULL_MB, RESERVE_MB

    assert guard.MIN_FREE_BYTES == RESERVE_MB << 20 and RESERVE_MB < FULL_MB


def test_results_recorded_without_their_buffer_are_forgotten_at_start_unless_the_folder_is_not_theirs(tmp_path):
    import sqlite3

    buffers, database = tmp_path / "buffers", tmp_path / "seamless.db"
    stored = [f"{i:064x}" for i in range(1, 20)]
    for checksum in stored:
        (buffers / checksum[:2]).mkdir(parents=True, exist_ok=True)
        (buffers / checksum[:2] / checksum).write_bytes(b"x")
    lost = "f" * 64
    with sqlite3.connect(database) as db:
        db.execute('CREATE TABLE "transformation" ("checksum" CHAR(64) PRIMARY KEY, "result" CHAR(64))')
        db.execute('CREATE TABLE "rev_transformation" ("id" INTEGER PRIMARY KEY, "result" CHAR(64), "checksum" CHAR(64))')
        db.execute('CREATE TABLE "meta_data" ("checksum" CHAR(64) PRIMARY KEY, "result" CHAR(64), "metadata" TEXT)')
        for i, result in enumerate([*stored, lost]):
            db.execute('INSERT INTO "transformation" VALUES (?, ?)', (f"{i:063x}a", result))
            db.execute('INSERT INTO "rev_transformation" ("result", "checksum") VALUES (?, ?)', (result, f"{i:063x}a"))
            db.execute('INSERT INTO "meta_data" VALUES (?, ?, ?)', (f"{i:063x}a", result, "{}"))

    def results() -> dict[str, set[str]]:
        with sqlite3.connect(database) as db:
            return {table: {r for (r,) in db.execute(f'SELECT result FROM "{table}"')}
                    for table in ("transformation", "rev_transformation", "meta_data")}

    assert guard.forget_results_without_buffers(str(database), str(tmp_path / "elsewhere")) == 0  # no such folder
    empty = tmp_path / "empty"
    empty.mkdir()
    assert guard.forget_results_without_buffers(str(database), str(empty)) == 0, "not the folder they were stored in"
    assert results() == dict.fromkeys(results(), {*stored, lost})
    assert guard.forget_results_without_buffers(str(database), str(buffers)) == 1
    assert results() == dict.fromkeys(results(), set(stored)), "only the result without its buffer is gone"
    assert guard.forget_results_without_buffers(str(tmp_path / "none.db"), str(buffers)) == 0
    assert not (tmp_path / "none.db").exists(), "no database file made"

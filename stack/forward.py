"""An owner-only forwarder: Seamless' configuration route on a secured stack.

`seamless.config` builds its own addresses (`tcp://` for the scheduler, `http://` for the
rest) and cannot present a certificate or a secret. So `seamless-stack tunnel` listens on
127.0.0.1 in plain TCP and HTTP for the client files, admits only connections from this
user's processes, and speaks to the stack with its credentials: mutual TLS to the
scheduler and dashboard, the secret over HTTPS (the stack's certificate verified) to the
hashserver and database.

Admission (peer.py): the client's socket must be a live one of our UID, which a client that
sent and closed already is not, even when we run as root. The check runs when the
connection arrives and again before its first request (or the TCP pipe) goes upstream; a
socket keeps the UID it was made with, so later requests on it need no new check.

HTTP routes keep one upstream connection per client connection, parse each request's
framing, refuse browser-shaped requests (a foreign Host, an Origin: DNS rebinding, CSRF),
and put the secret into every request head; responses go back unparsed, which the 1:1
pairing keeps in step. The scheduler route is a blind TCP pipe.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

from . import credentials
from .errors import StackError
from .peer import peer_owner, sock_diag_available

HEAD_LIMIT = 64 * 1024  # a request head, a chunk-size line, a chunked body's trailers


@dataclass(frozen=True)
class Route:
    """One port on 127.0.0.1 and the service it leads to."""
    service: str
    listen: int  # port on 127.0.0.1
    upstream: tuple[str, int]
    tls: ssl.SSLContext | None = None  # wrap the upstream connection
    secret: str | None = None  # add Basic auth with this secret to every request (implies http)
    http: bool = False  # parse HTTP requests (Host and Origin rules, the secret); else a blind TCP pipe

    def __post_init__(self):
        if self.secret is not None and not self.http:
            object.__setattr__(self, "http", True)


# --- HTTP requests ------------------------------------------------------------------------

class BadRequest(ValueError):
    """A request whose framing the forwarder will not vouch for: the connection is closed."""


_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_REQUEST_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) HTTP/1\.[01]")
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(?:;[^\r\n]*)?")
_DROPPED = (b"authorization", b"proxy-authorization")


@dataclass(frozen=True)
class Request:
    """A parsed request head: its lines as sent and its framing."""
    line: bytes
    fields: list[tuple[bytes, bytes]]  # (name as sent, value)
    length: int  # Content-Length (0: no body)
    chunked: bool
    upgrade: bool

    def values(self, name: bytes) -> list[bytes]:
        return [value for field, value in self.fields if field.lower() == name]

    def upstream_head(self, secret: str | None) -> bytes:
        """The head as sent, less the client's own credentials, plus ours."""
        lines = [self.line] + [name + b": " + value for name, value in self.fields if name.lower() not in _DROPPED]
        if secret is not None:
            lines.append(b"Authorization: Basic " + base64.b64encode(f"seamless:{secret}".encode()))
        return b"\r\n".join(lines) + b"\r\n\r\n"


def _field(line: bytes) -> tuple[bytes, bytes]:
    name, colon, value = line.partition(b":")
    if not colon or not _TOKEN.fullmatch(name) or _CONTROL.search(value):
        raise BadRequest(f"bad header line {line[:80]!r}")
    return name, value.strip(b" \t")


def parse_head(head: bytes) -> Request:
    """The request head (up to and including the blank line): HTTP/1.x, origin-form target,
    CRLF lines only (a bare CR or LF is how requests are smuggled past a proxy), and an
    unambiguous body: Content-Length (digits, all copies equal) or chunked, never both."""
    if not head.endswith(b"\r\n\r\n") or head.count(b"\n") != head.count(b"\r\n") or head.count(b"\r") != head.count(b"\r\n"):
        raise BadRequest("bad line endings")
    line, *rest = head[:-4].split(b"\r\n")
    match = _REQUEST_LINE.fullmatch(line)
    if not match or not (match[2].startswith(b"/") or (match[1] == b"OPTIONS" and match[2] == b"*")) or match[1] == b"CONNECT":
        raise BadRequest(f"bad request line {line[:80]!r}")
    fields = [_field(field) for field in rest]
    request = Request(line, fields, 0, False, False)
    lengths = set(request.values(b"content-length"))
    codings = b",".join(request.values(b"transfer-encoding")).lower()
    if lengths and codings:
        raise BadRequest("both Content-Length and Transfer-Encoding")
    length, chunked = 0, False
    if lengths:
        if len(lengths) != 1 or not re.fullmatch(rb"[0-9]{1,18}", next(iter(lengths))):
            raise BadRequest(f"bad Content-Length {lengths}")
        length = int(next(iter(lengths)))
    elif codings:
        if [c.strip() for c in codings.split(b",")][-1] != b"chunked":
            raise BadRequest(f"bad Transfer-Encoding {codings!r}")
        chunked = True
    connection = {token.strip() for value in request.values(b"connection") for token in value.lower().split(b",")}
    upgrade = bool(request.values(b"upgrade")) and b"upgrade" in connection
    return Request(line, fields, length, chunked, upgrade)


def forbidden(request: Request, route: Route) -> str | None:
    """Why a browser may not use this route, or None. A page elsewhere can reach 127.0.0.1
    (CSRF) or a name it points there (DNS rebinding); our clients send neither an Origin
    nor a Host other than 127.0.0.1:PORT or localhost:PORT. The dashboard's own pages send
    their own Origin (Bokeh's websocket): accepted there, on the route without the secret."""
    hosts = request.values(b"host")
    allowed = {b"127.0.0.1:%d" % route.listen, b"localhost:%d" % route.listen}
    if len(hosts) != 1 or hosts[0].lower() not in allowed:
        return "Host must be 127.0.0.1:PORT or localhost:PORT"
    origins = request.values(b"origin")
    if origins and (route.secret is not None or origins != [b"http://" + hosts[0]]):
        return "cross-origin requests are refused"
    return None


def _refusal(status: str, text: str) -> bytes:
    body = f"{text}\n".encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n").encode() + body


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    """The next request head, or None when the client hung up between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip(b"\r\n"):
            raise BadRequest("cut-off request head") from None
        return None
    except asyncio.LimitOverrunError:
        raise BadRequest("request head over the limit") from None
    return head.lstrip(b"\r\n")  # a stray CRLF between requests is allowed (RFC 9112 2.2)


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, size: int) -> None:
    while size:
        data = await reader.read(min(size, 1 << 16))
        if not data:
            raise BadRequest("cut-off body")
        writer.write(data)
        size -= len(data)
        await writer.drain()


async def _line(reader: asyncio.StreamReader) -> bytes:
    try:
        line = await reader.readuntil(b"\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        raise BadRequest("cut-off or overlong line in a chunked body") from None
    if b"\r" in line[:-2] or b"\n" in line[:-2]:
        raise BadRequest("bad line ending in a chunked body")
    return line


async def _copy_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A chunked body, chunk by chunk: sizes re-written plainly (no extensions), trailers
    checked like header lines (credentials dropped), up to the final blank line."""
    while True:
        match = _CHUNK_SIZE.fullmatch((await _line(reader))[:-2])
        if not match:
            raise BadRequest("bad chunk size")
        size = int(match[1], 16)
        writer.write(b"%X\r\n" % size)
        if size == 0:
            break
        await _copy(reader, writer, size)
        if await reader.readexactly(2) != b"\r\n":
            raise BadRequest("chunk not followed by CRLF")
        writer.write(b"\r\n")
    trailers = 0
    while (line := await _line(reader)) != b"\r\n":
        trailers += len(line)
        if trailers > HEAD_LIMIT:
            raise BadRequest("trailers over the limit")
        if _field(line[:-2])[0].lower() not in _DROPPED:
            writer.write(line)
    writer.write(b"\r\n")
    await writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF or an error, then close the other side (which ends the other pipe)."""
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


# --- The forwarder ------------------------------------------------------------------------

class Forwarder:
    """The routes, served by an asyncio loop in a daemon thread until stop()."""

    def __init__(self, routes: list[Route], uid: int | None = None):
        self.routes = routes
        self.uid = os.getuid() if uid is None else uid
        self.refused = 0  # connections not from our UID's live sockets
        self.forbidden = 0  # browser-shaped requests, answered 403
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="seamless-stack-forwarder", daemon=True)
        self._servers: list[asyncio.base_events.Server] = []

    def start(self) -> "Forwarder":
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=30)
        except OSError as exc:
            self.stop()
            raise StackError(f"cannot listen for the configuration route ({exc.strerror})", "choose other ports with --port-range") from None
        return self

    def stop(self) -> None:
        """Stop listening, and with the loop every connection through it (no waiting for
        clients to hang up: a Dask client keeps its connection open)."""
        async def close():
            for server in self._servers:
                server.close()
            connections = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in connections:
                task.cancel()
            await asyncio.gather(*connections, return_exceptions=True)
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    async def _listen(self) -> None:
        sock_diag_available()  # probed once, here, rather than on the first connection
        for route in self.routes:
            handler = lambda r, w, route=route: self._serve(route, r, w)  # noqa: E731
            self._servers.append(await asyncio.start_server(handler, "127.0.0.1", route.listen, limit=HEAD_LIMIT))

    async def _owner(self, route: Route, writer: asyncio.StreamWriter) -> bool:
        """Whether the client's socket is live and ours. sock_diag is one syscall round trip;
        the /proc fallback reads the whole table, so it runs off the loop."""
        client = writer.get_extra_info("peername")
        if not client:
            return False
        if sock_diag_available():
            uid = peer_owner(client, route.listen)
        else:
            uid = await asyncio.to_thread(peer_owner, client, route.listen)
        if uid != self.uid:
            self.refused += 1
            return False
        return True

    async def _serve(self, route: Route, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: list[asyncio.StreamWriter] = []
        try:
            if await self._owner(route, writer):
                await (self._serve_http if route.http else self._serve_tcp)(route, reader, writer, upstream)
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, BadRequest):
            pass
        finally:
            for up_writer in upstream:
                up_writer.close()
            writer.close()

    async def _serve_tcp(self, route: Route, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         upstream: list[asyncio.StreamWriter]) -> None:
        up_reader, up_writer = await asyncio.open_connection(*route.upstream, ssl=route.tls)
        upstream.append(up_writer)
        if await self._owner(route, writer):
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    async def _serve_http(self, route: Route, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          upstream: list[asyncio.StreamWriter]) -> None:
        """Request by request on one upstream connection; responses flow back in a task of
        their own, unparsed. Returning closes both connections."""
        responses = None
        try:
            while (head := await _read_head(reader)) is not None:
                request = parse_head(head)
                if reason := forbidden(request, route):
                    self.forbidden += 1
                    writer.write(_refusal("403 Forbidden", reason))
                    await writer.drain()
                    return
                if not upstream:
                    if not await self._owner(route, writer):  # still live and ours, now that it has spoken
                        return
                    try:
                        up_reader, up_writer = await asyncio.open_connection(*route.upstream, ssl=route.tls)
                    except (OSError, ssl.SSLError) as exc:
                        writer.write(_refusal("502 Bad Gateway", f"{route.service} unreachable ({exc})"))
                        await writer.drain()
                        return
                    upstream.append(up_writer)
                    responses = asyncio.create_task(_pipe(up_reader, writer))
                up_writer.write(request.upstream_head(route.secret))
                if request.chunked:
                    await _copy_chunked(reader, up_writer)
                else:
                    await _copy(reader, up_writer, request.length)
                await up_writer.drain()
                if request.upgrade:  # whatever follows is not HTTP/1.1 any more
                    await _pipe(reader, up_writer)
                    return
        finally:
            if responses:
                responses.cancel()


def routes_for(credentials_dir: str, http_tls: bool, upstream: dict[str, tuple[str, int]],
               listen: dict[str, int]) -> list[Route]:
    """The four routes of a secured stack: service -> (host, port) it is reached at here."""
    context = credentials.client_ssl_context(credentials_dir)
    secret = credentials.Credentials(Path(credentials_dir)).secret
    http = {"tls": context if http_tls else None, "secret": secret, "http": True}
    return [
        Route("hashserver", listen["hashserver"], upstream["hashserver"], **http),
        Route("database", listen["database"], upstream["database"], **http),
        Route("scheduler", listen["scheduler"], upstream["scheduler"], tls=context),
        Route("dashboard", listen["dashboard"], upstream["dashboard"], tls=context, http=True),
    ]

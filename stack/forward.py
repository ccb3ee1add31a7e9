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

HTTP routes keep one upstream connection per client connection (taken from a few spares
opened ahead of need, so a new client connection waits for no TLS handshake), parse each
request's framing, refuse browser-shaped requests (a foreign Host, an Origin: DNS rebinding, CSRF),
and put the secret into every request head; responses go back unparsed, which the 1:1
pairing keeps in step. The scheduler route is a blind TCP pipe.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import credentials
from .errors import StackError
from .http_framing import HEAD_LIMIT, BadRequest, Request, copy, copy_chunked, parse_head, read_head, refusal
from .peer import peer_owner, sock_diag_available

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

SPARES = 2  # upstream connections kept ready per HTTPS route: a new client connection skips the handshake
SPARE_TTL = 15.0  # seconds a spare is kept; the services close a connection that says nothing for 30
WARM_FOR = 120.0  # seconds after a route's last use that it keeps spares


class Spares:
    """HTTPS connections to one service, opened (TLS handshake done) before a client needs
    them: Seamless' client opens a new connection for most requests, and a handshake costs
    more than the request. Each spare serves one client connection, as a fresh one would;
    one the service has closed, or older than SPARE_TTL, is dropped."""

    def __init__(self, route: Route):
        self.route = route
        self.idle: list[tuple[float, asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.filling = False
        self.used = 0.0  # when a client last took one

    async def take(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self.used = time.monotonic()
        self.expire()
        while self.idle:
            _, reader, writer = self.idle.pop()
            if not reader.at_eof() and not writer.is_closing():
                self.refill()
                return reader, writer
            writer.close()
        self.refill()
        return await asyncio.open_connection(*self.route.upstream, ssl=self.route.tls)

    def expire(self) -> None:
        """Drop what is too old to trust; refill while the route is in use."""
        now = time.monotonic()
        for entry in [e for e in self.idle if now - e[0] >= SPARE_TTL]:
            self.idle.remove(entry)
            entry[2].close()
        if now - self.used < WARM_FOR:
            self.refill()

    def refill(self) -> None:
        if not self.filling and len(self.idle) < SPARES:
            self.filling = True
            asyncio.get_running_loop().create_task(self._fill())

    async def _fill(self) -> None:
        try:
            while len(self.idle) < SPARES:
                reader, writer = await asyncio.open_connection(*self.route.upstream, ssl=self.route.tls)
                self.idle.append((time.monotonic(), reader, writer))
        except (OSError, ssl.SSLError):
            pass  # the service is away: a client's own connection attempt will say so
        finally:
            self.filling = False

    def close(self) -> None:
        for _, _, writer in self.idle:
            writer.close()
        self.idle.clear()


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
        self._spares = {route.listen: Spares(route) for route in routes if route.http and route.tls}

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
            for spares in self._spares.values():
                spares.close()
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
        if self._spares:
            self._loop.create_task(self._keep_warm())

    async def _keep_warm(self) -> None:
        while True:
            await asyncio.sleep(SPARE_TTL / 3)
            for spares in self._spares.values():
                spares.expire()

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
            while (head := await read_head(reader)) is not None:
                request = parse_head(head)
                if reason := forbidden(request, route):
                    self.forbidden += 1
                    writer.write(refusal("403 Forbidden", reason))
                    await writer.drain()
                    return
                if not upstream:
                    if not await self._owner(route, writer):  # still live and ours, now that it has spoken
                        return
                    try:
                        spares = self._spares.get(route.listen)
                        up_reader, up_writer = await (spares.take() if spares else
                                                      asyncio.open_connection(*route.upstream, ssl=route.tls))
                    except (OSError, ssl.SSLError) as exc:
                        writer.write(refusal("502 Bad Gateway", f"{route.service} unreachable ({exc})"))
                        await writer.drain()
                        return
                    upstream.append(up_writer)
                    responses = asyncio.create_task(_pipe(up_reader, writer))
                up_writer.write(request.upstream_head(route.secret))
                if request.chunked:
                    await copy_chunked(reader, up_writer)
                else:
                    await copy(reader, up_writer, request.length)
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

"""An owner-only forwarder: Seamless' configuration route on a secured stack.

`seamless.config` builds its own addresses (`tcp://` for the scheduler, `http://` for the
rest) and cannot present a certificate or a secret. So `seamless-stack tunnel` listens on
127.0.0.1 in plain TCP and HTTP for the client files, admits only connections from this
user's processes (the peer's UID, from /proc/net/tcp), and speaks to the stack with its
credentials: mutual TLS to the scheduler and dashboard, the secret (and TLS where the
services speak HTTPS) to the hashserver and database.

HTTP routes add the secret to each request's head and ask for `Connection: close`: one
request per connection, so nothing past the head needs parsing.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

from . import credentials
from .errors import StackError

HEAD_LIMIT = 64 * 1024


@dataclass(frozen=True)
class Route:
    service: str
    listen: int  # port on 127.0.0.1
    upstream: tuple[str, int]
    tls: ssl.SSLContext | None = None  # wrap the upstream connection
    secret: str | None = None  # HTTP: add Basic auth with this secret to every request


def peer_uid(peer: tuple[str, int], listen_port: int, tables: tuple[str, ...] = ("/proc/net/tcp",)) -> int | None:
    """The UID owning the client socket `peer` connected to 127.0.0.1:listen_port."""
    host, port = peer[0], peer[1]
    local = f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X}"
    for table in tables:
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 7 and fields[1] == local and fields[2].endswith(f":{listen_port:04X}"):
                return int(fields[7])
    return None


def with_secret(head: bytes, secret: str) -> bytes:
    """The request head with our Authorization and `Connection: close` instead of the client's."""
    lines = head.rstrip(b"\r\n").split(b"\r\n")
    dropped = (b"authorization:", b"connection:", b"keep-alive:", b"proxy-connection:")
    kept = [lines[0]] + [line for line in lines[1:] if not line.lower().startswith(dropped)]
    token = base64.b64encode(f"seamless:{secret}".encode())
    return b"\r\n".join([*kept, b"Authorization: Basic " + token, b"Connection: close"]) + b"\r\n\r\n"


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


class Forwarder:
    """The routes, served by an asyncio loop in a daemon thread until stop()."""

    def __init__(self, routes: list[Route], uid: int | None = None):
        self.routes = routes
        self.uid = os.getuid() if uid is None else uid
        self.refused = 0  # connections from other users
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
        for route in self.routes:
            handler = lambda r, w, route=route: self._serve(route, r, w)  # noqa: E731
            self._servers.append(await asyncio.start_server(handler, "127.0.0.1", route.listen, limit=HEAD_LIMIT))

    async def _serve(self, route: Route, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if peer_uid(writer.get_extra_info("peername"), route.listen) != self.uid:
            self.refused += 1
            writer.close()
            return
        try:
            head = await reader.readuntil(b"\r\n\r\n") if route.secret is not None else b""
            up_reader, up_writer = await asyncio.open_connection(*route.upstream, ssl=route.tls)
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        if head:
            up_writer.write(with_secret(head, route.secret))
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


def routes_for(credentials_dir: str, http_tls: bool, upstream: dict[str, tuple[str, int]],
               listen: dict[str, int]) -> list[Route]:
    """The four routes of a secured stack: service -> (host, port) it is reached at here."""
    context = credentials.client_ssl_context(credentials_dir)
    secret = credentials.Credentials(Path(credentials_dir)).secret
    http = {"tls": context if http_tls else None, "secret": secret}
    return [
        Route("hashserver", listen["hashserver"], upstream["hashserver"], **http),
        Route("database", listen["database"], upstream["database"], **http),
        Route("scheduler", listen["scheduler"], upstream["scheduler"], tls=context),
        Route("dashboard", listen["dashboard"], upstream["dashboard"], tls=context),
    ]

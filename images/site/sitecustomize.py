"""Loaded by every Python process in the seamless-stack images (PYTHONPATH): no secret in a log.

Seamless logs its remote clients' URLs, which carry the stack's secret as the password of
`scheme://user:secret@host` (seamless_dask's worker setup prints them at INFO); anything
else may log such a URL too. Every log line any handler formats has such passwords replaced
by `***`, whatever the logger. (seamless-stack's own CLI uses the same pattern,
stack/redact.py; a unit test keeps the two equal.)
"""
import logging
import re

CREDENTIALS = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@'\"]*:)[^\s@/'\"]+@")


def redact(text: str) -> str:
    return CREDENTIALS.sub(r"\1***@", text)


_format = logging.Formatter.format


def _redacted(self, record):
    return redact(_format(self, record))


logging.Formatter.format = _redacted


# A connection to a Dask TLS listener (scheduler, worker, nanny) that never completes its TLS
# handshake holds a socket for good: distributed waits for it without a timeout. Every Dask
# process here gives up after HANDSHAKE_TIMEOUT (patched when distributed.comm.tcp loads,
# so processes that never import Dask pay nothing).
HANDSHAKE_TIMEOUT = 30.0

# Connection limits: nobody, credentials or not, makes a service hold more sockets than
# these. Dask listeners and the dashboard close a connection beyond theirs on arrival (tornado
# spins on an accept that fails, so a kernel limit would not do there); the hashserver and
# database run under an open-files limit, at which libuv sheds and asyncio pauses accepting.
DASK_CONNECTIONS = 4096  # per Dask process (a scheduler holds a few per worker and client)
DASHBOARD_CONNECTIONS = 256
GUARD_OPEN_FILES = 1024  # hashserver, database: connections and files together


class StreamCap:
    """At most `limit` open tornado streams through one door; more are closed on arrival,
    before their TLS handshake."""

    def __init__(self, limit: int):
        import weakref

        self.limit, self.streams = limit, weakref.WeakSet()

    def admit(self, stream) -> bool:
        if sum(1 for s in list(self.streams) if not s.closed()) >= self.limit:
            stream.close()
            return False
        self.streams.add(stream)
        return True


def open_files(limit: int, exact: bool = False) -> None:
    """This process' open-files limit: raised to `limit` where the hard limit allows (a login
    node's 1024 would cap Dask before DASK_CONNECTIONS), or (exact) set to it, hard as well."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
    if exact:
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, ceiling))
    elif soft != resource.RLIM_INFINITY and soft < ceiling:
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))


def _harden_dask_listeners(tcp) -> None:
    import asyncio

    prepare = tcp.TLSListener._prepare_stream

    async def _prepare_stream(self, stream, address):
        try:
            return await asyncio.wait_for(prepare(self, stream, address), HANDSHAKE_TIMEOUT)
        except asyncio.TimeoutError:
            stream.close()
            return None

    tcp.TLSListener._prepare_stream = _prepare_stream
    handle, cap = tcp.BaseTCPListener._handle_stream, StreamCap(DASK_CONNECTIONS)

    async def _handle_stream(self, stream, address):
        if cap.admit(stream):
            return await handle(self, stream, address)

    tcp.BaseTCPListener._handle_stream = _handle_stream  # bound to tornado's server at listener start
    open_files(DASK_CONNECTIONS + 1024)


# A Dask scheduler holds its port from its first moment to its last (SEAMLESS_STACK_HOLD_PORT,
# set for the scheduler only; any other process finds the port taken and holds nothing).
# Why: a client that reconnects through a forwarder (Docker's port proxy, an SSH tunnel) while
# nothing listens behind it is accepted, then closed at once, and distributed's TLS connect lets
# tornado's "IOStream is not idle" ValueError escape its reconnect loop: the client hangs for
# good. Bound here, before Dask is imported (tens of ms after the process starts instead of
# seconds), the port queues connections until the scheduler accepts them, and one made while it
# shuts down is reset when it exits: errors distributed retries. The scheduler's listener gets a
# duplicate of the socket; closing that one leaves the port listening until the process ends.
HOLD_PORT = "SEAMLESS_STACK_HOLD_PORT"
LISTEN_BACKLOG = 2048  # distributed.comm.socket-backlog's default


def _hold_port():
    import os

    where = os.environ.pop(HOLD_PORT, None)  # [ADDRESS:]PORT, as the scheduler binds it; not for its children
    if not where:
        return None
    import socket

    address, _, port = where.rpartition(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address or "0.0.0.0", int(port)))
    except OSError:  # held already: a health check run in the scheduler's container
        sock.close()
        return None
    sock.listen(LISTEN_BACKLOG)
    sock.setblocking(False)
    return sock


class _HeldPortNetutil:
    """tornado.netutil as distributed.comm.tcp sees it, except that binding the held port gives a
    duplicate of the socket held since the process started."""

    def __init__(self, netutil, held):
        self._netutil, self._held = netutil, held

    def __getattr__(self, name):
        return getattr(self._netutil, name)

    def bind_sockets(self, port, address=None, **kwargs):
        if port == self._held.getsockname()[1]:
            return [self._held.dup()]
        return self._netutil.bind_sockets(port, address=address, **kwargs)


class _PatchOnImport:
    """A meta path finder that lets `distributed.comm.tcp` load as usual, then patches it."""

    target = "distributed.comm.tcp"

    def find_spec(self, name, path=None, target=None):
        if name != self.target:
            return None
        import importlib.util
        import sys

        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def patched(module):
            exec_module(module)
            _harden_dask_listeners(module)
            if _HELD is not None:
                module.netutil = _HeldPortNetutil(module.netutil, _HELD)

        spec.loader.exec_module = patched
        return spec


def _install() -> None:
    import sys

    sys.meta_path.insert(0, _PatchOnImport())


_HELD = _hold_port()
_install()

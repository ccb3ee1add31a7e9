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


def _limit_tls_handshake(tcp) -> None:
    import asyncio

    prepare = tcp.TLSListener._prepare_stream

    async def _prepare_stream(self, stream, address):
        try:
            return await asyncio.wait_for(prepare(self, stream, address), HANDSHAKE_TIMEOUT)
        except asyncio.TimeoutError:
            stream.close()
            return None

    tcp.TLSListener._prepare_stream = _prepare_stream


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
            _limit_tls_handshake(module)

        spec.loader.exec_module = patched
        return spec


def _install() -> None:
    import sys

    sys.meta_path.insert(0, _PatchOnImport())


_install()

"""HTTP/1.1 request framing for the forwarder: parse a request head strictly, copy a body by
its framing (Content-Length or chunked), and the forwarder's own refusals. A request whose
framing is ambiguous is refused, never guessed at: a proxy that reads a body differently from
the server behind it is how requests are smuggled.
"""

from __future__ import annotations

import asyncio
import base64
import re
from dataclasses import dataclass

HEAD_LIMIT = 64 * 1024  # a request head, a chunk-size line, a chunked body's trailers


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


def refusal(status: str, text: str) -> bytes:
    body = f"{text}\n".encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n").encode() + body


async def read_head(reader: asyncio.StreamReader) -> bytes | None:
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


async def copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, size: int) -> None:
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


async def copy_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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
        await copy(reader, writer, size)
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

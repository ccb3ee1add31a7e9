"""Who owns the other end of a loopback TCP connection: the forwarder's admission rule.

The kernel's record of the client's socket, looked up by its exact 4-tuple with NETLINK
sock_diag (one round trip, ~16 µs, whatever the size of the socket table), must be
ESTABLISHED, have an inode and belong to the UID asked about. A client that sent and closed
already is a TIME_WAIT or orphan record with UID 0 and no inode: nobody's, also for root.
/proc/net/tcp is read only where sock_diag is missing, under the same rule.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import itertools
import os
import socket
import struct
import sys
from dataclasses import dataclass

# <linux/netlink.h>, <linux/sock_diag.h>, <linux/inet_diag.h>
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
TCP_ESTABLISHED = 1
INET_DIAG_NOCOOKIE = 0xFFFFFFFF
_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_REQ_V2 = struct.Struct("=BBBxI")  # family, protocol, ext, pad, states
_SOCKID = struct.Struct("!HH16s16s")  # sport, dport, src, dst (network order); then if, cookie[2]
_MSG = struct.Struct("=BBBB")  # family, state, timer, retrans; then sockid; then the five below
_MSG_TAIL = struct.Struct("=IIIII")  # expires, rqueue, wqueue, uid, inode
_MSG_SIZE = _MSG.size + _SOCKID.size + 12 + _MSG_TAIL.size  # 72: struct inet_diag_msg


@dataclass(frozen=True)
class DiagSocket:
    """One inet_diag_msg: the kernel's record of a socket."""
    family: int
    state: int
    sport: int
    dport: int
    src: bytes  # 16 bytes as the kernel gives them (IPv4: the first 4)
    dst: bytes
    uid: int
    inode: int


def _endpoints(client: tuple) -> tuple[int, bytes, bytes]:
    """(family, client address, server address) packed. The forwarder listens on 127.0.0.1;
    an IPv4-mapped peer is looked up as IPv4 (the kernel's TCP table is shared), ::1 as IPv6."""
    address = ipaddress.ip_address(client[0].split("%")[0])
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    if address.version == 4:
        return socket.AF_INET, address.packed, socket.inet_aton("127.0.0.1")
    return socket.AF_INET6, address.packed, socket.inet_pton(socket.AF_INET6, "::1")


_V4_MAPPED = b"\0" * 10 + b"\xff\xff"


def _unmapped(family: int, address: bytes) -> bytes:
    """An address from the kernel, IPv4 (or IPv4-mapped IPv6) as 4 bytes, else 16."""
    if family == socket.AF_INET:
        return address[:4]
    return address[12:] if address[:12] == _V4_MAPPED else address


def diag_request(client: tuple, listen_port: int, seq: int = 1) -> bytes:
    """A SOCK_DIAG_BY_FAMILY request for the one TCP socket from `client` to our listen port
    (its 4-tuple, no cookie): the kernel answers with that socket's record or ENOENT. The
    kernel does not apply the states mask (ESTABLISHED) to such exact lookups: the answer's
    state is checked too."""
    family, src, dst = _endpoints(client)
    body = (_REQ_V2.pack(family, socket.IPPROTO_TCP, 0, 1 << TCP_ESTABLISHED)
            + _SOCKID.pack(client[1], listen_port, src, dst)  # struct pads the addresses to 16 bytes
            + struct.pack("=III", 0, INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE))
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, seq, 0) + body


def diag_reply(data: bytes, seq: int = 1) -> list[DiagSocket]:
    """The sockets in a sock_diag reply; ENOENT (no such socket) is an empty list, any other
    netlink error an OSError."""
    found, offset = [], 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _flags, got_seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            raise OSError(errno.EBADMSG, "truncated netlink message")
        payload = data[offset + _NLMSGHDR.size:offset + length]
        offset += (length + 3) & ~3
        if got_seq != seq or kind == NLMSG_DONE:
            continue
        if kind == NLMSG_ERROR:
            code = -struct.unpack_from("=i", payload)[0]
            if code == errno.ENOENT:
                continue
            raise OSError(code, os.strerror(code) if code else "netlink error 0")
        if kind != SOCK_DIAG_BY_FAMILY or len(payload) < _MSG_SIZE:
            raise OSError(errno.EBADMSG, f"unexpected netlink message {kind}")
        family, state, _timer, _retrans = _MSG.unpack_from(payload)
        sport, dport, src, dst = _SOCKID.unpack_from(payload, _MSG.size)
        *_, uid, inode = _MSG_TAIL.unpack_from(payload, _MSG.size + _SOCKID.size + 12)
        found.append(DiagSocket(family, state, sport, dport, src, dst, uid, inode))
    return found


def owner_of(found: list[DiagSocket], client: tuple, listen_port: int) -> int | None:
    """The UID, when the answer is exactly one socket with this 4-tuple, ESTABLISHED and
    with an inode: TIME_WAIT and orphaned (closed) sockets show UID 0 and inode 0."""
    if len(found) != 1:
        return None
    sock = found[0]
    _, src, dst = _endpoints(client)
    if ((sock.state, sock.sport, sock.dport) != (TCP_ESTABLISHED, client[1], listen_port) or sock.inode == 0
            or (_unmapped(sock.family, sock.src), _unmapped(sock.family, sock.dst)) != (src, dst)):
        return None
    return sock.uid


_seq = itertools.count(1)


def _sock_diag_owner(client: tuple, listen_port: int) -> int | None:
    """One netlink round trip. The kernel answers inside sendto(), so a non-blocking recv
    finds the reply or nothing (nothing refuses)."""
    seq = next(_seq) & 0xFFFFFFFF
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as sock:
            sock.setblocking(False)
            sock.sendto(diag_request(client, listen_port, seq), (0, 0))
            return owner_of(diag_reply(sock.recv(65536), seq), client, listen_port)
    except (OSError, ValueError, struct.error):
        return None


@functools.cache
def sock_diag_available() -> bool:
    """Whether this kernel answers TCP sock_diag requests (an empty dump: states mask 0)."""
    body = _REQ_V2.pack(socket.AF_INET, socket.IPPROTO_TCP, 0, 0) + bytes(_SOCKID.size + 12)
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as sock:
            sock.settimeout(5)
            sock.sendto(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + body, (0, 0))
            data = sock.recv(65536)
    except OSError:  # EPROTONOSUPPORT, EAFNOSUPPORT, a sandbox without netlink
        return False
    return len(data) >= _NLMSGHDR.size and _NLMSGHDR.unpack_from(data)[1] in (NLMSG_DONE, SOCK_DIAG_BY_FAMILY)


def _proc_address(packed: bytes) -> str:
    """An address as /proc/net/tcp{,6} prints it: each 32-bit word in host order, in hex."""
    return "".join(f"{int.from_bytes(packed[i:i + 4], sys.byteorder):08X}" for i in range(0, len(packed), 4))


def proc_net_tcp_owner(client: tuple, listen_port: int,
                       tables: tuple[str, ...] = ("/proc/net/tcp", "/proc/net/tcp6")) -> int | None:
    """The fallback without sock_diag, with the same rule: the UID of the row with this exact
    4-tuple in state 01 (ESTABLISHED) and a nonzero inode. Other rows with the same ports
    (TIME_WAIT: UID 0, inode 0) are skipped, not taken."""
    family, src, dst = _endpoints(client)
    for table in tables:
        if table.endswith("6"):  # IPv6 sockets, some connected to IPv4-mapped 127.0.0.1
            local, remote = (src, dst) if family == socket.AF_INET6 else (_V4_MAPPED + src, _V4_MAPPED + dst)
        elif family == socket.AF_INET:
            local, remote = src, dst
        else:
            continue
        needle = f" {_proc_address(local)}:{client[1]:04X} {_proc_address(remote)}:{listen_port:04X} 01 "
        try:
            with open(table) as f:
                text = f.read()
        except OSError:
            continue
        start = text.find(needle)
        while start >= 0:
            end = text.find("\n", start)
            fields = text[start:end if end >= 0 else len(text)].split()
            if len(fields) > 8 and fields[8] != "0":
                return int(fields[6])
            start = text.find(needle, start + 1)
    return None


def peer_owner(client: tuple, listen_port: int) -> int | None:
    """The UID of the live socket `client` connected to our 127.0.0.1:listen_port, or None."""
    if sock_diag_available():
        return _sock_diag_owner(client, listen_port)
    return proc_net_tcp_owner(client, listen_port)

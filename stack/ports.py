"""Port allocation: distinct, actually free, inside the range (the old scripts got all three wrong)."""

from __future__ import annotations

import random
import socket
from typing import Callable, Iterable, Mapping, Sequence

from .errors import StackError

PortCheck = Callable[[int], bool]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if nothing listens on host:port (we can bind it ourselves right now)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def allocate_ports(
    services: Sequence[str],
    port_range: tuple[int, int],
    *,
    is_free: PortCheck,
    fixed: Mapping[str, int] | None = None,
    reserved: Iterable[int] = (),
    rng: random.Random | None = None,
) -> dict[str, int]:
    """Give every service a distinct free port.

    fixed: ports the user asked for (they may lie outside the range; they must be free).
    reserved: ports other stacks of ours hold even while stopped.
    Ports are drawn in random order so that concurrent stacks rarely collide.
    """
    fixed = dict(fixed or {})
    reserved = set(reserved)
    if len(set(fixed.values())) != len(fixed):
        raise StackError("the same port was asked for two services", "give each service its own port")
    for service, port in fixed.items():
        if port in reserved or not is_free(port):
            raise StackError(
                f"port {port} for the {service} is already in use",
                "choose another port or stop what uses it",
            )
    taken = reserved | set(fixed.values())
    wanted = [s for s in services if s not in fixed]
    low, high = port_range
    candidates = [p for p in range(low, high + 1) if p not in taken]
    if len(candidates) < len(wanted):
        raise StackError(
            f"port range {low}-{high} is too small: {len(wanted)} ports needed, {len(candidates)} not held by other stacks",
            "widen --port-range (or RANDOM_PORT_START/RANDOM_PORT_END)",
        )
    (rng or random.Random()).shuffle(candidates)
    chosen: dict[str, int] = dict(fixed)
    pool = iter(candidates)
    for service in wanted:
        for port in pool:
            if is_free(port):
                chosen[service] = port
                break
        else:
            raise StackError(
                f"no free port left in {low}-{high} ({len(wanted)} needed)",
                "free some ports or widen --port-range (or RANDOM_PORT_START/RANDOM_PORT_END)",
            )
    return {service: chosen[service] for service in services}

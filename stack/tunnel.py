"""Reaching a stack from this machine: over SSH for a moment (the health gate, `status`),
or for as long as `seamless-stack tunnel` runs.

A stack with `--ssh` access listens on its own host's loopback: clients here reach it
through `ssh -L` forwards. A secured stack also needs, for Seamless' configuration route,
the owner-only forwarder that adds the stack's credentials (forward.py). The tunnel
session keeps both up until Ctrl-C and puts every file back as it was without them.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Callable, Iterator

from . import seamless_config, state
from .connection import Connection, render, write_env_file
from .errors import StackError
from .forward import Forwarder, routes_for
from .layout import CLASSIC_PORTS, DEFAULT_PORT_RANGE, PORTS
from .plan import Deployment
from .ports import allocate_ports, port_is_free
from .progress import Progress
from .ssh import Destination, Tunnel


def ssh_tunnel(deployment: Deployment, local: dict[str, int]) -> Tunnel:
    """SSH forwards from these local ports to each of the stack's services."""
    forwards = {service: (local[service], deployment.ports[service]) for service in PORTS}
    return Tunnel(Destination.parse(deployment.ssh_destination), forwards, deployment.tunnel_target)


@contextlib.contextmanager
def client_view(deployment: Deployment) -> Iterator[Connection]:
    """The stack as a client here sees it; over SSH, through a temporary tunnel."""
    if deployment.access != "ssh":
        yield deployment.connection()
        return
    local = allocate_ports(PORTS, DEFAULT_PORT_RANGE, is_free=port_is_free)
    with ssh_tunnel(deployment, local):
        yield deployment.connection(local_ports=local)


def tunnel(name: str, fmt: str, on_ready: Callable[[str, Deployment], None], progress: Progress,
           port_range: tuple[int, int] | None = None) -> None:
    """Reach a stack from here until Ctrl-C: SSH forwards to the services of a stack over SSH
    (the environment file holds their local ports while they stand; a dropped connection is
    re-established on the same ports), and for a secured stack the owner-only forwarder that
    Seamless' configuration route needs (connected projects use its ports meanwhile).
    `on_ready` gets the environment in `fmt`, and the stack, once everything is open."""
    deployment = state.load(name)
    serving = seamless_config.tunnel_pid(name)
    if serving and serving != os.getpid():
        raise StackError(f"a tunnel of stack {name!r} runs already (pid {serving}: the one its Seamless projects use)",
                         f"use it: its environment is in {deployment.env_file}; `seamless-stack disconnect --name {name} "
                         "--all` stops a background one")
    port_range = port_range or deployment.port_range or DEFAULT_PORT_RANGE  # local ports: the stack's range by default
    secured = deployment.credentials_dir is not None
    if deployment.ssh_destination is None and not secured:
        raise StackError(f"stack {name!r} is reached directly, not over SSH: it needs no tunnel",
                         f"source its environment (`seamless-stack env --name {name}`)")
    session, connection = None, deployment.connection()
    if deployment.access == "ssh":
        classic = {s: p for s, p in CLASSIC_PORTS.items() if port_is_free(p)}
        local = allocate_ports(PORTS, port_range, is_free=port_is_free, fixed=classic)
        connection = deployment.connection(local_ports=local)
        session = ssh_tunnel(deployment, local)
    forwarder, project_ports = None, connection.ports()
    try:
        if session:
            session.start()
            write_env_file(deployment, connection)
        if secured:
            project_ports = allocate_ports(PORTS, port_range, is_free=port_is_free, reserved=connection.ports().values())
            upstream = {service: (connection.host, port) for service, port in connection.ports().items()}
            forwarder = Forwarder(routes_for(deployment.credentials_dir, deployment.http_tls, upstream, project_ports)).start()
        seamless_config.tunnel_opened(deployment, project_ports, progress)  # connected projects use these ports
        on_ready(render(connection.variables(), fmt), deployment)
        if session:
            progress(f"tunnel to {session.destination} open "
                     f"({', '.join(f'{s} {lp}->{rp}' for s, (lp, rp) in session.forwards.items())}); Ctrl-C closes it")
        if forwarder:
            progress(f"Seamless' configuration route: {', '.join(f'{s} {p}' for s, p in project_ports.items())} on 127.0.0.1, "
                     "for your processes only, with the stack's credentials; Ctrl-C closes it")
        _keep_open(session, progress)
    finally:
        if forwarder:
            forwarder.stop()
        if session:
            session.stop()
            write_env_file(deployment)  # back to what holds without the tunnel
        seamless_config.tunnel_closed(deployment, progress)
        progress("tunnel closed")


def _keep_open(session: Tunnel | None, progress: Progress) -> None:
    """Until Ctrl-C (KeyboardInterrupt): a dropped SSH connection is opened again on the same ports."""
    while True:
        time.sleep(1)
        if session and not session.alive():
            progress(f"SSH connection to {session.destination} lost; reconnecting")
            try:
                session.start()
                progress("reconnected")
            except StackError as exc:
                progress(f"reconnect failed ({exc}); retrying in 3s")
                time.sleep(3)

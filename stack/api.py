"""The facade: up, down, status, env, logs. spec -> plan -> backend -> health gate -> connection.

Everything a user can get wrong is checked before anything starts; anything that fails
after something started is rolled back, so no half-started stack is ever left behind.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import docker_tools, images, state
from .backends import ComposeBackend
from .connection import render
from .errors import StackError
from .health import ServiceFailed, wait_until_ready
from .plan import Deployment, make_plan
from .spec import StackSpec

Progress = Callable[[str], None]


def _backend(deployment: Deployment) -> ComposeBackend:
    if deployment.method != "local":
        raise StackError(f"method {deployment.method!r} is not supported yet", "use `seamless-stack up local`")
    return ComposeBackend(deployment)


def _reserved_ports(except_name: str) -> set[int]:
    """Ports recorded by our other stacks, held even while their containers are stopped."""
    return {port for d in state.load_all() if d.name != except_name for port in d.ports.values()}


def _existing(name: str) -> Deployment | None:
    try:
        return state.load(name)
    except StackError:
        return None


def up(spec: StackSpec, progress: Progress = lambda line: None) -> Deployment:
    """Build what is missing, start the stack, pass the health gate, write the env output."""
    started = time.monotonic()
    docker = docker_tools.docker_client()
    docker_tools.check_engine(docker)
    docker_tools.check_compose(docker)
    previous = _existing(spec.name)
    if previous is not None and _backend(previous).is_up():
        raise StackError(
            f"stack {spec.name!r} is already up (scheduler port {previous.ports['scheduler']})",
            f"use it (`seamless-stack env --name {spec.name}`), stop it (`seamless-stack down --name {spec.name}`) or pick another --name",
        )
    tags = images.build_images(
        docker, base_image=spec.base_image, worker_requirements=spec.worker_requirements, progress=progress
    )
    deployment = make_plan(spec, tags, reserved_ports=_reserved_ports(spec.name))
    backend = _backend(deployment)
    progress(f"starting stack {spec.name!r}: {deployment.workers} worker(s) x {deployment.threads} threads, ports {deployment.ports}")
    state.save(deployment)
    try:
        backend.up()
        ready_in = wait_until_ready(
            backend.waits(), timeout=spec.timeout, progress=progress, find_failure=backend.find_failure
        )
    except BaseException as exc:  # also Ctrl-C: never leave a half-started stack
        if isinstance(exc, ServiceFailed):
            progress(f"last log lines of {exc.service}:\n{_indent(backend.logs(exc.service, tail=25))}")
        progress(f"rolling back: stopping stack {spec.name!r}")
        backend.down()
        state.forget(spec.name)
        raise
    write_env_file(deployment)
    progress(f"stack {spec.name!r} ready in {ready_in:.1f}s ({time.monotonic() - started:.1f}s in all); environment in {deployment.env_file}")
    return deployment


def write_env_file(deployment: Deployment) -> Path:
    path = Path(deployment.env_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"seamless-stack {deployment.name!r} ({deployment.method}); source this file"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render(deployment.connection().variables(), "shell", header=header))
    os.replace(tmp, path)
    return path


def down(name: str, progress: Progress = lambda line: None) -> Deployment:
    deployment = state.load(name)
    backend = _backend(deployment)
    docker_tools.check_engine(backend.docker)
    progress(f"stopping stack {name!r}")
    backend.down()
    Path(deployment.env_file).unlink(missing_ok=True)
    state.forget(name)
    progress(f"stack {name!r} is down; data stays in {deployment.buffer_dir} and {deployment.database_dir}")
    return deployment


def env(name: str, fmt: str = "shell") -> str:
    deployment = state.load(name)
    return render(deployment.connection().variables(), fmt)


def logs(name: str, service: str | None = None, tail: int | None = None) -> str:
    return _backend(state.load(name)).logs(service, tail)


@dataclass
class ServiceStatus:
    service: str
    container: str
    state: str
    health: str
    port: str
    answer: str  # what the live health check says


@dataclass
class StackStatus:
    deployment: Deployment
    services: list[ServiceStatus]
    workers_ready: str


def status(name: str) -> StackStatus:
    deployment = state.load(name)
    backend = _backend(deployment)
    answers = {wait.service: wait.check() for wait in backend.waits()}
    ports = {
        "hashserver": str(deployment.ports["hashserver"]),
        "database": str(deployment.ports["database"]),
        "scheduler": f"{deployment.ports['scheduler']} (dashboard {deployment.ports['dashboard']})",
        "worker": "-",
    }
    rows = [
        ServiceStatus(s.service, s.container, s.state, s.health or "-", ports.get(s.service, "-"),
                      "ok" if answers.get(s.service, (False, ""))[0] else answers.get(s.service, (False, "-"))[1])
        for s in backend.services()
    ]
    return StackStatus(deployment, rows, answers["worker"][1])


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())

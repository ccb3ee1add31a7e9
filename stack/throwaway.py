"""A throwaway stack on the Compose backend: what `seamless-stack up local` runs, with its
files in a temporary folder and no state record. `seamless_stack.testing` is its face.

The plan and the rules are the backend's own: `ComposeBackend.prepare` plans (images, ports,
directories, credentials), `api.health_gate` waits with the backend's `find_failure` (its
crash-loop rule), its `logs` and `leftovers` inspect. testcontainers' DockerCompose runs
`compose up` and `down` (`compose`), with the backend's docker call, which unsets the stack's
variables (Compose lets the environment win over the env file). Only these differ from
`up local`:
- the Compose variables go to <folder>/compose.env, not beside a state record;
- the failure message carries every service's log tail, read before anything is removed.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from testcontainers.compose import DockerCompose

from . import docker_tools
from .backends.compose import COMPOSE_LABEL, ComposeBackend
from .errors import error_text
from .files import write_private
from .layout import ROLES
from .ports import port_is_free
from .progress import Progress
from .redact import redact
from .spec import StackSpec

COMPOSE_ENV = "compose.env"  # in the stack's temporary folder


def plan(spec: StackSpec, folder: Path, progress: Progress) -> ComposeBackend:
    """The driver's own plan (spec -> prepare), as a backend keeping its Compose variables in `folder`."""
    prepared = ComposeBackend.prepare(spec, progress)
    backend = ComposeBackend(prepared.deployment, env_path=folder / COMPOSE_ENV)
    backend.warnings = prepared.warnings
    return backend


def compose(backend: ComposeBackend, folder: Path) -> DockerCompose:
    """testcontainers' DockerCompose for the backend's files, variables and project, through its
    public parameters only: it has no project name and runs Compose with this process's
    environment, so its docker command is a script in `folder` that runs the backend's own
    docker call (the stack's variables unset) with COMPOSE_PROJECT_NAME set. wait=False:
    `up --detach`, then the driver's health gate with the backend's crash-loop rule."""
    script = folder / "docker"
    *unset, docker = backend.docker_call()
    call = [*unset, f"COMPOSE_PROJECT_NAME={backend.deployment.project}", docker]
    write_private(script, f"#!/bin/sh\nexec {shlex.join(call)} \"$@\"\n")
    script.chmod(0o700)
    backend.write_env()
    return DockerCompose(context=str(folder), compose_file_name=[str(path) for path in backend.compose_files()],
                         env_file=[str(backend.env_path)], wait=False, docker_command_path=str(script))


def lost_a_port(backend: ComposeBackend) -> bool:
    """After a failed `compose up`: is a port of the plan held by something other than this
    stack's running containers (another stack that started at the same moment)?"""
    records = docker_tools.inspect_containers(backend.docker, [("label", f"{COMPOSE_LABEL}={backend.deployment.project}")])
    ours = {int(binding["HostPort"]) for record in records if record["State"].get("Running")
            for bindings in (record["NetworkSettings"].get("Ports") or {}).values() for binding in bindings or ()}
    return any(port not in ours and not port_is_free(port, backend.deployment.bind)
               for port in backend.deployment.ports.values())


def log_tail(backend: ComposeBackend, lines: int) -> str:
    """Each service's last lines, indented under a header; never raises (the failure that
    asked for them matters more)."""
    parts = []
    for service in ROLES:
        try:
            text = "\n".join("    " + line for line in readable_logs(backend, service, lines).splitlines())
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            text = f"    (logs unavailable: {describe(exc)})"
        parts.append(f"--- {service}: last {lines} log lines ---\n{text or '    (no output)'}")
    return "\n".join(parts)


def readable_logs(backend: ComposeBackend, service: str | None = None, tail: int | None = None) -> str:
    """The backend's logs without secrets or terminal codes."""
    return redact(backend.logs(service, tail))


def hostnames(backend: ComposeBackend, service: str) -> set[str]:
    """Hostnames (short container IDs) of a service's running containers."""
    labels = [("label", f"{COMPOSE_LABEL}={backend.deployment.project}"), ("label", f"com.docker.compose.service={service}")]
    return {container.id[:12] for container in backend.docker.container.list(filters=labels)}


def removal_command(backend: ComposeBackend, paths: list[Path]) -> str:
    """A shell line that removes a stack left running (keep=True): its containers, then its files."""
    compose = ["docker", "compose", "-p", backend.deployment.project]
    for path in backend.compose_files():
        compose += ["-f", str(path)]
    compose += ["--env-file", str(backend.env_path), "down", "--volumes"]
    return f"{shlex.join(compose)} && rm -rf {shlex.join(str(p) for p in paths)}"


def describe(exc: BaseException) -> str:
    """One line for a failure; for a failed docker/Compose call, what Compose said last."""
    if isinstance(exc, subprocess.CalledProcessError):
        return f"`{' '.join(map(str, exc.cmd[1:3]))} ...` failed: {error_text(exc)}"
    return str(exc) or type(exc).__name__

"""A throwaway stack on the Compose backend: what `seamless-stack up local` runs, with its
files in a temporary folder and no state record. `seamless_stack.testing` is its face.

The lifecycle and its rules are the backend's own: `ComposeBackend.prepare` plans (images,
ports, directories, credentials), `start` runs `compose up`, `api.health_gate` waits with
the backend's `find_failure` (its crash-loop rule), `logs` and `down` end it. Only these
differ from `up local`:
- the Compose variables go to <folder>/compose.env, not beside a state record;
- Compose runs with the stack's variables (and COMPOSE_*) unset in its environment, where
  they would win over the env file: a test process's own HASHSERVER_BUFFER_DIR, THREADS or
  COMPOSE_PROJECT_NAME must not change a throwaway stack (`compose_client`);
- the failure message carries every service's log tail, read before anything is removed.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from pathlib import Path
from typing import Mapping

from python_on_whales import DockerClient

from . import docker_tools
from .backends.compose import COMPOSE_LABEL, ComposeBackend
from .layout import ROLES
from .ports import port_is_free
from .progress import Progress
from .redact import redact
from .spec import StackSpec

COMPOSE_ENV = "compose.env"  # in the stack's temporary folder
_REFERENCE = re.compile(r"\$\{(\w+)")  # a variable the Compose files use
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # Compose's line-clearing codes, even in `logs --no-color`


def plan(spec: StackSpec, folder: Path, progress: Progress) -> ComposeBackend:
    """The driver's own plan (spec -> prepare), as a backend keeping its Compose variables in `folder`."""
    prepared = ComposeBackend.prepare(spec, progress)
    backend = ComposeBackend(prepared.deployment, env_path=folder / COMPOSE_ENV)
    backend.warnings = prepared.warnings
    backend.docker = compose_client(backend)
    return backend


def compose_client(backend: ComposeBackend, environ: Mapping[str, str] = os.environ) -> DockerClient:
    """The backend's Docker client, calling docker through `env -u NAME ...`: Compose lets the
    environment win over --env-file, so every variable the Compose files use (those the env
    file sets, and those with a default there) and COMPOSE_* are unset for it."""
    used = {name for path in backend.compose_files() for name in _REFERENCE.findall(path.read_text())}
    names = sorted({*backend.compose_environment(), *used, *(key for key in environ if key.startswith("COMPOSE_"))})
    unset = [arg for name in names for arg in ("-u", name)]
    return DockerClient(client_call=[shutil.which("env") or "/usr/bin/env", *unset, docker_tools.docker_binary()],
                        host=backend.deployment.compose.docker_host, compose_files=backend.compose_files(),
                        compose_project_name=backend.deployment.project, compose_env_files=[backend.env_path])


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
    return _ANSI.sub("", redact(backend.logs(service, tail)))


def hostnames(backend: ComposeBackend, service: str) -> set[str]:
    """Hostnames (short container IDs) of a service's running containers."""
    labels = [("label", f"{COMPOSE_LABEL}={backend.deployment.project}"), ("label", f"com.docker.compose.service={service}")]
    return {container.id[:12] for container in backend.docker.container.list(filters=labels)}


def removal_command(backend: ComposeBackend, paths: list[Path]) -> str:
    """A shell line that removes a stack left running (keep=True): its containers, then its files."""
    compose = ["docker", "compose", "-p", backend.deployment.project]
    for path in backend.compose_files():
        compose += ["-f", str(path)]
    compose += ["--env-file", str(backend.env_path), "down"]
    return f"{shlex.join(compose)} && rm -rf {shlex.join(str(p) for p in paths)}"


def describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__

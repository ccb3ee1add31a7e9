"""ComposeBackend: a Deployment as one Docker Compose project (compose/compose.yaml).

The Compose file is parametrised only by environment variables; they are written to a
per-stack env file next to the state record, so `down`, `logs` and `status` run Compose
with exactly what `up` used.
"""

from __future__ import annotations

from dataclasses import dataclass

from python_on_whales import DockerClient, DockerException

from .. import docker_tools
from ..errors import StackError
from ..plan import Deployment
from ..resources import compose_file
from ..spec import stacks_dir

SERVICES = ("hashserver", "database", "scheduler", "worker")


@dataclass
class ServiceState:
    service: str
    container: str
    state: str  # running, exited, restarting, ...
    health: str  # healthy, starting, unhealthy, or "" without healthcheck
    exit_code: int


class ComposeBackend:
    def __init__(self, deployment: Deployment):
        self.deployment = deployment
        self.env_path = stacks_dir() / f"{deployment.name}.compose.env"
        self.docker: DockerClient = docker_tools.docker_client(
            host=deployment.docker_host,
            compose_files=[compose_file()] + ([compose_file("tls.yaml")] if deployment.host_tls_dir else []),
            compose_project_name=deployment.project,
            compose_env_files=[self.env_path],
        )

    # -- lifecycle --------------------------------------------------------------------
    def write_env(self) -> None:
        self.env_path.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"{key}={value}" for key, value in self.deployment.compose_environment().items()]
        self.env_path.write_text("\n".join(lines) + "\n")

    def up(self) -> None:
        """Create and start the containers; readiness is the health gate's job."""
        self.write_env()
        try:
            self.docker.compose.up(detach=True, scales={"worker": self.deployment.workers}, quiet=True, pull="never")
        except DockerException as exc:
            raise StackError(f"docker compose up failed: {_tail(exc)}", "see above; `seamless-stack logs` shows the services' output") from None

    def down(self) -> None:
        if not self.env_path.exists():
            self.write_env()
        try:
            self.docker.compose.down(remove_orphans=True, timeout=10, quiet=True)
        except DockerException as exc:
            raise StackError(f"docker compose down failed: {_tail(exc)}") from None
        self.env_path.unlink(missing_ok=True)

    # -- inspection -------------------------------------------------------------------
    def services(self) -> list[ServiceState]:
        if not self.env_path.exists():
            self.write_env()
        try:
            containers = self.docker.compose.ps(all=True)
        except DockerException as exc:
            raise StackError(f"cannot list the containers of stack {self.deployment.name!r}: {_tail(exc, 1)}",
                             "check that the Docker engine runs and answers") from None
        states = []
        for container in containers:
            state = container.state
            states.append(
                ServiceState(
                    service=container.config.labels.get("com.docker.compose.service", "?"),
                    container=container.name,
                    state="restarting" if state.restarting else state.status,
                    health=state.health.status if state.health else "",
                    exit_code=state.exit_code or 0,
                )
            )
        return sorted(states, key=lambda s: (SERVICES.index(s.service) if s.service in SERVICES else 99, s.container))

    def is_up(self) -> bool:
        return any(s.state in ("running", "restarting", "created") for s in self.services())

    def find_failure(self) -> tuple[str, str] | None:
        for s in self.services():
            if s.state in ("exited", "dead", "restarting"):
                return s.service, f"container {s.container} is {s.state} (exit code {s.exit_code})"
        return None

    def logs(self, service: str | None = None, tail: int | None = None) -> str:
        if service is not None and service not in SERVICES:
            raise StackError(f"no service {service!r}", f"choose one of {', '.join(SERVICES)}")
        return self.docker.compose.logs(
            services=[service] if service else [], tail=str(tail) if tail else None, no_log_prefix=False
        )


def _tail(exc: DockerException, lines: int = 8) -> str:
    text = (exc.stderr or exc.stdout or str(exc)).strip()
    return "\n".join(text.splitlines()[-lines:])

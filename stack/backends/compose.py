"""ComposeBackend: a Deployment as one Docker Compose project (compose/compose.yaml),
on this machine's engine or on a remote Docker host's (docker CLI over ssh://).

The Compose file is parametrised only by environment variables; they are written to a
per-stack env file next to the state record, so `down`, `logs`, `status` and a converging
`up` run Compose with exactly what the first `up` used: same ports, same directories.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Mapping

from python_on_whales import DockerClient, DockerException

from .. import credentials, docker_tools, images, state
from ..errors import ANSI, StackError, error_text
from ..files import write_private
from ..hosts import LocalHost, SSHDockerHost
from ..layout import ROLES, SUPERVISOR, StackFiles, compose_project
from ..plan import WILDCARDS, Deployment, compose_plan
from ..progress import Progress
from ..resources import compose_file
from ..spec import LOOPBACK, StackSpec
from ..shell import quote
from ..ssh import Destination
from ..storage import LOW, storage_problems
from .base import CRASH_LOOP_RESTARTS, Backend, ServiceState

COMPOSE_LABEL = "com.docker.compose.project"
RETIRE_TIMEOUT = 60  # seconds a retired worker gets to close before Docker kills it (its nanny takes up to 10)


# Docker's words for a published port another process holds (docker-proxy, or the kernel's).
_PORT_TAKEN = re.compile(r"(?:Bind for |listen tcp[46]? )\[?([0-9a-fA-F.:]+?)\]?:(\d+)[: ].*(?:already allocated|address already in use)")


def port_taken(text: str) -> tuple[str, int] | None:
    """(address, port) when a docker error says another process holds a port we publish."""
    match = _PORT_TAKEN.search(text)
    return (match[1], int(match[2])) if match else None


def _host(remote: Destination | None):
    """Where the Docker engine runs, probed (its user's IDs and home): this machine or the remote."""
    return LocalHost() if remote is None else SSHDockerHost(remote).probe()


def _reserved_ports(spec: StackSpec, docker_host: str | None) -> set[int]:
    """Ports recorded by our other stacks on the same Docker host, held even while stopped."""
    return {port for d in state.load_all() if d.name != spec.name and d.compose and d.compose.docker_host == docker_host
            for port in d.ports.values()}


_REFERENCE = re.compile(r"\$\{(\w+)")  # a variable the Compose files use


class ComposeBackend(Backend):
    def __init__(self, deployment: Deployment, env_path: Path | None = None):
        """env_path: where the Compose variables go (default: next to the state record)."""
        super().__init__(deployment)
        self.env_path = env_path or StackFiles.of(deployment.name).compose_env
        self._restarts_seen: dict[str, int] = {}  # container -> restart count when first looked at
        self.docker = DockerClient(client_call=self.docker_call(), host=deployment.compose.docker_host,
                                   compose_files=self.compose_files(), compose_project_name=deployment.project,
                                   compose_env_files=[self.env_path])

    def compose_files(self) -> list[Path]:
        """compose.yaml, plus the security overlay (all stacks but --insecure ones) and the
        supervisor (where the engine's socket was found)."""
        record = self.deployment.compose
        return ([compose_file()] + ([compose_file("secure.yaml")] if record.host_credentials_dir else [])
                + ([compose_file("supervise.yaml")] if record.engine_socket else []))

    @property
    def supervised(self) -> bool:
        return bool(self.deployment.compose.engine_socket)

    def docker_call(self, environ: Mapping[str, str] = os.environ) -> list[str]:
        """The docker command of this stack's calls: `env -u NAME ... docker`. Compose lets the
        caller's environment win over --env-file, so a user's exported THREADS,
        HASHSERVER_BUFFER_DIR or COMPOSE_PROJECT_NAME would change the stack: every variable the
        Compose files use (set by the env file or defaulted there) and COMPOSE_* is unset."""
        used = {name for path in self.compose_files() for name in _REFERENCE.findall(path.read_text())}
        names = sorted({*used, *(key for key in environ if key.startswith("COMPOSE_"))})
        return [shutil.which("env") or "/usr/bin/env", *(arg for name in names for arg in ("-u", name)),
                docker_tools.docker_binary()]

    # -- plan ---------------------------------------------------------------------------
    @classmethod
    def prepare(cls, spec: StackSpec, progress: Progress) -> "ComposeBackend":
        local_docker = docker_tools.docker_client()
        engine = docker_tools.check_engine(local_docker)  # Compose itself is checked only when a compose call fails
        host = _host(spec.remote)
        host.check_bind(spec.bind)
        dirs = host.prepare_dirs({
            "buffer directory (--buffer-dir / HASHSERVER_BUFFER_DIR)": spec.buffer_dir,
            "database directory (--database-dir / DATABASE_DIR)": spec.database_dir,
        }, progress)
        tags = images.build_images(local_docker, base_image=spec.base_image,
                                   worker_requirements=spec.worker_requirements, progress=progress)
        credentials_dirs = None
        if not spec.insecure:
            names = {host.name, spec.bind} | ({spec.remote.host} if spec.remote else set())
            creds = credentials.ensure(StackFiles.of(spec.name).tls, spec.name, tuple(names - set(WILDCARDS)), spec.rotate, progress)
            credentials_dirs = (str(creds.folder), host.install_credentials(creds.folder, spec.name))
        deployment = compose_plan(spec, tags, host, tuple(dirs.values()),
                                  reserved_ports=_reserved_ports(spec, host.docker_host), credentials_dirs=credentials_dirs)
        backend = cls(deployment)
        if not backend.supervised:
            where = f" on {spec.remote}" if spec.remote else ""
            backend.warnings.append(f"the Docker engine's Unix socket{where} was not found (DOCKER_HOST, the docker context): "
                                    "no supervisor, so a service stopped from outside stays stopped until `up` (docs/operations.md)")
        if spec.bind in LOOPBACK:
            remote = isinstance(host, SSHDockerHost)
            warning = docker_tools.loopback_publishing_warning(host.docker_version if remote else engine,
                                                               f" on {spec.remote}" if remote else "")
            backend.warnings += [warning] if warning else []
        host.push_images(backend.docker, tags, progress)
        return backend

    def leftovers(self) -> list[str]:
        return [s.where for s in self.services()]

    @classmethod
    def remove_leftovers(cls, name: str, progress: Progress) -> bool:
        """Containers on this machine's engine, by their Compose label (a remote host's
        address was in the lost record)."""
        return remove_project(name, progress)

    # -- lifecycle ------------------------------------------------------------------------
    def compose_environment(self) -> dict[str, str]:
        """The variables compose/compose.yaml is parametrised by."""
        d, record = self.deployment, self.deployment.compose
        return {
            "STACK_UID": str(record.uid),
            "STACK_GID": str(record.gid),
            "STACK_BIND": d.bind,
            **{f"{role.upper()}_IMAGE": record.images[role] for role in ROLES},
            **{f"{service.upper()}_PORT": str(port) for service, port in d.ports.items()},
            "HASHSERVER_BUFFER_DIR": d.buffer_dir,
            "DATABASE_DIR": d.database_dir,
            "THREADS": str(d.threads),
            "DASK_THREADS": str(d.dask_threads),
            "THROTTLE": str(d.throttle),
            "WORKERS": str(d.workers),
            "SERVICE_MEMORY": str(record.service_memory),  # 0: Compose sets no limit
            "WORKER_MEMORY": str(record.worker_memory),
            **({"CREDENTIALS_DIR": record.host_credentials_dir} if record.host_credentials_dir else {}),
            **({"ENGINE_SOCKET": record.engine_socket, "ENGINE_SOCKET_GID": str(record.engine_socket_gid)}
               if record.engine_socket else {}),
            **({"HTTP_SCHEME": "https", "HTTP_TLS_CERT": credentials.in_container("server.crt"),
                "HTTP_TLS_KEY": credentials.in_container("server.key")}
               if d.http_tls else {}),
        }

    def write_env(self) -> None:
        """The Compose variables into env_path (owner-only: it names the credentials' folder)."""
        lines = [f"{key}={value}" for key, value in self.compose_environment().items()]
        write_private(self.env_path, "\n".join(lines) + "\n")

    def _compose(self, action: str, fix: str, call):
        self.write_env()
        try:
            return call()
        except DockerException as exc:
            docker_tools.check_compose(self.docker)  # the clearer error when Compose is missing
            taken = port_taken(exc.stderr or exc.stdout or str(exc))
            if taken:  # e.g. taken by someone else while a restart had it free
                raise StackError(f"port {taken[1]} ({taken[0]}) of stack {self.deployment.name!r} is taken by another process",
                                 f"find it (`ss -tlnp 'sport = :{taken[1]}'`) and stop it, or `seamless-stack down --name "
                                 f"{self.deployment.name}` and `up` again for new ports") from None
            raise StackError(f"docker compose {action} failed for stack {self.deployment.name!r} ({error_text(exc, lines=3)})", fix) from None

    def starting(self) -> str:
        """The progress line of a start: what starts where."""
        d = self.deployment
        where = f" on {d.ssh_destination}" if d.ssh_destination else ""
        return (f"starting stack {d.name!r}{where}: {d.workers} worker(s) x {d.threads} Seamless workers "
                f"({d.dask_threads} Dask threads), ports {d.ports}")

    def start(self, progress: Progress) -> None:
        progress(self.starting())
        self._compose("up", "`seamless-stack logs` shows the services' output", lambda: self.docker.compose.up(
            detach=True, quiet=True, pull="never"))

    def converge(self, spec: StackSpec, progress: Progress) -> list[str]:
        """`compose up` again with the same variables: Compose starts exactly what is not running.
        A storage folder that is gone is made again (owner-only, the services' owner) and its
        service recreated: the running container still holds the deleted folder (so does one
        whose folder was made again by hand)."""
        gone = {service: problem for service, problem in self.storage_problems().items()
                if problem.endswith(("is gone", "still writes to the old one)"))}
        if gone:
            progress(f"stack {self.deployment.name!r}: {'; '.join(gone.values())}: making it again, recreating {', '.join(gone)}")
            host = _host(self._remote())
            host.prepare_dirs({service: self._storage()[service] for service in gone}, progress)
            self._compose("up", "`seamless-stack logs` shows the services' output", lambda: self.docker.compose.up(
                list(gone), detach=True, quiet=True, pull="never", force_recreate=True))
        renewed = self._renew_certificates(progress)
        services = self.services()
        stopped = sorted({s.service for s in services if not s.running})
        if len(services) < len(ROLES) - 1 + self.supervised + self.deployment.workers:
            stopped = stopped or ["missing containers"]
        if stopped:
            progress(f"stack {self.deployment.name!r}: starting again {', '.join(stopped)}")
            self.start(progress)
        return sorted({*stopped, *gone, *renewed})

    def live_settings(self) -> frozenset[str]:
        return frozenset({"workers"})

    def change_live(self, changes: dict[str, int], progress: Progress) -> None:
        """The worker count, live, the services untouched. Added workers start next to the
        others. Removed ones (the highest numbers) get SIGTERM: their nanny closes them, and the
        scheduler gives what they were running to the workers that stay. The supervisor is
        stopped meanwhile (it would start them again), and started again with the new count."""
        d, workers = self.deployment, changes["workers"]
        fix = "see `seamless-stack status`, then run `scale` again"
        workers_now = sorted((s for s in self.services() if s.service == "worker"), key=lambda s: _number(s.where))
        retired = workers_now[workers:]
        self.deployment = replace(d, workers=workers, settings={**d.settings, "workers": str(workers)})
        if retired:
            progress(f"stack {d.name!r}: retiring {len(retired)} worker(s) ({', '.join(s.where for s in retired)}); "
                     "their running transformations go to the other workers")
            if self.supervised:
                self._compose("stop", fix, lambda: self.docker.compose.stop([SUPERVISOR], timeout=10))
            for s in retired:
                self._compose("scale", fix, lambda: self.docker.container.stop(s.where, time=RETIRE_TIMEOUT))
                self._compose("scale", fix, lambda: self.docker.container.remove(s.where))
        elif workers > len(workers_now):
            progress(f"stack {d.name!r}: starting {workers - len(workers_now)} more worker(s)")
        self._compose("scale", fix, lambda: self.docker.compose.up(
            detach=True, quiet=True, pull="never", recreate=False, scales={"worker": workers}))

    def _renew_certificates(self, progress: Progress) -> list[str]:
        """Certificates near their end are signed again under the same CA (the client's with
        the key clients hold) and each service restarted once to take them up: running clients
        reconnect once; their environment output stays valid."""
        d = self.deployment
        if not d.credentials_dir:
            return []
        creds = credentials.Credentials(Path(d.credentials_dir))  # the folder the record names, as status reads it
        creds.check()  # a lost folder: its own one-line repair, not openssl's complaint
        if not creds.expiring():
            return []
        progress(f"stack {d.name!r}: its certificates end within {credentials.RENEW_DAYS} days: "
                 "signing them again under the same CA, restarting each service once")
        credentials.ensure(creds.folder, d.name, tuple(creds.names()), progress=progress)
        _host(self._remote()).install_credentials(creds.folder, d.name)
        for service in ROLES:  # the workers last: they reconnect to the restarted scheduler anyway
            self.restart(service, progress)
        return list(ROLES)

    def restart(self, service: str, progress: Progress) -> None:
        _check_service(service)
        progress(f"restarting {service} of stack {self.deployment.name!r}")
        self._compose("restart", "see `seamless-stack status`", lambda: self.docker.compose.restart([service], timeout=10))

    def down(self) -> None:
        """The supervisor first (or it would start again what stops), and the workers while
        their scheduler still answers (stopped together, a worker waits for the gone scheduler
        until Compose kills it: 9-11 s), then the rest."""
        fix = "check the Docker engine, then run `seamless-stack down` again"
        first = [SUPERVISOR, "worker"] if self.supervised else ["worker"]  # the supervisor waits a poll before it acts
        self._compose("stop", fix, lambda: self.docker.compose.stop(first, timeout=10))
        self._compose("down", fix, lambda: self.docker.compose.down(remove_orphans=True, timeout=10, quiet=True))
        self.env_path.unlink(missing_ok=True)

    # -- inspection -----------------------------------------------------------------------
    def services(self) -> list[ServiceState]:
        try:
            records = docker_tools.inspect_containers(self.docker, [("label", f"{COMPOSE_LABEL}={self.deployment.project}")])
        except DockerException as exc:
            raise StackError(f"cannot list the containers of stack {self.deployment.name!r} ({error_text(exc, lines=3)})",
                             "check that the Docker engine runs and answers") from None
        states = [service_state(record) for record in records]
        return sorted(states, key=lambda s: (ROLES.index(s.service) if s.service in ROLES else 99, s.where))

    def find_failure(self) -> tuple[str, str] | None:
        """An exited container, or one the engine keeps restarting. One restart is not a
        failure: a worker whose scheduler was killed exits and comes back by the restart
        policy once `up` has started the scheduler again. No container at all: removed under
        us (a `down` meanwhile), which no wait repairs."""
        services = self.services()
        if not services:
            return "stack", f"no container of stack {self.deployment.name!r} exists any more (removed meanwhile?)"
        for s in services:
            first_seen = self._restarts_seen.setdefault(s.where, s.restarts)
            if s.state in ("exited", "dead"):
                return s.service, f"container {s.where} is {s.state} (exit code {s.exit_code})"
            if s.state == "restarting" and s.restarts - first_seen >= CRASH_LOOP_RESTARTS:
                return s.service, f"container {s.where} keeps restarting ({s.restarts} restarts, exit code {s.exit_code})"
        return None

    def healing(self, services: list[ServiceState]) -> tuple[dict[str, tuple[bool, str]], list[str]]:
        """The supervisor's answer (running, and its watch loop sees the containers) and what it
        started again within its back-off window."""
        if not self.supervised:
            return {}, []
        supervisor = next((s for s in services if s.service == SUPERVISOR), None)
        if supervisor is None:
            return {SUPERVISOR: (False, "its container is gone: what is stopped from outside stays stopped")}, []
        if not supervisor.running:
            return {}, []  # "supervisor exited" says it
        try:
            state = json.loads(self.docker.container.execute(supervisor.where, ["cat", SUPERVISOR_STATE]))
        except (DockerException, ValueError):
            return {SUPERVISOR: (False, "starting")}, []
        now = time.time()
        notes = [f"the supervisor started {service} again {len(times)} time(s) in the last 10 min "
                 f"(last {now - max(times):.0f} s ago; `seamless-stack logs {SUPERVISOR}`)"
                 for service, times in sorted(state.get("started", {}).items())]
        stuck = state.get("problem") or (f"its watch loop last ran {now - state['at']:.0f} s ago"
                                         if now - state.get("at", 0) > SUPERVISOR_STALE else "")
        return {SUPERVISOR: (not stuck, stuck or "ok")}, notes

    def _remote(self) -> Destination | None:
        return Destination.parse(self.deployment.ssh_destination) if self.deployment.ssh_destination else None

    def _storage(self) -> dict[str, str]:
        """service -> its storage folder, where the services run."""
        return {"hashserver": self.deployment.buffer_dir, "database": self.deployment.database_dir}

    def storage_problems(self) -> dict[str, str]:
        """The folders where the services run, and the folders the running containers hold:
        a folder deleted and made again by hand is not the one a running container writes to."""
        remote = self._remote()  # a shell there is enough: no probe
        host = LocalHost() if remote is None else SSHDockerHost(remote)
        problems = storage_problems(host.shell, self._storage())
        held = {service: folder for service, folder in self._storage().items()
                if service not in problems or problems[service].startswith(LOW)}  # low space: still looked at
        if held:
            here = dict(zip(held, host.shell.run("stat -c %d:%i " + " ".join(quote(f) for f in held.values()),
                                                  what="checking storage").split()))
            for service, inside in self._storage_in_containers(list(held)).items():
                if inside != here.get(service):
                    problems[service] = f"{held[service]} was replaced while the {service} ran (it still writes to the old one)"
        return problems

    def _storage_in_containers(self, services: list[str]) -> dict[str, str]:
        """service -> device:inode of its storage folder as its running container sees it."""
        seen = {}
        for state in self.services():
            if state.service in services and state.running:
                try:
                    seen[state.service] = self.docker.container.execute(
                        state.where, ["stat", "-c", "%d:%i", STORAGE_MOUNTS[state.service]]).strip()
                except DockerException:
                    pass  # stopping or gone: the service's state says so
        return seen

    def logs(self, service: str | None = None, tail: int | None = None) -> str:
        if service is not None:
            _check_service(service)
        return ANSI.sub("", self._compose("logs", "check that the Docker engine runs and answers", lambda: self.docker.compose.logs(
            services=[service] if service else [], tail=str(tail) if tail is not None else None, no_log_prefix=False)))


def service_state(record: dict) -> ServiceState:
    """One container's `docker inspect` record as a service state. A container that does not
    run has no health: Docker keeps its last health status ("starting") after it exited."""
    state = record["State"]
    created, started = (_utc(text) for text in (record.get("Created", ""), state.get("StartedAt", "")))
    return ServiceState(
        service=(record["Config"].get("Labels") or {}).get("com.docker.compose.service", "?"),
        where=record["Name"].lstrip("/"),
        state="restarting" if state.get("Restarting") else state["Status"],
        health=(state.get("Health") or {}).get("Status", "") if state["Status"] == "running" else "",
        exit_code=state.get("ExitCode") or 0,
        restarts=record.get("RestartCount") or 0,
        started_again=state["StartedAt"][:19] if created and started and started - created > STARTED_AGAIN else "",
    )


STARTED_AGAIN = 5.0  # seconds after its creation (Compose starts what it creates within ~1 s): later is "again"


def _number(container: str) -> int:
    """The replica number Compose gives a container (`<project>-worker-3`)."""
    tail = container.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _utc(text: str) -> float | None:
    """Seconds since the epoch of Docker's RFC 3339 time (nanoseconds cut), or None."""
    try:
        return datetime.datetime.fromisoformat(text[:19]).replace(tzinfo=datetime.timezone.utc).timestamp()
    except ValueError:
        return None


# images/seamless-stack-supervise's STATE and STALE: what it did, read by `status`.
SUPERVISOR_STATE = "/tmp/supervisor.json"
SUPERVISOR_STALE = 30.0

# Where compose/compose.yaml binds each service's storage folder inside its container.
STORAGE_MOUNTS = {"hashserver": "/buffers", "database": "/database"}


def _check_service(service: str) -> None:
    if service not in (*ROLES, SUPERVISOR):
        raise StackError(f"no service {service!r}", f"choose one of {', '.join(ROLES)} (or {SUPERVISOR}, on Compose)")


def remove_project(name: str, progress: Progress) -> bool:
    """Remove what runs under a stack's name on this machine's engine, found by the Compose
    label alone (for a stack whose state record is lost or unreadable). True if any."""
    project = compose_project(name)
    label = [("label", f"{COMPOSE_LABEL}={project}")]
    try:
        docker = docker_tools.docker_client()
        containers = docker.container.list(all=True, filters=label)
        if containers:
            progress(f"removing {len(containers)} container(s) of Compose project {project}")
            docker.container.remove(containers, force=True, volumes=True)
        networks = docker.network.list(filters=label)
        if networks:
            docker.network.remove(networks)
    except (StackError, DockerException):
        return False
    return bool(containers)

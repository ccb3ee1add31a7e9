"""Deployment: a StackSpec resolved into concrete directories, images and addresses.

A Deployment is everything a backend needs and everything `down`/`status`/`env`/`tunnel`
need later, so it is also what the state record stores. What only one kind of backend
needs sits in its own typed record (ComposeRecord, SlurmRecord). Where the services
listen (Placement) is known at plan time for Compose, and once the services job runs
for Slurm (its node picks the ports): until then it is None, never a made-up value.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Iterable

from .connection import Connection
from .errors import StackError
from .layout import PORTS, StackFiles, compose_project
from .ports import allocate_ports
from .spec import StackSpec, memory_limit_bytes

WILDCARDS = ("0.0.0.0", "::")
METHODS = ("local", "remote", "slurm")


@dataclass(frozen=True)
class Placement:
    host_name: str  # where the services listen, as clients and ssh know it
    ports: dict[str, int]  # hashserver, database, scheduler, dashboard


@dataclass(frozen=True)
class ComposeRecord:
    images: dict[str, str]  # role -> image tag
    uid: int  # the services run as uid:gid (never 0)
    gid: int
    docker_host: str | None = None  # DOCKER_HOST for a remote engine (ssh://...)
    host_credentials_dir: str | None = None  # the stack's credentials on the Docker host, for the containers
    service_memory: int = 0  # bytes, each of hashserver, database, scheduler; 0: no limit
    worker_memory: int = 0  # bytes, each worker container; 0: no limit
    engine_socket: str | None = None  # the engine's socket on the Docker host, for the supervisor; None: no supervisor
    engine_socket_gid: int = 0  # its group, which the supervisor gets


@dataclass(frozen=True)
class SlurmRecord:
    stack_dir: str  # the stack's folder on the cluster's shared file system
    sifs: dict[str, str]  # role -> SIF path on the cluster
    mode: str  # adaptive (worker jobs) | local (workers inside the services job)
    login: str  # where Slurm commands run: "this machine" or USER@HOST
    job_id: str | None = None  # the services job, once submitted
    node: str | None = None  # its node, once it runs


@dataclass(frozen=True)
class Deployment:
    name: str
    method: str  # local | remote | slurm
    workers: int
    threads: int  # Seamless workers per Dask worker
    bind: str
    buffer_dir: str  # paths where the services run
    database_dir: str
    env_file: str
    settings: dict[str, str]  # the spec's settings that define the stack: `up` compares them
    access: str = "direct"  # direct: clients reach the published ports; ssh: through tunnels
    ssh_destination: str | None = None  # USER@HOST[:PORT] for tunnels and remote commands
    credentials_dir: str | None = None  # the stack's credentials here, for clients; None: --insecure
    placement: Placement | None = None
    compose: ComposeRecord | None = None
    slurm: SlurmRecord | None = None
    throttle: int = 3  # Seamless' transformation throttle (records of older versions lack it)
    port_range: tuple[int, int] | None = None  # the stack's ports; `tunnel` draws its own from it too

    @property
    def dask_threads(self) -> int:
        """Dask threads per worker, as Seamless' own deployment gives them: a nested
        transformation holds a thread while its children run (threads x throttle)."""
        return self.threads * self.throttle

    @property
    def project(self) -> str:
        return compose_project(self.name)

    @property
    def ports(self) -> dict[str, int]:
        return self.placement.ports if self.placement else {}

    @property
    def host_name(self) -> str:
        return self.placement.host_name if self.placement else "?"

    @property
    def http_tls(self) -> bool:
        """HTTPS for the hashserver and database of every secured stack, loopback and SSH tunnels
        included: a client verifies the stack's certificate before its secret leaves it, so
        whoever holds a freed port (a restart, a crash, a tunnel reconnect) learns nothing."""
        return self.credentials_dir is not None

    @property
    def tunnel_target(self) -> str:
        """Where SSH forwards end, as the SSH host sees it: its own loopback (remote Docker
        host) or the node that runs the services (Slurm, through the login node)."""
        return self.host_name if self.method == "slurm" else "127.0.0.1"

    def placed(self, placement: Placement, **slurm_changes) -> "Deployment":
        slurm = replace(self.slurm, **slurm_changes) if self.slurm else None
        return replace(self, placement=placement, slurm=slurm)

    def connection(self, local_ports: dict[str, int] | None = None) -> Connection:
        """Addresses for clients: the published ports, or tunnel ends on 127.0.0.1."""
        if self.placement is None:  # saved before its services had ports: a Slurm job still queued, or cut off
            raise StackError(f"stack {self.name!r} is still starting, or its `up` was interrupted (no ports yet)",
                             f"wait for `up` to finish, or run `seamless-stack down --name {self.name}` and `up` again")
        if local_ports is not None:
            host, ports = "127.0.0.1", local_ports
        elif self.bind not in WILDCARDS:
            host, ports = self.bind, self.ports
        else:  # a wildcard bind is reached through loopback here, by name from elsewhere
            host, ports = ("127.0.0.1" if self.method == "local" else self.host_name), self.ports
        return Connection(
            host=host,
            hashserver_port=ports["hashserver"],
            database_port=ports["database"],
            scheduler_port=ports["scheduler"],
            dashboard_port=ports["dashboard"],
            seamless_workers=self.threads,
            ssh_host=(self.slurm.node if self.slurm and self.slurm.node else self.host_name),
            ssh_ports=dict(self.ports),
            direct=self.access == "direct" or local_ports is not None,
            credentials_dir=self.credentials_dir,
            http_tls=self.http_tls,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Deployment":
        """Rebuild from a state record; ValueError/TypeError/KeyError if it is not one."""
        if not isinstance(data, dict):
            raise TypeError(f"a record is a JSON object, not {type(data).__name__}")
        known = {f.name for f in fields(cls)} - {"placement", "compose", "slurm"}
        nested = {"placement": Placement, "compose": ComposeRecord, "slurm": SlurmRecord}
        values = {k: v for k, v in data.items() if k in known}
        for key, kind in nested.items():
            values[key] = kind(**data[key]) if data.get(key) is not None else None
        if values.get("port_range") is not None:  # JSON has lists only
            values["port_range"] = tuple(values["port_range"])
        deployment = cls(**values)
        deployment.validate()
        return deployment

    def validate(self) -> None:
        checks = [
            (isinstance(self.name, str), "name"), (self.method in METHODS, "method"),
            (isinstance(self.workers, int) and isinstance(self.threads, int), "workers/threads"),
            (all(isinstance(v, str) for v in (self.bind, self.buffer_dir, self.database_dir, self.env_file)), "paths"),
            (isinstance(self.settings, dict), "settings"),
            (self.placement is None or (isinstance(self.placement.ports, dict) and set(self.placement.ports) == set(PORTS)
                                        and all(isinstance(p, int) for p in self.placement.ports.values())), "ports"),
            ((self.compose is None) != (self.slurm is None), "backend record"),
        ]
        wrong = [what for ok, what in checks if not ok]
        if wrong:
            raise ValueError(f"wrong or missing {', '.join(wrong)}")


def _common(spec: StackSpec, buffer_dir: str, database_dir: str, workers: int) -> dict:
    return dict(
        name=spec.name, method=spec.method, workers=workers, threads=spec.threads, throttle=spec.throttle, bind=spec.bind,
        buffer_dir=buffer_dir, database_dir=database_dir,
        env_file=str(spec.env_file or StackFiles.of(spec.name).env), settings=spec.settings(),
        access=spec.access, ssh_destination=str(spec.remote) if spec.remote else None,
        port_range=tuple(spec.port_range),
    )


def compose_plan(
    spec: StackSpec,
    images: dict[str, str],
    host,
    dirs: tuple[str, str],
    *,
    reserved_ports: Iterable[int] = (),
    credentials_dirs: tuple[str, str] | None = None,
) -> Deployment:
    """Allocate ports on the Docker host and fix every address. Starts nothing.

    host: hosts.LocalHost or hosts.SSHDockerHost (is_free, uid, gid, name, docker_host, engine_socket).
    dirs: the storage directories, checked on the Docker host.
    credentials_dirs: (here, on the Docker host) folders of the stack's credentials; None for --insecure.
    """
    ports = allocate_ports(
        PORTS,
        spec.port_range,
        is_free=lambda port: host.is_free(port, spec.bind),
        fixed={"scheduler": spec.scheduler_port} if spec.scheduler_port is not None else None,
        reserved=reserved_ports,
    )
    return Deployment(
        **_common(spec, *dirs, workers=spec.workers),
        credentials_dir=credentials_dirs[0] if credentials_dirs else None,
        placement=Placement(host.name, ports),
        compose=ComposeRecord(images=images, uid=host.uid, gid=host.gid, docker_host=host.docker_host,
                              host_credentials_dir=credentials_dirs[1] if credentials_dirs else None,
                              service_memory=memory_limit_bytes(spec.memory_limit, "--memory-limit"),
                              worker_memory=memory_limit_bytes(spec.worker_memory_limit, "--worker-memory-limit"),
                              **({"engine_socket": host.engine_socket[0], "engine_socket_gid": host.engine_socket[1]}
                                 if host.engine_socket else {})),
    )


def slurm_plan(spec: StackSpec, dirs: tuple[str, str], stack_dir: str, sifs: dict[str, str], login: str,
               credentials_dir: str) -> Deployment:
    """Placement comes later: the services job picks its ports on the node it gets."""
    record = SlurmRecord(stack_dir=stack_dir, sifs=sifs, mode="local" if spec.slurm.local_workers else "adaptive", login=login)
    workers = spec.slurm.local_workers or spec.slurm.min_jobs
    return Deployment(**_common(spec, *dirs, workers=workers), credentials_dir=credentials_dir, slurm=record)

"""Deployment: a StackSpec resolved into concrete ports, directories, images and addresses.

A Deployment is everything a backend needs and everything `down`/`status`/`env`/`tunnel`
need later, so it is also what the state record stores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Iterable

from .connection import Connection
from .ports import allocate_ports
from .spec import SERVICES, StackSpec, stacks_dir

ROLES = ("hashserver", "database", "scheduler", "worker")
WILDCARDS = ("0.0.0.0", "::")


@dataclass(frozen=True)
class Deployment:
    name: str
    method: str  # local | remote
    project: str
    ports: dict[str, int]  # hashserver, database, scheduler, dashboard (on the Docker host)
    images: dict[str, str]  # role -> image tag
    workers: int
    threads: int
    bind: str
    buffer_dir: str  # paths on the Docker host
    database_dir: str
    env_file: str
    uid: int
    gid: int
    host_name: str  # the Docker host's name, as clients and ssh know it
    docker_host: str | None = None  # DOCKER_HOST for a remote engine (ssh://...)
    ssh_destination: str | None = None  # USER@HOST[:PORT] for tunnels and remote commands
    access: str = "direct"  # direct: clients reach the published ports; ssh: through tunnels
    tls_dir: str | None = None  # Dask TLS certificate: here, for clients...
    host_tls_dir: str | None = None  # ...and on the Docker host, for the containers
    slurm: dict | None = None  # job_id, stack_dir, sifs, mode: what `down`/`status`/`logs` need

    @property
    def tunnel_target(self) -> str:
        """Where SSH forwards end, as the SSH host sees it: its own loopback (remote Docker
        host) or the node that runs the services (Slurm, through the login node)."""
        return self.host_name if self.method == "slurm" else "127.0.0.1"

    def connection(self, local_ports: dict[str, int] | None = None) -> Connection:
        """Addresses for clients: the published ports, or tunnel ends on 127.0.0.1."""
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
            ssh_host=(self.slurm or {}).get("node", self.host_name),
            ssh_ports=dict(self.ports),
            direct=self.access == "direct" or local_ports is not None,
            tls_dir=self.tls_dir,
        )

    def compose_environment(self) -> dict[str, str]:
        """The variables compose/compose.yaml is parametrised by."""
        return {
            "STACK_UID": str(self.uid),
            "STACK_GID": str(self.gid),
            "STACK_BIND": self.bind,
            "HASHSERVER_IMAGE": self.images["hashserver"],
            "DATABASE_IMAGE": self.images["database"],
            "SCHEDULER_IMAGE": self.images["scheduler"],
            "WORKER_IMAGE": self.images["worker"],
            "HASHSERVER_PORT": str(self.ports["hashserver"]),
            "DATABASE_PORT": str(self.ports["database"]),
            "SCHEDULER_PORT": str(self.ports["scheduler"]),
            "DASHBOARD_PORT": str(self.ports["dashboard"]),
            "HASHSERVER_BUFFER_DIR": self.buffer_dir,
            "DATABASE_DIR": self.database_dir,
            "THREADS": str(self.threads),
            **({"TLS_DIR": self.host_tls_dir} if self.host_tls_dir else {}),
        }

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Deployment":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def make_plan(
    spec: StackSpec,
    images: dict[str, str],
    host,
    *,
    reserved_ports: Iterable[int] = (),
    tls_dirs: tuple[str, str] | None = None,
) -> Deployment:
    """Allocate ports on the Docker host and fix every address. Checks storage; starts nothing.

    host: hosts.LocalHost or hosts.SSHDockerHost (check_bind, is_free, prepare_dirs, uid, gid).
    tls_dirs: (here, on the Docker host) folders of the stack's TLS certificate, if any.
    """
    host.check_bind(spec.bind)
    dirs = host.prepare_dirs({
        "buffer directory (--buffer-dir / HASHSERVER_BUFFER_DIR)": spec.buffer_dir,
        "database directory (--database-dir / DATABASE_DIR)": spec.database_dir,
    })
    buffer_dir, database_dir = dirs.values()
    ports = allocate_ports(
        SERVICES,
        spec.port_range,
        is_free=lambda port: host.is_free(port, spec.bind),
        fixed={"scheduler": spec.scheduler_port} if spec.scheduler_port else None,
        reserved=reserved_ports,
    )
    env_file = spec.env_file or stacks_dir() / f"{spec.name}.env"
    return Deployment(
        name=spec.name,
        method=spec.method,
        project=spec.project,
        ports=ports,
        images=images,
        workers=spec.workers,
        threads=spec.threads,
        bind=spec.bind,
        buffer_dir=buffer_dir,
        database_dir=database_dir,
        env_file=str(env_file),
        uid=host.uid,
        gid=host.gid,
        host_name=host.name,
        docker_host=host.docker_host,
        ssh_destination=str(spec.remote) if spec.remote else None,
        access=spec.access,
        tls_dir=tls_dirs[0] if tls_dirs else None,
        host_tls_dir=tls_dirs[1] if tls_dirs else None,
    )

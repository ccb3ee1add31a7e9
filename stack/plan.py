"""Deployment: a StackSpec resolved into concrete ports, directories, images and addresses.

A Deployment is everything a backend needs and everything `down`/`status`/`env` need
later, so it is also what the state record stores.
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from .connection import Connection
from .errors import StackError
from .ports import PortCheck, allocate_ports, port_is_free
from .spec import SERVICES, StackSpec, stacks_dir

ROLES = ("hashserver", "database", "scheduler", "worker")


@dataclass(frozen=True)
class Deployment:
    name: str
    method: str
    project: str
    ports: dict[str, int]  # hashserver, database, scheduler, dashboard
    images: dict[str, str]  # role -> image tag
    workers: int
    threads: int
    bind: str
    buffer_dir: str
    database_dir: str
    env_file: str
    uid: int
    gid: int

    def connection(self) -> Connection:
        # A wildcard bind is reached through loopback from this host.
        host = "127.0.0.1" if self.bind in ("0.0.0.0", "::") else self.bind
        return Connection(
            host=host,
            hashserver_port=self.ports["hashserver"],
            database_port=self.ports["database"],
            scheduler_port=self.ports["scheduler"],
            dashboard_port=self.ports["dashboard"],
            seamless_workers=self.threads,
            ssh_host=socket.gethostname(),
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
        }

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Deployment":
        return cls(**data)


def ensure_storage_dir(path: Path, what: str) -> None:
    """Create the directory if missing and prove we can write into it."""
    if path.exists() and not path.is_dir():
        raise StackError(f"{what} {path} is not a directory", f"choose a directory as {what}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StackError(f"cannot create {what} {path} ({exc.strerror})", f"choose a writable {what}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise StackError(f"{what} {path} is not writable", f"fix its permissions or choose another {what}")


def check_bind_address(address: str) -> None:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((address, 0))
        except OSError:
            raise StackError(
                f"--bind {address} is not an address of this machine",
                "give one of its interface addresses, 127.0.0.1 (default) or 0.0.0.0",
            ) from None


def make_plan(
    spec: StackSpec,
    images: dict[str, str],
    *,
    reserved_ports: Iterable[int] = (),
    is_free: PortCheck | None = None,
) -> Deployment:
    """Allocate ports and fix every address. Checks storage; starts nothing."""
    ensure_storage_dir(spec.buffer_dir, "buffer directory (--buffer-dir / HASHSERVER_BUFFER_DIR)")
    ensure_storage_dir(spec.database_dir, "database directory (--database-dir / DATABASE_DIR)")
    if is_free is None:
        check_bind_address(spec.bind)
    ports = allocate_ports(
        SERVICES,
        spec.port_range,
        is_free=is_free or (lambda port: port_is_free(port, spec.bind)),
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
        buffer_dir=str(spec.buffer_dir),
        database_dir=str(spec.database_dir),
        env_file=str(env_file),
        uid=os.getuid(),
        gid=os.getgid(),
    )

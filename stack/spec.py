"""StackSpec: what the user asked for, validated, before anything touches Docker.

Command-line options win over environment variables, which win over defaults. Every
check raises StackError with one line that says how to fix the input.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from .errors import StackError
from .ssh import Destination

DEFAULT_PORT_RANGE = (60000, 60999)
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
SERVICES = ("hashserver", "database", "scheduler", "dashboard")


def seamless_home(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get("HOME", str(Path.home()))) / ".seamless"


def stacks_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """Per-stack state records and environment files live here."""
    return seamless_home(environ) / "stacks"


@dataclass(frozen=True)
class SlurmOptions:
    """The services job, and the worker jobs dask-jobqueue submits (or workers in the job)."""

    partition: str | None = None
    account: str | None = None
    time: str = "72:00:00"  # services job walltime
    cpus: int = 3
    memory: str = "4G"
    min_jobs: int = 0
    max_jobs: int = 4
    worker_memory: str = "4GB"
    worker_walltime: str = "01:00:00"
    worker_queue: str | None = None  # default: the services partition
    job_extra: tuple[str, ...] = ()  # extra #SBATCH lines for worker jobs
    worker_tmpdir: str = "${TMPDIR:-/tmp}"  # node-local scratch
    local_workers: int = 0  # > 0: the single-node variant, workers inside the services job
    sif_dir: str = "~/.seamless/sif"


@dataclass(frozen=True)
class StackSpec:
    name: str
    method: str = "local"
    port_range: tuple[int, int] = DEFAULT_PORT_RANGE
    scheduler_port: int | None = None
    workers: int = 1
    threads: int = 3
    bind: str = "127.0.0.1"
    buffer_dir: str = "~/.seamless/buffers"  # a path on the Docker host
    database_dir: str = "~/.seamless/database"
    env_file: Path | None = None
    remote: Destination | None = None  # the remote Docker host, for method "remote"
    access: str = "direct"  # direct | ssh
    tls: bool = False  # Dask TLS with a per-stack certificate
    slurm: SlurmOptions | None = None
    worker_requirements: Path | None = None
    base_image: str | None = None
    timeout: float = 300.0

    @property
    def project(self) -> str:
        """Compose project name: one per stack name, so stacks run side by side."""
        return f"seamless-{self.name}"


def validate_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise StackError(
            f"invalid stack name {name!r}",
            "use 1-40 characters: lower-case letters, digits, '-' or '_', starting with a letter or digit",
        )
    return name


def parse_port(value: str | int, what: str) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise StackError(f"{what} {value!r} is not a number", "give a port between 1024 and 65535") from None
    if not 1024 <= port <= 65535:
        raise StackError(f"{what} {port} is out of range", "give a port between 1024 and 65535")
    return port


def parse_port_range(text: str | None, environ: Mapping[str, str]) -> tuple[int, int]:
    """--port-range START-END, else RANDOM_PORT_START/RANDOM_PORT_END, else the default."""
    if text:
        match = re.fullmatch(r"\s*(\d+)\s*[-:]\s*(\d+)\s*", text)
        if not match:
            raise StackError(f"invalid port range {text!r}", "write it as START-END, e.g. 60000-60999")
        start, end = match.groups()
        what = "--port-range"
    else:
        start = environ.get("RANDOM_PORT_START", str(DEFAULT_PORT_RANGE[0]))
        end = environ.get("RANDOM_PORT_END", str(DEFAULT_PORT_RANGE[1]))
        what = "RANDOM_PORT_START/RANDOM_PORT_END"
    low, high = parse_port(start, f"{what} start"), parse_port(end, f"{what} end")
    if low > high:
        raise StackError(f"{what} {low}-{high} is empty", "the start must not be above the end")
    return low, high


def parse_bind(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        raise StackError(
            f"--bind {address!r} is not an IP address",
            "give the interface address to publish on, e.g. 127.0.0.1 (default) or 0.0.0.0",
        ) from None


def positive(value: int, what: str, minimum: int = 1) -> int:
    if value < minimum:
        raise StackError(f"{what} must be at least {minimum}, got {value}")
    return value


def resolve_dir(text: str | None, env_name: str, default: Path, environ: Mapping[str, str]) -> Path:
    """Option, else environment variable, else default; '~' and relative paths resolved."""
    return expand(text or environ.get(env_name) or str(default), environ)


def expand(raw: str, environ: Mapping[str, str]) -> Path:
    """Like expanduser + resolve, with HOME taken from the given environment."""
    if raw == "~" or raw.startswith("~/"):
        raw = str(seamless_home(environ).parent) + raw[1:]
    return Path(raw).resolve()


def build_spec(
    *,
    name: str,
    method: str = "local",
    port_range: str | None = None,
    scheduler_port: str | int | None = None,
    workers: int = 1,
    threads: int = 3,
    bind: str = "127.0.0.1",
    buffer_dir: str | None = None,
    database_dir: str | None = None,
    worker_requirements: str | None = None,
    base_image: str | None = None,
    timeout: float = 300.0,
    remote: str | None = None,
    access: str = "direct",
    tls: bool = False,
    slurm: SlurmOptions | None = None,
    environ: Mapping[str, str] = os.environ,
) -> StackSpec:
    """Turn raw options plus the environment into a validated StackSpec (pure: no I/O).

    Local storage paths are resolved here; remote ones on the remote (`~` is its home).
    """
    home = seamless_home(environ)
    env_file = environ.get("ENVIRONMENT_OUTPUT_FILE")
    requirements = Path(worker_requirements).resolve() if worker_requirements else None
    if method == "slurm":
        destination = Destination.parse(remote) if remote else None
        buffers, database = buffer_dir or "~/.seamless/buffers", database_dir or "~/.seamless/database"
        slurm = validate_slurm(slurm or SlurmOptions())
        if tls:
            raise StackError("--tls is not available for Slurm stacks", "reach them over SSH (--login, the default access) instead")
    elif method == "remote":
        destination = Destination.parse(remote or "")
        buffers, database = buffer_dir or "~/.seamless/buffers", database_dir or "~/.seamless/database"
        if access == "ssh" and bind != "127.0.0.1":
            raise StackError("--ssh publishes on the remote's 127.0.0.1 only", "drop --bind, or use --direct --bind ADDR")
    else:
        destination = None
        buffers = str(resolve_dir(buffer_dir, "HASHSERVER_BUFFER_DIR", home / "buffers", environ))
        database = str(resolve_dir(database_dir, "DATABASE_DIR", home / "database", environ))
    return StackSpec(
        name=validate_name(name),
        method=method,
        port_range=parse_port_range(port_range, environ),
        scheduler_port=parse_port(scheduler_port, "--scheduler-port") if scheduler_port else None,
        workers=positive(workers, "--workers"),
        threads=positive(threads, "--threads"),
        bind=parse_bind(bind),
        buffer_dir=buffers,
        database_dir=database,
        env_file=expand(env_file, environ) if env_file else None,
        worker_requirements=requirements,
        base_image=base_image,
        timeout=float(positive(int(timeout), "--timeout")),
        remote=destination,
        access=access,
        tls=tls,
        slurm=slurm,
    )


SLURM_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")
MEMORY = re.compile(r"^\d+(\.\d+)?\s*([KMGT]i?B?)?$", re.I)


def validate_slurm(options: SlurmOptions) -> SlurmOptions:
    for value, what in ((options.time, "--time"), (options.worker_walltime, "--worker-walltime")):
        if not SLURM_TIME.match(value):
            raise StackError(f"{what} {value!r} is not a Slurm time", "write it as [D-]HH:MM:SS, e.g. 72:00:00")
    for value, what in ((options.memory, "--memory"), (options.worker_memory, "--worker-memory")):
        if not MEMORY.match(value):
            raise StackError(f"{what} {value!r} is not a memory size", "write it like 4G or 2000M")
    positive(options.cpus, "--cpus")
    if options.min_jobs < 0 or options.max_jobs < max(1, options.min_jobs):
        raise StackError(f"--min-jobs {options.min_jobs} / --max-jobs {options.max_jobs} make no range",
                         "use 0 <= --min-jobs <= --max-jobs, with --max-jobs at least 1")
    return options

"""StackSpec: what the user asked for, validated, before anything touches Docker or Slurm.

Command-line options win over environment variables, which win over defaults; the
defaults live in the dataclass fields below and nowhere else (the CLI reads them from
here). Every check raises StackError with one line that says how to fix the input.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Mapping

from .errors import StackError
from .layout import DEFAULT_NAME, DEFAULT_PORT_RANGE, compose_project, default_database_dir, seamless_home
from . import slurm_time
from .ssh import Destination

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
SLURM_NAME = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")  # partitions, accounts
MAX_WORKERS, MAX_THREADS, MAX_JOBS, MAX_CPUS = 64, 64, 256, 1024
MAX_THROTTLE = 16
THROTTLE_VARIABLE = "SEAMLESS_WORKER_TRANSFORMATION_THROTTLE"
MAX_TIMEOUT = 86400
LOOPBACK = ("127.0.0.1", "::1", "localhost")  # binds only this machine reaches
METHOD_DEFAULTS = {  # access, bind when the user gives none
    ("local", False): ("direct", "127.0.0.1"),
    ("remote", False): ("ssh", "127.0.0.1"),
    ("slurm", False): ("direct", "0.0.0.0"),
    ("slurm", True): ("ssh", "0.0.0.0"),
}


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
    sif_dir: str = "~/.seamless/sif"  # the SIF cache: every stack of this user (or a group's folder)
    registry: str | None = None  # REGISTRY[/PREFIX] with our images (`images push`): SIFs are pulled from it


@dataclass(frozen=True)
class StackSpec:
    name: str = DEFAULT_NAME
    method: str = "local"
    port_range: tuple[int, int] = DEFAULT_PORT_RANGE
    scheduler_port: int | None = None
    workers: int = 1
    threads: int = 3  # Seamless workers per Dask worker
    throttle: int = 3  # Seamless' transformation throttle: Dask threads = threads x throttle
    bind: str = "127.0.0.1"
    buffer_dir: str = "~/.seamless/buffers"  # a path where the services run
    database_dir: str = default_database_dir(DEFAULT_NAME)
    env_file: Path | None = None
    remote: Destination | None = None  # the remote Docker host, or the Slurm login node
    access: str = "direct"  # direct | ssh
    insecure: bool = False  # no credentials: a local stack on loopback only
    rotate: bool = False  # make new credentials at this `up`
    slurm: SlurmOptions | None = None
    worker_requirements: Path | None = None
    base_image: str | None = None
    timeout: float = 300.0
    # Compose: the memory limit of each service container (hashserver, database, scheduler) and
    # of each worker container ("none": whatever its transformations take)
    memory_limit: str = "4G"
    worker_memory_limit: str = "none"

    @property
    def project(self) -> str:
        return compose_project(self.name)

    def settings(self) -> dict[str, str]:
        """What defines the stack, as text: a second `up` must ask for the same."""
        skip = {"name", "env_file", "timeout", "slurm", "rotate"}
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        if self.slurm:
            values.update({f"slurm.{f.name}": getattr(self.slurm, f.name) for f in fields(self.slurm)})
        return {key: "" if value is None else str(value) for key, value in values.items()}

    def warnings(self) -> list[str]:
        if self.insecure:
            return ["INSECURE stack (--insecure): no credentials; every user of this machine can use its "
                    "services, read and write its data and run code as you"]
        return []


def option_default(cls, name: str):
    """The default of a StackSpec/SlurmOptions field: the CLI shows and uses these."""
    return next(f.default for f in fields(cls) if f.name == name)


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
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


def parse_bind(address: str, method: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise StackError(
            f"--bind {address!r} is not an IP address",
            "give the interface address to publish on, e.g. 127.0.0.1 (default) or 0.0.0.0",
        ) from None
    if ip.version == 6 and method != "slurm":
        raise StackError(f"--bind {address}: IPv6 addresses are not supported for Compose stacks",
                         "publish on 127.0.0.1 (default) or an IPv4 address; reach it from IPv6 through `seamless-stack tunnel`")
    return str(ip)


def bounded(value: int, what: str, low: int, high: int) -> int:
    if not isinstance(value, int) or not low <= value <= high:
        raise StackError(f"{what} must be between {low} and {high}, got {value}", f"give {what} a value in {low}..{high}")
    return value


def bounded_seconds(value: float, what: str, high: float) -> float:
    """A duration as given (0.5 stays 0.5), above 0 and at most `high`."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise StackError(f"{what} {value!r} is not a number of seconds", f"give {what} in seconds, e.g. 300") from None
    if not 0 < seconds <= high:
        raise StackError(f"{what} must be above 0 and at most {high:g} seconds, got {seconds:g}", f"give {what} in 0..{high:g}")
    return seconds


def one_line(value: str | None, what: str) -> str | None:
    """Values that land in job scripts or files must not carry a line break or control character."""
    if value is not None and any(ord(c) < 32 for c in value):
        raise StackError(f"{what} {value!r} contains a line break or control character", f"give {what} as one plain line")
    return value


def resolve_dir(text: str | None, env_name: str, default: Path | str, environ: Mapping[str, str]) -> Path:
    """Option, else environment variable, else default; '~' and relative paths resolved."""
    return expand(text or environ.get(env_name) or str(default), environ)


def expand(raw: str, environ: Mapping[str, str]) -> Path:
    """Like expanduser + resolve, with HOME taken from the given environment."""
    one_line(raw, "path")
    if raw == "~" or raw.startswith("~/"):
        raw = str(seamless_home(environ).parent) + raw[1:]
    return Path(raw).resolve()


def build_spec(
    *,
    name: str = option_default(StackSpec, "name"),
    method: str = option_default(StackSpec, "method"),
    port_range: str | None = None,
    scheduler_port: str | int | None = None,
    workers: int = option_default(StackSpec, "workers"),
    threads: int = option_default(StackSpec, "threads"),
    bind: str | None = None,
    buffer_dir: str | None = None,
    database_dir: str | None = None,
    worker_requirements: str | None = None,
    base_image: str | None = None,
    timeout: float = option_default(StackSpec, "timeout"),
    memory_limit: str = option_default(StackSpec, "memory_limit"),
    worker_memory_limit: str = option_default(StackSpec, "worker_memory_limit"),
    remote: str | None = None,
    access: str | None = None,
    insecure: bool = False,
    rotate: bool = False,
    slurm: SlurmOptions | None = None,
    environ: Mapping[str, str] = os.environ,
) -> StackSpec:
    """Turn raw options plus the environment into a validated StackSpec (pure: no I/O).

    Local storage paths are resolved here; remote ones on the remote (`~` is its home).
    access and bind default by method (remote: over SSH on the remote's loopback).
    """
    if method not in ("local", "remote", "slurm"):
        raise StackError(f"unknown method {method!r}", "choose local, remote or slurm")
    home = seamless_home(environ)
    env_file = environ.get("ENVIRONMENT_OUTPUT_FILE")
    requirements = Path(worker_requirements).resolve() if worker_requirements else None
    default_access, default_bind = METHOD_DEFAULTS[(method, bool(remote) and method == "slurm")]
    access = access or default_access
    if bind is None:
        bind = "0.0.0.0" if (method == "remote" and access == "direct") else default_bind
    # Elsewhere, paths are resolved there (`~` is that user's home): only checked here.
    buffers = one_line(buffer_dir, "--buffer-dir") or option_default(StackSpec, "buffer_dir")
    database = one_line(database_dir, "--database-dir") or default_database_dir(name)
    if method == "slurm":
        destination = Destination.parse(remote) if remote else None
        slurm = validate_slurm(slurm or SlurmOptions())
    elif method == "remote":
        destination = Destination.parse(remote or "")
        if access == "ssh" and bind != "127.0.0.1":
            raise StackError("--ssh publishes on the remote's 127.0.0.1 only", "drop --bind, or use --direct --bind ADDR")
    else:
        destination = None
        buffers = str(resolve_dir(buffer_dir, "HASHSERVER_BUFFER_DIR", home / "buffers", environ))
        database = str(resolve_dir(database_dir, "DATABASE_DIR", default_database_dir(name), environ))
    if insecure and (method != "local" or bind not in LOOPBACK):
        raise StackError("--insecure is only for a local stack published on 127.0.0.1",
                         "drop --insecure: the stack's credentials are made for you and the environment output carries them")
    if insecure and rotate:
        raise StackError("--rotate makes new credentials, and an --insecure stack has none", "drop one of the two")
    return StackSpec(
        name=validate_name(name),
        method=method,
        port_range=parse_port_range(port_range, environ),
        scheduler_port=parse_port(scheduler_port, "--scheduler-port") if scheduler_port is not None else None,
        workers=bounded(workers, "--workers", 1, MAX_WORKERS),
        threads=bounded(threads, "--threads", 1, MAX_THREADS),
        throttle=transformation_throttle(environ),
        bind=parse_bind(bind, method),
        buffer_dir=buffers,
        database_dir=database,
        env_file=expand(env_file, environ) if env_file else None,
        worker_requirements=requirements,
        base_image=one_line(base_image, "--base-image"),
        timeout=bounded_seconds(timeout, "--timeout", MAX_TIMEOUT),
        remote=destination,
        access=access,
        insecure=insecure,
        rotate=rotate,
        slurm=slurm,
        memory_limit=_checked_limit(memory_limit, "--memory-limit"),
        worker_memory_limit=_checked_limit(worker_memory_limit, "--worker-memory-limit"),
    )


def _checked_limit(value: str, what: str) -> str:
    one_line(value, what)
    memory_limit_bytes(value, what)
    return value.strip()


def transformation_throttle(environ: Mapping[str, str]) -> int:
    """Seamless' own knob, read as Seamless reads it (seamless_transformer.worker): nested
    transformations hold a Dask thread while their children run, so each Seamless worker
    needs this many Dask threads or nested work deadlocks."""
    raw = environ.get(THROTTLE_VARIABLE, "").strip() or option_default(StackSpec, "throttle")
    try:
        value = int(raw)
    except ValueError:
        raise StackError(f"{THROTTLE_VARIABLE}={raw!r} is not a number",
                         "set it to a whole number of transformations per Seamless worker (Seamless' default: 3)") from None
    return bounded(value, THROTTLE_VARIABLE, 1, MAX_THROTTLE)


MEMORY = re.compile(r"^\d+(\.\d+)?\s*([KMGT]i?B?)?$", re.I)
LIMIT = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT])(?:i?B)?$", re.I)  # a container's memory limit: Docker's binary units
MIN_LIMIT = 128 << 20  # below this no service of ours starts


def memory_limit_bytes(value: str, what: str) -> int:
    """A container memory limit in bytes (0: none), from `4G`, `512M`, `2GiB` or `none`."""
    if value.strip().lower() in ("none", "0"):
        return 0
    match = LIMIT.match(value.strip())
    if not match:
        raise StackError(f"{what} {value!r} is not a memory size", "write it like 4G or 512M, or none for no limit")
    size = int(float(match[1]) * (1 << (10 * "KMGT".index(match[2].upper()) + 10)))
    if size < MIN_LIMIT:
        raise StackError(f"{what} {value!r} is too small for a service", "give it at least 128M, or none for no limit")
    return size


def validate_slurm(options: SlurmOptions) -> SlurmOptions:
    for value, what in ((options.time, "--time"), (options.worker_walltime, "--worker-walltime")):
        if not slurm_time.is_time(value):
            raise StackError(f"{what} {value!r} is not a Slurm time",
                             "write it as MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS, e.g. 72:00:00")
    for value, what in ((options.memory, "--memory"), (options.worker_memory, "--worker-memory")):
        if not MEMORY.match(value):
            raise StackError(f"{what} {value!r} is not a memory size", "write it like 4G or 2000M")
    for value, what in ((options.partition, "--partition"), (options.account, "--account"), (options.worker_queue, "--worker-queue")):
        if value is not None and not SLURM_NAME.match(value):
            raise StackError(f"{what} {value!r} is not a Slurm name", "use letters, digits and . _ + - only")
    for extra in options.job_extra:
        one_line(extra, "--job-extra")
        if not extra.startswith("-"):
            raise StackError(f"--job-extra {extra!r} is not an sbatch option", "give it as an option, e.g. --job-extra=--gres=gpu:1")
    one_line(options.worker_tmpdir, "--worker-tmpdir")
    one_line(options.sif_dir, "--sif-dir")
    if options.registry:
        from .registry import parse_target

        parse_target(options.registry)
    bounded(options.cpus, "--cpus", 1, MAX_CPUS)
    bounded(options.local_workers, "--local-workers", 0, MAX_WORKERS)
    job_range(options.min_jobs, options.max_jobs)
    return options


def job_range(min_jobs: int, max_jobs: int) -> tuple[int, int]:
    """Adaptive bounds of worker jobs, at `up` and at `scale`."""
    bounded(max_jobs, "--max-jobs", 1, MAX_JOBS)
    if not 0 <= min_jobs <= max_jobs:
        raise StackError(f"--min-jobs {min_jobs} / --max-jobs {max_jobs} make no range",
                         "use 0 <= --min-jobs <= --max-jobs, with --max-jobs at least 1")
    return min_jobs, max_jobs

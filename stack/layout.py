"""One source for the names and places every module shares.

Service names, the ports a stack publishes, the classic ports, and the on-disk layout of
a stack's files: under ~/.seamless/stacks here (StackFiles: record, environment output,
Compose variables, credentials) and, for a Slurm stack, in its folder on the cluster
(ClusterFiles). Change a name here and it changes everywhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

ROLES = ("hashserver", "database", "scheduler", "worker")  # the four images and services
SERVICE_ROLES = ROLES[:3]  # one container (or one Slurm services job) each; workers scale
SUPERVISOR = "supervisor"  # a Compose stack's fifth service: starts again what is stopped from outside
PORTS = ("hashserver", "database", "scheduler", "dashboard")  # the ports a stack publishes
CLASSIC_PORTS = {"hashserver": 5577, "database": 5522, "scheduler": 8786, "dashboard": 8787}
DEFAULT_PORT_RANGE = (60000, 60999)
TESTING_THREADS = 2  # a throwaway test stack's Seamless workers per Dask worker (CI machines are small)
SERVICE_ACCOUNT = "seamless-stack"  # the system account services run as when root runs seamless-stack


def seamless_home(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get("HOME", str(Path.home()))) / ".seamless"


def stacks_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """Per-stack state records and environment files live here."""
    return seamless_home(environ) / "stacks"


DEFAULT_NAME = "default"


def default_database_dir(name: str) -> str:
    """One SQLite file has one writer: each stack its own database by default (the default
    stack keeps the classic ~/.seamless/database). Buffers are content-addressed and written
    atomically, so every stack shares ~/.seamless/buffers."""
    return "~/.seamless/database" if name == DEFAULT_NAME else f"~/.seamless/database-{name}"


def compose_project(name: str) -> str:
    """One Compose project (and Slurm job-name prefix) per stack name: stacks run side by side."""
    return f"seamless-{name}"


@dataclass(frozen=True)
class StackFiles:
    """Where one stack's files live on this machine."""

    name: str
    folder: Path

    @classmethod
    def of(cls, name: str, environ: Mapping[str, str] = os.environ) -> "StackFiles":
        return cls(name, stacks_dir(environ))

    @property
    def record(self) -> Path:
        return self.folder / f"{self.name}.json"

    @property
    def env(self) -> Path:
        """The default environment output (ENVIRONMENT_OUTPUT_FILE overrides it)."""
        return self.folder / f"{self.name}.env"

    @property
    def projects(self) -> Path:
        """Seamless projects connected to the stack (and the running tunnel's ports): seamless_config/."""
        return self.folder / f"{self.name}.projects.json"

    @property
    def compose_env(self) -> Path:
        return self.folder / f"{self.name}.compose.env"

    @property
    def tls(self) -> Path:
        return self.folder / f"{self.name}.tls"

    @property
    def tunnel_log(self) -> Path:
        """The output of the tunnel `connect` and `up` keep running in the background (background.py)."""
        return self.folder / f"{self.name}.tunnel.log"

    @property
    def lock(self) -> Path:
        """Exists while an `up`, `down` or `restart` of the stack runs, locked by it (oplock.py)."""
        return self.folder / f"{self.name}.lock"

    def remote_tls(self, home: str) -> str:
        """The credentials folder on a remote Docker host."""
        return f"{home}/.seamless/stacks/{self.name}.tls"

    def slurm_dir(self, home: str) -> str:
        """The stack's folder on the cluster's shared file system (ClusterFiles: what is in it)."""
        return f"{home}/.seamless/stacks/{self.name}.slurm"


NODE_HELPER = "seamless_stack_node.py"  # apptainer/: the services job's helper (relay, ports)


@dataclass(frozen=True)
class ClusterFiles:
    """What a Slurm stack keeps in its folder on the cluster's shared file system (paths there,
    as text): apptainer/services-job.sh and the node helper write the same names."""

    folder: str  # StackFiles.slurm_dir

    @property
    def services(self) -> str:
        """The services job's report once its services listen: job_id, node, address, ports."""
        return f"{self.folder}/services.json"

    def services_log(self, job_id: str = "%j") -> str:
        """The services job's output (%j: sbatch puts the job ID in)."""
        return f"{self.folder}/services-{job_id}.out"

    @property
    def workers(self) -> str:
        """The worker jobs' folder: their logs (*.out) and the relay's record."""
        return f"{self.folder}/workers"

    @property
    def submissions(self) -> str:
        """The relay's record of worker job submissions."""
        return f"{self.workers}/submissions.json"

    @property
    def control(self) -> str:
        """What the running scheduler takes orders from: bound read-only into its container."""
        return f"{self.folder}/control"

    @property
    def bounds(self) -> str:
        """The adaptive bounds `scale` sets live ({"minimum_jobs": m, "maximum_jobs": n})."""
        return f"{self.control}/adapt.json"

    @property
    def tls(self) -> str:
        """The services' and workers' part of the stack's credentials."""
        return f"{self.folder}/tls"

    @property
    def node_helper(self) -> str:
        return f"{self.folder}/{NODE_HELPER}"



def worker_job_cache(key: str, environ: Mapping[str, str] = os.environ) -> Path:
    """A rendered worker job script, kept on this machine (rendering starts a container)."""
    return Path(environ.get("HOME", str(Path.home()))) / ".cache" / "seamless-stack" / "worker-jobs" / f"{key}.sh"

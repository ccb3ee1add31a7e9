"""Running Slurm's commands on the login node through a Shell (here, or over SSH)."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Iterable

from ..errors import StackError
from ..files import write_private
from ..layout import worker_job_cache
from ..shell import CommandFailed, Shell, quote
from . import commands
from .commands import ClusterFacts, Job
from .jobscript import CONTAINED


def probe(shell: Shell) -> ClusterFacts:
    return commands.parse_probe(shell.run(commands.probe_script(), what="probing the cluster"), str(shell))


def check_partition(facts: ClusterFacts, shell: Shell, partition: str | None) -> None:
    if partition and partition not in facts.partitions:
        raise StackError(f"partition {partition!r} does not exist on {shell} (there: {', '.join(facts.partitions) or 'none'})",
                         "pick one of those with --partition")


def submit(shell: Shell, script: str) -> str:
    try:
        out = shell.run(commands.SBATCH, input=script.encode(), what="sbatch")
    except CommandFailed as exc:
        raise StackError(f"sbatch refused the services job ({exc.stderr.strip()})",
                         "check --partition, --account, --time and the other job options") from None
    return commands.parse_job_id(out)


def check_worker_jobs(shell: Shell, scheduler_sif: str, options: dict, job_name: str, facts: ClusterFacts) -> str:
    """Ask `sbatch --test-only` about the worker job script: a job Slurm would refuse is refused
    now, in one line, not later inside the scheduler where a client just waits. Returns
    sbatch's estimate."""
    script = worker_job_script(shell, scheduler_sif, options)
    answer = shell.run(commands.test_only_command(job_name), input=script.encode(), what="sbatch --test-only")
    return commands.parse_test_only(answer, options, facts)


def worker_job_script(shell: Shell, scheduler_sif: str, options: dict) -> str:
    """The worker job script as the scheduler image's own dask-jobqueue renders it. The SIF is
    named by its image, so the same options give the same script: kept after the first time
    (rendering starts a container, seconds on a busy login node)."""
    key = hashlib.sha256(json.dumps([str(shell), scheduler_sif, options], sort_keys=True).encode()).hexdigest()[:24]
    cached = worker_job_cache(key)
    if cached.is_file():
        return cached.read_text()
    logs = quote(options["log_directory"])  # dask-jobqueue makes sure it exists
    script = shell.run(f"mkdir -p {logs} && apptainer exec {CONTAINED} --bind {logs} {quote(scheduler_sif)} "
                       f"python3 {commands.SLURM_MAIN} --job-script",
                       input=json.dumps(options).encode(), what="rendering the worker job script")
    write_private(cached, script)
    return script


def jobs(shell: Shell, names: Iterable[str]) -> list[Job]:
    return commands.parse_squeue(shell.run(commands.squeue_command(names), what="squeue"))


def cancel(shell: Shell, names: Iterable[str], job_ids: Iterable[str] = (), wait: float = 60) -> list[Job]:
    """Cancel every job of a stack; wait until squeue has none. Returns what is still left."""
    names = list(names)
    shell.run(commands.scancel_command(names, job_ids), what="scancel")
    deadline = time.monotonic() + wait
    while (left := jobs(shell, names)) and time.monotonic() < deadline:
        time.sleep(1)
    return left


def read_services(shell: Shell, stack_dir: str) -> dict | None:
    return commands.parse_services(shell.run(commands.read_services_command(stack_dir)))

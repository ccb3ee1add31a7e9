"""Job sizes that fit the cluster: defaults shrink to the partition's nodes, explicit sizes that
cannot fit are refused with the option to change (before a job can pend forever or be refused
deep inside the scheduler, where nobody sees it)."""

from __future__ import annotations

import math
import re
from dataclasses import replace

from ..errors import StackError
from ..spec import SlurmOptions, StackSpec
from .commands import ClusterFacts
from .. import slurm_time


def memory_mb(text: str, dask: bool = False) -> int:
    """MiB in a memory size. Slurm: `4G` is 4096 MiB, no unit is MiB. dask: `4GB` and `4G` are
    4e9 bytes (3815 MiB), `4GiB` is 4096 MiB, no unit is bytes."""
    number, unit, binary = re.match(r"^(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?$", text.strip(), re.I).groups()
    unit = unit.upper() or ("B" if dask else "M")
    scale = 1000 if dask and not binary else 1024
    return math.ceil(float(number) * scale ** "BKMGT".index(unit) / 2**20)


def worker_memory_mb(text: str) -> int:
    """What a worker job asks Slurm for: dask-jobqueue rounds up to whole GiB from 1 GiB on."""
    mib = memory_mb(text, dask=True)
    return math.ceil(mib / 1024) * 1024 if mib >= 1024 else mib


def worker_memory_within(available_mb: int) -> int:
    """The largest worker memory whose rounded-up request still fits."""
    return available_mb // 1024 * 1024 if available_mb >= 1024 else available_mb


def fit(spec: StackSpec, facts: ClusterFacts) -> tuple[StackSpec, list[str]]:
    """The spec with default job sizes capped to what the partitions allow, and what changed."""
    options, notes, default = spec.slurm, [], SlurmOptions()
    services = facts.partition(options.partition)
    if services:
        services_fit = _checker("the services job asks for", services, "another --partition", notes)
        cpus = services_fit(options.cpus, default.cpus, services.cpus, services.cpus, f"{options.cpus} CPUs",
                            f"nodes in partition {{}} have {services.cpus} CPUs", "--cpus", services.cpus)
        asked_mb = memory_mb(options.memory)
        memory = services_fit(asked_mb, memory_mb(default.memory), services.memory_mb, services.memory_mb,
                              f"{options.memory} of memory", f"nodes in partition {{}} have {services.memory_mb} MB",
                              "--memory", f"{services.memory_mb}M")
        asked_time, limit = slurm_time.seconds(options.time), services.max_time
        time = services_fit(asked_time, slurm_time.seconds(default.time), limit, limit, f"a walltime of {options.time}",
                            f"partition {{}} allows {slurm_time.format(limit or 0)}", "--time", slurm_time.format(limit or 0))
        options = replace(options, cpus=cpus, memory=options.memory if memory == asked_mb else f"{memory}M",
                          time=options.time if time == asked_time else slurm_time.format(time))
    workers = facts.partition(options.worker_queue or options.partition)
    threads = spec.threads
    if workers and not options.local_workers:  # adaptive: worker jobs of their own
        worker_fit = _checker("worker jobs ask for", workers, "--worker-queue with bigger nodes", notes)
        threads = worker_fit(spec.threads, StackSpec.threads, workers.cpus, workers.cpus, f"{spec.threads} CPUs",
                             f"nodes in partition {{}} have {workers.cpus} CPUs", "--threads", workers.cpus)
        asked_mb, usable_mb = worker_memory_mb(options.worker_memory), worker_memory_within(workers.memory_mb)
        memory = worker_fit(asked_mb, worker_memory_mb(default.worker_memory), workers.memory_mb, usable_mb,
                            f"{asked_mb} MB of memory (--worker-memory {options.worker_memory})",
                            f"nodes in partition {{}} have {workers.memory_mb} MB", "--worker-memory", f"{usable_mb}MiB")
        asked_time, limit = slurm_time.seconds(options.worker_walltime), workers.max_time
        time = worker_fit(asked_time, slurm_time.seconds(default.worker_walltime), limit, limit,
                          f"a walltime of {options.worker_walltime}", f"partition {{}} allows {slurm_time.format(limit or 0)}",
                          "--worker-walltime", slurm_time.format(limit or 0))
        options = replace(options, worker_memory=options.worker_memory if memory == asked_mb else f"{memory}MiB",
                          worker_walltime=options.worker_walltime if time == asked_time else slurm_time.format(time))
    return replace(spec, threads=threads, slurm=options), notes


def _checker(who: str, partition, elsewhere: str, notes: list[str]):
    """_fit for one job kind in one partition: `have` names the partition with {}."""
    def check(asked, default_value, limit, usable, what, have, option, value):
        return _fit(asked, default_value, limit, usable, f"{who} {what}", have.format(partition.name),
                    option, value, elsewhere, notes)
    return check


def _fit(asked: int, default: int, limit: int | None, usable: int, said: str, have: str,
         option: str, value, elsewhere: str, notes: list[str]) -> int:
    """A default over the limit shrinks to what is usable (said in notes); an explicit one is refused."""
    if limit is None or limit <= 1 or asked <= limit:  # no limit; sinfo says 1 MB when memory is not configured
        return asked
    if asked != default:
        raise StackError(f"{said}; {have}", f"use {option} {value} or {elsewhere}")
    notes.append(f"{said} by default; {have}: using {option} {value}")
    return usable

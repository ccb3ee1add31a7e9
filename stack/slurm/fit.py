"""Job sizes that fit the cluster: defaults shrink to the partition's nodes, explicit sizes that
cannot fit are refused with the option to change (before a job can pend forever or be refused
deep inside the scheduler, where nobody sees it)."""

from __future__ import annotations

import math
import re
from dataclasses import replace

from ..errors import StackError
from ..spec import SlurmOptions, StackSpec
from .commands import ClusterFacts, Partition


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
    """The spec with default job sizes capped to the partitions' smallest nodes, and what changed."""
    options, notes = spec.slurm, []
    default = SlurmOptions()
    services = facts.partition(options.partition)
    if services:
        cpus = _fit(options.cpus, default.cpus, services.cpus, notes,
                    f"the services job asks for {options.cpus} CPUs", services, "--cpus {} or another --partition", " CPUs")
        memory = _fit(memory_mb(options.memory), memory_mb(default.memory), services.memory_mb, notes,
                      f"the services job asks for {options.memory} of memory", services, "--memory {}M or another --partition", " MB")
        options = replace(options, cpus=cpus, memory=options.memory if memory == memory_mb(options.memory) else f"{memory}M")
    workers = facts.partition(options.worker_queue or options.partition)
    threads = spec.threads
    if workers and not options.local_workers:  # adaptive: worker jobs of their own
        threads = _fit(spec.threads, StackSpec.threads, workers.cpus, notes,
                       f"worker jobs ask for {spec.threads} CPUs", workers, "--threads {} or --worker-queue with bigger nodes", " CPUs")
        asked = worker_memory_mb(options.worker_memory)
        memory = _fit(asked, worker_memory_mb(default.worker_memory), workers.memory_mb, notes,
                      f"worker jobs ask for {asked} MB of memory (--worker-memory {options.worker_memory})", workers,
                      "--worker-memory {}MiB or --worker-queue with bigger nodes", " MB", worker_memory_within(workers.memory_mb))
        options = replace(options, worker_memory=options.worker_memory if memory == asked else f"{memory}MiB")
    return replace(spec, threads=threads, slurm=options), notes


def _fit(asked: int, default: int, available: int, notes: list[str], what: str, partition: Partition,
         fix: str, unit: str = "", usable: int | None = None) -> int:
    """A default larger than the nodes shrinks to what is usable there (said in notes); an explicit one is refused."""
    usable = available if usable is None else usable
    if available <= 1 or asked <= available:  # sinfo says 1 MB when a site does not configure memory
        return asked
    have = f"nodes in partition {partition.name} have {available}{unit}"
    if asked != default:
        raise StackError(f"{what}; {have}", "use " + fix.format(usable))
    notes.append(f"{what} by default; {have}: using {usable}{unit}")
    return usable

"""Slurm command lines and the parsing of their output: pure text in, text or records out.

Built here, run by cluster.py through a Shell, parsed here: so every parser is unit-tested
on captured output, without a cluster (dask-gateway's build / run / parse split).
"""

from __future__ import annotations

import calendar
import json
import re
import time
from dataclasses import dataclass
from typing import Iterable

from .. import slurm_time
from ..errors import StackError
from ..layout import ClusterFiles
from ..shell import quote

TOOLS = ("sbatch", "squeue", "scancel", "sinfo", "apptainer", "python3")


@dataclass(frozen=True)
class Partition:
    """What every node of a partition has at least: a job asking for more cannot run there."""

    name: str
    cpus: int
    memory_mb: int
    default: bool = False
    max_time: int | None = None  # seconds a job may run there; None: no limit


@dataclass(frozen=True)
class ClusterFacts:
    home: str
    partitions: list[str]
    nodes: tuple[str, ...] = ()  # every node's names and IPv4 addresses: the services' certificate names them
    resources: tuple[Partition, ...] = ()

    def partition(self, name: str | None) -> Partition | None:
        """The named partition, or the cluster's default one for None."""
        return next((p for p in self.resources if (p.name == name if name else p.default)), None)


@dataclass(frozen=True)
class Job:
    id: str
    name: str
    state: str  # PENDING, RUNNING, ...
    node: str
    reason: str  # why it pends, or the node list

    @property
    def is_services(self) -> bool:
        return self.name.endswith("-services")


NODE_NAMES = 'sinfo -h -N -o "%N %n %o" 2>/dev/null | tr " " "\\n" | sort -u'


def probe_script() -> str:
    """One round trip: the tools we need, who we are, which partitions exist, the nodes'
    names (NodeName, NodeHostName, NodeAddr) and their IPv4 addresses."""
    script = " ".join(f"command -v {tool} >/dev/null 2>&1 || echo MISSING {tool};" for tool in TOOLS)
    nodes = (f'names=$({NODE_NAMES}); echo "NODES $(echo $names)"; '
             'echo "ADDRESSES $(for n in $names; do getent ahostsv4 "$n"; done | cut -d" " -f1 | sort -u | tr "\\n" " ")"')
    # %P marks the default partition with '*'; %c and %m are the smallest node's CPUs and MB ('2+' when they vary).
    partitions = 'sinfo -h -o "PARTITION %P %c %m %l" 2>/dev/null; '
    return script + ' echo "HOME $HOME"; ' + partitions + nodes


def parse_probe(out: str, where: str) -> ClusterFacts:
    missing = [line.split()[1] for line in out.splitlines() if line.startswith("MISSING ")]
    if missing:
        hint = {"apptainer": "install Apptainer there (it runs our images)", "python3": "install python3 there"}
        fix = next((hint[m] for m in missing if m in hint), "run on a Slurm login node, or pass --login USER@LOGIN-NODE")
        raise StackError(f"{', '.join(missing)} not found on {where}", fix)
    values = dict(line.split(" ", 1) if " " in line else (line, "") for line in out.splitlines())
    if "HOME" not in values:
        raise StackError(f"unexpected answer from {where}: {out.strip()[:120]!r}", "check the login shell there prints nothing extra")
    nodes = tuple(dict.fromkeys(values.get("NODES", "").split() + values.get("ADDRESSES", "").split()))
    resources: dict[str, Partition] = {}
    for line in out.splitlines():
        if line.startswith("PARTITION "):
            p = parse_partition(line)
            seen = resources.get(p.name, p)  # one line per node state: keep the smallest
            resources[p.name] = Partition(p.name, min(p.cpus, seen.cpus), min(p.memory_mb, seen.memory_mb), p.default, p.max_time)
    resources = tuple(resources.values())
    return ClusterFacts(home=values["HOME"].strip(), partitions=[p.name for p in resources], nodes=nodes, resources=resources)


def parse_partition(line: str) -> Partition:
    """`PARTITION main* 2 2000 1-00:00:00`: name (* = the default), CPUs and MB of its smallest
    node, and the longest walltime (`infinite`: none)."""
    _, name, cpus, memory, limit = (line.split() + ["0", "0", "infinite"])[:5]
    number = lambda text: int("".join(c for c in text if c.isdigit()) or 0)  # noqa: E731  '2+' -> 2
    try:
        max_time = slurm_time.seconds(limit)
    except ValueError:  # a form we do not know: no limit we could check against
        max_time = None
    return Partition(name.rstrip("*"), number(cpus), number(memory), name.endswith("*"), max_time)


SBATCH = "sbatch --parsable"


def parse_job_id(out: str) -> str:
    """`sbatch --parsable` prints ID or ID;CLUSTER."""
    job_id = out.strip().split(";")[0]
    if not job_id.isdigit():
        raise StackError(f"sbatch answered {out.strip()[:120]!r}, not a job ID", "check the Slurm installation on the login node")
    return job_id


SLURM_MAIN = "/opt/seamless-stack/seamless_stack_slurm.py"  # in the scheduler image


def test_only_command(job_name: str) -> str:
    """Slurm's dry run of a submission, under the name the relay gives worker jobs (it answers on stderr)."""
    return f'sbatch --test-only --job-name {quote(job_name)} 2>&1; echo "EXIT $?"'


def parse_test_only(out: str, options: dict, facts: ClusterFacts) -> str:
    """sbatch's estimate (`sbatch: Job 5 to start at ... on nodes c2 ...`), or the refusal as a StackError:
    `sbatch: error: CPU count per node can not be satisfied` -> what the worker jobs ask, and where."""
    lines = out.strip().splitlines()
    if lines and lines[-1] == "EXIT 0":
        return " ".join(lines[:-1]).replace("sbatch: ", "")
    errors = [line.split("error:", 1)[1].strip() for line in lines if "error:" in line]
    reason = "; ".join(errors) or " ".join(lines[:-1])[-300:] or "no reason given"
    queue = options.get("queue")
    partition = facts.partition(queue)
    where = f"partition {partition.name if partition else queue or 'default'}"
    have = f" (nodes there have {partition.cpus} CPUs, {partition.memory_mb} MB)" if partition else ""
    raise StackError(
        f"Slurm would refuse the worker jobs ({options.get('cores')} CPUs, {options.get('memory')}, "
        f"{options.get('walltime')}) in {where}{have}: {reason}",
        "use smaller --threads/--worker-memory/--worker-walltime, or --worker-queue/--account/--job-extra that fit")


SQUEUE_FORMAT = "%i|%j|%T|%N|%R"


def squeue_command(names: Iterable[str]) -> str:
    """Our jobs by name: id, name, state, node, reason."""
    return f'squeue -h -u "$(id -un)" -n {quote(",".join(names))} -o {quote(SQUEUE_FORMAT)}'


def parse_squeue(out: str) -> list[Job]:
    jobs = []
    for line in out.splitlines():
        if not line.strip():
            continue
        job_id, name, state, node, reason = (line.split("|") + [""] * 5)[:5]
        jobs.append(Job(job_id.strip(), name, state, node, reason))
    return jobs


def scancel_command(names: Iterable[str], job_ids: Iterable[str] = ()) -> str:
    """Cancel by name (scancel takes one --name at a time) and by ID; never fails on 'no such job'."""
    by_name = " ".join(f'scancel -u "$(id -un)" -n {quote(n)} 2>/dev/null;' for n in names)
    ids = " ".join(quote(i) for i in job_ids)
    return f"{by_name} {'scancel ' + ids + ' 2>/dev/null;' if ids else ''} true"


def read_services_command(stack_dir: str) -> str:
    return f"cat {quote(ClusterFiles(stack_dir).services)} 2>/dev/null; true"


def parse_services(out: str) -> dict | None:
    """What the services job reports once its services listen: job_id, node, address, ports."""
    if not out.strip():
        return None
    try:
        report = json.loads(out)
        if not {"job_id", "node", "address", "ports"} <= report.keys():
            raise ValueError("fields missing")
    except (ValueError, AttributeError) as exc:
        raise StackError(f"the services job wrote an unreadable report ({exc})", "`seamless-stack logs` shows what it did") from None
    return report


def read_submissions_command(stack_dir: str) -> str:
    return f"cat {quote(ClusterFiles(stack_dir).submissions)} 2>/dev/null; true"


def parse_submissions(out: str) -> dict | None:
    """The relay's record: submitted, refused, refused_in_a_row, last_error (None before the first)."""
    try:
        return json.loads(out) if out.strip() else None
    except ValueError:
        return None  # being replaced right now: the next status reads it


# apptainer/services-job.sh's line when it starts a service again: "<UTC time> NAME ended (exit N): starting it again".
_STARTED_AGAIN = re.compile(r"(\S+) (\w+) ended \(exit (\d+)\): starting it again")


def restarts_command(stack_dir: str, job_id: str) -> str:
    return f"grep -h ' ended (exit ' {quote(ClusterFiles(stack_dir).services_log(job_id))} 2>/dev/null | tail -n 200; true"


def parse_restarts(out: str) -> dict[str, list[tuple[str, str]]]:
    """service -> [(when, exit code)] of each time the services job started it again."""
    seen: dict[str, list[tuple[str, str]]] = {}
    for match in _STARTED_AGAIN.finditer(out):
        seen.setdefault(match[2], []).append((match[1], match[3]))
    return seen


def ended_lately(times: list[tuple[str, str]], window: float, now: float | None = None) -> list[str]:
    """Exit codes of the restarts within the last `window` seconds (the node's UTC clock)."""
    now = time.time() if now is None else now
    return [code for when, code in times
            if now - calendar.timegm(time.strptime(when, "%Y-%m-%dT%H:%M:%SZ")) < window]


def restart_notes(restarts: dict[str, list[tuple[str, str]]]) -> list[str]:
    """status notes: what the services job started again, how often, when last."""
    return [f"the services job started {name} again {len(times)} time(s) (last at {times[-1][0]}, it had ended "
            f"with exit {times[-1][1]}; `seamless-stack logs services`)" for name, times in sorted(restarts.items())]


def describe(job: Job) -> str:
    """RUNNING on node1, or PENDING (Resources)."""
    reason = job.reason.strip("()")
    if job.state == "RUNNING":
        return f"running on {job.node}" if job.node else "running"
    return job.state.lower() + (f" ({reason})" if reason and reason != "None" else "")

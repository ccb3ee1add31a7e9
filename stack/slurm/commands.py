"""Slurm command lines and the parsing of their output: pure text in, text or records out.

Built here, run by cluster.py through a Shell, parsed here: so every parser is unit-tested
on captured output, without a cluster (dask-gateway's build / run / parse split).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable

from ..errors import StackError
from ..shell import quote

TOOLS = ("sbatch", "squeue", "scancel", "sinfo", "apptainer", "python3")


@dataclass(frozen=True)
class ClusterFacts:
    home: str
    partitions: list[str]
    nodes: tuple[str, ...] = ()  # every node's names and IPv4 addresses: the services' certificate names them


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
    return script + ' echo "HOME $HOME"; echo "PARTITIONS $(sinfo -h -o %R 2>/dev/null | tr "\\n" " ")"; ' + nodes


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
    return ClusterFacts(home=values["HOME"].strip(), partitions=values.get("PARTITIONS", "").split(), nodes=nodes)


SBATCH = "sbatch --parsable"


def parse_job_id(out: str) -> str:
    """`sbatch --parsable` prints ID or ID;CLUSTER."""
    job_id = out.strip().split(";")[0]
    if not job_id.isdigit():
        raise StackError(f"sbatch answered {out.strip()[:120]!r}, not a job ID", "check the Slurm installation on the login node")
    return job_id


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


def services_file(stack_dir: str) -> str:
    return f"{stack_dir}/services.json"


def read_services_command(stack_dir: str) -> str:
    return f"cat {quote(services_file(stack_dir))} 2>/dev/null; true"


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


def describe(job: Job) -> str:
    """RUNNING on node1, or PENDING (Resources)."""
    reason = job.reason.strip("()")
    if job.state == "RUNNING":
        return f"running on {job.node}" if job.node else "running"
    return job.state.lower() + (f" ({reason})" if reason and reason != "None" else "")

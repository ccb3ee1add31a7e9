"""The cluster side of `up slurm`: a shell on the login node, the SIFs, and Slurm jobs.

Everything the cluster does is a short POSIX shell script run on the login node: locally
when seamless-stack runs there, through SSH (`--login`) from a workstation. So the cluster
needs Slurm's client commands, Apptainer and python3, and nothing of ours but the SIFs and
two small files we copy into the stack's folder.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from . import docker_tools, ssh
from .errors import StackError
from .resources import DATA

Progress = Callable[[str], None]
APPTAINER_DIR = DATA / "apptainer"
TOOLS = ("sbatch", "squeue", "scancel", "sinfo", "apptainer", "python3")


class ClusterShell:
    """Runs scripts on the login node: here, or over SSH."""

    def __init__(self, login: ssh.Destination | None):
        self.login = login

    def __str__(self) -> str:
        return str(self.login) if self.login else "this machine"

    def run(self, script: str, *, input: bytes | None = None, timeout: float = 120) -> str:
        if self.login is not None:
            return ssh.run(self.login, script, input=input, timeout=timeout)
        result = subprocess.run(["sh", "-c", script], input=input, capture_output=True, timeout=timeout)
        if result.returncode != 0:
            raise ssh.RemoteCommandFailed(result.returncode, result.stderr.decode(errors="replace").strip())
        return result.stdout.decode(errors="replace")

    def write(self, path: str, data: bytes) -> None:
        self.run(f"mkdir -p {ssh._quote(str(Path(path).parent))} && cat > {ssh._quote(path)}", input=data)

    def stream_to(self, path: str, command: list[str], progress: Progress) -> int:
        """Pipe a local command's output into a file on the cluster; return the bytes sent."""
        cat = f"cat > {ssh._quote(path)}"
        writer = self.login.ssh_args() + ["sh", "-c", ssh._quote(cat)] if self.login else ["sh", "-c", cat]
        try:
            return ssh.stream(command, writer, progress)[0]
        except ssh.RemoteCommandFailed as exc:
            raise StackError(f"copying to {path} on {self} failed: {exc.stderr}", "check disk space there") from None


@dataclass
class ClusterFacts:
    home: str
    partitions: list[str]


def probe(shell: ClusterShell) -> ClusterFacts:
    """One round trip: the tools we need, who we are, which partitions exist."""
    script = " ".join(f"command -v {tool} >/dev/null 2>&1 || echo MISSING {tool};" for tool in TOOLS)
    script += ' echo "HOME $HOME"; echo "PARTITIONS $(sinfo -h -o %R 2>/dev/null | tr "\\n" " ")"'
    out = shell.run(script)
    missing = [line.split()[1] for line in out.splitlines() if line.startswith("MISSING")]
    if missing:
        what = ", ".join(missing)
        hint = {"apptainer": "install Apptainer there (it runs our images)", "python3": "install python3 there"}
        fix = next((hint[m] for m in missing if m in hint), "run on a Slurm login node, or pass --login USER@LOGIN-NODE")
        raise StackError(f"{what} not found on {shell}", fix)
    values = {line.split(" ", 1)[0]: line.split(" ", 1)[1] if " " in line else "" for line in out.splitlines()}
    return ClusterFacts(home=values["HOME"], partitions=values["PARTITIONS"].split())


def sif_name(tag: str) -> str:
    """seamless-stack/scheduler:abc123 -> scheduler-abc123.sif: a rebuilt image is a new SIF."""
    repository, _, digest = tag.partition(":")
    return f"{repository.rsplit('/', 1)[-1]}-{digest}.sif"


def current_sifs(shell: ClusterShell, sif_dir: str) -> dict[str, str]:
    """Without Docker here: the SIFs last built into sif_dir (its <role>.sif links)."""
    roles = ("hashserver", "database", "scheduler", "worker")
    found = shell.run(" ".join(f"[ -f {sif_dir}/{r}.sif ] && echo {r};" for r in roles) + " true").split()
    missing = [r for r in roles[:3] if r not in found]
    if missing:
        raise StackError(f"no SIF for {', '.join(missing)} in {sif_dir} on {shell}, and no Docker here to build one",
                         "run `seamless-stack up slurm --login ...` once from a machine with Docker, or copy the SIFs there")
    return {r: f"{sif_dir}/{r if r in found else 'scheduler'}.sif" for r in roles}


def ensure_sifs(shell: ClusterShell, tags: dict[str, str], sif_dir: str, progress: Progress) -> dict[str, str]:
    """The SIF of every image, on the cluster; built from our images only where missing.

    The worker and scheduler images differ only in their start command, so worker jobs run
    the scheduler's SIF (with dask-jobqueue's worker command) unless the worker image is
    a derived one with the user's libraries. <role>.sif links name the newest SIFs.
    """
    wanted = {role: tag for role, tag in tags.items() if role != "worker" or "worker-custom" in tag}
    paths = {role: f"{sif_dir}/{sif_name(tag)}" for role, tag in wanted.items()}
    present = set(shell.run(" ".join(f"[ -f {ssh._quote(p)} ] && echo {ssh._quote(p)};" for p in paths.values()) + " true").split())
    docker = docker_tools.docker_binary() if len(present) < len(paths) else None
    for role, path in paths.items():
        if path in present:
            continue
        progress(f"building {path} on {shell} from {wanted[role]}")
        archive = f"{path}.tar"
        shell.run(f"mkdir -p {ssh._quote(sif_dir)}")
        started = time.monotonic()
        sent = shell.stream_to(archive, [docker, "save", wanted[role]], progress)
        progress(f"  copied {sent / 1e6:.0f} MB in {time.monotonic() - started:.1f}s; apptainer build")
        try:
            shell.run(f"apptainer build --force {ssh._quote(path + '.tmp')} docker-archive://{ssh._quote(archive)} "
                      f"&& mv {ssh._quote(path + '.tmp')} {ssh._quote(path)}; status=$?; rm -f {ssh._quote(archive)}; exit $status",
                      timeout=1800)
        except ssh.RemoteCommandFailed as exc:
            raise StackError(f"apptainer build of {path} failed on {shell}: {exc.stderr[-500:]}") from None
    shell.run(" ".join(f"ln -sfn {Path(p).name} {sif_dir}/{r}.sif;" for r, p in paths.items()))
    paths.setdefault("worker", paths["scheduler"])
    return paths


def submit(shell: ClusterShell, script: str) -> str:
    try:
        out = shell.run("sbatch --parsable", input=script.encode())
    except ssh.RemoteCommandFailed as exc:
        raise StackError(f"sbatch refused the services job: {exc.stderr}", "check --partition, --account, --time and the other job options") from None
    return out.strip().split(";")[0]


def jobs(shell: ClusterShell, names: Iterable[str]) -> list[dict]:
    """Our jobs (by name) in squeue: id, name, state, node or reason."""
    out = shell.run(f"squeue -h -u \"$(id -un)\" -n {','.join(names)} -o '%i|%j|%T|%N|%R'")
    rows = []
    for line in out.splitlines():
        job_id, name, state, node, reason = (line.split("|") + [""] * 5)[:5]
        rows.append({"id": job_id, "name": name, "state": state, "node": node, "reason": reason})
    return rows


def cancel(shell: ClusterShell, names: Iterable[str], job_ids: Iterable[str] = ()) -> None:
    """Cancel by name (every job of this stack) and id; then wait until squeue has none."""
    names = list(names)
    ids = " ".join(job_ids)
    # scancel takes one --name at a time
    by_name = " ".join(f'scancel -u "$(id -un)" -n {n} 2>/dev/null;' for n in names)
    shell.run(f"{by_name} {'scancel ' + ids + ' 2>/dev/null;' if ids else ''} true")
    deadline = time.monotonic() + 60
    while jobs(shell, names) and time.monotonic() < deadline:
        time.sleep(1)


def walltime_seconds(text: str) -> int:
    """Slurm time: [D-]HH:MM:SS, HH:MM:SS, MM:SS or minutes."""
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
    parts = [int(p) for p in text.split(":")]
    if len(parts) == 1:
        parts = [0, parts[0], 0]
    while len(parts) < 3:
        parts.insert(0, 0)
    hours, minutes, seconds = parts
    return days * 86400 + hours * 3600 + minutes * 60 + seconds


def lifetimes(walltime: str) -> tuple[str, str]:
    """Worker --lifetime and --lifetime-stagger below the walltime, so workers leave gracefully."""
    total = walltime_seconds(walltime)
    margin = max(60, total // 10)
    stagger = max(10, min(240, total // 20))
    return f"{max(30, total - margin - stagger)}s", f"{stagger}s"


def read_services(shell: ClusterShell, stack_dir: str) -> dict | None:
    out = shell.run(f"cat {ssh._quote(stack_dir + '/services.json')} 2>/dev/null; true").strip()
    return json.loads(out) if out else None


def check_partition(facts: ClusterFacts, shell: ClusterShell, partition: str | None) -> None:
    if partition and partition not in facts.partitions:
        raise StackError(f"partition {partition!r} does not exist on {shell} (there: {', '.join(facts.partitions) or 'none'})",
                         "pick one of those with --partition")


def job_header(directives: dict[str, str | None], extra: Iterable[str] = ()) -> str:
    lines = ["#!/bin/bash"] + [f"#SBATCH --{k}={v}" for k, v in directives.items() if v]
    lines += [f"#SBATCH {e}" for e in extra]
    return "\n".join(lines) + "\n"


def services_job_script(spec, deployment, sifs: dict[str, str], stack_dir: str) -> str:
    """#SBATCH lines + variables + apptainer/services-job.sh."""
    options = spec.slurm
    lifetime, stagger = lifetimes(options.worker_walltime)
    jobqueue = {
        "cores": spec.threads,  # threads per worker = Seamless workers per worker
        "processes": 1,
        "memory": options.worker_memory,
        "walltime": options.worker_walltime,
        "queue": options.worker_queue or options.partition,
        "account": options.account,
        "job_extra_directives": list(options.job_extra),
        "job_script_prologue": [f"export TMPDIR={options.worker_tmpdir}"],
        "python": f"apptainer exec --cleanenv --env TMPDIR=$TMPDIR {sifs['worker']} python3",
        "local_directory": "$TMPDIR",
        "worker_extra_args": ["--lifetime", lifetime, "--lifetime-stagger", stagger],
        "log_directory": f"{stack_dir}/workers",
        "adapt": {"minimum_jobs": options.min_jobs, "maximum_jobs": options.max_jobs},
    }
    header = job_header({
        "job-name": f"seamless-{spec.name}-services",
        "time": options.time,
        "cpus-per-task": str(options.cpus),
        "mem": options.memory,
        "partition": options.partition,
        "account": options.account,
        "output": f"{stack_dir}/services-%j.out",
    })
    variables = {
        "SS_NAME": f"seamless-{spec.name}",
        "SS_STACK_DIR": stack_dir,
        "SS_SIF_HASHSERVER": sifs["hashserver"],
        "SS_SIF_DATABASE": sifs["database"],
        "SS_SIF_SCHEDULER": sifs["scheduler"],
        "SS_SIF_WORKER": sifs["worker"],
        "SS_BUFFER_DIR": deployment.buffer_dir,
        "SS_DATABASE_DIR": deployment.database_dir,
        "SS_PORT_START": str(spec.port_range[0]),
        "SS_PORT_END": str(spec.port_range[1]),
        "SS_SCHEDULER_PORT": str(spec.scheduler_port or ""),
        "SS_THREADS": str(spec.threads),
        "SS_MODE": deployment.slurm["mode"],
        "SS_LOCAL_WORKERS": str(options.local_workers),
        "SS_JOBQUEUE": json.dumps(jobqueue),
    }
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in variables.items())
    return header + exports + (APPTAINER_DIR / "services-job.sh").read_text()

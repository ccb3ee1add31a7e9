"""`seamless-stack up slurm` on the login node itself: no Docker there, images from a registry.

As on HPC: our images are pushed once to a registry (a real one on the bed's network,
Debian's docker-registry behind TLS with a CA the nodes trust); seamless-stack is installed
on the login node as the cluster user from our wheel (no PyPI there); `up slurm` runs there
with the defaults, pulls the SIFs by digest through spython, sizes the jobs to the 2-CPU
nodes and checks the worker jobs with `sbatch --test-only`. A real Seamless client on this
machine, given only the environment file `up` wrote there, computes in worker jobs.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from seamless_stack import images

from .conftest import CLI

REMOTE_HOME = "/home/seamless"


@pytest.fixture(scope="module")
def login_node(cluster, docker_engine):
    """Our images in the bed's registry, seamless-stack installed on the login node: its path."""
    pushed = subprocess.run([str(CLI), "images", "push", cluster.registry_on_host], capture_output=True, text=True, timeout=1800)
    assert pushed.returncode == 0, pushed.stderr
    references = dict(line.split("\t") for line in pushed.stdout.splitlines())
    assert set(references) == {"hashserver", "database", "scheduler", "worker"}
    assert all("@sha256:" in ref for ref in references.values()), references
    assert cluster.ssh("command -v docker").returncode != 0, "the login node has no Docker"
    return cluster.install_seamless_stack(Path(__file__).resolve().parents[2])


def on_login(cluster, exe: str, *args: str, timeout: float = 1800, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """seamless-stack on the login node, as the cluster user, with the registry (and env) in its environment."""
    variables = {"SEAMLESS_STACK_REGISTRY": cluster.registry, **(env or {})}
    command = " ".join(f"{key}={shlex.quote(value)}" for key, value in variables.items())
    command += f" {exe} " + " ".join(shlex.quote(a) for a in args)
    return cluster.ssh(command, timeout=timeout)


def host_env_file(cluster, name: str, folder: Path) -> Path:
    """The environment file `up` wrote on the login node, with its paths as this machine sees the
    shared home: the client here reaches the services node directly (the bed's network is routed)."""
    text = (Path(cluster.home_path) / "seamless" / ".seamless" / "stacks" / f"{name}.env").read_text()
    env_file = folder / f"{name}.env"
    env_file.write_text(text.replace(f"{REMOTE_HOME}/", f"{cluster.home_path}/seamless/"))
    return env_file


def our_worker_jobs(cluster, name: str) -> list[str]:
    return [line for line in cluster.ssh("squeue -h -o '%i|%j|%T|%N|%R'").stdout.splitlines() if f"seamless-{name}-worker" in line]


def submissions(cluster, name: str) -> dict:
    path = Path(cluster.home_path) / "seamless" / ".seamless" / "stacks" / f"{name}.slurm" / "workers" / "submissions.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def test_login_node_up_with_defaults_computes_in_worker_jobs(login_node, cluster, client, tmp_path):
    name = "ln" + uuid.uuid4().hex[:6]
    try:
        canary = f"seamless-stack-canary-{uuid.uuid4().hex}"  # a variable of the submitting shell only
        up = on_login(cluster, login_node, "up", "slurm", "--name", name, "--max-jobs", "2", env={"SUBMITTER_TOKEN": canary})
        assert up.returncode == 0, up.stderr
        # defaults sized to the 2-CPU nodes; the SIFs pulled by digest; the worker jobs checked
        assert "worker jobs ask for 3 CPUs by default; nodes in partition main have 2 CPUs: using --threads 2" in up.stderr
        assert up.stderr.count(f"docker://{cluster.registry}/seamless-stack/") == 3 and "@sha256:" in up.stderr
        assert "sbatch --test-only: Job" in up.stderr
        stack_dir = Path(cluster.home_path) / "seamless" / ".seamless" / "stacks" / f"{name}.slurm"
        services_node = json.loads((stack_dir / "services.json").read_text())["node"]

        # sbatch refuses worker jobs (the partition drains): status says so, nothing loops,
        # and the client's transformation runs once the partition is back
        cluster.exec("scontrol update PartitionName=main State=DRAIN", check=True)
        marker = uuid.uuid4().hex
        env_file = host_env_file(cluster, name, tmp_path)
        waiting = subprocess.Popen(["bash", "-c", 'source "$1"; exec seamless-run "echo $2; hostname"', "-", str(env_file), marker],
                                   env={"PATH": f"{client.venv}/bin:/usr/bin:/bin", "HOME": str(tmp_path)},
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 180
            while not submissions(cluster, name).get("refused") and time.monotonic() < deadline:
                time.sleep(2)
            status = on_login(cluster, login_node, "status", "--name", name, timeout=120)
            assert status.returncode == 1, status.stdout
            assert "sbatch refused the last" in status.stderr and "refused by sbatch" in status.stdout, status.stdout + status.stderr
            first = submissions(cluster, name)["refused"]
            time.sleep(25)
            assert submissions(cluster, name)["refused"] <= first + 3, "refusals back off, no tight loop"
        finally:
            cluster.exec("scontrol update PartitionName=main State=UP", check=True)
        out, err = waiting.communicate(timeout=600)
        assert waiting.returncode == 0, err[-2000:]
        assert out.split()[0] == marker
        assert out.split()[1] in cluster.compute_nodes and out.split()[1] != services_node, "a worker job on another node"
        for node in cluster.compute_nodes:  # the services job and the worker job: nothing of the submitting shell
            leaked = cluster.exec(f"grep -l {canary} /proc/[0-9]*/environ 2>/dev/null; true", node=node).stdout.split()
            assert leaked == [], f"the submitting shell's SUBMITTER_TOKEN reached jobs on {node}: {leaked}"
        checksum = hashlib.sha256(out.encode()).hexdigest()
        home = Path(cluster.home_path) / "seamless"
        assert (home / ".seamless" / "buffers" / checksum[:2] / checksum).is_file()
        assert (home / ".seamless" / f"database-{name}" / "seamless.db").is_file()

        status = on_login(cluster, login_node, "status", "--name", name, timeout=120)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "adaptive worker jobs (0-2)" in status.stdout and "refused by sbatch" in status.stdout
        assert on_login(cluster, login_node, "down", "--name", name, timeout=300).returncode == 0

        # a second up reuses the cached SIFs: no pull
        again = on_login(cluster, login_node, "up", "slurm", "--name", name, "--max-jobs", "2")
        assert again.returncode == 0, again.stderr
        assert "pulling" not in again.stderr and again.stderr.count("(cached)") == 3, again.stderr
    finally:
        on_login(cluster, login_node, "down", "--name", name, timeout=300)
    assert our_worker_jobs(cluster, name) == []


def only_error(result) -> str:
    errors = [line for line in result.stderr.splitlines() if line.startswith("seamless-stack: error:")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr
    return errors[0]


def test_login_node_refuses_worker_jobs_that_cannot_run(login_node, cluster):
    """Sizes the partition cannot hold, or that Slurm refuses: one line at `up`, before any job."""
    name = "ln" + uuid.uuid4().hex[:6]
    try:
        error = only_error(on_login(cluster, login_node, "up", "slurm", "--name", name, "--threads", "4", timeout=300))
        assert "worker jobs ask for 4 CPUs; nodes in partition main have 2 CPUs: use --threads 2 or --worker-queue" in error
        cluster.exec("scontrol update PartitionName=main MaxTime=00:20:00", check=True)
        try:
            error = only_error(on_login(cluster, login_node, "up", "slurm", "--name", name, "--worker-walltime", "00:30:00", timeout=300))
        finally:
            cluster.exec("scontrol update PartitionName=main MaxTime=INFINITE", check=True)
        assert "worker jobs ask for a walltime of 00:30:00; partition main allows 00:20:00: use --worker-walltime 00:20:00" in error
        # what only sbatch knows (no GPUs here): its dry run of the rendered worker job refuses it
        error = only_error(on_login(cluster, login_node, "up", "slurm", "--name", name, "--job-extra=--gres=gpu:1", timeout=300))
        assert "Slurm would refuse the worker jobs (2 CPUs, 1024MiB, 01:00:00) in partition main" in error
        assert "gres" in error.lower(), error
        assert cluster.ssh(f"squeue -h -n seamless-{name}-services,seamless-{name}-worker").stdout.strip() == ""
    finally:
        on_login(cluster, login_node, "down", "--name", name, timeout=300)


def test_login_node_sifs_from_the_registry(login_node, cluster):
    """`images sif --registry` on the login node: cached SIFs are reused, a SIF whose labels
    do not match the image it should hold is made anew."""
    first = on_login(cluster, login_node, "images", "sif")  # the default cache: the SIFs `up` made
    assert first.returncode == 0, first.stderr
    sifs = dict(line.split("\t") for line in first.stdout.splitlines())
    assert sifs["worker"] == sifs["scheduler"], "workers run the scheduler's SIF"
    assert all(path.startswith(f"{REMOTE_HOME}/.seamless/sif/") for path in sifs.values()), sifs
    shared = Path(cluster.home_path)
    hashserver, database = (shared / sifs[r].removeprefix("/home/") for r in ("hashserver", "database"))
    hashserver.write_bytes(database.read_bytes())  # the wrong image under the hashserver's name
    second = on_login(cluster, login_node, "images", "sif")
    assert second.returncode == 0 and second.stdout == first.stdout, second.stderr
    assert f"{sifs['hashserver']} is stale (its labels say database" in second.stderr
    assert second.stderr.count("(cached)") == 2 and "hashserver: pulling" in second.stderr

    # the registry's definition tag now names another image: a new digest, so a new pull, whose
    # labels give it away
    tag = f"{cluster.registry_on_host}/seamless-stack/hashserver:{images.definition_tag()}"
    database_image = subprocess.run([str(CLI), "images", "list"], capture_output=True, text=True).stdout.split("\n")[1].split("\t")[1]
    for argv in (["docker", "tag", database_image, tag], ["docker", "push", "-q", tag], ["docker", "rmi", tag]):
        subprocess.run(argv, check=True, capture_output=True, timeout=600)
    try:
        moved = on_login(cluster, login_node, "images", "sif")
        errors = [line for line in moved.stderr.splitlines() if line.startswith("seamless-stack: error:")]
        assert moved.returncode == 2 and len(errors) == 1, moved.stderr
        assert "hashserver: pulling" in moved.stderr and "holds database def-" in errors[0] and "images push" in errors[0]
    finally:  # the registry's tag back to our image, whatever happened; checked below, not here
        again = subprocess.run([str(CLI), "images", "push", cluster.registry_on_host], capture_output=True, text=True, timeout=1800)
    assert again.returncode == 0, again.stderr
    assert on_login(cluster, login_node, "images", "sif").stdout == first.stdout, "the pushed image again: the cached SIF"

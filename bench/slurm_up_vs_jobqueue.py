"""Benchmark: `up slurm` vs a plain dask-jobqueue SLURMCluster without containers, on the
Slurm test bed (2 compute nodes), or on a login node you name.

ours:  `seamless-stack up slurm --login ... --min-jobs N` from this machine, until it returns
       (services job running, services healthy, N worker jobs Seamless-ready); SIFs warm
       (built beforehand with `seamless-stack images sif --login`, untimed).
plain: on the login node, a venv with dask-jobqueue (no containers, no Seamless):
       SLURMCluster(...).scale(jobs=N) until N workers are connected.
Interleaved rounds (the order alternates). Prints medians and the ratio ours / plain.

    .venv/bin/python -m bench.slurm_up_vs_jobqueue [--rounds 3] [--workers 2]
    .venv/bin/python -m bench.slurm_up_vs_jobqueue --smoke
    # an existing cluster (e.g. a test bed: --login seamless@ADDR --ssh-key KEY)
    .venv/bin/python -m bench.slurm_up_vs_jobqueue --login USER@HOST [--ssh-key KEY] [--partition P]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

from bench.common import ROOT, Workspace, alternate, log, report, short_id

PLAIN = """
import sys, time
from dask_jobqueue import SLURMCluster
from distributed import Client
start = time.monotonic()
cluster = SLURMCluster(cores=1, processes=1, memory="600MB", walltime="00:20:00", queue={partition!r},
                       job_name={job_name!r}, python=sys.executable,
                       scheduler_options={{"dashboard_address": ":0"}})
try:
    cluster.scale(jobs={workers})
    Client(cluster).wait_for_workers({workers}, timeout=600)
    print(time.monotonic() - start)
finally:
    cluster.close()
"""


def lock_pins(*names: str) -> list[str]:
    """The stack's own versions of dask & co. (images/lock/dask.txt), so both sides match."""
    text = (ROOT / "images" / "lock" / "dask.txt").read_text()
    pins = []
    for name in names:
        found = re.search(rf"^{re.escape(name)}==(\S+)", text, re.MULTILINE | re.IGNORECASE)
        pins.append(f"{name}=={found.group(1)}" if found else name)
    return pins


def plain_venv(ws: Workspace, login: str) -> str:
    """A venv with dask-jobqueue on the login node, made once (the host's CA bundle for a
    TLS-intercepting proxy). Returns its python, as a path relative to the login home."""
    pins = lock_pins("dask-jobqueue", "distributed", "dask")
    venv = ".cache/seamless-stack-bench/jobqueue-" + "-".join(p.split("==")[-1] for p in pins)
    python = f"{venv}/bin/python"
    if ws.ssh(login, f"{python} -c 'import dask_jobqueue'", check=False).returncode == 0:
        return python
    log(f"making the baseline's venv on the login node: {' '.join(pins)}")
    ca = Path(os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt")
    cert = ""
    if ca.is_file():
        ws.ssh(login, "mkdir -p .cache/seamless-stack-bench && cat > .cache/seamless-stack-bench/ca.pem",
               input=ca.read_bytes())
        cert = "PIP_CERT=$HOME/.cache/seamless-stack-bench/ca.pem "
    ws.ssh(login, f"rm -rf {venv} && python3 -m venv {venv} && {cert}{venv}/bin/pip install -q "
                  f"--disable-pip-version-check {' '.join(pins)}", timeout=900)
    return python


def run(login: str, ssh_key: str | None, partition: str, rounds: int, workers: int, warmup: int) -> None:
    ws = Workspace("seamless-stack-bench-slurm", ssh_key)
    try:
        _run(ws, login, partition, rounds, workers, warmup)
    finally:
        ws.remove()


def _run(ws: Workspace, login: str, partition: str, rounds: int, workers: int, warmup: int) -> None:
    name = f"bench-{short_id()}"
    up = ["up", "slurm", "--name", name, "--login", login, "--partition", partition, "--cpus", "1",
          "--memory", "600M", "--time", "01:00:00", "--threads", "1", "--worker-memory", "600MB",
          "--min-jobs", str(workers), "--max-jobs", str(workers),
          "--buffer-dir", f"~/{name}/buffers", "--database-dir", f"~/{name}/database"]
    start = time.monotonic()
    ws.cli("images", "sif", "--login", login)
    log(f"SIFs on the login node ready in {time.monotonic() - start:.0f}s (built once, untimed)")
    start = time.monotonic()
    python = plain_venv(ws, login)
    log(f"the baseline's venv on the login node ready in {time.monotonic() - start:.0f}s (made once, untimed)")
    plain_script = PLAIN.format(partition=partition, job_name=f"{name}-plain", workers=workers)

    def ours_round() -> float:
        return ws.timed_up(name, *up)

    def plain_round() -> float:
        out = ws.ssh(login, f"{python} -", input=plain_script, text=True, timeout=900).stdout
        return float(out.strip().splitlines()[-1])

    try:
        for i in range(warmup):
            log(f"warm-up {i + 1}/{warmup}: ours {ours_round():.1f}s, plain dask-jobqueue {plain_round():.1f}s")
        ours, plain = alternate(rounds, ours_round, plain_round, "plain dask-jobqueue")
    finally:
        ws.cli("down", "--name", name, check=False)
        ws.ssh(login, f"scancel --name {name}-plain; rm -rf {name}", check=False)

    report(f"time to {workers} connected worker(s), median of {rounds} round(s):",
           [(f"seamless-stack up slurm --login (services job + {workers} worker job(s), Seamless-ready)", ours),
            (f"plain SLURMCluster on the login node ({workers} worker job(s), no containers)", plain)],
           "ours/plain")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="worker jobs (default 2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument("--smoke", action="store_true", help="1 round, 1 worker job, no warm-up: does it run?")
    parser.add_argument("--login", help="USER@HOST of an existing login node (default: start a test cluster)")
    parser.add_argument("--ssh-key", help="private key for --login (default: your ssh set-up)")
    parser.add_argument("--partition", default="main", help="partition for both sides (default main, the test bed's)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.workers, args.warmup = 1, 1, 0
    if args.login:
        run(args.login, args.ssh_key, args.partition, args.rounds, args.workers, args.warmup)
        return
    from testbeds.slurm_cluster import SlurmCluster

    log("starting a Slurm test cluster (2 compute nodes)")
    start = time.monotonic()
    with SlurmCluster(name=f"seamless-stack-bench-slurm-{short_id()}", compute_nodes=2) as cluster:
        log(f"cluster ready in {time.monotonic() - start:.0f}s")
        run(cluster.destination, str(cluster.key_path), args.partition, args.rounds, args.workers, args.warmup)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)

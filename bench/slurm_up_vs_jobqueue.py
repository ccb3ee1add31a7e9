"""Benchmark: `up slurm` vs a plain dask-jobqueue SLURMCluster without containers, on the
Slurm test bed (2 compute nodes).

ours:  `seamless-stack up slurm --login ... --min-jobs N` from this machine, until it returns
       (services job running, services healthy, N worker jobs Seamless-ready); SIFs warm.
plain: on the login node, a venv with dask-jobqueue (no containers, no Seamless):
       SLURMCluster(...).scale(jobs=N) until N workers are connected.
Prints medians and the ratio ours / plain.

    .venv/bin/python -m bench.slurm_up_vs_jobqueue [--rounds 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from testbeds.slurm_cluster import SlurmCluster

CLI = str(Path(sys.executable).parent / "seamless-stack")
PLAIN = """
import sys, time
from dask_jobqueue import SLURMCluster
from distributed import Client
start = time.monotonic()
cluster = SLURMCluster(cores=1, processes=1, memory="600MB", walltime="00:20:00", queue="main",
                       python="{python}", scheduler_options={{"dashboard_address": ":0"}})
cluster.scale(jobs={workers})
Client(cluster).wait_for_workers({workers}, timeout=600)
print(time.monotonic() - start)
cluster.close()
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="seamless-stack-bench-slurm-"))
    options = ["--partition", "main", "--cpus", "1", "--memory", "600M", "--threads", "1",
               "--worker-memory", "600MB", "--min-jobs", str(args.workers), "--max-jobs", str(args.workers)]
    with SlurmCluster(name="seamless-stack-bench-slurm", compute_nodes=2) as cluster:
        (work / "bin").mkdir()
        (work / "bin" / "ssh").write_text(f'#!/bin/sh\nexec /usr/bin/ssh -F {cluster.ssh_config_path} "$@"\n')
        (work / "bin" / "ssh").chmod(0o755)
        env = dict(os.environ, HOME=str(work), PATH=f"{work}/bin:{os.environ['PATH']}")
        login = cluster.alias
        up = [CLI, "up", "slurm", "--name", "bench", "--login", login, *options]
        subprocess.run(up, env=env, check=True, capture_output=True)  # warm-up: builds the SIFs
        subprocess.run([CLI, "down", "--name", "bench"], env=env, check=True, capture_output=True)

        # the baseline's environment on the login node: dask-jobqueue from PyPI (host CA for the proxy)
        ca = Path(os.environ.get("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt"))
        subprocess.run(["ssh", login, "cat > ca.pem"], input=ca.read_bytes(), env=env, check=True)
        subprocess.run(["ssh", login, "python3 -m venv jq && PIP_CERT=$HOME/ca.pem jq/bin/pip install -q "
                        "dask-jobqueue==0.9.0 distributed==2026.8.0"], env=env, check=True, capture_output=True)
        plain_script = PLAIN.format(python="/home/seamless/jq/bin/python", workers=args.workers)

        ours, plain = [], []
        for round_ in range(args.rounds):
            start = time.monotonic()
            subprocess.run(up, env=env, check=True, capture_output=True)
            ours.append(time.monotonic() - start)
            subprocess.run([CLI, "down", "--name", "bench"], env=env, check=True, capture_output=True)
            out = subprocess.run(["ssh", login, "jq/bin/python -"], input=plain_script, text=True, env=env,
                                 check=True, capture_output=True)
            plain.append(float(out.stdout.strip().splitlines()[-1]))
            print(f"round {round_ + 1}: ours {ours[-1]:.1f}s, plain dask-jobqueue {plain[-1]:.1f}s", file=sys.stderr)
    o, p = statistics.median(ours), statistics.median(plain)
    print(f"time to {args.workers} connected workers, median of {args.rounds}:")
    print(f"  seamless-stack up slurm --login (services job + {args.workers} worker jobs, Seamless-ready) {o:6.1f}s")
    print(f"  plain SLURMCluster on the login node ({args.workers} worker jobs, no containers)        {p:6.1f}s")
    print(f"  ratio ours/plain {o / p:.2f}")


if __name__ == "__main__":
    main()

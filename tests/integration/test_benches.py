"""The benchmarks in bench/ still run: each one with --smoke (1 round, 1 worker, a few
transformations), as a subprocess exactly as a developer would start it
(`python -m bench.NAME` from the checkout), and each prints its ratio lines.

The remote and Slurm benchmarks run against the session's test beds (fixtures `remote`
and `cluster` in conftest.py), not beds of their own. conftest.py runs this module last.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.common import RATIO_LINE

from .conftest import ROOT


def run_bench(module: str, *args: str, timeout: float, env: dict | None = None) -> dict[str, float]:
    """Run `python -m bench.MODULE --smoke ARGS`; return its ratios, {what: value}."""
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", f"bench.{module}", "--smoke", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    took = time.monotonic() - start
    assert done.returncode == 0, f"bench.{module} --smoke failed ({done.returncode}) after {took:.0f}s:\n{done.stdout}\n{done.stderr[-4000:]}"
    progress = "".join(line + "\n" for line in done.stderr.splitlines() if line.startswith("[bench"))
    print(f"bench.{module} --smoke: {took:.0f}s\n{progress}{done.stdout}")
    ratios = {what: float(value) for what, value in RATIO_LINE.findall(done.stdout)}
    for what, value in ratios.items():
        assert value > 0, f"ratio {what} is {value}:\n{done.stdout}"
    return ratios


def test_bench_up_vs_compose(docker_engine):
    ratios = run_bench("up_vs_compose", timeout=600)
    assert set(ratios) == {"ours/plain"}, ratios


def test_bench_security_cost(docker_engine, client_venv):
    ratios = run_bench("security_cost", timeout=600, env={"SEAMLESS_STACK_CLIENT_VENV": str(client_venv)})
    assert set(ratios) == {f"{m}:secured/insecure" for m in ("sequential", "parallel", "put", "get")}, ratios


def test_bench_vs_bare(docker_engine, client_venv):
    ratios = run_bench("vs_bare", timeout=900, env={"SEAMLESS_STACK_CLIENT_VENV": str(client_venv)})
    assert set(ratios) == {"ready:stack/bare", "ready_2:stack/bare", "ready_2_over_1_stack", "ready_2_over_1_bare",
                           *(f"{m}:stack/bare" for m in ("sequential", "parallel", "put", "get"))}, ratios


def test_bench_remote_transfer_latency(remote, client_venv):
    ratios = run_bench("remote_transfer_latency", "--host", remote.destination, "--ssh-key", str(remote.key_path),
                       timeout=900, env={"SEAMLESS_STACK_CLIENT_VENV": str(client_venv)})
    assert set(ratios) == {"transfer/save", "tunnel/direct"}, ratios
    assert remote.ssh("docker ps -aq").stdout.strip() == "", "the benchmark's stacks are down"


def test_bench_slurm_up_vs_jobqueue(cluster):
    ratios = run_bench("slurm_up_vs_jobqueue", "--login", cluster.destination, "--ssh-key", str(cluster.key_path),
                       timeout=1500)
    assert set(ratios) == {"ours/plain"}, ratios
    assert cluster.squeue() == [], "no job left behind"


def test_bench_route_vs_direct(docker_engine, client_venv):
    ratios = run_bench("route_vs_direct", timeout=600, env={"SEAMLESS_STACK_CLIENT_VENV": str(client_venv)})
    assert set(ratios) == {"sequential:route/direct", "parallel:route/direct"}, ratios


def test_bench_nested_vs_own(docker_engine, client_venv):
    """Also: the stack completes the large nested run (the bench fails where it deadlocks)."""
    ratios = run_bench("nested_vs_own", timeout=600, env={"SEAMLESS_STACK_CLIENT_VENV": str(client_venv)})
    assert set(ratios) == {"threads-1:stack/own"}, ratios


def test_bench_forwarder_overhead():
    ratios = run_bench("forwarder_overhead", timeout=300)
    assert set(ratios) == {"forwarder/direct"}, ratios

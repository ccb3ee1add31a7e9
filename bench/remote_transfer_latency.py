"""Benchmark: the remote methods on the remote-host test bed.

1. Image transfer to a fresh remote (docker save | ssh docker load): time and bytes, against
   `docker save > /dev/null` here (the part of the cost that is not the network or the load).
2. First-result latency: fresh `seamless-run` transformations from a client on this machine,
   through `seamless-stack tunnel` (--ssh) vs straight to the remote's ports (--direct).
   Prints medians and the ratio tunnel / direct.

    .venv/bin/python -m bench.remote_transfer_latency [--runs 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from seamless_stack import docker_tools, images
from seamless_stack.hosts import copy_images
from seamless_stack.ssh import Destination
from testbeds.remote_host import RemoteHost

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "seamless-stack")


def client_venv() -> str:
    return subprocess.run(["bash", str(ROOT / "scripts/client-venv.sh")], check=True, capture_output=True, text=True).stdout.strip()


def latencies(env_file: Path, venv: str, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.monotonic()
        subprocess.run(["bash", "-c", 'source "$1"; shift; exec "$@"', "-", str(env_file), "seamless-run", f"echo {uuid.uuid4().hex}"],
                       check=True, capture_output=True, env={"PATH": f"{venv}/bin:/usr/bin:/bin", "HOME": str(env_file.parent)})
        times.append(time.monotonic() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    docker = docker_tools.docker_client()
    tags = images.build_images(docker)
    venv = client_venv()
    work = Path(tempfile.mkdtemp(prefix="seamless-stack-bench-remote-"))
    with RemoteHost(name="seamless-stack-bench-remote") as remote:
        os.environ["PATH"] = f"{remote.bin_dir}:{os.environ['PATH']}"  # an ssh that knows the bed's key
        env = dict(os.environ, HOME=str(work))

        start = time.monotonic()
        subprocess.run(f"docker save {' '.join(tags.values())} > /dev/null", shell=True, check=True)
        save_only = time.monotonic() - start
        start = time.monotonic()
        sent = copy_images(list(dict.fromkeys(tags.values())), Destination.parse(remote.destination), lambda line: None)
        transfer = time.monotonic() - start
        print(f"image transfer: {sent / 1e6:.0f} MB in {transfer:.1f}s ({sent / 1e6 / transfer:.0f} MB/s); "
              f"docker save alone {save_only:.1f}s; ratio transfer/save {transfer / save_only:.2f}")

        results = {}
        for access in ("--direct", "--ssh"):
            subprocess.run([CLI, "up", "remote", "--name", "bench", "--host", remote.destination, access], env=env,
                           check=True, capture_output=True)
            tunnel = None
            if access == "--ssh":
                tunnel = subprocess.Popen([CLI, "tunnel", "--name", "bench", "--format", "json"], env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                while not tunnel.stdout.readline().startswith("}"):
                    pass
            env_file = work / ".seamless" / "stacks" / "bench.env"
            latencies(env_file, venv, 2)  # warm-up: client imports, worker spawn
            results[access] = latencies(env_file, venv, args.runs)
            if tunnel:
                tunnel.terminate()
                tunnel.wait()
            subprocess.run([CLI, "down", "--name", "bench"], env=env, check=True, capture_output=True)
    direct, tunnelled = (statistics.median(results[a]) for a in ("--direct", "--ssh"))
    print(f"first-result latency, median of {args.runs} fresh transformations:")
    print(f"  direct              {direct:6.2f}s")
    print(f"  through the tunnel  {tunnelled:6.2f}s")
    print(f"  ratio tunnel/direct {tunnelled / direct:6.2f}")
    print(json.dumps({"direct": results["--direct"], "ssh": results["--ssh"]}))


if __name__ == "__main__":
    main()

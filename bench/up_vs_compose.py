"""Benchmark: warm `seamless-stack up local` vs plain `docker compose up --wait`, and image sizes.

Both bring up the same Compose file with the same images, ports and worker count, side by
side in alternating rounds (this machine is noisy). Warm: the images are built beforehand.
Ours returns only when every worker's Seamless plugin is set up; plain Compose returns when
the container healthchecks pass. Prints medians and the ratio ours / plain.

    .venv/bin/python bench/up_vs_compose.py [--rounds 5] [--workers 2]
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
from pathlib import Path

from seamless_stack import docker_tools, images
from seamless_stack.plan import make_plan
from seamless_stack.resources import compose_file
from seamless_stack.spec import build_spec

CLI = str(Path(sys.executable).parent / "seamless-stack")


def timed(command: list[str], env: dict) -> float:
    start = time.monotonic()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - start


def image_sizes(tags: dict[str, str]) -> None:
    out = subprocess.run(["docker", "system", "df", "-v", "--format", "{{json .Images}}"], capture_output=True, text=True, check=True)
    by_tag = {f"{i['Repository']}:{i['Tag']}": i for i in json.loads(out.stdout)}
    print("\nimage sizes (MB): size / shared with other images / unique")
    unique_total, shared_max = 0.0, 0.0
    for role, tag in tags.items():
        info = by_tag.get(tag, {})
        size, shared, unique = (info.get(k, "?") for k in ("Size", "SharedSize", "UniqueSize"))
        print(f"  {role:<11} {size:>8} / {shared:>8} / {unique:>8}   {tag}")
    naive = sum(docker.image.inspect(t).size for t in tags.values()) / 1e6
    print(f"  four images as independent images would take {naive:.0f} MB; `docker system df` shows what they take together")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    global docker
    docker = docker_tools.docker_client()
    tags = images.build_images(docker, progress=lambda line: print(line, file=sys.stderr))
    work = Path(tempfile.mkdtemp(prefix="seamless-stack-bench-"))
    env = dict(os.environ, HOME=str(work))
    ours, plain = [], []
    for round_ in range(args.rounds):
        # ours: the whole CLI, from spec to a Seamless-ready worker pool.
        up = [CLI, "up", "local", "--name", "bench-ours", "--workers", str(args.workers),
              "--buffer-dir", str(work / "b1"), "--database-dir", str(work / "d1")]
        ours.append(timed(up, env))
        subprocess.run([CLI, "down", "--name", "bench-ours"], env=env, check=True, capture_output=True)

        # plain: docker compose up --wait with the same file, images and parameters.
        spec = build_spec(name="bench-plain", workers=args.workers, buffer_dir=str(work / "b2"),
                          database_dir=str(work / "d2"), environ=env)
        deployment = make_plan(spec, tags)
        env_file = work / "plain.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in deployment.compose_environment().items()))
        compose = ["docker", "compose", "-p", "bench-plain", "-f", str(compose_file()), "--env-file", str(env_file)]
        plain.append(timed(compose + ["up", "-d", "--wait", "--scale", f"worker={args.workers}"], env))
        subprocess.run(compose + ["down", "-t", "10"], env=env, check=True, capture_output=True)
        print(f"round {round_ + 1}: ours {ours[-1]:.2f}s, plain compose {plain[-1]:.2f}s", file=sys.stderr)

    o, p = statistics.median(ours), statistics.median(plain)
    print(f"\nwarm up, {args.workers} workers, median of {args.rounds} rounds:")
    print(f"  seamless-stack up local     {o:6.2f}s   (until every worker is Seamless-ready)")
    print(f"  docker compose up --wait    {p:6.2f}s   (until container healthchecks pass)")
    print(f"  ratio ours/plain            {o / p:6.2f}")
    image_sizes(tags)


if __name__ == "__main__":
    main()

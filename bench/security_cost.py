"""Benchmark: what the stack's security costs. A secured stack (the default: Dask mutual TLS,
the hashserver and database behind the secret check) and an `--insecure` one, side by side
in one run with the same options, measured in interleaved rounds (the order alternates):

  - sequential: N fresh @direct transformations, one after another (latency);
  - parallel:   N more, PARALLEL at a time (throughput);
  - put, get:   SIZE MB to and from the hashserver.

The client (bench/client/workload.py) is a plain Seamless client that only sources each
stack's environment output. Prints the medians and the ratios secured / insecure.

    .venv/bin/python -m bench.security_cost [--rounds 5] [--count 50] [--size-mb 256] [--parallel 6]
    .venv/bin/python -m bench.security_cost --smoke     # 1 round, 5 transformations, 8 MB
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.common import Workspace, client_run, client_venv, image_tags, log, report, short_id

WORKLOAD = Path(__file__).resolve().parent / "client" / "workload.py"
MEASURES = ("sequential", "parallel", "put", "get")


def workload(venv: Path, env_file: Path, count: int, size_mb: int, parallel: int) -> dict[str, float]:
    done = client_run(venv, env_file, "python", str(WORKLOAD), str(count), str(size_mb), str(parallel), timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"the workload failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def workload_parser(description: str) -> argparse.ArgumentParser:
    """The options of a benchmark that runs the workload: --rounds --count --size-mb --parallel --threads --smoke."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=50, help="transformations per measurement")
    parser.add_argument("--size-mb", type=int, default=256, help="buffer size for PUT and GET")
    parser.add_argument("--parallel", type=int, default=6)
    parser.add_argument("--threads", type=int, default=3, help="threads per worker")
    parser.add_argument("--smoke", action="store_true", help="1 round, 5 transformations, 8 MB: does it run?")
    return parser


def smoke(args: argparse.Namespace) -> argparse.Namespace:
    if args.smoke:
        args.rounds, args.count, args.size_mb = 1, 5, 8
    return args


def main(argv: list[str] | None = None) -> None:
    args = smoke(workload_parser(__doc__).parse_args(argv))

    ws = Workspace("seamless-stack-bench-security")
    names = {}
    try:
        image_tags(ws)  # warm: whatever is missing is built before anything is timed
        venv = client_venv()
        run = short_id()
        names = {"secured": f"bench-secured-{run}", "insecure": f"bench-insecure-{run}"}
        for side, name in names.items():
            log(f"up {side} stack {name}")
            ws.cli("up", "local", "--name", name, "--threads", str(args.threads),
                   *(["--insecure"] if side == "insecure" else []),
                   "--buffer-dir", str(ws.home / side / "buffers"), "--database-dir", str(ws.home / side / "database"))
        samples = {side: {m: [] for m in MEASURES} for side in names}
        for round_ in range(args.rounds):
            order = list(names) if round_ % 2 == 0 else list(reversed(names))
            for side in order:
                log(f"round {round_ + 1}/{args.rounds}: {side}")
                figures = workload(venv, ws.stacks_dir() / f"{names[side]}.env", args.count, args.size_mb, args.parallel)
                for measure in MEASURES:
                    samples[side][measure].append(figures[measure])
        titles = {"sequential": f"{args.count} fresh transformations, one after another",
                  "parallel": f"{args.count} fresh transformations, {args.parallel} at a time",
                  "put": f"{args.size_mb} MB PUT to the hashserver", "get": f"{args.size_mb} MB GET from the hashserver"}
        for measure in MEASURES:
            report(titles[measure], [(side, samples[side][measure]) for side in names], f"{measure}:secured/insecure")
    finally:
        for name in names.values():
            ws.cli("down", "--name", name, check=False)
        ws.remove()


if __name__ == "__main__":
    main()

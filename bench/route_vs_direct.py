"""Benchmark: Seamless' configuration route against the env route, on one secured local stack.

  - route:  a Seamless project folder (seamless.yaml, seamless.profile.yaml as `seamless-stack
            connect` prints them, and bench/client/route_workload.py copied in as its script,
            which calls seamless.config.init()); it reaches the stack through the owner-only
            forwarder of `seamless-stack tunnel`;
  - direct: the same script with --env, from a shell that sourced the stack's environment
            output: it calls set_remote_clients_from_env, as bench/client/workload.py does.
            (workload.py itself cannot skip its PUT/GET: at --size-mb 0 the second run's PUT
            of the empty buffer answers 201, already there, and workload.py wants 200.)

Measured in interleaved rounds (the order alternates), as bench/security_cost.py measures:

  - sequential: N fresh @direct transformations, one after another (latency);
  - parallel:   N more, PARALLEL at a time (throughput).

Prints the medians and the ratios route / direct. (--size-mb is not used here.) With
--insecure, the same on an `--insecure` stack, where the route needs no tunnel: the two runs
together tell the forwarder's share from the configuration route's own.

    .venv/bin/python -m bench.route_vs_direct [--rounds 5] [--count 50] [--parallel 6]
    .venv/bin/python -m bench.route_vs_direct --smoke     # 1 round, 5 transformations
    .venv/bin/python -m bench.route_vs_direct --insecure  # no credentials, no forwarder
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from bench.common import Workspace, client_run, client_venv, image_tags, log, project_files, report, short_id
from bench.security_cost import smoke, workload_parser

ROUTE_WORKLOAD = Path(__file__).resolve().parent / "client" / "route_workload.py"
MEASURES = ("sequential", "parallel")
PROJECT = "bench"


def route_workload(venv: Path, home: Path, folder: Path, count: int, parallel: int) -> dict[str, float]:
    """The project's script, run in its folder with the client venv and the workspace HOME only."""
    done = subprocess.run(["python", ROUTE_WORKLOAD.name, str(count), str(parallel)], cwd=folder,
                          env={"PATH": f"{venv}/bin:/usr/bin:/bin", "HOME": str(home)},
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"the project's workload failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def direct_workload(venv: Path, env_file: Path, count: int, parallel: int) -> dict[str, float]:
    """The same script with --env, from a shell that sourced the env file (as security_cost.workload)."""
    done = client_run(venv, env_file, "python", str(ROUTE_WORKLOAD), "--env", str(count), str(parallel), timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"the env-route workload failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = workload_parser(__doc__)
    parser.add_argument("--insecure", action="store_true", help="an --insecure stack: the route without the forwarder")
    args = smoke(parser.parse_args(argv))

    ws = Workspace("seamless-stack-bench-route")
    name = None
    try:
        image_tags(ws)  # warm: whatever is missing is built before anything is timed
        venv = client_venv()
        name = f"bench-route-{short_id()}"
        log(f"up {'insecure' if args.insecure else 'secured'} stack {name}")
        ws.cli("up", "local", "--name", name, "--threads", str(args.threads), *(["--insecure"] if args.insecure else []),
               "--buffer-dir", str(ws.home / "buffers"), "--database-dir", str(ws.home / "database"))
        path = ws.env["PATH"]
        ws.env["PATH"] = f"{venv}/bin:{path}"  # connect checks python3 on PATH against the stack
        try:
            connect = ws.cli("connect", "--name", name, "--project", PROJECT)
        finally:
            ws.env["PATH"] = path
        for line in connect.stderr.splitlines():
            if "WARNING" in line or "runs in the background" in line:  # connect starts the secured route's tunnel
                log(line)
        folder = ws.home / "project"
        folder.mkdir()
        for filename, text in project_files(connect.stdout).items():
            (folder / filename).write_text(text)
        shutil.copy(ROUTE_WORKLOAD, folder)  # init() reads the files next to the script that calls it
        env_file = ws.stacks_dir() / f"{name}.env"
        sides = {
            "route": lambda: route_workload(venv, ws.home, folder, args.count, args.parallel),
            "direct": lambda: direct_workload(venv, env_file, args.count, args.parallel),
        }
        samples = {side: {m: [] for m in MEASURES} for side in sides}
        for round_ in range(args.rounds):
            order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
            for side in order:
                log(f"round {round_ + 1}/{args.rounds}: {side}")
                figures = sides[side]()
                if round_ == 0:
                    log(f"  {side} computed on worker {figures['host']}")
                for measure in MEASURES:
                    samples[side][measure].append(figures[measure])
        titles = {"sequential": f"{args.count} fresh transformations, one after another",
                  "parallel": f"{args.count} fresh transformations, {args.parallel} at a time"}
        for measure in MEASURES:
            route = "seamless.config, no tunnel (--insecure)" if args.insecure else "seamless.config + tunnel"
            report(f"{titles[measure]} (route: {route}; direct: env file)",
                   [(side, samples[side][measure]) for side in sides], f"{measure}:route/direct")
    finally:
        if name is not None:  # (down stops the background tunnel)
            ws.cli("down", "--name", name, check=False)
        ws.remove()


if __name__ == "__main__":
    main()

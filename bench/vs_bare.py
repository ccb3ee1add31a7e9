"""Benchmark: what running in containers costs. `seamless-stack up local` (the default: secured,
containers) against the same four services as plain processes on 127.0.0.1 (bench/bare.py:
the same lock files, commands, preload and readiness, unsecured), in interleaved rounds
(the order alternates; this machine is noisy):

  - ready:      time to ready, 1 worker x THREADS threads: for the stack the wall time of
                `seamless-stack up local`, for bare from the launcher's first start until
                the workers are Seamless-ready (venvs and images are made beforehand);
  - sequential: N fresh @direct transformations, one after another;
  - parallel:   N more, PARALLEL at a time;
  - put, get:   SIZE MB to and from the hashserver;
  - scaling:    time to ready with each worker count of --workers-scaling, both sides, and
                how it grows: `ratio ready_8_over_1_stack`, `ratio ready_8_over_1_bare`;
  - images:     the four images' size, shared layers once (`docker save`).

The workload is bench/client/workload.py: a plain Seamless client that only sources each
side's environment output. Prints the medians and the ratios stack / bare.

    .venv/bin/python -m bench.vs_bare [--rounds 5] [--count 50] [--size-mb 256] [--parallel 6] [--workers-scaling 1,2,4,8]
    .venv/bin/python -m bench.vs_bare --smoke     # 1 round, 5 transformations, 8 MB, workers 1 and 2
"""

from __future__ import annotations

import itertools
import statistics

from bench import bare
from bench.common import Workspace, alternate, client_venv, image_tags, log, report, saved_mb, short_id
from bench.security_cost import MEASURES, smoke, workload, workload_parser


def main(argv: list[str] | None = None) -> None:
    parser = workload_parser(__doc__)
    parser.add_argument("--workers-scaling", default="1,2,4,8", help="worker counts to time ready with (smoke: 1,2)")
    args = smoke(parser.parse_args(argv))
    if args.smoke:
        args.workers_scaling = "1,2"
    counts = sorted({1, *(int(n) for n in args.workers_scaling.split(","))})

    ws = Workspace("seamless-stack-bench-vsbare")
    run = short_id()
    ups = itertools.count(1)

    def stack_ready(workers: int) -> float:
        name = f"vsbare-{run}-{next(ups)}"
        return ws.timed_up(name, "up", "local", "--name", name, "--workers", str(workers), "--threads", str(args.threads),
                           "--buffer-dir", str(ws.home / name / "buffers"), "--database-dir", str(ws.home / name / "database"))

    def bare_ready(workers: int) -> float:
        with bare.BareStack(workers, args.threads) as stack:
            return stack.start()

    try:
        tags = image_tags(ws)  # warm: images built, bare venvs made, before anything is timed
        log("bare venvs")
        bare.venvs()
        venv = client_venv()

        samples = {side: {m: [] for m in MEASURES} for side in ("stack", "bare")}
        name = f"vsbare-{run}-0"
        log(f"workload: up stack {name}, start bare services")
        try:
            ws.cli("up", "local", "--name", name, "--threads", str(args.threads),
                   "--buffer-dir", str(ws.home / name / "buffers"), "--database-dir", str(ws.home / name / "database"))
            with bare.BareStack(1, args.threads) as plain:
                plain.start()
                env_files = {"stack": ws.stacks_dir() / f"{name}.env", "bare": plain.env_file}
                for round_ in range(args.rounds):
                    for side in (("stack", "bare") if round_ % 2 == 0 else ("bare", "stack")):
                        log(f"workload round {round_ + 1}/{args.rounds}: {side}")
                        figures = workload(venv, env_files[side], args.count, args.size_mb, args.parallel)
                        for measure in MEASURES:
                            samples[side][measure].append(figures[measure])
        finally:
            ws.cli("down", "--name", name, check=False)

        ready = {}
        for workers in counts:
            log(f"time to ready, {workers} worker(s)")
            ready[workers] = alternate(args.rounds, lambda: stack_ready(workers), lambda: bare_ready(workers), "bare")

        print(f"seamless-stack up local (secured, containers) vs bare processes; {args.rounds} round(s), medians")
        report(f"time to ready, 1 worker x {args.threads} threads", [("stack", ready[1][0]), ("bare", ready[1][1])],
               "ready:stack/bare")
        titles = {"sequential": f"{args.count} fresh transformations, one after another",
                  "parallel": f"{args.count} fresh transformations, {args.parallel} at a time",
                  "put": f"{args.size_mb} MB PUT to the hashserver", "get": f"{args.size_mb} MB GET from the hashserver"}
        for measure in MEASURES:
            report(titles[measure], [(side, samples[side][measure]) for side in ("stack", "bare")], f"{measure}:stack/bare")
        for workers in counts[1:]:
            report(f"time to ready, {workers} workers x {args.threads} threads",
                   [("stack", ready[workers][0]), ("bare", ready[workers][1])], f"ready_{workers}:stack/bare")
        if len(counts) > 1:
            print("growth of the time to ready with the worker count (median / median with 1 worker)")
            for workers in counts[1:]:
                for i, side in enumerate(("stack", "bare")):
                    growth = statistics.median(ready[workers][i]) / statistics.median(ready[1][i])
                    print(f"  ratio ready_{workers}_over_1_{side}  {growth:.2f}", flush=True)
        print(f"images: the four, shared layers once (docker save): {saved_mb(sorted(set(tags.values()))):.0f} MB", flush=True)
    finally:
        ws.remove()


if __name__ == "__main__":
    main()

"""Benchmark: warm `seamless-stack up local` vs plain `docker compose up --wait`, and image sizes.

Both bring up the same Compose file with the same images, ports, worker count and
directories, in interleaved rounds (the order alternates; this machine is noisy). Warm:
the images are built beforehand. Ours returns only when every worker's Seamless plugin is
set up; plain Compose returns when the container healthchecks pass. Prints the medians and
the ratio ours / plain.

The plain side's variables are the ones `up local` wrote for Compose
(~/.seamless/stacks/<name>.compose.env, in the benchmark's private HOME), taken once from a
throwaway stack: the same images, free ports and directories, nothing rebuilt by hand.

    .venv/bin/python -m bench.up_vs_compose [--rounds 5] [--workers 2] [--threads 3]
    .venv/bin/python -m bench.up_vs_compose --smoke      # 1 round, 1 worker: does it run?
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from seamless_stack.resources import compose_file

from bench.common import Workspace, alternate, image_tags, log, report, short_id


def compose_env(ws: Workspace, name: str, up_args: list[str]) -> dict[str, str]:
    """The Compose variables of a stack like ours: bring one up, copy its env file, take it down."""
    ws.cli("up", "local", "--name", name, *up_args)
    try:
        text = (ws.stacks_dir() / f"{name}.compose.env").read_text()
    finally:
        ws.cli("down", "--name", name)
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def image_sizes(ws: Workspace, tags: dict[str, str]) -> None:
    listed = [line.split("\t") for line in ws.cli("images", "list").stdout.splitlines() if "\t" in line]
    out = subprocess.run(["docker", "system", "df", "-v", "--format", "{{json .Images}}"],
                         capture_output=True, text=True, check=True)
    by_tag = {f"{i['Repository']}:{i['Tag']}": i for i in json.loads(out.stdout)}
    print("\nimage sizes: size / shared with other images / unique")
    for role, tag, *_ in listed:
        info = by_tag.get(tag, {})
        size, shared, unique = (info.get(k, "?") for k in ("Size", "SharedSize", "UniqueSize"))
        print(f"  {role:<11} {size:>8} / {shared:>8} / {unique:>8}   {tag}")
    naive = sum(float(row[2].split()[0]) for row in listed if len(row) > 2 and row[2].endswith(" MB"))
    print(f"  as independent images they would take {naive:.0f} MB; layers are shared (see `docker system df`)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="1 round, 1 worker with 1 thread: a quick check that it runs")
    parser.add_argument("--no-sizes", action="store_true", help="skip the image size table")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.workers, args.threads = 1, 1, 1

    ws = Workspace("seamless-stack-bench-local")
    try:
        run_bench(ws, args)
    finally:
        ws.remove()


def run_bench(ws: Workspace, args) -> None:
    tags = image_tags(ws)  # warm: whatever is missing is built before anything is timed
    run = short_id()
    ours_name, plain_name = f"bench-ours-{run}", f"bench-plain-{run}"
    common = ["--workers", str(args.workers), "--threads", str(args.threads)]
    ours_up = ["up", "local", "--name", ours_name, *common,
               "--buffer-dir", str(ws.home / "ours" / "buffers"), "--database-dir", str(ws.home / "ours" / "database")]
    plain_env = ws.home / "plain.compose.env"
    variables = compose_env(ws, plain_name, [*common, "--buffer-dir", str(ws.home / "plain" / "buffers"),
                                             "--database-dir", str(ws.home / "plain" / "database")])
    plain_env.write_text("".join(f"{k}={v}\n" for k, v in variables.items()))
    log(f"images ready; Compose variables taken from a throwaway `up local` ({plain_name})")
    # A Compose project of its own (not seamless-<name>): the CLI never sees it.
    compose = ["docker", "compose", "-p", plain_name, "-f", str(compose_file()), "--env-file", str(plain_env)]
    plain_up = [*compose, "up", "-d", "--wait", "--pull", "never", "--scale", f"worker={args.workers}"]

    def ours_round() -> float:
        return ws.timed_up(ours_name, *ours_up)

    def plain_round() -> float:
        start = time.monotonic()
        try:
            done = subprocess.run(plain_up, env=ws.env, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"docker compose up failed:\n{done.stderr[-3000:]}")
            return time.monotonic() - start
        finally:
            subprocess.run([*compose, "down", "-t", "10"], env=ws.env, capture_output=True)

    ours, plain = alternate(args.rounds, ours_round, plain_round, "plain compose")

    report(f"\nwarm up, {args.workers} worker(s) x {args.threads} thread(s), median of {args.rounds} round(s):",
           [("seamless-stack up local   (until every worker is Seamless-ready)", ours),
            ("docker compose up --wait  (until container healthchecks pass)", plain)],
           "ours/plain")
    if not args.no_sizes:
        image_sizes(ws, tags)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)

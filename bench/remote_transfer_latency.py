"""Benchmark: the remote methods, on the remote-host test bed (or a Docker host you name).

1. Image transfer to a remote without our images: `docker save | ssh HOST docker load` of
   the four images (shared layers once), against `docker save > /dev/null` here (the part
   of the cost that is neither the network nor the load). Each round first removes our four
   image tags from the remote. Ratio transfer / save.
2. First-result latency: fresh `seamless-run` transformations (each one new, so computed)
   from a client on this machine, against two stacks up side by side on the remote: one
   `--direct` (straight to the remote's ports), one `--ssh` reached through
   `seamless-stack tunnel`. The runs alternate between the two. Ratio tunnel / direct.

    .venv/bin/python -m bench.remote_transfer_latency [--rounds 3] [--runs 10]
    .venv/bin/python -m bench.remote_transfer_latency --smoke
    # an existing host (e.g. a test bed: --host seamless@ADDR --ssh-key KEY); its images are replaced
    .venv/bin/python -m bench.remote_transfer_latency --host USER@HOST [--ssh-key KEY]
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import time
import uuid

from bench.common import CLI, Tunnel, Workspace, client_venv, image_tags, log, report, seamless_run, short_id

CHUNK = 1 << 20


def save_alone(tags: list[str]) -> float:
    start = time.monotonic()
    subprocess.run(["docker", "save", *tags], stdout=subprocess.DEVNULL, check=True)
    return time.monotonic() - start


def remove_remote_images(ws: Workspace, host: str, tags: list[str]) -> None:
    ws.ssh(host, f"docker image rm {' '.join(tags)} >/dev/null 2>&1; "
                 f"! docker image inspect {' '.join(tags)} >/dev/null 2>&1",
           check=False)
    left = ws.ssh(host, "docker image ls --format '{{.Repository}}:{{.Tag}}'", text=True).stdout.split()
    if set(left) & set(tags):
        raise SystemExit(f"cannot remove our images from {host} (a stack still uses them?): {sorted(set(left) & set(tags))}")


def transfer(ws: Workspace, host: str, tags: list[str]) -> tuple[float, int]:
    """docker save | ssh HOST docker load; returns (seconds, bytes sent)."""
    start = time.monotonic()
    save = subprocess.Popen(["docker", "save", *tags], stdout=subprocess.PIPE)
    load = subprocess.Popen(["ssh", host, "docker load -q"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=ws.env)
    sent = 0
    try:
        while chunk := save.stdout.read(CHUNK):
            load.stdin.write(chunk)
            sent += len(chunk)
    finally:
        load.stdin.close()
        save.wait()
        err = load.stderr.read().decode()
        load.wait()
    if save.returncode or load.returncode:
        raise SystemExit(f"docker save | ssh {host} docker load failed ({save.returncode}, {load.returncode}): {err[-2000:]}")
    return time.monotonic() - start, sent


def run(host: str, ssh_key: str | None, rounds: int, runs: int, warmup: int) -> None:
    ws = Workspace("seamless-stack-bench-remote", ssh_key)
    try:
        _run(ws, host, rounds, runs, warmup)
    finally:
        ws.remove()


def _run(ws: Workspace, host: str, rounds: int, runs: int, warmup: int) -> None:
    tags = list(dict.fromkeys(image_tags(ws).values()))
    venv = client_venv()
    ws.ssh(host, "docker info >/dev/null")
    log(f"images and client venv ready; {host} answers")

    # 1. image transfer, interleaved with `docker save` alone
    saves, transfers, sizes = [], [], []
    for round_ in range(rounds):
        remove_remote_images(ws, host, tags)
        log(f"round {round_ + 1}/{rounds}: our images removed from {host}")
        if round_ % 2 == 0:
            saves.append(save_alone(tags))
            seconds, sent = transfer(ws, host, tags)
        else:
            seconds, sent = transfer(ws, host, tags)
            saves.append(save_alone(tags))
        transfers.append(seconds)
        sizes.append(sent)
        log(f"round {round_ + 1}/{rounds}: transfer {sent / 1e6:.0f} MB in {seconds:.1f}s, docker save alone {saves[-1]:.1f}s")

    # 2. first-result latency: two stacks side by side, runs alternating between them
    run_id = short_id()
    names = {"direct": f"bench-direct-{run_id}", "ssh": f"bench-ssh-{run_id}"}
    tunnel = None
    try:
        for access, name in names.items():
            log(f"up remote --{access} ({name})")
            ws.cli("up", "remote", "--name", name, "--host", host, f"--{access}", "--workers", "1",
                   "--buffer-dir", f"~/{name}/buffers", "--database-dir", f"~/{name}/database")
        log(f"stacks {', '.join(names.values())} up; {warmup} warm-up and {runs} timed run(s) each")
        tunnel = Tunnel(ws, names["ssh"])
        env_files = {access: ws.stacks_dir() / f"{name}.env" for access, name in names.items()}
        latencies: dict[str, list[float]] = {"direct": [], "ssh": []}
        for i in range(warmup + runs):
            order = ("direct", "ssh") if i % 2 == 0 else ("ssh", "direct")
            for access in order:
                seconds = seamless_run(venv, env_files[access], f"echo {uuid.uuid4().hex}")
                if i >= warmup:  # warm-up: client imports, Seamless worker processes spawned
                    latencies[access].append(seconds)
        log("timed runs done")
    finally:
        if tunnel:
            tunnel.close()
        downs = [subprocess.Popen([CLI, "down", "--name", name], env=ws.env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for name in names.values()]  # side by side, as they ran
        for down in downs:
            down.wait()
        ws.ssh(host, "rm -rf " + " ".join(shlex.quote(n) for n in names.values()), check=False)

    mb = sizes[-1] / 1e6
    report(f"image transfer to {host}: {len(tags)} images, {mb:.0f} MB (shared layers once), median of {rounds} round(s):",
           [(f"docker save | ssh docker load   ({mb / statistics.median(transfers):.0f} MB/s)", transfers),
            ("docker save > /dev/null alone", saves)],
           "transfer/save")
    report(f"\nfirst-result latency of a fresh seamless-run, median of {runs} run(s) each, alternating:",
           [("through seamless-stack tunnel (--ssh)", latencies["ssh"]),
            ("direct to the remote's ports (--direct)", latencies["direct"])],
           "tunnel/direct")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="image transfer rounds (default 3)")
    parser.add_argument("--runs", type=int, default=10, help="timed seamless-run per access (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed seamless-run per access first (default 2)")
    parser.add_argument("--smoke", action="store_true", help="1 transfer, 1 warm-up and 1 timed run each: does it run?")
    parser.add_argument("--host", help="USER@HOST of an existing remote Docker host (default: start a test bed)")
    parser.add_argument("--ssh-key", help="private key for --host (default: your ssh set-up)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.runs, args.warmup = 1, 1, 1
    if args.host:
        run(args.host, args.ssh_key, args.rounds, args.runs, args.warmup)
        return
    from testbeds.remote_host import RemoteHost

    log("starting a remote-host test bed")
    with RemoteHost(name=f"seamless-stack-bench-remote-{short_id()}") as bed:
        run(bed.destination, str(bed.key_path), args.rounds, args.runs, args.warmup)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)

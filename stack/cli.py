"""`seamless-stack`: the command line. Progress goes to stderr, results to stdout.

So `eval "$(seamless-stack up local)"` brings a stack up and configures this shell.
Every user-fixable problem ends as one line `seamless-stack: error: ...` and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import __version__, api, images
from .connection import FORMATS, render
from .docker_tools import check_engine, docker_client
from .errors import StackError
from .spec import SlurmOptions, build_spec, parse_port_range

DEFAULT_NAME = "default"


def progress(line: str) -> None:
    print(f"[seamless-stack] {line}", file=sys.stderr, flush=True)


def _add_up_options(parser: argparse.ArgumentParser, *bind_args, **bind_kwargs) -> None:
    _add_name(parser)
    parser.add_argument(*bind_args, **bind_kwargs)
    parser.add_argument("--port-range", help="START-END to draw ports from (default: $RANDOM_PORT_START-$RANDOM_PORT_END, else 60000-60999)")
    parser.add_argument("--scheduler-port", type=int, help="fixed Dask scheduler port (the same address every time)")
    parser.add_argument("--workers", type=int, default=1, help="Dask worker containers (default 1)")
    parser.add_argument("--threads", type=int, default=3, help="threads = Seamless workers per Dask worker (default 3)")
    parser.add_argument("--buffer-dir", help="hashserver buffers (default: $HASHSERVER_BUFFER_DIR, else ~/.seamless/buffers; remote: there)")
    parser.add_argument("--database-dir", help="database directory (default: $DATABASE_DIR, else ~/.seamless/database; remote: there)")
    parser.add_argument("--worker-requirements", help="pip requirements file: build and use a worker image with these libraries")
    parser.add_argument("--base-image", help="base image to build from (default: seamless-stack/base:bookworm if made, else debian:bookworm-slim)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for readiness (default 300)")
    parser.add_argument("--tls", action="store_true", help="Dask TLS with a per-stack certificate (for ports others can reach)")
    parser.add_argument("--format", choices=FORMATS, default="shell", help="format of the environment printed on stdout")


def _add_name(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", default=os.environ.get("SEAMLESS_STACK_NAME", DEFAULT_NAME),
                        help="stack name: one Compose project per name (default: $SEAMLESS_STACK_NAME or 'default')")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seamless-stack", description="Deploy the Seamless compute stack.")
    parser.add_argument("--version", action="version", version=f"seamless-stack {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser("up", help="bring a stack up and print its environment")
    methods = up.add_subparsers(dest="method", required=True, metavar="METHOD")
    local = methods.add_parser("local", help="Docker Compose on this machine")
    _add_up_options(local, "--bind", default="127.0.0.1", help="interface to publish ports on (default 127.0.0.1)")
    remote = methods.add_parser("remote", help="Docker Compose on a remote Docker host, reached over SSH")
    remote.add_argument("--host", required=True, help="USER@HOST[:PORT] of the remote Docker host (ssh, with your ~/.ssh/config)")
    access = remote.add_mutually_exclusive_group()
    access.add_argument("--ssh", dest="access", action="store_const", const="ssh",
                        help="(default) services on the remote's 127.0.0.1; reach them with `seamless-stack tunnel`")
    access.add_argument("--direct", dest="access", action="store_const", const="direct",
                        help="clients connect straight to the remote's published ports (see --bind)")
    _add_up_options(remote, "--bind", default=None,
                    help="with --direct: remote interface to publish on (default 0.0.0.0; clients then use the host name)")

    slurm = methods.add_parser("slurm", help="Apptainer containers under Slurm: a services job, workers on demand")
    slurm.add_argument("--login", help="USER@HOST[:PORT] of the login node, when running from a workstation (over SSH)")
    slurm_access = slurm.add_mutually_exclusive_group()
    slurm_access.add_argument("--ssh", dest="access", action="store_const", const="ssh",
                              help="(default with --login) reach the services through `seamless-stack tunnel`")
    slurm_access.add_argument("--direct", dest="access", action="store_const", const="direct",
                              help="clients connect straight to the services node (default without --login)")
    _add_up_options(slurm, "--bind", default="0.0.0.0", help=argparse.SUPPRESS)
    jobs = slurm.add_argument_group("services job")
    jobs.add_argument("--partition", help="partition of the services job (and of worker jobs, unless --worker-queue)")
    jobs.add_argument("--account", help="account to charge")
    jobs.add_argument("--time", default="72:00:00", help="walltime of the services job (default 72:00:00)")
    jobs.add_argument("--cpus", type=int, default=3, help="cores of the services job (default 3)")
    jobs.add_argument("--memory", default="4G", help="memory of the services job (default 4G)")
    workers = slurm.add_argument_group("worker jobs (dask-jobqueue SLURMCluster, adaptive)")
    workers.add_argument("--min-jobs", type=int, default=0, help="adaptive minimum of worker jobs (default 0)")
    workers.add_argument("--max-jobs", type=int, default=4, help="adaptive maximum of worker jobs (default 4)")
    workers.add_argument("--worker-memory", default="4GB", help="memory per worker job (default 4GB)")
    workers.add_argument("--worker-walltime", default="01:00:00", help="walltime per worker job; --lifetime stays below it")
    workers.add_argument("--worker-queue", help="partition of worker jobs (default: --partition)")
    workers.add_argument("--job-extra", action="append", default=[], help="extra #SBATCH line for worker jobs (repeatable)")
    workers.add_argument("--worker-tmpdir", default="${TMPDIR:-/tmp}", help="node-local scratch for workers")
    workers.add_argument("--local-workers", type=int, default=0,
                         help="single-node variant: N workers inside the services job, no worker jobs")
    slurm.add_argument("--sif-dir", default="~/.seamless/sif", help="where the SIFs live on the cluster (default ~/.seamless/sif)")

    down = commands.add_parser("down", help="stop and remove a stack's containers (data stays)")
    _add_name(down)

    status = commands.add_parser("status", help="services, ports, health, workers, directories")
    _add_name(status)

    env = commands.add_parser("env", help="print the environment for Seamless clients")
    _add_name(env)
    env.add_argument("--format", choices=FORMATS, default="shell")

    tunnel = commands.add_parser("tunnel", help="SSH forwards to a remote stack's services; blocks until Ctrl-C")
    _add_name(tunnel)
    tunnel.add_argument("--format", choices=FORMATS, default="shell")
    tunnel.add_argument("--port-range", help="local ports to use where the classic ones (5522, 5577, 8786, 8787) are busy")

    logs = commands.add_parser("logs", help="service logs")
    _add_name(logs)
    logs.add_argument("service", nargs="?", help="hashserver, database, scheduler or worker (default: all)")
    logs.add_argument("--tail", type=int, help="last N lines per container")

    imgs = commands.add_parser("images", help="build the images")
    image_commands = imgs.add_subparsers(dest="images_command", required=True, metavar="ACTION")
    base = image_commands.add_parser("base", help="make seamless-stack/base:bookworm from Debian packages (no registry)")
    base.add_argument("--force", action="store_true", help="remake it even if it exists")
    build = image_commands.add_parser("build", help="build the four images (only what is missing)")
    build.add_argument("--base-image", help="base image (default: as for `up`)")
    build.add_argument("--worker-requirements", help="pip requirements file for a derived worker image")
    build.add_argument("--force", action="store_true", help="rebuild even if the tags exist")
    image_commands.add_parser("list", help="the image tags `up` would use, with sizes")
    sif = image_commands.add_parser("sif", help="Apptainer SIFs of the images (built where apptainer runs)")
    sif.add_argument("--out", default="~/.seamless/sif", help="folder for the SIFs (default ~/.seamless/sif; with --login: there)")
    sif.add_argument("--login", help="USER@HOST[:PORT]: build the SIFs on that machine (a Slurm login node) over SSH")
    sif.add_argument("--worker-requirements", help="pip requirements file: also the SIF of a derived worker image")
    return parser


def _up(args) -> int:
    remote = {}
    if args.method == "slurm":
        access = args.access or ("ssh" if args.login else "direct")
        remote = {"remote": args.login, "access": access, "slurm": SlurmOptions(
            partition=args.partition, account=args.account, time=args.time, cpus=args.cpus, memory=args.memory,
            min_jobs=args.min_jobs, max_jobs=args.max_jobs, worker_memory=args.worker_memory,
            worker_walltime=args.worker_walltime, worker_queue=args.worker_queue, job_extra=tuple(args.job_extra),
            worker_tmpdir=args.worker_tmpdir, local_workers=args.local_workers, sif_dir=args.sif_dir,
        )}
    elif args.method == "remote":
        access = args.access or "ssh"
        remote = {"remote": args.host, "access": access}
        if args.bind is None:
            args.bind = "0.0.0.0" if access == "direct" else "127.0.0.1"
    spec = build_spec(
        name=args.name, method=args.method, port_range=args.port_range, scheduler_port=args.scheduler_port,
        workers=args.workers, threads=args.threads, bind=args.bind, buffer_dir=args.buffer_dir,
        database_dir=args.database_dir, worker_requirements=args.worker_requirements,
        base_image=args.base_image, timeout=args.timeout, tls=args.tls, **remote,
    )
    if spec.bind not in ("127.0.0.1", "::1") and spec.method != "slurm":
        where = f"{spec.remote.host}'s " if spec.remote else ""
        progress(f"WARNING: services are published on {where}{spec.bind} without authentication: "
                 "anyone who reaches that address can read and write your data (use --ssh to avoid this)")
    deployment = api.up(spec, progress)
    sys.stdout.write(render(deployment.connection().variables(), args.format))
    return 0


def _status(args) -> int:
    report = api.status(args.name)
    d = report.deployment
    if d.method == "slurm":
        where = f"services job {d.slurm.get('job_id')} on {d.slurm.get('node')} ({d.host_name}), via {d.slurm.get('login')}"
    else:
        where = f"Compose project {d.project}" + (f" on {d.ssh_destination}" if d.ssh_destination else "") + f", published on {d.bind}"
    print(f"stack {d.name!r} ({d.method}, {d.access}): {where}")
    rows = [("SERVICE", "CONTAINER/JOB", "STATE", "HEALTH", "PORT", "ANSWERS")]
    rows += [(s.service, s.container, s.state, s.health, s.port, s.answer) for s in report.services]
    if len(rows) == 1:
        rows.append(("-", "none running", "-", "-", "-", "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    print(f"workers: {report.workers_ready}")
    print(f"buffers: {d.buffer_dir}\ndatabase: {d.database_dir}\nenvironment: {d.env_file}")
    return 0


def _images(args) -> int:
    from . import airgap

    docker = docker_client()
    check_engine(docker)
    if args.images_command == "base":
        if docker.image.exists(airgap.BASE_TAG) and not args.force:
            progress(f"{airgap.BASE_TAG} exists (use --force to remake it)")
        else:
            airgap.make_base(docker, progress)
        print(airgap.BASE_TAG)
    elif args.images_command == "sif":
        requirements = Path(args.worker_requirements).resolve() if args.worker_requirements else None
        tags = images.build_images(docker, worker_requirements=requirements, progress=progress)
        for role, path in api.build_sifs(tags, args.out, args.login, progress).items():
            print(f"{role}\t{path}")
    elif args.images_command == "build":
        requirements = Path(args.worker_requirements).resolve() if args.worker_requirements else None
        tags = images.build_images(docker, base_image=args.base_image, worker_requirements=requirements,
                                   progress=progress, force=args.force)
        for role, tag in tags.items():
            print(f"{role}\t{tag}")
    else:
        base = images.local_base(docker)
        if base is None:
            raise StackError("no base image yet", "run `seamless-stack images build` (or `images base` without a registry)")
        tags = images.image_tags(docker, base)
        for role, tag in tags.items():
            size = f"{docker.image.inspect(tag).size / 1e6:.0f} MB" if docker.image.exists(tag) else "not built"
            print(f"{role}\t{tag}\t{size}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "up":
            return _up(args)
        if args.command == "down":
            api.down(args.name, progress)
        elif args.command == "status":
            return _status(args)
        elif args.command == "env":
            sys.stdout.write(api.env(args.name, args.format))
        elif args.command == "tunnel":
            port_range = parse_port_range(args.port_range, os.environ)
            try:
                api.tunnel(args.name, args.format, on_ready=lambda text: (sys.stdout.write(text), sys.stdout.flush()),
                           progress=progress, port_range=port_range)
            except KeyboardInterrupt:
                return 0
        elif args.command == "logs":
            sys.stdout.write(api.logs(args.name, args.service, args.tail))
        elif args.command == "images":
            return _images(args)
        return 0
    except StackError as exc:
        print(f"seamless-stack: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("seamless-stack: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

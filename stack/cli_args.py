"""The command line's grammar: every command, option and help text of `seamless-stack`.

Only the shape of the input lives here; the defaults come from the spec (option_default),
so the help shows the values `up` really uses, and cli.py runs what was parsed.
"""

from __future__ import annotations

import argparse
import os

from . import __version__
from .connection import FORMATS
from .errors import StackError
from .layout import ROLES, SUPERVISOR
from .spec import MAX_JOBS, MAX_WORKERS, SlurmOptions, StackSpec, option_default

DEFAULT_NAME = option_default(StackSpec, "name")


class UsageError(StackError):
    pass


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line like every other error."""

    def error(self, message: str):
        raise UsageError(message, f"see `{self.prog} --help`")


def _spec_default(name: str, cls=StackSpec):
    return option_default(cls, name)


def _add_up_options(parser: argparse.ArgumentParser, bind_help: str) -> None:
    _add_name(parser)
    parser.add_argument("--bind", help=bind_help)
    parser.add_argument("--port-range", help="START-END to draw ports from (default: $RANDOM_PORT_START-$RANDOM_PORT_END, else 60000-60999)")
    parser.add_argument("--scheduler-port", type=int, help="fixed Dask scheduler port (the same address every time)")
    parser.add_argument("--workers", type=int, default=_spec_default("workers"), help="Dask worker containers (default %(default)s)")
    parser.add_argument("--threads", type=int, default=_spec_default("threads"), help="threads = Seamless workers per Dask worker (default %(default)s)")
    parser.add_argument("--buffer-dir", help="hashserver buffers (default: $HASHSERVER_BUFFER_DIR, else ~/.seamless/buffers; remote: there)")
    parser.add_argument("--database-dir", help="database directory (default: $DATABASE_DIR, else ~/.seamless/database for the stack named default and ~/.seamless/database-NAME for others; remote: there)")
    parser.add_argument("--worker-requirements", help="pip requirements file: build and use a worker image with these libraries")
    parser.add_argument("--base-image", help="base image to build from (default: seamless-stack/base:bookworm if made, else debian:bookworm-slim)")
    parser.add_argument("--timeout", type=float, default=_spec_default("timeout"), help="seconds to wait for readiness (default %(default)s)")
    parser.add_argument("--insecure", action="store_true",
                        help="no credentials (local stacks on 127.0.0.1 only; every local user can then use the stack)")
    parser.add_argument("--rotate", action="store_true",
                        help="make the stack's credentials anew (clients need the new environment output)")
    parser.add_argument("--format", choices=FORMATS, default="shell", help="format of the environment printed on stdout")
    parser.add_argument("--project", action="append", default=[], metavar="PROJECT[:STAGE]",
                        help="connect this Seamless project (and stage) once the stack is ready, as `connect` does (repeatable)")


def _add_container_limits(parser: argparse.ArgumentParser) -> None:
    """Compose only: Slurm jobs have --memory and --worker-memory."""
    parser.add_argument("--memory-limit", default=_spec_default("memory_limit"),
                        help="memory limit of each service container: hashserver, database, scheduler (default %(default)s)")
    parser.add_argument("--worker-memory-limit", default=_spec_default("worker_memory_limit"),
                        help="memory limit of each worker container, e.g. 8G (default %(default)s: what transformations take)")


def _add_name(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", default=os.environ.get("SEAMLESS_STACK_NAME", DEFAULT_NAME),
                        help="stack name: one Compose project per name (default: $SEAMLESS_STACK_NAME or 'default')")


def _add_slurm_options(slurm: argparse.ArgumentParser) -> None:
    slurm.add_argument("--login", help="USER@HOST[:PORT] of the login node, when running from a workstation (over SSH)")
    access = slurm.add_mutually_exclusive_group()
    access.add_argument("--ssh", dest="access", action="store_const", const="ssh",
                        help="(default with --login) reach the services through `seamless-stack tunnel`")
    access.add_argument("--direct", dest="access", action="store_const", const="direct",
                        help="clients connect straight to the services node (default without --login)")
    _add_up_options(slurm, argparse.SUPPRESS)
    d = lambda name: _spec_default(name, SlurmOptions)  # noqa: E731
    jobs = slurm.add_argument_group("services job")
    jobs.add_argument("--partition", help="partition of the services job (and of worker jobs, unless --worker-queue)")
    jobs.add_argument("--account", help="account to charge")
    jobs.add_argument("--time", default=d("time"), help="walltime of the services job (default %(default)s)")
    jobs.add_argument("--cpus", type=int, default=d("cpus"), help="cores of the services job (default %(default)s)")
    jobs.add_argument("--memory", default=d("memory"), help="memory of the services job (default %(default)s)")
    workers = slurm.add_argument_group("worker jobs (dask-jobqueue SLURMCluster, adaptive)")
    workers.add_argument("--min-jobs", type=int, default=d("min_jobs"), help="adaptive minimum of worker jobs (default %(default)s)")
    workers.add_argument("--max-jobs", type=int, default=d("max_jobs"), help="adaptive maximum of worker jobs (default %(default)s)")
    workers.add_argument("--worker-memory", default=d("worker_memory"), help="memory per worker job (default %(default)s)")
    workers.add_argument("--worker-walltime", default=d("worker_walltime"), help="walltime per worker job; --lifetime stays below it")
    workers.add_argument("--worker-queue", help="partition of worker jobs (default: --partition)")
    workers.add_argument("--job-extra", action="append", default=[], help="extra #SBATCH option for worker jobs (repeatable)")
    workers.add_argument("--worker-tmpdir", default=d("worker_tmpdir"), help="node-local scratch for workers")
    workers.add_argument("--local-workers", type=int, default=d("local_workers"),
                         help="single-node variant: N workers inside the services job, no worker jobs")
    slurm.add_argument("--sif-dir", default=d("sif_dir"), help="where the SIFs live on the cluster (default %(default)s)")
    _add_registry(slurm)


def _add_registry(parser) -> None:
    parser.add_argument("--registry", default=os.environ.get("SEAMLESS_STACK_REGISTRY") or None,
                        help="REGISTRY[/PREFIX] holding our images (`images push`): SIFs are pulled from it by digest, "
                             "no Docker needed (default: $SEAMLESS_STACK_REGISTRY)")


def parser() -> argparse.ArgumentParser:
    """Every command and option; defaults shown in the help come from the spec."""
    parser = Parser(prog="seamless-stack", description="Deploy the Seamless compute stack.")
    parser.add_argument("--version", action="version", version=f"seamless-stack {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    up = commands.add_parser("up", help="bring a stack up (or converge the one that runs) and print its environment")
    methods = up.add_subparsers(dest="method", required=True, metavar="METHOD", parser_class=Parser)
    local = methods.add_parser("local", help="Docker Compose on this machine")
    _add_up_options(local, "interface to publish ports on (default 127.0.0.1)")
    _add_container_limits(local)
    remote = methods.add_parser("remote", help="Docker Compose on a remote Docker host, reached over SSH")
    remote.add_argument("--host", required=True, help="USER@HOST[:PORT] of the remote Docker host (ssh, with your ~/.ssh/config)")
    access = remote.add_mutually_exclusive_group()
    access.add_argument("--ssh", dest="access", action="store_const", const="ssh",
                        help="(default) services on the remote's 127.0.0.1; reach them with `seamless-stack tunnel`")
    access.add_argument("--direct", dest="access", action="store_const", const="direct",
                        help="clients connect straight to the remote's published ports (see --bind)")
    _add_up_options(remote, "with --direct: remote interface to publish on (default 0.0.0.0; clients then use the host name)")
    _add_container_limits(remote)
    _add_slurm_options(methods.add_parser("slurm", help="Apptainer containers under Slurm: a services job, workers on demand"))

    for command, text in (("down", "stop and remove a stack's containers or jobs (data stays)"),
                          ("status", "services, ports, health, workers, storage; exit 1 when unhealthy")):
        _add_name(commands.add_parser(command, help=text))

    env = commands.add_parser("env", help="print the environment for Seamless clients")
    _add_name(env)
    env.add_argument("--format", choices=FORMATS, default="shell")

    scale = commands.add_parser("scale", help="change a running stack's workers, live: a Compose stack's count, a Slurm "
                                              "stack's adaptive bounds (services and clients carry on; removed workers "
                                              "hand their work over)")
    _add_name(scale)
    scale.add_argument("--workers", type=int, help=f"Compose: the new number of worker containers (1-{MAX_WORKERS})")
    scale.add_argument("--min-jobs", type=int, help=f"Slurm (adaptive): worker jobs kept even when idle (0-{MAX_JOBS})")
    scale.add_argument("--max-jobs", type=int, help=f"Slurm (adaptive): worker jobs at most (1-{MAX_JOBS})")

    restart = commands.add_parser("restart", help="restart one service of a Compose stack")
    _add_name(restart)
    restart.add_argument("service", choices=ROLES)

    tunnel = commands.add_parser("tunnel", help="SSH forwards to a stack over SSH, and the owner-only forwarder of Seamless' configuration route for a secured stack; blocks until Ctrl-C")
    _add_name(tunnel)
    tunnel.add_argument("--format", choices=FORMATS, default="shell")
    tunnel.add_argument("--port-range", help="local ports for the forwards and the forwarder (default: the stack's own --port-range; over SSH the classic 5522, 5577, 8786, 8787 where free)")

    connect = commands.add_parser(
        "connect", help="let a Seamless project use the stack through seamless.config.init() (its own YAML files)",
        description="Write ~/.seamless/clusters/seamless-stack-NAME.yaml and the launcher client files "
                    "(~/.remote-http-launcher/client/*.json) for the project, and print the lines for its "
                    "seamless.profile.yaml and seamless.yaml. `up`, `tunnel` and `down` keep the files true. "
                    "No authentication: anyone who can reach the stack's ports can use it (docs/seamless-config.md).")
    _add_name(connect)
    connect.add_argument("--project", required=True, help="the project name of its seamless.yaml (`- project: P`)")
    connect.add_argument("--stage", help="a stage the project selects with seamless.config.set_stage(S)")
    disconnect = commands.add_parser("disconnect", help="remove a Seamless project's files (the cluster file goes with the last one)")
    _add_name(disconnect)
    which = disconnect.add_mutually_exclusive_group(required=True)
    which.add_argument("--project", help="the project to disconnect")
    which.add_argument("--all", action="store_true", help="every project connected to the stack")
    disconnect.add_argument("--stage", help="with --project: only this stage")

    commands.add_parser("client-requirements", help="the pinned pip requirements of a client that matches the stack's images")
    doc = commands.add_parser("doctor", help="compare a client's Python, dask, distributed, cloudpickle, msgpack and "
                                             "seamless-* versions with the stack's; with --name, also prove that a "
                                             "transformation computes on that stack; exit 1 on a mismatch or a local result")
    doc.add_argument("--python", default="python3", help="the client's interpreter (default: python3 on PATH)")
    doc.add_argument("--name", help="a stack: run a fresh transformation with its environment and say where it computed "
                                    "(a client whose Dask side cannot start computes on this machine without a word)")

    logs = commands.add_parser("logs", help="service logs")
    _add_name(logs)
    logs.add_argument("service", nargs="?", choices=(*ROLES, SUPERVISOR, "services"),
                      help="hashserver, database, scheduler or worker; `supervisor`: what a Compose stack's supervisor "
                           "started again; `services`: a Slurm services job's log (default: all)")
    logs.add_argument("--tail", type=int, help="last N lines per container")

    imgs = commands.add_parser("images", help="build the images")
    image_commands = imgs.add_subparsers(dest="images_command", required=True, metavar="ACTION", parser_class=Parser)
    base = image_commands.add_parser("base", help="make seamless-stack/base:bookworm from Debian packages (no registry)")
    base.add_argument("--force", action="store_true", help="remake it even if it exists")
    build = image_commands.add_parser("build", help="build the four images (only what is missing)")
    build.add_argument("--base-image", help="base image (default: as for `up`)")
    build.add_argument("--worker-requirements", help="pip requirements file for a derived worker image")
    build.add_argument("--force", action="store_true", help="rebuild even if the tags exist")
    image_commands.add_parser("list", help="the image tags `up` would use, with sizes")
    sif_parser = image_commands.add_parser("sif", help="Apptainer SIFs of the images (built where apptainer runs)")
    sif_parser.add_argument("--out", default=option_default(SlurmOptions, "sif_dir"),
                            help="folder for the SIFs (default %(default)s; with --login: there)")
    sif_parser.add_argument("--login", help="USER@HOST[:PORT]: build the SIFs on that machine (a Slurm login node) over SSH")
    sif_parser.add_argument("--worker-requirements", help="pip requirements file: also the SIF of a derived worker image")
    _add_registry(sif_parser)
    push = image_commands.add_parser("push", help="push the images to a registry, for `up slurm --registry` where there is no Docker")
    push.add_argument("target", metavar="REGISTRY[/PREFIX]", help="e.g. registry.example.org/mygroup (log in with `docker login` first)")
    push.add_argument("--worker-requirements", help="pip requirements file: also push the derived worker image")
    return parser

"""`seamless-stack`: the command line. Progress goes to stderr, results to stdout.

So `eval "$(seamless-stack up local)"` brings a stack up and configures this shell.
This is the one error boundary: every failure ends as one line
`seamless-stack: error: <what>: <how to fix>` and a non-zero exit (2: fix the input or
the environment; 1: the stack is unhealthy or something unexpected happened).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from python_on_whales import DockerException

from . import api, images_api
from .cli_args import parser
from .connection import render
from .errors import StackError, error_text
from .redact import redact
from .spec import SlurmOptions, build_spec, parse_port_range


def progress(line: str) -> None:
    print(f"[seamless-stack] {line}", file=sys.stderr, flush=True)


def _up(args) -> int:
    remote, slurm = None, None
    if args.method == "slurm":
        remote = args.login
        slurm = SlurmOptions(
            partition=args.partition, account=args.account, time=args.time, cpus=args.cpus, memory=args.memory,
            min_jobs=args.min_jobs, max_jobs=args.max_jobs, worker_memory=args.worker_memory,
            worker_walltime=args.worker_walltime, worker_queue=args.worker_queue, job_extra=tuple(args.job_extra),
            worker_tmpdir=args.worker_tmpdir, local_workers=args.local_workers, sif_dir=args.sif_dir,
            registry=args.registry,
        )
    elif args.method == "remote":
        remote = args.host
    spec = build_spec(
        name=args.name, method=args.method, port_range=args.port_range, scheduler_port=args.scheduler_port,
        workers=args.workers, threads=args.threads, bind=args.bind, buffer_dir=args.buffer_dir,
        database_dir=args.database_dir, worker_requirements=args.worker_requirements,
        base_image=args.base_image, timeout=args.timeout, insecure=args.insecure, rotate=args.rotate, remote=remote,
        access=getattr(args, "access", None), slurm=slurm,
        **{limit: getattr(args, limit) for limit in ("memory_limit", "worker_memory_limit") if hasattr(args, limit)},
    )
    projects = api.projects_for(spec.name, args.project)  # checked before anything starts
    deployment = api.up(spec, progress)
    if projects:  # stdout carries the environment only: the project lines go to stderr
        _connect(spec.name, projects, progress)
    _environment_out(render(deployment.connection().variables(), args.format), deployment)
    return 0


def _environment_out(text: str, deployment) -> None:
    """The environment on stdout for `eval "$(seamless-stack up ...)"` and pipes; a terminal
    gets where it is instead, as it carries the stack's secret (scroll-back, screen logs)."""
    if sys.stdout.isatty() and deployment.credentials_dir:
        progress(f"the environment (with the stack's secret) is in {deployment.env_file}: `source` it, "
                 f"or `seamless-stack env --name {deployment.name}` prints it")
        return
    sys.stdout.write(text)
    sys.stdout.flush()


def _connect(name: str, projects: list, out) -> None:
    for line in api.connect(name, projects, progress):
        out(line)


def _security(d) -> str:
    if d.credentials_dir:
        http = "HTTPS" if d.http_tls else "HTTP"
        return f"Dask mutual TLS, dashboard client certificate, hashserver/database secret ({http}); credentials in {d.credentials_dir}"
    return "NONE (--insecure): every user of this machine can use the stack and run code as you"


def _status(args) -> int:
    report = api.status(args.name)
    d = report.deployment
    if d.slurm:
        where = f"services job {d.slurm.job_id} on {d.slurm.node} ({d.host_name}), via {d.slurm.login}"
    else:
        where = f"Compose project {d.project}" + (f" on {d.ssh_destination}" if d.ssh_destination else "") + f", published on {d.bind}"
    print(f"stack {d.name!r} ({d.method}, {d.access}): {where}")
    print(f"security: {_security(d)}")
    rows = [("SERVICE", "CONTAINER/JOB", "STATE", "HEALTH", "PORT", "ANSWERS")]
    rows += [(s.service, s.where, s.state, s.health, s.port, s.answer) for s in report.services]
    if len(rows) == 1:
        rows.append(("-", "none running", "-", "-", "-", "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    print(f"workers: {report.workers_ready}; {report.scaling}")
    print(f"buffers: {d.buffer_dir}\ndatabase: {d.database_dir}\nenvironment: {d.env_file}")
    for line in [*report.projects, *report.notes]:
        print(line)
    if not report.healthy:
        print(f"seamless-stack: error: stack {d.name!r} is not healthy ({'; '.join(report.problems)}): "
              f"`seamless-stack up {d.method} --name {d.name}` with its options starts again what stopped", file=sys.stderr)
        return 1
    return 0


def _images(args) -> int:
    if args.images_command == "sif":  # the same routes as `up slurm`: a registry needs no Docker here
        rows = images_api.sifs(args.out, args.login, args.worker_requirements, args.registry, progress).items()
    elif args.images_command == "base":
        rows = [(images_api.make_base(args.force, progress),)]
    elif args.images_command == "push":
        rows = images_api.push(args.target, args.worker_requirements, progress).items()
    elif args.images_command == "build":
        rows = images_api.build(args.base_image, args.worker_requirements, args.force, progress).items()
    else:
        rows = images_api.listing()
    for row in rows:
        print("\t".join(row))
    return 0


def _tunnel(args) -> int:
    asked = args.port_range or os.environ.get("RANDOM_PORT_START") or os.environ.get("RANDOM_PORT_END")
    port_range = parse_port_range(args.port_range, os.environ) if asked else None  # else the stack's own
    try:  # Ctrl-C, `kill` or a closed terminal close the tunnel cleanly (files back as without it)
        api.tunnel(args.name, args.format, on_ready=_environment_out, progress=progress, port_range=port_range)
    except KeyboardInterrupt:
        pass
    return 0


def _run(args) -> int:
    if args.command == "up":
        return _up(args)
    if args.command == "status":
        return _status(args)
    if args.command == "images":
        return _images(args)
    if args.command == "tunnel":
        return _tunnel(args)
    if args.command == "doctor":
        text, matches = api.doctor(args.python, args.name)
        sys.stdout.write(text)
        return 0 if matches else 1
    if args.command == "connect":
        _connect(args.name, [api.Project.of(args.project, args.stage)], print)
    elif args.command == "disconnect":
        projects = None if args.all else [api.Project.of(args.project, args.stage)]
        api.disconnect(args.name, projects, progress)
    elif args.command == "client-requirements":
        sys.stdout.write(api.client_requirements())
    elif args.command == "down":
        api.down(args.name, progress)
    elif args.command == "env":
        sys.stdout.write(api.env(args.name, args.format))
    elif args.command == "scale":
        api.scale(args.name, args.workers, args.min_jobs, args.max_jobs, progress)
    elif args.command == "restart":
        api.restart(args.name, args.service, progress)
    elif args.command == "logs":
        sys.stdout.write(api.logs(args.name, args.service, args.tail))
    return 0


def _one_line(text: str) -> str:
    return " | ".join(line.strip() for line in str(text).strip().splitlines() if line.strip())


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, handled as Ctrl-C is everywhere: `up` rolls back, `tunnel` closes."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _interrupt(signum, frame) -> None:
    raise Interrupted(signum)


SIGNALS = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: _interrupt, signal.SIGHUP: _interrupt}


def main(argv: list[str] | None = None) -> int:
    """SIGINT is handled too where a script's `&` job started us with it ignored: `kill -INT`
    must work. A SIGHUP ignored on purpose (`nohup`) stays ignored. The handlers are put back
    on return (main also runs inside tests)."""
    nohup = signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    before = {sig: signal.signal(sig, handler) for sig, handler in SIGNALS.items() if not (nohup and sig == signal.SIGHUP)}
    try:
        return _main(argv)
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _main(argv: list[str] | None) -> int:
    try:
        return _run(parser().parse_args(argv))
    except StackError as exc:
        message, code = str(exc), 2
    except DockerException as exc:
        message = f"docker failed ({error_text(exc, lines=3)[-300:]}): check the Docker engine and try again"
        code = 2
    except subprocess.TimeoutExpired as exc:
        message, code = f"`{_one_line(exc.cmd)[:80]}` did not finish within {exc.timeout:.0f}s: check that machine and try again", 2
    except OSError as exc:
        message, code = f"{exc.strerror or exc} ({exc.filename or 'no file'}): check that path and its permissions", 2
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        print(f"seamless-stack: interrupted ({signal.Signals(signum).name})", file=sys.stderr)
        return 128 + signum
    except Exception as exc:  # a bug: still one line, and how to get the details
        if os.environ.get("SEAMLESS_STACK_DEBUG"):
            raise
        message = (f"unexpected {type(exc).__name__} ({_one_line(exc)[:200]}): please report it; "
                   "SEAMLESS_STACK_DEBUG=1 shows the traceback")
        code = 1
    print(f"seamless-stack: error: {redact(_one_line(message))}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())

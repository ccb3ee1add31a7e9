"""A throwaway Seamless stack for tests and CI.

    from seamless_stack.testing import SeamlessStack

    with SeamlessStack(workers=1, threads=2) as stack:
        stack.apply()                 # the client variables, in os.environ until the stack goes
        ...                           # run Seamless transformations: they compute in the stack

What runs is exactly what `seamless-stack up local` runs, by the same code: the Compose
backend plans (`build_spec` -> `ComposeBackend.prepare`: ports, storage, images built with
our BuildKit builder if missing, credentials), testcontainers' `DockerCompose` starts it
(`compose up` of our Compose file under the project `seamless-<name>`, public parameters
only: `.compose`), and the driver's health gate waits until every worker is Seamless-ready,
failing at once when the backend sees a service die (its crash-loop rule). Storage lives in a temporary folder; leaving the block removes the containers, the
network and the folder. The lifecycle is in `seamless_stack.throwaway`.

Handled here:
- Compose lets the process environment win over its env file: a test process's own
  HASHSERVER_BUFFER_DIR or COMPOSE_PROJECT_NAME is unset for every Compose call;
- a failed start reads each service's log tail into the exception before anything is removed;
- a port taken between planning and `compose up` (a stack starting at the same moment)
  means planning again, up to PORT_RETRIES times.

Nothing is left under ~/.seamless/stacks (a throwaway stack has no state record).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import docker_tools
from .api import health_gate
from .backends.compose import ComposeBackend
from .connection import render
from .errors import StackError
from .files import write_private
from .layout import TESTING_THREADS, StackFiles, compose_project
from .progress import Progress
from .resources import images_dir
from .spec import build_spec

try:
    from testcontainers.compose import DockerCompose
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("seamless_stack.testing needs testcontainers: pip install 'seamless-stack[testing]'") from exc

from . import throwaway  # noqa: E402 - after the check above: it uses testcontainers too

logger = logging.getLogger("seamless_stack.testing")

LOG_LINES = 40  # per service, in the exception of a failed start
PORT_RETRIES = 3  # a port taken between planning and `compose up` (a concurrent stack): plan again


class StackStartFailed(StackError):
    """The stack did not become ready. The message carries the cause and each service's
    last log lines (read before the containers were removed); `.logs` has them alone."""

    def __init__(self, name: str, cause: str, logs: str):
        self.name = name
        self.cause = cause
        self.logs = logs
        super().__init__(f"Seamless stack {name!r} did not become ready: {cause}\n{logs}".rstrip())


def client_requirements() -> Path:
    """The lock file of the client libraries that match the stack's scheduler and workers
    (dask, distributed and seamless-* at the same versions): `pip install -r` it."""
    return images_dir() / "lock" / "dask.txt"


def docker_problem() -> str | None:
    """Why no stack can run here (no docker CLI, no engine answering, no Compose v2), or None."""
    try:
        docker = docker_tools.docker_client()
        docker_tools.check_engine(docker)
        docker_tools.check_compose(docker)
    except StackError as exc:
        return str(exc)
    return None


def _refresh_dask_config() -> None:
    if "dask" in sys.modules:
        import dask.config

        dask.config.refresh()


def _trust_in_process(cafile: str | None) -> None:
    """SSL_CERT_FILE counts for contexts made after it is set; aiohttp (Seamless' HTTP client)
    made its default one when it was imported, typically at test collection, before apply():
    the stack's CA goes into that context too. (aiohttp keeps it in a private name: the example
    project's test in tests/integration/test_testing.py trips if that changes.)"""
    connector = sys.modules.get("aiohttp.connector")
    context = getattr(connector, "_SSL_CONTEXT_VERIFIED", None)
    if cafile and isinstance(context, ssl.SSLContext):
        context.load_verify_locations(cafile)


class SeamlessStack:
    """A Seamless stack (hashserver, database, Dask scheduler, `workers` Dask workers with
    `threads` threads each) in Docker, with its storage in a temporary folder.

    name: default `tcx-<random>` (Compose project `seamless-<name>`); timeout: seconds for
    every service to answer and every worker to be Seamless-ready (image builds not counted);
    worker_requirements: a pip requirements file for a worker image with your libraries;
    keep: leave everything running on exit (for debugging) and log how to remove it;
    directory: where the temporary folder is made (default: the system's temp folder).
    """

    def __init__(
        self,
        workers: int = 1,
        threads: int = TESTING_THREADS,
        worker_requirements: str | os.PathLike | None = None,
        timeout: float = 300,
        *,
        name: str | None = None,
        keep: bool = False,
        directory: str | os.PathLike | None = None,
        base_image: str | None = None,
        progress: Progress | None = None,
        log_lines: int = LOG_LINES,
    ):
        self.workers, self.threads, self.timeout, self.keep = workers, threads, float(timeout), keep
        self.worker_requirements = Path(worker_requirements) if worker_requirements else None
        self.base_image = base_image
        self._name = name or f"tcx-{secrets.token_hex(4)}"
        self._directory = directory
        self._progress = progress or logger.info
        self.log_lines = log_lines
        self.folder: Path | None = None  # the temporary folder: buffers/, database/, compose.env, client.env
        self.backend: ComposeBackend | None = None  # the driver's Compose backend, once planned
        self.compose: DockerCompose | None = None  # testcontainers' DockerCompose that runs it
        self.ready_in: float | None = None  # seconds from `compose up` to Seamless-ready workers
        self._environment: dict[str, str] | None = None
        self._saved_environ: dict[str, str | None] | None = None
        self._stacks_files: list[Path] = []

    # -- what a test uses ---------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    @property
    def project(self) -> str:
        """The Compose project: its containers carry the label com.docker.compose.project=<project>."""
        return compose_project(self._name)

    @property
    def buffer_dir(self) -> Path:
        """The hashserver's storage: each buffer is <buffer_dir>/<first two hex>/<sha256>."""
        return Path(self._require_backend().deployment.buffer_dir)

    @property
    def database_dir(self) -> Path:
        """The database's storage (seamless.db)."""
        return Path(self._require_backend().deployment.database_dir)

    @property
    def ports(self) -> dict[str, int]:
        return dict(self._require_backend().deployment.ports)

    def environment(self) -> dict[str, str]:
        """The variables a Seamless client needs (what `seamless-stack env` prints)."""
        if self._environment is None:
            raise RuntimeError(f"stack {self._name!r} is not running: start() it first")
        return dict(self._environment)

    def apply(self) -> dict[str, str]:
        """Set the client variables in os.environ; the old values come back when the stack stops.
        Dask reads DASK_* variables when it is imported: an imported dask reads them again
        (the stack's Dask TLS client certificate is among them)."""
        variables = self.environment()
        if self._saved_environ is None:
            self._saved_environ = {key: os.environ.get(key) for key in variables}
        os.environ.update(variables)
        _refresh_dask_config()
        _trust_in_process(variables.get("SSL_CERT_FILE"))
        return variables

    def hostnames(self, service: str = "worker") -> set[str]:
        """Hostnames of a service's containers (their short IDs): where transformations run."""
        return throwaway.hostnames(self._require_backend(), service)

    def logs(self, service: str | None = None, tail: int | None = None) -> str:
        return throwaway.readable_logs(self._require_backend(), service, tail)

    # -- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> "SeamlessStack":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> "SeamlessStack":
        """Plan, `compose up`, health gate. On failure: logs into the exception, then
        everything removed, then raise."""
        if self.folder is not None:
            raise RuntimeError(f"stack {self._name!r} was started already")
        self.folder = Path(tempfile.mkdtemp(prefix=f"seamless-stack-{self._name}-", dir=self._directory))
        self._remember_stacks_files()
        try:
            self._plan()
            leftovers = self.backend.leftovers()
            if leftovers:
                raise StackError(f"Compose project {self.project} already has containers ({', '.join(leftovers)})",
                                 "choose another name, or remove them")
        except BaseException:
            self._remove_files()
            raise
        try:
            started = time.monotonic()
            self._start_services()
            remaining = max(0.0, started + self.timeout - time.monotonic())
            health_gate(self.backend, remaining, self._progress)
            self.ready_in = time.monotonic() - started
            self._environment = self.backend.deployment.connection().variables()
            write_private(self.folder / "client.env",
                          render(self._environment, "shell", header=f"Seamless stack {self._name!r}; source this file"))
        except Exception as exc:
            cause = throwaway.describe(exc)
            logs = throwaway.log_tail(self.backend, self.log_lines)  # before anything is removed
            self._teardown()
            raise StackStartFailed(self._name, cause, logs) from exc
        except BaseException:  # Ctrl-C: no logs, but nothing left behind either
            self._teardown()
            raise
        self._progress(f"stack {self._name!r} ready in {self.ready_in:.1f}s: {self.workers} worker(s) x "
                       f"{self.threads} threads, ports {self.ports}, storage in {self.folder}")
        for warning in self.backend.warnings:
            self._progress(f"WARNING: {warning}")
        return self

    def stop(self) -> None:
        """Stop and remove the containers, then the temporary folder; keep=True leaves both."""
        self._restore_environ()
        if self.folder is None:
            return
        if self.keep:
            self._progress(self.keep_message())
            return
        self._teardown()

    def keep_message(self) -> str:
        return (f"seamless-stack: stack {self._name!r} is left running (keep)\n"
                f"  client environment: source {self.folder / 'client.env'}\n"
                f"  logs:               docker compose -p {self.project} logs\n"
                f"  remove it:          {throwaway.removal_command(self.backend, [self.folder, *self._stacks_files])}")

    # -- inside ---------------------------------------------------------------------------
    def _require_backend(self) -> ComposeBackend:
        if self.backend is None:
            raise RuntimeError(f"stack {self._name!r} is not planned: start() it first")
        return self.backend

    def _plan(self) -> None:
        """The driver's own plan: spec -> prepare (images, ports, directories, credentials)."""
        environ = {k: v for k, v in os.environ.items() if k != "ENVIRONMENT_OUTPUT_FILE"}
        spec = build_spec(
            name=self._name, method="local", workers=self.workers, threads=self.threads,
            buffer_dir=str(self.folder / "buffers"), database_dir=str(self.folder / "database"),
            worker_requirements=str(self.worker_requirements) if self.worker_requirements else None,
            base_image=self.base_image, timeout=self.timeout, environ=environ,
        )
        self.backend = throwaway.plan(spec, self.folder, self._progress)

    def _start_services(self) -> None:
        """testcontainers' `compose up`; planned again while another process took a port meanwhile."""
        for attempt in range(1, PORT_RETRIES + 1):
            self.compose = throwaway.compose(self.backend, self.folder)
            self._progress(self.backend.starting())
            try:
                self.compose.start()
                return
            except subprocess.CalledProcessError:
                if attempt == PORT_RETRIES or not throwaway.lost_a_port(self.backend):
                    raise
            self._progress("a port was taken meanwhile (another stack?): planning again")
            self.compose.stop()
            self._plan()

    def _teardown(self) -> None:
        """The backend's `down`, then the temporary folder; each step guarded, errors logged."""
        self._restore_environ()
        if self.compose is not None:
            try:
                self.compose.stop()  # `compose down --volumes`
            except Exception as exc:  # noqa: BLE001
                logger.warning("stopping stack %r failed: %s", self._name, throwaway.describe(exc))
        self._remove_files()

    def _remove_files(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = None
        self._environment = None
        # The driver keeps per-stack files under ~/.seamless/stacks; a throwaway stack leaves none.
        for path in self._stacks_files:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    def _remember_stacks_files(self) -> None:
        files = StackFiles.of(self._name)
        self._stacks_files = [p for p in (files.record, files.env, files.compose_env, files.tls) if not p.exists()]

    def _restore_environ(self) -> None:
        if self._saved_environ is None:
            return
        for key, value in self._saved_environ.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_environ = None
        _refresh_dask_config()


def main(argv: list[str] | None = None) -> int:
    """`python -m seamless_stack.testing client-requirements`: the client lock's path."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m seamless_stack.testing")
    parser.add_argument("what", choices=["client-requirements", "check"],
                        help="client-requirements: print the path of the matching client lock file; "
                             "check: say whether a stack can run here")
    args = parser.parse_args(argv)
    if args.what == "client-requirements":
        print(client_requirements())
        return 0
    problem = docker_problem()
    print(problem or "ok: Docker engine and Compose v2 answer")
    return 1 if problem else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A throwaway Seamless stack for tests and CI, on testcontainers' DockerCompose.

    from seamless_stack.testing import SeamlessStack

    with SeamlessStack(workers=1, threads=2) as stack:
        stack.apply()                 # the client variables, in os.environ until the stack goes
        ...                           # run Seamless transformations: they compute in the stack

What runs is exactly what `seamless-stack up local` runs: the plan (ports, storage,
images, the Compose variables) comes from the driver itself (`build_spec` ->
`ComposeBackend.prepare`, which builds missing images with our BuildKit builder), and
testcontainers' `DockerCompose` brings our Compose file up (`compose up --wait`: the
Compose health checks) under its own project name, `seamless-<name>`. Then the driver's
health gate waits until every worker is Seamless-ready. Storage lives in a temporary
folder; leaving the block removes the containers, the network and the folder.

Known traps handled here (testcontainers-python 4.x):
- its reaper (Ryuk) needs a registry: it is disabled (DockerCompose never needs it);
- DockerCompose has no project-name parameter and runs Compose with this process's
  environment, where the user's own HASHSERVER_BUFFER_DIR or COMPOSE_PROJECT_NAME would
  win over the env file: every Compose call gets an environment with our variables set;
- a failed start inside its `with` runs `down --volumes` before the logs can be read: we
  call start/get_logs/stop ourselves, and the log tail goes into the exception first;
- its wait strategies break on Compose services: Compose health checks plus our gate;
  and while `up --wait` runs, a service that dies ends the wait at once (Compose alone
  waits for a crash-looping service until the timeout).

Nothing is written under ~/.seamless/stacks (a throwaway stack has no state record).
"""

from __future__ import annotations

import logging
import math
import os
import re
import secrets
import shlex
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

try:
    from testcontainers.compose import DockerCompose
    from testcontainers.core.config import testcontainers_config
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("seamless_stack.testing needs testcontainers: pip install 'seamless-stack[testing]'") from exc

from . import docker_tools
from .api import health_gate
from .backends.compose import ComposeBackend
from .connection import render
from .errors import StackError
from .health import ServiceFailed
from .layout import ROLES, StackFiles, compose_project
from .redact import redact
from .resources import compose_file, images_dir
from .spec import build_spec

Progress = Callable[[str], None]
logger = logging.getLogger("seamless_stack.testing")

LOG_LINES = 40  # per service, in the exception of a failed start
PORT_RETRIES = 3  # a port taken between planning and `compose up` (a concurrent stack): plan again
_PORT_TAKEN = ("port is already allocated", "address already in use")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # Compose's line-clearing codes in `logs` output


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


@dataclass
class _Compose(DockerCompose):
    """DockerCompose, with every Compose call run with our variables and project name.

    testcontainers runs `docker compose` with this process's environment (no env or
    project-name parameter), and Compose lets the environment win over --env-file.
    """

    environment: dict[str, str] = field(default_factory=dict)
    wait_timeout: int | None = None  # `up --wait --wait-timeout N`
    # Asked every second while `up --wait` runs: (service, reason) for a service that died.
    # Compose itself waits for a crash-looping service until the timeout; we stop at once.
    find_failure: Callable[[], tuple[str, str] | None] | None = None

    def _run_command(self, cmd, context=None):
        cmd = list(cmd)
        waiting = "up" in cmd and "--wait" in cmd
        if waiting and self.wait_timeout and "--wait-timeout" not in cmd:
            at = cmd.index("--wait") + 1
            cmd[at:at] = ["--wait-timeout", str(self.wait_timeout)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
        env.update(self.environment)
        cwd = context or str(self.context)
        if not (waiting and self.find_failure):
            return subprocess.run(cmd, capture_output=True, check=True, cwd=cwd, env=env)
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, env=env) as process:
            while True:
                try:
                    out, err = process.communicate(timeout=1.0)
                    break
                except subprocess.TimeoutExpired:
                    failure = self.find_failure()
                    if failure:
                        process.terminate()
                        process.communicate()
                        service, reason = failure
                        raise ServiceFailed(service, f"{service} failed: {reason}") from None
        if process.returncode:
            raise subprocess.CalledProcessError(process.returncode, cmd, out, err)
        return subprocess.CompletedProcess(cmd, 0, out, err)


class _Backend(ComposeBackend):
    """The driver's Compose backend, asked by the health gate through testcontainers: a
    failed service is found with `compose ps`, and nothing is written to ~/.seamless/stacks."""

    compose: _Compose | None = None

    def find_failure(self) -> tuple[str, str] | None:
        for c in self.compose.get_containers(include_all=True):
            if c.State in ("exited", "dead", "restarting"):
                return c.Service or "?", f"container {c.Name} is {c.State} (exit code {c.ExitCode})"
        return None

    def logs(self, service: str | None = None, tail: int | None = None) -> str:
        out, err = self.compose.get_logs(*([service] if service else []))
        lines = _ANSI.sub("", out + err).splitlines()
        return redact("\n".join(lines[-tail:] if tail else lines))


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
    the containers to be healthy and every worker Seamless-ready (image builds not counted);
    worker_requirements: a pip requirements file for a worker image with your libraries;
    keep: leave everything running on exit (for debugging) and log how to remove it;
    directory: where the temporary folder is made (default: the system's temp folder).
    """

    def __init__(
        self,
        workers: int = 1,
        threads: int = 2,
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
        self.compose: _Compose | None = None  # testcontainers' DockerCompose, once planned
        self.backend: _Backend | None = None
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
        return Path(self._deployment().buffer_dir)

    @property
    def database_dir(self) -> Path:
        """The database's storage (seamless.db)."""
        return Path(self._deployment().database_dir)

    @property
    def ports(self) -> dict[str, int]:
        return dict(self._deployment().ports)

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
        return {c.ID[:12] for c in self.compose.get_containers() if c.Service == service and c.ID}

    def logs(self, service: str | None = None, tail: int | None = None) -> str:
        return self._require_backend().logs(service, tail)

    # -- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> "SeamlessStack":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> "SeamlessStack":
        """Plan, `compose up --wait`, health gate. On failure: logs into the exception, then
        everything removed, then raise."""
        if self.folder is not None:
            raise RuntimeError(f"stack {self._name!r} was started already")
        testcontainers_config.ryuk_disabled = True  # Ryuk needs a registry; Compose never needs Ryuk
        self.folder = Path(tempfile.mkdtemp(prefix=f"seamless-stack-{self._name}-", dir=self._directory))
        self._remember_stacks_files()
        try:
            self._plan()
            leftovers = [c.Name for c in self.compose.get_containers(include_all=True)]
            if leftovers:
                raise StackError(f"Compose project {self.project} already has containers ({', '.join(leftovers)})",
                                 "choose another name, or remove them")
        except BaseException:
            self._remove_files()
            raise
        try:
            started = time.monotonic()
            self._compose_up(started + self.timeout)
            remaining = max(0.0, started + self.timeout - time.monotonic())
            health_gate(self.backend, remaining, self._progress)
            self.ready_in = time.monotonic() - started
            self._environment = self.backend.deployment.connection().variables()
            self._write_private(self.folder / "client.env",
                                render(self._environment, "shell", header=f"Seamless stack {self._name!r}; source this file"))
        except Exception as exc:
            cause = _describe(exc)
            logs = self._log_tail()  # before anything is removed
            self._teardown()
            raise StackStartFailed(self._name, cause, logs) from exc
        except BaseException:  # Ctrl-C: no logs, but nothing left behind either
            self._teardown()
            raise
        self._progress(f"stack {self._name!r} ready in {self.ready_in:.1f}s: {self.workers} worker(s) x "
                       f"{self.threads} threads, ports {self.ports}, storage in {self.folder}")
        return self

    def stop(self) -> None:
        """`compose down --volumes` and remove the temporary folder; keep=True leaves both."""
        self._restore_environ()
        if self.folder is None:
            return
        if self.keep:
            self._progress(self.keep_message())
            return
        self._teardown()

    def keep_message(self) -> str:
        folder = self.folder
        down = " ".join(shlex.quote(part) for part in self._compose_command()) + " down --volumes"
        return (f"seamless-stack: stack {self._name!r} is left running (keep)\n"
                f"  client environment: source {folder / 'client.env'}\n"
                f"  logs:               docker compose -p {self.project} logs\n"
                f"  remove it:          {down} && rm -rf {shlex.quote(str(folder))}")

    # -- inside ---------------------------------------------------------------------------
    def _deployment(self):
        return self._require_backend().deployment

    def _require_backend(self) -> _Backend:
        if self.backend is None:
            raise RuntimeError(f"stack {self._name!r} is not planned: start() it first")
        return self.backend

    def _plan(self) -> None:
        """The driver's own plan: spec -> prepare (images, ports, directories) -> variables."""
        environ = {k: v for k, v in os.environ.items() if k != "ENVIRONMENT_OUTPUT_FILE"}
        spec = build_spec(
            name=self._name, method="local", workers=self.workers, threads=self.threads,
            buffer_dir=str(self.folder / "buffers"), database_dir=str(self.folder / "database"),
            worker_requirements=str(self.worker_requirements) if self.worker_requirements else None,
            base_image=self.base_image, timeout=max(1, math.ceil(self.timeout)), environ=environ,
        )
        self.backend = _Backend.prepare(spec, self._progress)
        variables = {**self.backend.compose_environment(), "COMPOSE_PROJECT_NAME": self.project}
        env_file = self.folder / "compose.env"
        self._write_private(env_file, "".join(f"{key}={value}\n" for key, value in variables.items()))
        files = self.backend.compose_files()
        self.compose = _Compose(
            context=str(compose_file().parent), compose_file_name=[str(f) for f in files], env_file=[str(env_file)],
            pull=False, build=False, wait=True, environment=variables,
            wait_timeout=max(1, math.ceil(self.timeout)), find_failure=self.backend.find_failure,
        )
        self.backend.compose = self.compose

    def _compose_up(self, deadline: float) -> None:
        for attempt in range(1, PORT_RETRIES + 1):
            self.compose.wait_timeout = max(1, math.ceil(deadline - time.monotonic()))
            self._progress(f"starting stack {self._name!r} (Compose project {self.project})")
            try:
                self.compose.start()
                return
            except subprocess.CalledProcessError as exc:
                text = _text(exc.stderr) + _text(exc.stdout)
                if attempt == PORT_RETRIES or not any(sign in text for sign in _PORT_TAKEN):
                    raise
                self._progress("a port was taken meanwhile (another stack?): planning again")
                self.compose.stop()
                self._plan()

    def _log_tail(self) -> str:
        """Each service's last lines; never raises (the cause of the failure matters more)."""
        if self.compose is None:
            return ""
        parts = []
        for service in ROLES:
            try:
                out, err = self.compose.get_logs(service)
                lines = _ANSI.sub("", out + err).splitlines()[-self.log_lines:]
                text = "\n".join("    " + line for line in lines) or "    (no output)"
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                text = f"    (logs unavailable: {_describe(exc)})"
            parts.append(f"--- {service}: last {self.log_lines} log lines ---\n{text}")
        return "\n".join(parts)

    def _teardown(self) -> None:
        """down --volumes, then the temporary folder; each step guarded, errors logged."""
        self._restore_environ()
        if self.compose is not None:
            try:
                self.compose.stop()
            except Exception as exc:  # noqa: BLE001
                logger.warning("stopping stack %r failed: %s", self._name, _describe(exc))
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

    def _compose_command(self) -> list[str]:
        return ["docker", "compose", "-p", self.project, *self.compose.compose_command_property[2:]]

    @staticmethod
    def _write_private(path: Path, text: str) -> None:
        path.touch(mode=0o600)
        path.write_text(text)


def _text(data) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else str(data)


def _describe(exc: BaseException) -> str:
    """One readable line or few: a failed `docker compose` says what Compose said."""
    if isinstance(exc, subprocess.CalledProcessError):
        action = next((a for a in ("up", "down", "logs", "ps") if a in exc.cmd), "")
        said = _ANSI.sub("", _text(exc.stderr).strip() or _text(exc.stdout).strip()).splitlines()[-6:]
        return f"docker compose {action} failed (exit {exc.returncode}): " + " | ".join(line.strip() for line in said)
    return str(exc) or type(exc).__name__


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

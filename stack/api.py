"""The facade: up, down, status, env, logs, restart, tunnel; connect and doctor.

`up` reads as the data flows: spec -> backend.prepare (the plan) -> start -> health gate
-> connection info. Everything a user can get wrong is checked before anything starts;
anything that fails after something started is rolled back, every rollback step guarded,
so no half-started stack and no state record is ever left behind, and the error the user
sees is the one that caused it. `up` on a stack that exists converges it instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

from . import doctor as client_versions
from . import background, credentials, oplock, seamless_config, state
from .backends import BACKENDS, Backend, backend_for
from .connection import render, write_env_file
from .errors import StackError
from .health import ServiceFailed, stack_waits, wait_until_ready
from .layout import ROLES, StackFiles
from .plan import Deployment
from .progress import Progress, quiet
from .redact import redact
from .spec import MAX_WORKERS, StackSpec, bounded
from .storage import LOW
from .tunnel import client_view, tunnel

__all__ = ["up", "down", "status", "env", "logs", "restart", "tunnel", "health_gate",
           "Project", "projects_for", "connect", "disconnect", "doctor", "client_requirements"]

Gate = Callable[[Backend, float, Progress], float]


# -- the health gate --------------------------------------------------------------------
def health_gate(backend: Backend, timeout: float, progress: Progress) -> float:
    """Wait until every service answers and every worker is Seamless-ready; fail fast."""
    with client_view(backend.deployment) as view:
        return wait_until_ready(stack_waits(view, backend.deployment.workers), timeout=timeout,
                                progress=progress, find_failure=backend.find_failure)


# -- up ---------------------------------------------------------------------------------
def check_output_file(path: Path) -> None:
    """The environment output must be writable before anything starts, not after."""
    if path.is_dir():
        raise StackError(f"the environment output file {path} is a directory", "set ENVIRONMENT_OUTPUT_FILE to a file path")
    folder = next((p for p in [path.parent, *path.parent.parents] if p.exists()), None)
    if folder is None or not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK) or \
            (path.exists() and not os.access(path, os.W_OK)):
        raise StackError(f"the environment output file {path} cannot be written",
                         "set ENVIRONMENT_OUTPUT_FILE to a file in a folder you can write")


def up(spec: StackSpec, progress: Progress = quiet, *, backends: Mapping[str, type[Backend]] = BACKENDS,
       gate: Gate = health_gate) -> Deployment:
    """Bring a stack up (or converge the one that exists) and write its environment output."""
    with oplock.held(spec.name, "up"):
        return _up(spec, progress, backends, gate)


def _up(spec: StackSpec, progress: Progress, backends: Mapping[str, type[Backend]], gate: Gate) -> Deployment:
    started = time.monotonic()
    check_output_file(spec.env_file or StackFiles.of(spec.name).env)
    if state.exists(spec.name):
        return _converge(state.load(spec.name), spec, progress, backends, gate)
    with _credentials_kept_only_on_success(spec.name):
        backend = backends[spec.method].prepare(spec, progress)
        state.check_database_free(backend.deployment)
        leftovers = backend.leftovers()
        if leftovers:
            raise StackError(f"stack {spec.name!r} has no state record but {', '.join(leftovers)} still run",
                             f"remove them with `seamless-stack down --name {spec.name}`, then run `up` again")
        for warning in spec.warnings():
            progress(f"WARNING: {warning}")
        state.save(backend.deployment)  # from here on, `down` finds whatever gets started
        try:
            backend.start(progress)
            state.save(backend.deployment)
            ready_in = gate(backend, spec.timeout, progress)
            write_env_file(backend.deployment)
        except BaseException as exc:  # also Ctrl-C: never leave a half-started stack
            rollback(backend, exc, progress)
            raise
    _report_ready(backend.deployment, f"ready in {ready_in:.1f}s ({time.monotonic() - started:.1f}s in all)", progress)
    for warning in backend.warnings:
        progress(f"WARNING: {warning}")
    seamless_config.refresh(backend.deployment, progress)  # connected Seamless projects: the new addresses
    _keep_tunnel(spec.name, progress)
    return backend.deployment


@contextlib.contextmanager
def _credentials_kept_only_on_success(name: str) -> Iterator[None]:
    """A first `up` that fails leaves no credentials behind; an existing stack's stay."""
    folder = StackFiles.of(name).tls
    fresh = not folder.exists()
    try:
        yield
    except BaseException:
        if fresh:
            shutil.rmtree(folder, ignore_errors=True)
        raise


def rollback(backend: Backend, cause: BaseException, progress: Progress) -> None:
    """Undo a failed start. Each step is guarded: one that fails cannot skip the next."""
    name = backend.deployment.name
    if isinstance(cause, ServiceFailed):
        _guarded(lambda: progress(f"last log lines of {cause.service}:\n{_indent(redact(backend.logs(_log_service(cause.service), tail=25)))}"),
                 "reading the logs", progress)
    progress(f"rolling back: stopping stack {name!r}")
    try:
        _guarded(backend.down, "stopping the stack", progress)
        if isinstance(cause, KeyboardInterrupt):
            _guarded(lambda: _stop_latecomers(backend), "stopping what started meanwhile", progress)
    finally:
        Path(backend.deployment.env_file).unlink(missing_ok=True)
        state.forget(name)


def _stop_latecomers(backend: Backend, seconds: int = 3) -> None:
    """An interrupted command may still be finishing: docker's Compose plugin outlives a killed
    docker CLI and can create containers after the rollback's `down`. Watch, and stop those."""
    for _ in range(seconds):
        time.sleep(1)
        if backend.leftovers():
            backend.down()


def _guarded(step: Callable[[], object], what: str, progress: Progress) -> None:
    try:
        step()
    except Exception as exc:  # reported, never raised: the original error is what the user must see
        progress(f"rollback: {what} failed too ({exc})")


def _log_service(service: str) -> str | None:
    """A role's own log; any other failure (a Slurm services job) shows them all."""
    return service if service in ROLES else None


def _converge(previous: Deployment, spec: StackSpec, progress: Progress, backends, gate: Gate) -> Deployment:
    """`up` on a stack that exists: same settings -> start what is not running; else refuse."""
    if spec.rotate:
        raise StackError(f"stack {spec.name!r} is up: --rotate makes new credentials for a stack that is down",
                         f"`seamless-stack down --name {spec.name}`, then `up` again with --rotate")
    wanted, defaults = spec.settings(), StackSpec().settings()  # a record from before a setting existed: its default
    had = {key: previous.settings.get(key, defaults.get(key)) for key in wanted}
    changed = [key for key in sorted(wanted) if had[key] != wanted[key]]
    differences = [f"{key} {had[key] or '-'} -> {wanted[key] or '-'}" for key in changed]
    backend = backend_for(previous, dict(backends))
    if changed and set(changed) <= backend.live_settings():  # worker count or bounds only: changed live
        backend.scale({key: int(wanted[key]) for key in changed}, progress)
        state.save(backend.deployment)
    elif differences:
        raise StackError(f"stack {spec.name!r} is up with other settings ({'; '.join(differences)})",
                         f"repeat its options, or `seamless-stack down --name {spec.name}` first")
    restarted = backend.converge(spec, progress)
    state.save(backend.deployment)
    gate(backend, spec.timeout, progress)
    write_env_file(backend.deployment)
    what = "; ".join([*([f"scaled live ({'; '.join(differences)})"] if changed else []),
                      *([f"started again: {', '.join(restarted)}"] if restarted else [])]) or "already up and healthy"
    _report_ready(backend.deployment, what, progress)
    seamless_config.refresh(backend.deployment, progress)
    _keep_tunnel(spec.name, progress)
    return backend.deployment


def _keep_tunnel(name: str, progress: Progress) -> None:
    """`up` starts the background tunnel of connected projects again if it died: a warning if
    it cannot (the stack itself is up; `status` names the tunnel until it runs)."""
    try:
        background.ensure(name, progress)
    except StackError as exc:
        progress(f"WARNING: {exc}")


def _report_ready(deployment: Deployment, what: str, progress: Progress) -> None:
    progress(f"stack {deployment.name!r} {what}; environment in {deployment.env_file}")
    if deployment.access == "ssh":
        progress(f"services listen on {deployment.host_name} behind {deployment.ssh_destination}: "
                 f"run `seamless-stack tunnel --name {deployment.name}` to reach them")


# -- the other commands -------------------------------------------------------------------
def down(name: str, progress: Progress = quiet, *, backends: Mapping[str, type[Backend]] = BACKENDS) -> None:
    """Stop a stack; data stays. Also cleans up after an unreadable record or a lost one."""
    with oplock.held(name, "down"):
        _down(name, progress, backends)


def _down(name: str, progress: Progress, backends: Mapping[str, type[Backend]]) -> None:
    try:
        deployment = state.load(name)
    except state.CorruptRecord:
        deployment = None
    except StackError:
        if not _down_leftovers(name, progress, backends):
            raise
        seamless_config.stack_down(name, None, progress)
        return
    if deployment is None:
        progress(f"the state record of {name!r} is unreadable: removing it and what runs under its name here")
        _down_leftovers(name, progress, backends)
        state.forget(name)
        StackFiles.of(name).compose_env.unlink(missing_ok=True)
        seamless_config.stack_down(name, None, progress)
        return
    progress(f"stopping stack {name!r}")
    background.stop(name, progress)  # its tunnel first: it puts the project files back as it ends
    backend_for(deployment, dict(backends)).down()
    Path(deployment.env_file).unlink(missing_ok=True)
    state.forget(name)
    progress(f"stack {name!r} is down; data stays in {deployment.buffer_dir} and {deployment.database_dir}")
    seamless_config.stack_down(name, deployment.method, progress)  # no client file keeps pointing at old ports


def _down_leftovers(name: str, progress: Progress, backends: Mapping[str, type[Backend]]) -> bool:
    """What runs under the name of a stack whose record is gone: each backend looks where it
    can without one (all of them: the record said which one it was)."""
    return any([backend.remove_leftovers(name, progress) for backend in dict.fromkeys(backends.values())])


def env(name: str, fmt: str = "shell") -> str:
    return render(state.load(name).connection().variables(), fmt)


def logs(name: str, service: str | None = None, tail: int | None = None) -> str:
    if tail is not None and tail < 0:
        raise StackError(f"--tail {tail} is negative", "give the number of last lines to show, 0 or more")
    return redact(backend_for(state.load(name)).logs(service, tail))


def scale(name: str, workers: int | None = None, min_jobs: int | None = None, max_jobs: int | None = None,
          progress: Progress = quiet, *, timeout: float = StackSpec.timeout,
          backends: Mapping[str, type[Backend]] = BACKENDS, gate: Gate = health_gate) -> Deployment:
    """Change a running stack's workers (Compose: their count; Slurm: the adaptive bounds of its
    worker jobs); its services and their clients carry on. Back once the minimum is ready."""
    changes = {key: value for key, value in (
        ("workers", None if workers is None else bounded(workers, "--workers", 1, MAX_WORKERS)),
        ("slurm.min_jobs", min_jobs), ("slurm.max_jobs", max_jobs)) if value is not None}  # the backend checks the range
    if not changes:
        raise StackError("scale needs a new size", "give --workers (Compose stacks) or --min-jobs/--max-jobs (Slurm stacks)")
    with oplock.held(name, "scale"):
        backend = backend_for(state.load(name), dict(backends))
        backend.scale(changes, progress)
        state.save(backend.deployment)
        gate(backend, timeout, progress)
    progress(f"stack {name!r}: {backend.scaling()[0]}")
    return backend.deployment


def restart(name: str, service: str, progress: Progress = quiet) -> None:
    with oplock.held(name, "restart"):
        backend = backend_for(state.load(name))
        backend.restart(service, progress)
        health_gate(backend, 120, progress)
    if service == "scheduler":
        progress(f"scheduler restarted: {SCHEDULER_RESTARTED}")


# A Dask client follows a scheduler stopped and started (`restart scheduler`), but one that
# reconnects just as a killed scheduler's port closes hangs (docs/upstream.md): said by `restart
# scheduler`, and by `status` after the scheduler started again.
SCHEDULER_RESTARTED = ("a Dask client connected before may not follow it (docs/upstream.md): "
                       "start a client that hangs again")


# -- Seamless projects and clients ----------------------------------------------------------
Project = seamless_config.Project  # a project (and stage) of a seamless.yaml, as the commands name it


def projects_for(name: str, texts: Iterable[str]) -> list[Project]:
    """`up --project P[:STAGE]`: checked, with the stack's name, before anything starts."""
    projects = [Project.parse(text) for text in texts]
    if projects:
        seamless_config.cluster_name(name)
    return projects


def connect(name: str, projects: list[Project], progress: Progress = quiet) -> list[str]:
    """Let Seamless projects use the stack (seamless.config.init); returns the lines for
    their seamless.profile.yaml and seamless.yaml. Warns when python3 here differs from the stack."""
    seamless_config.connect(name, projects, progress)
    background.ensure(name, progress)  # secured or over SSH: the tunnel they need, with no terminal kept open
    warning = client_versions.version_warning("python3")
    if warning:
        progress(f"WARNING: {warning}")
    return [line for project in projects for line in seamless_config.project_lines(name, project).splitlines()]


def disconnect(name: str, projects: list[Project] | None, progress: Progress = quiet) -> None:
    """Remove these projects' files (None: all of them); the background tunnel goes with the last."""
    seamless_config.disconnect(name, projects, progress)
    if not seamless_config.connected(name):
        background.stop(name, progress)


def doctor(python: str = "python3", name: str | None = None) -> tuple[str, bool]:
    """A client interpreter's versions against the stack's: the report, and whether they match;
    with a stack's name, also whether a transformation it runs computes on that stack."""
    report, text = client_versions.doctor(python)
    if name is None:
        return text, not report.mismatches
    where = client_versions.computes_where(python, state.load(name).env_file)
    line, on_stack = client_versions.where_verdict(where, name)
    return text + line, on_stack and not report.mismatches


def client_requirements() -> str:
    """The pinned requirements of a client that matches the stack's images."""
    return client_versions.lock_text()


# -- status -----------------------------------------------------------------------------
@dataclass
class ServiceStatus:
    service: str
    where: str
    state: str
    health: str
    port: str
    answer: str  # what the live check says: ok, or what is wrong


@dataclass
class StackStatus:
    deployment: Deployment
    services: list[ServiceStatus]
    workers_ready: str
    scaling: str  # how workers come and go
    problems: list[str]  # empty when the stack is healthy
    projects: list[str]  # the connected Seamless projects, and whether they can work now
    notes: list[str] = field(default_factory=list)  # what the owner should do soon, not a fault

    @property
    def healthy(self) -> bool:
        return not self.problems


def status(name: str, *, backends: Mapping[str, type[Backend]] = BACKENDS) -> StackStatus:
    """What runs, what answers, whether storage is usable: the truth, and what is wrong."""
    if not state.exists(name) and seamless_config.connected(name):
        raise StackError(seamless_config.down_status(name))  # down, but projects still count on it
    deployment = state.load(name)
    notes = []
    if deployment.credentials_dir:
        creds = credentials.Credentials(Path(deployment.credentials_dir))
        creds.check()
        if creds.expiring():  # a Slurm services job takes new ones up only when it starts anew
            renew = (f"`seamless-stack down --name {name}`, then `up {deployment.method}`" if deployment.slurm
                     else f"`seamless-stack up {deployment.method} --name {name}`")
            notes.append(f"certificates end within {credentials.RENEW_DAYS} days: {renew} with its options signs them again")
    backend = backend_for(deployment, dict(backends))
    try:
        with client_view(deployment) as view:
            answers = {wait.service: wait.check() for wait in stack_waits(view, deployment.workers)}
    except StackError as exc:
        answers = {role: (False, f"unreachable: {exc}") for role in ROLES}
    for service, problem in backend.storage_problems().items():
        if problem.startswith(LOW):
            notes.append(f"{service} storage: {problem}")
        else:
            answers[service] = (False, f"storage: {problem}")
    running = backend.services()
    healing, healed = backend.healing(running)
    answers.update(healing)
    notes += healed + [f"the scheduler started again at {s.started_again} UTC: {SCHEDULER_RESTARTED} (docs/operations.md)"
                       for s in running if s.service == "scheduler" and s.started_again]
    rows = [
        ServiceStatus(s.service, s.where, s.state, s.health or "-", _ports_of(deployment, s.service),
                      "ok" if answers.get(s.service, (False, ""))[0] else answers.get(s.service, (False, "-"))[1])
        for s in running
    ]
    # A worker job waiting for its turn is how adaptive scaling works, not a fault.
    problems = [f"{s.service} {s.state}" for s in running if not s.running and not (s.service == "worker" and s.state.startswith("pending"))]
    problems += [f"{service}: {detail}" for service, (ok, detail) in answers.items() if not ok and service != "worker"]
    if not answers["worker"][0]:
        problems.append(f"workers: {answers['worker'][1]}")
    scaling, refused = backend.scaling()
    problems += [refused] if refused else []
    if background.wanted(deployment) and not background.running(name):
        problems.append(f"the tunnel its Seamless projects need is not running (log {StackFiles.of(name).tunnel_log})")
    problems = list(dict.fromkeys(problems))
    return StackStatus(deployment, rows, answers["worker"][1], scaling, problems,
                       seamless_config.status_lines(deployment, healthy=not problems), notes)


def _ports_of(deployment: Deployment, role: str) -> str:
    """The port a role publishes ("-": none), the scheduler's with its dashboard's."""
    port = str(deployment.ports.get(role, "-"))
    return f"{port} (dashboard {deployment.ports.get('dashboard', '-')})" if role == "scheduler" else port


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())

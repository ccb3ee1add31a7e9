"""`connect`, `disconnect` and the lines `status` adds: what the user asks of this route.

Each checks what it can before it writes (a stack that is not up, a project that is not
connected), then leaves the record and the files agreeing, and says what the project
needs next: its own config lines, a tunnel, or a stack that answers.
"""

from __future__ import annotations

import sys
from typing import Iterable

from .. import state
from ..errors import StackError
from ..health import service_waits
from ..plan import Deployment
from ..progress import Progress, quiet
from .content import client_files
from .disk import cluster_file, form_of, form_text, launcher_client_dir, live_deployment, needs_tunnel, \
    remove_client_files, write_files
from .names import Project, cluster_name, listed
from .record import Record, load, save

MODES_NOTE = ("stage modes: persistent (hashserver, database and daskserver files per project and stage) and "
              "pure Dask (stages with `persistent: false`: the cluster's pure-daskserver file)")


def check_reachable(deployment: Deployment, record: Record) -> list[str]:
    """Problems of the services as a client here reaches them (empty: all answer). Plain
    HTTP: a secured stack is reached through the tunnel's forwarder, which adds its credentials."""
    local = record.tunnel_ports() if needs_tunnel(deployment) else None
    c = deployment.connection(local_ports=local)
    base = f"http://{c.host}"
    problems = []
    for wait in service_waits(f"{base}:{c.hashserver_port}", f"{base}:{c.database_port}", f"{base}:{c.dashboard_port}"):
        ok, detail = wait.check()
        if not ok:
            problems.append(f"{wait.service} {'does not answer' if detail == 'starting' else detail}")
    return problems


def _reachability_problems(deployment: Deployment, record: Record) -> list[str]:
    """check_reachable, as the package hands it on: where callers and tests may replace it."""
    return sys.modules[__package__].check_reachable(deployment, record)


def security_note(deployment: Deployment) -> str:
    """What this route protects, said where the user connects (docs/seamless-config.md, Security)."""
    if deployment.credentials_dir:
        return ("NOTE: this route reaches the secured stack through `seamless-stack tunnel`, which listens on "
                "127.0.0.1, admits only your processes and adds the stack's credentials (docs/seamless-config.md, Security)")
    return ("NOTE: the stack runs with --insecure: every user and process of this machine that can open "
            "127.0.0.1 ports can use it (docs/seamless-config.md, Security)")


def connect(stack: str, projects: Iterable[Project], progress: Progress = quiet) -> str:
    """Record the projects and write their files; returns the form ('ready', 'tunnel')."""
    projects = list(projects)
    cluster_name(stack)
    if not state.exists(stack):
        example = projects[0].project if projects else "P"
        raise StackError(f"no stack named {stack!r} is up",
                         f"start it with `seamless-stack up local --name {stack} --project {example}` "
                         "(or up remote/slurm): that connects the project too")
    deployment = state.load(stack)
    record = load(stack)
    record.method = deployment.method
    record.projects = sorted(set(record.projects) | set(projects), key=Project.sort_key)
    form = form_of(deployment, record)
    if form == "ready":
        client_files(deployment, projects, record.tunnel_ports() if needs_tunnel(deployment) else None)  # validates first
    save(record)
    form = write_files(stack, record, deployment)
    progress(f"connected {listed(projects)} to stack {stack!r}: cluster {cluster_name(stack)} "
             f"in {cluster_file(stack)}, client files in {launcher_client_dir()}")
    progress(MODES_NOTE)
    progress(security_note(deployment))
    if form != "tunnel":  # else api.connect starts the tunnel in the background, and says so
        problems = _reachability_problems(deployment, record)
        if problems:
            progress(f"WARNING: stack {stack!r} is not healthy ({'; '.join(problems)}): the project fails until "
                     f"`seamless-stack up {deployment.method} --name {stack}` (with its options) starts what stopped; "
                     f"see `seamless-stack status --name {stack}`")
    return form


def disconnect(stack: str, projects: Iterable[Project] | None, progress: Progress = quiet) -> list[Project]:
    """Remove these projects' files (None: all); the cluster file goes with the last one."""
    record = load(stack)
    gone = list(record.projects) if projects is None else [p for p in projects if p in record.projects]
    unknown = [] if projects is None else [p for p in projects if p not in record.projects]
    if unknown:
        raise StackError(f"{listed(unknown)} is not connected to stack {stack!r} "
                         f"(connected: {listed(record.projects) or 'none'})",
                         "check --name, --project and --stage")
    remove_client_files(stack, gone)
    record.projects = [p for p in record.projects if p not in gone]
    save(record)
    write_files(stack, record, live_deployment(stack))
    if gone:
        progress(f"disconnected {listed(gone)} from stack {stack!r}")
    return gone


def status_lines(deployment: Deployment, healthy: bool = True) -> list[str]:
    """For `seamless-stack status`: the connected projects and whether they can work now."""
    try:
        record = load(deployment.name)
    except StackError as exc:
        return [f"seamless projects: {exc}"]
    if not record.projects:
        return []
    form = form_of(deployment, record)
    text = form_text(deployment.name, form)
    if form == "ready" and not healthy:
        text = "connected, but they fail until the stack is healthy again (see below)"
    return [f"seamless projects: {listed(record.projects)} (cluster {cluster_name(deployment.name)}): {text}"]


def down_status(stack: str) -> str | None:
    """`status` of a stack that is down but still has projects: how to fix it."""
    record = load(stack)
    if not record.projects:
        return None
    return (f"stack {stack!r} is down; Seamless projects {listed(record.projects)} are connected to it "
            f"and fail until `seamless-stack up {record.method} --name {stack}` (with its options) starts it")

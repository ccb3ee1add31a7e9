"""What api.py tells this route: the stack came up, a tunnel opened or closed, the stack went down.

Each hook is the same step (load the project record, change it, save it, make the files say
what holds now, tell the user), so the step is written once, as `updating`, and a hook is
only its change. The stack's own lifecycle has happened by then: a file that cannot be
written is a warning, never a failure.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

from ..plan import Deployment
from ..progress import Progress, quiet
from .disk import form_text, live_deployment, write_files
from .names import listed
from .record import Record, load, save


@contextmanager
def updating(stack: str, deployment: Deployment | None, progress: Progress,
             report: str | None = None) -> Iterator[Record]:
    """Yield the stack's project record for the caller to change; then save it, write the files
    for `deployment` (None: the stack is down) and, if projects are connected, say `report`
    (its {projects}, {form}, {method} and {stack} filled in). Never raises: an unreadable
    record, a failing change or an unwritable file is one WARNING line."""
    try:
        record, unreadable = load(stack), None
    except Exception as exc:  # the caller still changes a record: a blank one, never saved
        record, unreadable = Record(stack), exc
    try:
        yield record
        if unreadable:
            raise unreadable
        save(record)
        form = write_files(stack, record, deployment)
        if record.projects and report:
            progress(report.format(projects=listed(record.projects), form=form_text(stack, form),
                                   method=record.method, stack=stack))
    except Exception as exc:
        progress(f"WARNING: could not update the files of connected Seamless projects ({exc})")


def refresh(deployment: Deployment, progress: Progress = quiet) -> None:
    """After `up`: connected projects get the stack's current addresses."""
    with updating(deployment.name, deployment, progress, "Seamless projects {projects}: {form}") as record:
        record.method = deployment.method


def tunnel_opened(deployment: Deployment, local_ports: dict[str, int], progress: Progress = quiet) -> None:
    """While `tunnel` runs, connected projects reach the stack through its local ports."""
    with updating(deployment.name, deployment, progress,
                  "Seamless projects {projects} use this tunnel while it runs") as record:
        record.method = deployment.method
        record.tunnel = {"pid": os.getpid(), "ports": dict(local_ports)}


def tunnel_closed(deployment: Deployment, progress: Progress = quiet) -> None:
    """The tunnel's ports are gone: so are the client files that named them."""
    with updating(deployment.name, live_deployment(deployment.name), progress) as record:
        record.tunnel = None


def stack_down(stack: str, method: str | None, progress: Progress = quiet) -> None:
    """After `down`: no client file points at the old ports (another stack may get them);
    the cluster file stays and says how to start the stack again."""
    with updating(stack, None, progress, "Seamless projects {projects} stay connected: "
                  "they work again after `seamless-stack up {method} --name {stack}`") as record:
        record.method = method or record.method
        record.tunnel = None

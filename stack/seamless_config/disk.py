"""Where the files live, and making them say what holds now.

Upstream Seamless cannot name an already-running stack in its YAML; its launcher
(remote-http-launcher) reuses a service when `~/.remote-http-launcher/client/<key>.json`
names one that answers its health check, and launches nothing. So a connected project gets
the cluster file `~/.seamless/clusters/seamless-stack-<name>.yaml` (never the user's own
`clusters.yaml`) and, while the stack can be reached from here, owner-only client files.
The cluster file takes one of three forms:

- ready: the client files exist; projects connect and compute;
- tunnel: an SSH or secured stack without a running tunnel: no client files, and the
  daskserver's queue name is a sentence that says to run `seamless-stack tunnel`;
- down: the stack is not up: no client files, and the queue name says to run
  `seamless-stack up` (seamless-config prints "Cluster '...' has no queue '<sentence>'"
  before it tries to launch anything).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Mapping

from .. import state
from ..errors import StackError
from ..files import write_private
from ..layout import seamless_home
from ..plan import Deployment
from .content import client_files, cluster_yaml, worker_frontends
from .names import CLUSTER_PREFIX, SERVICES, Project, cluster_name, launcher_key, pure_dask_key
from .record import Record, connected


def cluster_file(stack: str, environ: Mapping[str, str] = os.environ) -> Path:
    return seamless_home(environ) / "clusters" / f"{CLUSTER_PREFIX}{stack}.yaml"


def launcher_client_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """Where remote-http-launcher 0.4.5 looks for client files ($REMOTE_HTTP_LAUNCHER_DIR overrides)."""
    if environ.get("REMOTE_HTTP_LAUNCHER_DIR"):
        return Path(environ["REMOTE_HTTP_LAUNCHER_DIR"]).expanduser()
    return Path(environ.get("HOME", str(Path.home()))) / ".remote-http-launcher" / "client"


def needs_tunnel(deployment: Deployment) -> bool:
    """Over SSH, the tunnel's forwards; on a secured stack, its owner-only forwarder (this
    route cannot present the stack's credentials itself)."""
    return deployment.access == "ssh" or deployment.credentials_dir is not None


def form_of(deployment: Deployment | None, record: Record) -> str:
    if deployment is None or deployment.placement is None:
        return "down"
    if needs_tunnel(deployment) and record.tunnel_ports() is None:
        return "tunnel"
    return "ready"


def form_text(stack: str, form: str) -> str:
    """What a form means for the connected projects, in a sentence."""
    return {
        "ready": "connected",
        "tunnel": f"waiting for their tunnel (they fail until it runs: `seamless-stack up ... --name {stack}` or "
                  "`connect` starts it in the background)",
        "down": f"stack is down: `seamless-stack up ... --name {stack}` starts it",
        "none": "none",
    }[form]


def live_deployment(stack: str) -> Deployment | None:
    """The stack's state record, if it is up and readable: what the files may point at."""
    try:
        return state.load(stack) if state.exists(stack) else None
    except StackError:
        return None


def remove_client_files(stack: str, projects: Iterable[Project]) -> None:
    folder = launcher_client_dir()
    cluster = cluster_name(stack)
    for project in projects:
        for service in SERVICES:
            (folder / f"{launcher_key(service, cluster, project)}.json").unlink(missing_ok=True)
    if not set(connected(stack)) - set(projects):  # the last project goes: the cluster's own file too
        (folder / f"{pure_dask_key(cluster)}.json").unlink(missing_ok=True)


def write_files(stack: str, record: Record, deployment: Deployment | None) -> str:
    """Make the cluster file and the client files say what holds now; returns the form."""
    if not record.projects:
        cluster_file(stack).unlink(missing_ok=True)
        return "none"
    form = form_of(deployment, record)
    if form == "ready":
        local = record.tunnel_ports() if needs_tunnel(deployment) else None
        files = client_files(deployment, record.projects, local)
        text = cluster_yaml(stack, form, record.projects, method=deployment.method, threads=deployment.threads,
                            frontends=worker_frontends(deployment))
        folder = launcher_client_dir()
        for key, content in files.items():
            write_private(folder / f"{key}.json", json.dumps(content) + "\n", mode=0o600)
    else:
        remove_client_files(stack, record.projects)
        threads = deployment.threads if deployment else 1
        text = cluster_yaml(stack, form, record.projects, method=deployment.method if deployment else record.method,
                            threads=threads)
    write_private(cluster_file(stack), text)
    return form

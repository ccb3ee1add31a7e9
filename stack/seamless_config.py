"""Seamless projects use a stack through Seamless' own configuration (`seamless.config.init()`).

Upstream Seamless cannot name an already-running stack in its YAML; its launcher
(remote-http-launcher) reuses a service when `~/.remote-http-launcher/client/<key>.json`
names one that answers its health check, and launches nothing. So `connect` writes:

- the cluster file `~/.seamless/clusters/seamless-stack-<name>.yaml` (never the user's own
  `clusters.yaml`): one frontend per service, named as the WORKERS reach it (Compose
  service names, or the Slurm services node), and SSH host names under `.invalid`, so any
  launch attempt fails at once with a host name that says what to do;
- one launcher client file per service and connected project (mode 0600), holding the
  address THIS machine reaches (published ports, or tunnel ends on 127.0.0.1 while
  `seamless-stack tunnel` runs, with "tunneled-port" = the port the workers use).

Workers never get their addresses from this route: the scheduler preload registers the
Seamless worker plugin with worker-facing URLs before any client connects, and the
client leaves a registered plugin alone (verified in tests/integration/test_seamless_config.py).

The cluster file is in one of three forms:
- ready: the client files exist; projects connect and compute;
- tunnel: an SSH stack without a running tunnel: no client files, and the daskserver's
  queue name is a sentence that says to run `seamless-stack tunnel`;
- down: the stack is not up: no client files, and the queue name says to run
  `seamless-stack up`. (seamless-config prints "Cluster '...' has no queue '<sentence>'"
  before it tries to launch anything.)

Key template and formats: seamless-config 0.3.2 (tools.yaml), remote-http-launcher 0.4.5;
see ../shared/DESIGN.md section 6. Which projects use a stack is recorded in
`~/.seamless/stacks/<name>.projects.json` (with the running tunnel's ports), so that
`up`, `tunnel` and `down` keep the files true.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

from . import state
from .errors import StackError
from .files import write_private
from .health import HttpWait
from .layout import StackFiles, seamless_home
from .plan import Deployment

Progress = Callable[[str], None]

CLUSTER_PREFIX = "seamless-stack-"
SERVICES = ("hashserver", "database", "daskserver")
QUEUE = "default"  # the one queue of our cluster files (its name is a sentence unless ready)
MODE = "rw"  # what seamless_remote asks for (buffer and database clients are writable; daskserver: always rw)
# remote-http-launcher 0.4.5: keys are file names of these characters (FILENAME_RE).
KEY_CHARS = re.compile(r"^[A-Za-z0-9._-]+$")
# ... and host names must be RFC 1123 labels (_is_valid_hostname_or_ip).
LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
INVALID_TLD = "invalid"  # RFC 6761: never resolves, so ssh fails at once, with this name in its message
# Worker-facing frontend names of a Compose stack: the Compose services on the stack's network.
COMPOSE_FRONTENDS = {"hashserver": "hashserver", "database": "database", "daskserver": "scheduler"}
PORT_OF = {"hashserver": "hashserver", "database": "database", "daskserver": "scheduler"}


def _quiet(line: str) -> None:
    pass


# -- names ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Project:
    """A Seamless project (and stage) that uses a stack: one set of launcher keys."""

    project: str
    stage: str | None = None

    def __str__(self) -> str:
        return self.project + (f" (stage {self.stage})" if self.stage else "")

    def sort_key(self) -> tuple[str, str]:
        return self.project, self.stage or ""

    @classmethod
    def parse(cls, text: str) -> "Project":
        """PROJECT or PROJECT:STAGE (as `up --project` takes it)."""
        project, _, stage = text.partition(":")
        return cls.of(project, stage or None)

    @classmethod
    def of(cls, project: str, stage: str | None = None) -> "Project":
        for what, value in (("project", project), ("stage", stage)):
            if value is None and what == "stage":
                continue
            if not value or not KEY_CHARS.match(value) or "--" in value or "STAGE-" in value:
                raise StackError(f"invalid Seamless {what} name {value!r}",
                                 "use letters, digits, '.', '_' or '-' (no '--', no 'STAGE-'), as in the project's seamless.yaml")
        return cls(project, stage)


def cluster_name(stack: str) -> str:
    if "--" in stack:  # seamless-config refuses cluster names with '--' (they would break its keys)
        raise StackError(f"stack name {stack!r} contains '--', which Seamless does not allow in a cluster name",
                         "use a stack name without '--' for Seamless projects")
    return CLUSTER_PREFIX + stack


def launcher_key(service: str, cluster: str, project: Project) -> str:
    """The launcher key, as seamless-config 0.3.2 computes it (tools.yaml key_template):
    `{service}-$CLUSTER-$MODE-{"$PROJECTSUBDIR$STAGEDIR".strip("/").replace("/", "--")}`,
    with PROJECTSUBDIR = /project and STAGEDIR (daskserver: STAGESUBDIR) = /STAGE-x or ''."""
    path = "/" + project.project + (f"/STAGE-{project.stage}" if project.stage else "")
    return f"{service}-{cluster}-{MODE}-{path.strip('/').replace('/', '--')}"


def pure_dask_key(cluster: str) -> str:
    """Pure-Dask mode (a stage with `persistent: false` and `execution: remote`): seamless-config
    0.3.2 launches `pure_daskserver`, keyed `pure-daskserver-$CLUSTER-$QUEUE` (no project, no
    stage); the queue is the cluster's default, which is QUEUE in our cluster files."""
    return f"pure-daskserver-{cluster}-{QUEUE}"


def _label(stack: str) -> str:
    label = stack.replace("_", "-").strip("-")
    return label if LABEL.match(label) else "stack"


def ssh_hostname(stack: str, form: str) -> str:
    """Never resolves; what ssh prints when a launch is attempted says what to do."""
    middle = {"ready": "managed-by-seamless-stack", "tunnel": "needs.seamless-stack-tunnel",
              "down": "is-down.run-seamless-stack-up"}[form]
    return f"{_label(stack)}.{middle}.{INVALID_TLD}"


# -- where the files live ---------------------------------------------------------------
def cluster_file(stack: str, environ: Mapping[str, str] = os.environ) -> Path:
    return seamless_home(environ) / "clusters" / f"{CLUSTER_PREFIX}{stack}.yaml"


def launcher_client_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """Where remote-http-launcher 0.4.5 looks for client files ($REMOTE_HTTP_LAUNCHER_DIR overrides)."""
    if environ.get("REMOTE_HTTP_LAUNCHER_DIR"):
        return Path(environ["REMOTE_HTTP_LAUNCHER_DIR"]).expanduser()
    return Path(environ.get("HOME", str(Path.home()))) / ".remote-http-launcher" / "client"


# -- what a stack's record says (projects, the running tunnel) ----------------------------
@dataclass
class Record:
    stack: str
    method: str = "local"
    projects: list[Project] = None  # type: ignore[assignment]
    tunnel: dict | None = None  # {"pid": int, "ports": {service: local port}} while `tunnel` runs

    def __post_init__(self):
        self.projects = sorted(set(self.projects or []), key=Project.sort_key)

    def tunnel_ports(self) -> dict[str, int] | None:
        """The running tunnel's local ports; None when no tunnel runs (a killed one is noticed)."""
        if not self.tunnel:
            return None
        try:
            os.kill(int(self.tunnel["pid"]), 0)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return {k: int(v) for k, v in self.tunnel.get("ports", {}).items()}


def load(stack: str) -> Record:
    path = StackFiles.of(stack).projects
    try:
        data = json.loads(path.read_text())
        projects = [Project.of(p["project"], p.get("stage")) for p in data.get("projects", [])]
        return Record(stack, str(data.get("method") or "local"), projects, data.get("tunnel"))
    except FileNotFoundError:
        return Record(stack)
    except (OSError, ValueError, TypeError, KeyError, AttributeError, StackError) as exc:
        raise StackError(f"the project record of stack {stack!r} ({path}) cannot be read ({type(exc).__name__})",
                         f"remove it and connect the projects again (`seamless-stack connect --name {stack} --project P`)") from None


def save(record: Record) -> None:
    path = StackFiles.of(record.stack).projects
    if not record.projects and not record.tunnel:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"method": record.method, "projects": [{"project": p.project, "stage": p.stage} for p in record.projects],
            "tunnel": record.tunnel}
    write_private(path, json.dumps(data, indent=2) + "\n")


def connected(stack: str) -> list[Project]:
    try:
        return load(stack).projects
    except StackError:
        return []


# -- file contents (pure) -----------------------------------------------------------------
def worker_frontends(deployment: Deployment) -> dict[str, tuple[str, int]]:
    """(host, port) per service as the WORKERS reach it: where the preload points them too."""
    ports = deployment.ports
    if deployment.method != "slurm":
        return {s: (COMPOSE_FRONTENDS[s], ports[PORT_OF[s]]) for s in SERVICES}
    host = deployment.host_name  # the services node, by the address the services job reported
    if not _valid_host(host):
        raise StackError(f"the services node's address {host!r} is not a host name remote-http-launcher accepts",
                         "report it as a bug of seamless-stack, with `seamless-stack status` output")
    return {s: (host, ports[PORT_OF[s]]) for s in SERVICES}


def _valid_host(host: str) -> bool:
    """remote-http-launcher 0.4.5 (_is_valid_hostname_or_ip) validates frontend host names."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return len(host) <= 253 and all(LABEL.match(label) for label in host.rstrip(".").split("."))


def _yaml(value, indent: int = 0) -> list[str]:
    """A tiny YAML writer for mappings, lists and scalars (JSON scalars are YAML scalars)."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{key}:")
                lines += _yaml(item, indent + 2)
            else:
                lines.append(f"{pad}{key}: {json.dumps(item)}")
    elif isinstance(value, list):
        for item in value:
            sub = _yaml(item, indent + 2)
            lines.append(f"{pad}- {sub[0].lstrip()}")
            lines += sub[1:]
    else:
        lines.append(pad + json.dumps(value))
    return lines


def cluster_definition(stack: str, form: str, *, method: str, threads: int = 1,
                       frontends: dict[str, tuple[str, int]] | None = None) -> dict:
    """The cluster as seamless-config 0.3.2 reads it; every field it asserts is present."""
    fake = ssh_hostname(stack, form)
    frontends = frontends or {s: (fake, 8786) for s in SERVICES}  # down: a name that explains itself
    service_fields = {
        "hashserver": {"bufferdir": "/buffers"},  # never used: nothing is launched
        "database": {"database_dir": "/database"},
        "daskserver": {"network_interface": "0.0.0.0", "port_start": frontends["daskserver"][1],
                       "port_end": frontends["daskserver"][1]},  # all three mandatory
    }
    queue = {
        # "conda" must not be None (seamless-config asserts it), and empty means remote-http-launcher
        # skips its conda probe, whose error ("Conda is not available...") would hide the real one.
        "conda": "", "walltime": "24:00:00", "memory": "4GB",
        "cores": threads,  # Seamless workers per Dask worker (<= threads)
        "unknown_task_duration": "1m", "target_duration": "10m", "maximum_jobs": 1,
    }
    messages = {
        "ready": QUEUE,
        "tunnel": f"stack {stack} is reached through seamless-stack tunnel: run `seamless-stack tunnel --name {stack}` and keep it running",
        "down": f"stack {stack} is down: start it with `seamless-stack up {method} --name {stack}` (with its options)",
    }
    return {cluster_name(stack): {
        # slurm: the client then does not warn about 0 workers while adaptive scaling has none
        "type": "slurm" if method == "slurm" else "local",
        "tunnel": False,
        "frontends": [{"hostname": host, "ssh_hostname": fake, service: service_fields[service]}
                      for service, (host, _) in frontends.items()],
        "default_queue": messages[form],
        "queues": {QUEUE: queue},
    }}


def cluster_yaml(stack: str, form: str, projects: Iterable[Project], **kwargs) -> str:
    names = ", ".join(str(p) for p in projects) or "none"
    header = [
        f"# Written by seamless-stack for stack '{stack}' ({form}); projects: {names}.",
        "# Do not edit: `seamless-stack up/tunnel/down/connect/disconnect` rewrite or remove it.",
        "# Frontend host names are the workers' view; this machine's addresses are in",
        "# ~/.remote-http-launcher/client/*.json. The SSH host names never resolve: nothing is launched.",
    ]
    return "\n".join(header + _yaml(cluster_definition(stack, form, **kwargs))) + "\n"


def client_files(deployment: Deployment, projects: Iterable[Project], local_ports: dict[str, int] | None = None) -> dict[str, dict]:
    """{key: content} of the launcher client files: this machine's address in hostname/port;
    "tunneled-port" (the workers' port) where a tunnel maps it to another local port."""
    connection = deployment.connection(local_ports=local_ports)
    workers = worker_frontends(deployment)
    client_ports = {"hashserver": connection.hashserver_port, "database": connection.database_port,
                    "daskserver": connection.scheduler_port}
    cluster = cluster_name(deployment.name)
    files = {}
    for project in projects:
        for service in SERVICES:
            content: dict = {"hostname": connection.host, "port": client_ports[service]}
            if service == "daskserver":  # the launcher's handshake: GET /health on dashboard_port
                content["dashboard_port"] = connection.dashboard_port
            if client_ports[service] != workers[service][1]:
                content["tunneled-port"] = workers[service][1]
            if service == "daskserver" and connection.dashboard_port != deployment.ports["dashboard"]:
                content["tunneled-dashboard_port"] = deployment.ports["dashboard"]
            content["meta"] = {  # what seamless-service-ps shows, and whose file this is
                "service": service, "cluster": cluster, "mode": MODE, "project": project.project,
                "subproject": None, "stage": project.stage, "substage": None, "queue": None,
                "managed_by": "seamless-stack", "stack": deployment.name,
            }
            files[launcher_key(service, cluster, project)] = content
    if files:  # one per cluster: the scheduler, as the daskserver files name it
        daskserver = next(c for c in files.values() if c["meta"]["service"] == "daskserver")
        meta = {**daskserver["meta"], "service": "pure-daskserver", "project": None, "stage": None, "queue": QUEUE}
        files[pure_dask_key(cluster)] = {**daskserver, "meta": meta}
    return files


def project_lines(stack: str, project: Project) -> str:
    """What the project's own files need (printed by `connect`)."""
    lines = [
        "# seamless.profile.yaml",
        f"- cluster: {cluster_name(stack)}",
        "# seamless.yaml",
        f"- project: {project.project}",
        "- execution: remote",
        "- remote: daskserver",
    ]
    if project.stage:
        lines.append(f"# stage {project.stage}: select it in the script with seamless.config.set_stage({project.stage!r})")
    return "\n".join(lines) + "\n"


# -- writing ------------------------------------------------------------------------------
def _remove_client_files(stack: str, projects: Iterable[Project]) -> None:
    folder = launcher_client_dir()
    cluster = cluster_name(stack)
    for project in projects:
        for service in SERVICES:
            (folder / f"{launcher_key(service, cluster, project)}.json").unlink(missing_ok=True)
    if not set(connected(stack)) - set(projects):  # the last project goes: the cluster's own file too
        (folder / f"{pure_dask_key(cluster)}.json").unlink(missing_ok=True)


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
        _remove_client_files(stack, record.projects)
        threads = deployment.threads if deployment else 1
        text = cluster_yaml(stack, form, record.projects, method=deployment.method if deployment else record.method,
                            threads=threads)
    write_private(cluster_file(stack), text)
    return form


def _deployment(stack: str) -> Deployment | None:
    try:
        return state.load(stack) if state.exists(stack) else None
    except StackError:
        return None


# -- the hooks api.py calls ----------------------------------------------------------------
def refresh(deployment: Deployment, progress: Progress = _quiet) -> None:
    """After `up`: connected projects get the stack's current addresses. Never raises."""
    try:
        record = load(deployment.name)
        if not record.projects:
            return
        record.method = deployment.method
        save(record)
        form = write_files(deployment.name, record, deployment)
        progress(f"Seamless projects {', '.join(map(str, record.projects))}: {_form_text(deployment.name, form)}")
    except Exception as exc:  # the stack is up; a file we could not write is a warning, not a failure
        progress(f"WARNING: could not update the files of connected Seamless projects ({exc})")


def tunnel_opened(deployment: Deployment, local_ports: dict[str, int], progress: Progress = _quiet) -> None:
    try:
        record = load(deployment.name)
        record.method = deployment.method
        record.tunnel = {"pid": os.getpid(), "ports": dict(local_ports)}
        save(record)
        if record.projects:
            write_files(deployment.name, record, deployment)
            progress(f"Seamless projects {', '.join(map(str, record.projects))} use this tunnel while it runs")
    except Exception as exc:
        progress(f"WARNING: could not update the files of connected Seamless projects ({exc})")


def tunnel_closed(deployment: Deployment, progress: Progress = _quiet) -> None:
    try:
        record = load(deployment.name)
        record.tunnel = None
        save(record)
        write_files(deployment.name, record, _deployment(deployment.name))
    except Exception as exc:
        progress(f"WARNING: could not update the files of connected Seamless projects ({exc})")


def stack_down(stack: str, method: str | None, progress: Progress = _quiet) -> None:
    """After `down`: no client file points at the old ports (another stack may get them);
    the cluster file stays and says how to start the stack again."""
    try:
        record = load(stack)
        if method:
            record.method = method
        record.tunnel = None
        save(record)
        if record.projects:
            write_files(stack, record, None)
            progress(f"Seamless projects {', '.join(map(str, record.projects))} stay connected: "
                     f"they work again after `seamless-stack up {record.method} --name {stack}`")
    except Exception as exc:
        progress(f"WARNING: could not update the files of connected Seamless projects ({exc})")


# -- connect / disconnect / status ---------------------------------------------------------
def _form_text(stack: str, form: str) -> str:
    return {
        "ready": "connected",
        "tunnel": f"waiting for `seamless-stack tunnel --name {stack}` (they fail until it runs)",
        "down": f"stack is down: `seamless-stack up ... --name {stack}` starts it",
        "none": "none",
    }[form]


def check_reachable(deployment: Deployment, record: Record) -> list[str]:
    """Problems of the services as a client here reaches them (empty: all answer)."""
    local = record.tunnel_ports() if needs_tunnel(deployment) else None
    c = deployment.connection(local_ports=local)
    base = f"http://{c.host}"
    waits = [HttpWait("hashserver", f"{base}:{c.hashserver_port}/healthcheck", "OK"),
             HttpWait("database", f"{base}:{c.database_port}/healthcheck", "OK"),
             HttpWait("scheduler", f"{base}:{c.dashboard_port}/health", "ok")]
    problems = []
    for wait in waits:
        ok, detail = wait.check()
        if not ok:
            problems.append(f"{wait.service} {'does not answer' if detail == 'starting' else detail}")
    return problems


MODES_NOTE = ("stage modes: persistent (hashserver, database and daskserver files per project and stage) and "
              "pure Dask (stages with `persistent: false`: the cluster's pure-daskserver file)")


def security_note(deployment: Deployment) -> str:
    """What this route protects, said where the user connects (docs/seamless-config.md, Security)."""
    if deployment.credentials_dir:
        return ("NOTE: this route reaches the secured stack through `seamless-stack tunnel`, which listens on "
                "127.0.0.1, admits only your processes and adds the stack's credentials (docs/seamless-config.md, Security)")
    return ("NOTE: the stack runs with --insecure: every user and process of this machine that can open "
            "127.0.0.1 ports can use it (docs/seamless-config.md, Security)")


def connect(stack: str, projects: Iterable[Project], progress: Progress = _quiet) -> str:
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
    progress(f"connected {', '.join(map(str, projects))} to stack {stack!r}: cluster {cluster_name(stack)} "
             f"in {cluster_file(stack)}, client files in {launcher_client_dir()}")
    progress(MODES_NOTE)
    progress(security_note(deployment))
    if form == "tunnel":
        progress(f"run `seamless-stack tunnel --name {stack}` and keep it running while the project runs "
                 "(the project's files are written while it runs)")
    else:
        problems = check_reachable(deployment, record)
        if problems:
            progress(f"WARNING: stack {stack!r} is not healthy ({'; '.join(problems)}): the project fails until "
                     f"`seamless-stack up {deployment.method} --name {stack}` (with its options) starts what stopped; "
                     f"see `seamless-stack status --name {stack}`")
    return form


def disconnect(stack: str, projects: Iterable[Project] | None, progress: Progress = _quiet) -> list[Project]:
    """Remove these projects' files (None: all); the cluster file goes with the last one."""
    record = load(stack)
    gone = list(record.projects) if projects is None else [p for p in projects if p in record.projects]
    unknown = [] if projects is None else [p for p in projects if p not in record.projects]
    if unknown:
        raise StackError(f"{', '.join(map(str, unknown))} is not connected to stack {stack!r} "
                         f"(connected: {', '.join(map(str, record.projects)) or 'none'})",
                         "check --name, --project and --stage")
    _remove_client_files(stack, gone)
    record.projects = [p for p in record.projects if p not in gone]
    save(record)
    write_files(stack, record, _deployment(stack))
    if gone:
        progress(f"disconnected {', '.join(map(str, gone))} from stack {stack!r}")
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
    text = _form_text(deployment.name, form)
    if form == "ready" and not healthy:
        text = "connected, but they fail until the stack is healthy again (see below)"
    return [f"seamless projects: {', '.join(map(str, record.projects))} (cluster {cluster_name(deployment.name)}): {text}"]


def down_status(stack: str) -> str | None:
    """`status` of a stack that is down but still has projects: how to fix it."""
    record = load(stack)
    if not record.projects:
        return None
    return (f"stack {stack!r} is down; Seamless projects {', '.join(map(str, record.projects))} are connected to it "
            f"and fail until `seamless-stack up {record.method} --name {stack}` (with its options) starts it")

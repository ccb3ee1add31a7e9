"""What the files say: the cluster definition (as YAML) and the launcher client files.

Pure functions of a deployment and its projects, so that every form can be checked
without a disk. The cluster file names frontends as the WORKERS reach them; the client
files hold the address THIS machine reaches. Workers never get their addresses from this
route: the scheduler preload registers the Seamless worker plugin with worker-facing URLs
before any client connects, and the client leaves a registered plugin alone (verified in
tests/integration/test_seamless_config.py). PyYAML is no dependency of ours, hence the
small YAML writer.
"""

from __future__ import annotations

import json
from typing import Iterable

from ..errors import StackError
from ..plan import Deployment
from .names import (MODE, QUEUE, SERVICES, Project, cluster_name, launcher_key, listed, pure_dask_key,
                    ssh_hostname, valid_host)

# Worker-facing frontend names of a Compose stack: the Compose services on the stack's network.
COMPOSE_FRONTENDS = {"hashserver": "hashserver", "database": "database", "daskserver": "scheduler"}
PORT_OF = {"hashserver": "hashserver", "database": "database", "daskserver": "scheduler"}


def worker_frontends(deployment: Deployment) -> dict[str, tuple[str, int]]:
    """(host, port) per service as the WORKERS reach it: where the preload points them too."""
    ports = deployment.ports
    if deployment.method != "slurm":
        return {s: (COMPOSE_FRONTENDS[s], ports[PORT_OF[s]]) for s in SERVICES}
    host = deployment.host_name  # the services node, by the address the services job reported
    if not valid_host(host):
        raise StackError(f"the services node's address {host!r} is not a host name remote-http-launcher accepts",
                         "report it as a bug of seamless-stack, with `seamless-stack status` output")
    return {s: (host, ports[PORT_OF[s]]) for s in SERVICES}


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
    header = [
        f"# Written by seamless-stack for stack '{stack}' ({form}); projects: {listed(projects) or 'none'}.",
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

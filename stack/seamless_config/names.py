"""The names Seamless' configuration uses for a stack: projects, the cluster, launcher keys.

They must be what seamless-config 0.3.2 and remote-http-launcher 0.4.5 compute and accept
(key template: tools.yaml; see ../shared/DESIGN.md section 6), or a project looks for files
nobody wrote; so they are computed here, once, and checked when they are made.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from ..errors import StackError

CLUSTER_PREFIX = "seamless-stack-"
SERVICES = ("hashserver", "database", "daskserver")
QUEUE = "default"  # the one queue of our cluster files (its name is a sentence unless ready)
MODE = "rw"  # what seamless_remote asks for (buffer and database clients are writable; daskserver: always rw)
# remote-http-launcher 0.4.5: keys are file names of these characters (FILENAME_RE).
KEY_CHARS = re.compile(r"^[A-Za-z0-9._-]+$")
# ... and host names must be RFC 1123 labels (_is_valid_hostname_or_ip).
LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
INVALID_TLD = "invalid"  # RFC 6761: never resolves, so ssh fails at once, with this name in its message


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


def listed(projects) -> str:
    """Projects as a sentence names them: 'demo, demo (stage gpu)'."""
    return ", ".join(map(str, projects))


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


def valid_host(host: str) -> bool:
    """remote-http-launcher 0.4.5 (_is_valid_hostname_or_ip) validates frontend host names."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return len(host) <= 253 and all(LABEL.match(label) for label in host.rstrip(".").split("."))

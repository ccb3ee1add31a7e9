"""Which Seamless projects use a stack, and the ports of its running tunnel.

Kept in `~/.seamless/stacks/<name>.projects.json`, apart from the stack's state record: the
projects stay connected while the stack is down, so that `up`, `tunnel` and `down` can keep
their files true.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..errors import StackError
from ..files import write_private
from ..layout import StackFiles
from ..processes import alive
from .names import Project


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
            if not alive(int(self.tunnel["pid"])):
                return None
        except (ValueError, KeyError, TypeError):
            return None
        return {k: int(v) for k, v in self.tunnel.get("ports", {}).items()}

    def tunnel_pid(self) -> int | None:
        """The running tunnel's pid; None when no tunnel runs."""
        return int(self.tunnel["pid"]) if self.tunnel_ports() is not None else None


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
    """An empty record is no file; otherwise the project's one private-file writer writes it."""
    path = StackFiles.of(record.stack).projects
    if not record.projects and not record.tunnel:
        path.unlink(missing_ok=True)
        return
    data = {"method": record.method, "projects": [{"project": p.project, "stage": p.stage} for p in record.projects],
            "tunnel": record.tunnel}
    write_private(path, json.dumps(data, indent=2) + "\n")


def connected(stack: str) -> list[Project]:
    """The projects that use the stack; none when its record cannot be read."""
    try:
        return load(stack).projects
    except StackError:
        return []


def tunnel_pid(stack: str) -> int | None:
    """The pid of the tunnel that serves the stack's projects now; None when none runs."""
    try:
        return load(stack).tunnel_pid()
    except StackError:
        return None

"""State records: one JSON file per stack name, so `down`, `status` and `env` find a stack later.

A record that cannot be read (corrupt JSON, wrong fields or types) is reported as one
line about that stack alone: it never breaks `up` or `status` of another stack.
"""

from __future__ import annotations

import json
import os
from typing import Callable

from .errors import StackError
from .files import private_dir, write_private
from .layout import StackFiles, stacks_dir
from .plan import Deployment


def save(deployment: Deployment) -> None:
    path = StackFiles.of(deployment.name).record
    private_dir(path.parent)
    write_private(path, json.dumps(deployment.to_dict(), indent=2) + "\n")


def known_names() -> list[str]:
    folder = stacks_dir()
    # <name>.json only: <name>.projects.json (a dot in the stem) is no state record
    return sorted(p.stem for p in folder.glob("*.json") if "." not in p.stem) if folder.is_dir() else []


class CorruptRecord(StackError):
    def __init__(self, name: str, reason: str):
        path = StackFiles.of(name).record
        super().__init__(f"the state record of stack {name!r} ({path}) cannot be read ({reason})",
                         f"run `seamless-stack down --name {name}` to clean it up")


def exists(name: str) -> bool:
    return StackFiles.of(name).record.exists()


def load(name: str) -> Deployment:
    path = StackFiles.of(name).record
    if not path.is_file():
        known = ", ".join(known_names()) or "none"
        raise StackError(f"no stack named {name!r} (known: {known})", "pass --name, or start it with `seamless-stack up`")
    try:
        return Deployment.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise CorruptRecord(name, f"{type(exc).__name__}: {str(exc)[:100]}") from None


def load_all() -> list[Deployment]:
    """Every readable record; unreadable ones are skipped (they hold no ports we can trust)."""
    deployments = []
    for name in known_names():
        try:
            deployments.append(load(name))
        except StackError:
            continue
    return deployments


def forget(name: str) -> None:
    StackFiles.of(name).record.unlink(missing_ok=True)


def check_database_free(deployment: Deployment, others: Callable[[], list[Deployment]] = load_all) -> None:
    """One SQLite file, one writer: two database servers on one file corrupt it (and on a
    network file system lose it). Another stack of this user on the same machine with the
    same database directory holds it until its `down`."""
    where = _services_host(deployment)
    for other in others():
        if other.name != deployment.name and _services_host(other) == where and \
                os.path.normpath(other.database_dir) == os.path.normpath(deployment.database_dir):
            raise StackError(f"database directory {deployment.database_dir} is held by stack {other.name!r} "
                             "(one SQLite file has one writer)",
                             f"give stack {deployment.name!r} its own --database-dir, or take the other down "
                             f"(`seamless-stack down --name {other.name}`)")


def _services_host(deployment: Deployment) -> str:
    """The machine whose file system holds the storage: this one, or the SSH host (its user aside)."""
    destination = deployment.ssh_destination or (deployment.slurm.login if deployment.slurm else None)
    if not destination or destination == "this machine":
        return "this machine"
    return destination.rpartition("@")[2]

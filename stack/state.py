"""State records: one JSON file per stack name, so `down`, `status` and `env` find a stack later."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import StackError
from .plan import Deployment
from .spec import stacks_dir


def record_path(name: str) -> Path:
    return stacks_dir() / f"{name}.json"


def save(deployment: Deployment) -> Path:
    path = record_path(deployment.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(deployment.to_dict(), indent=2) + "\n")
    os.replace(tmp, path)
    return path


def known_names() -> list[str]:
    folder = stacks_dir()
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def load(name: str) -> Deployment:
    path = record_path(name)
    if not path.is_file():
        known = ", ".join(known_names()) or "none"
        raise StackError(f"no stack named {name!r} (known: {known})", "pass --name, or start it with `seamless-stack up`")
    return Deployment.from_dict(json.loads(path.read_text()))


def load_all() -> list[Deployment]:
    return [load(name) for name in known_names()]


def forget(name: str) -> None:
    record_path(name).unlink(missing_ok=True)

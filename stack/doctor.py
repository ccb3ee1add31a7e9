"""Client versions against the stack's: `seamless-stack client-requirements` and `doctor`.

Dask refuses nothing but warns (VersionMismatchWarning) when a client's dask, distributed,
cloudpickle, msgpack, tornado or toolz differ from the scheduler's and workers'; a
different cloudpickle or Python minor version can break the code a client pickles.
`doctor` runs the client's own interpreter (a real one: its sys.path, its PYTHONPATH) and
compares what it has with the lock the images are built from.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass

from .errors import StackError
from .resources import images_dir
from .shell import sourced

# The images' Python: Debian bookworm's python3 (the Dockerfile installs Debian's own, label
# org.seamless-stack.python=debian-bookworm-python3). Seen with
# `docker run --rm seamless-stack/scheduler:<tag> python3 -V` -> Python 3.11.2 (Debian 12.15).
IMAGE_PYTHON = "3.11.2"
# Must be equal: distributed's own list (distributed/versions.py required_packages), the
# Seamless packages, and the launcher whose client files the configuration route relies on.
DASK_REQUIRED = ("dask", "distributed", "cloudpickle", "msgpack", "tornado", "toolz")
OTHERS = ("remote-http-launcher",)
# Compared by dask as well (optional_packages), but only a note here: a client may have them.
DASK_OPTIONAL = ("numpy", "pandas", "lz4")

PROBE = r"""
import json, sys
if sys.path and sys.path[0] == "":  # -c puts the current folder first: not the client's environment
    sys.path.pop(0)
try:
    import importlib.metadata as md
except ImportError:
    md = None
names = json.loads(sys.argv[1])
found = {}
if md is not None:
    for dist in md.distributions():
        name = (dist.metadata["Name"] or "")
        key = name.lower().replace("_", "-").replace(".", "-")
        if (key in names or key.startswith("seamless")) and key not in found:
            found[key] = dist.version  # first on sys.path wins, as for imports
print(json.dumps({"python": "%d.%d.%d" % sys.version_info[:3], "executable": sys.executable, "packages": found}))
"""


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_text() -> str:
    """The scheduler/worker lock: the pinned requirements a client installs to match the stack."""
    return (images_dir() / "lock" / "dask.txt").read_text()


def stack_versions() -> dict[str, str]:
    versions = {}
    for line in lock_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            versions[normalize(name)] = version.strip()
    return versions


def probe(python: str) -> dict:
    """Versions as the given interpreter sees them."""
    path = shutil.which(python)
    if path is None:
        raise StackError(f"no Python interpreter {python!r} found", "pass --python PATH of the client's python")
    names = sorted(set(DASK_REQUIRED + OTHERS + DASK_OPTIONAL))
    try:
        result = subprocess.run([path, "-c", PROBE, json.dumps(names)], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StackError(f"{path} could not be run ({exc})", "pass --python PATH of a working Python 3") from None
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        detail = (result.stderr.strip().splitlines() or ["no answer"])[-1]
        raise StackError(f"{path} did not report its versions ({detail[:120]})", "pass --python PATH of a working Python 3") from None


@dataclass
class Row:
    package: str
    client: str  # version, or "-" when not installed
    stack: str
    verdict: str  # ok | MISMATCH | MISSING | note


@dataclass
class Report:
    python: str  # the interpreter's path
    rows: list[Row]

    @property
    def mismatches(self) -> list[Row]:
        return [r for r in self.rows if r.verdict in ("MISMATCH", "MISSING")]

    @property
    def notes(self) -> list[Row]:
        return [r for r in self.rows if r.verdict.startswith("note")]


def compare(found: dict, stack: dict[str, str] | None = None, image_python: str = IMAGE_PYTHON) -> Report:
    """Pure: the client's report (from probe) against the stack's versions."""
    stack = stack if stack is not None else stack_versions()
    packages = {normalize(k): v for k, v in found.get("packages", {}).items()}
    rows = []
    client_python = found.get("python", "?")
    if client_python.split(".")[:2] != image_python.split(".")[:2]:
        rows.append(Row("python", client_python, image_python, "MISMATCH"))
    elif client_python != image_python:
        rows.append(Row("python", client_python, image_python, "note: patch level only"))
    else:
        rows.append(Row("python", client_python, image_python, "ok"))
    required = [*DASK_REQUIRED, *sorted(n for n in stack if n.startswith("seamless")), *OTHERS]
    for name in dict.fromkeys(required):
        want, have = stack.get(name), packages.get(name)
        if want is None:
            continue
        rows.append(Row(name, have or "-", want, "ok" if have == want else ("MISSING" if have is None else "MISMATCH")))
    for name in sorted(n for n in packages if n.startswith("seamless") and n not in stack and n != "seamless-stack"):
        rows.append(Row(name, packages[name], "-", "note: not in the stack"))
    for name in DASK_OPTIONAL:
        want, have = stack.get(name), packages.get(name)
        if have is not None and have != want:
            rows.append(Row(name, have, want or "-", "note: dask compares it"))
    return Report(found.get("executable", "?"), rows)


def render(report: Report) -> str:
    table = [("PACKAGE", "CLIENT", "STACK", "")] + [(r.package, r.client, r.stack, r.verdict) for r in report.rows]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    lines = [f"client: {report.python}", f"stack:  the images' lock (images/lock/dask.txt) and Python {IMAGE_PYTHON}"]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    return "\n".join(lines) + "\n"


def advice(report: Report) -> list[str]:
    lines = []
    bad = report.mismatches
    python_bad = [r for r in bad if r.package == "python"]
    pins = [f"{r.package}=={r.stack}" for r in bad if r.package != "python"]
    if python_bad:
        lines.append(f"use a Python {'.'.join(IMAGE_PYTHON.split('.')[:2])} interpreter for the client "
                     f"(the images run Debian bookworm's python3 {IMAGE_PYTHON}): code pickled by another minor version may not load")
    if pins:
        lines.append(f"install the stack's versions ({' '.join(pins)}), best all of them at once:")
        lines.append(f"  seamless-stack client-requirements > stack-client.txt && {report.python} -m pip install -r stack-client.txt")
    if any(r.package == "python" and r.verdict.startswith("note") for r in report.rows):
        lines.append(f"Python differs in the patch level only: harmless, but dask prints a VersionMismatchWarning for it "
                     f"(a Python {IMAGE_PYTHON} client silences it)")
    return lines


# A fresh transformation (never found in the database), computed the way an env-configured
# client does: where it ran, and where the client runs. A client whose Dask side cannot start
# computes on its own machine without a word (upstream behaviour); this catches it.
WHERE = r"""
import json, socket, sys, warnings
warnings.filterwarnings("ignore")
from seamless_config.extern_clients import set_remote_clients_from_env
if not set_remote_clients_from_env(include_dask=True):
    sys.exit("SEAMLESS_REMOTE_CLIENTS is not set")
from seamless.transformer import direct

@direct
def where(tag):
    import socket
    return socket.gethostname()

print(json.dumps({"computed": where(sys.argv[1]), "client": socket.gethostname()}))
"""
WHERE_TIMEOUT = 180


def computes_where(python: str, env_file: str) -> dict:
    """The host a fresh transformation computed on, and the client's, for this interpreter
    with the stack's environment file sourced."""
    import tempfile
    import uuid

    fix = "`seamless-stack status` says whether the stack is healthy; an SSH stack needs `seamless-stack tunnel` running"
    with tempfile.TemporaryDirectory() as folder:  # a file: Seamless sends a transformer's source, not `-c` text
        script = f"{folder}/seamless_stack_where.py"
        with open(script, "w") as f:
            f.write(WHERE)
        try:
            done = subprocess.run(sourced(env_file, python, script, uuid.uuid4().hex), capture_output=True, text=True, timeout=WHERE_TIMEOUT, cwd=folder)
        except subprocess.TimeoutExpired:
            raise StackError(f"a test transformation did not finish within {WHERE_TIMEOUT} s", fix) from None
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        detail = (done.stderr.strip().splitlines() or ["no answer"])[-1]
        raise StackError(f"a test transformation failed ({detail[:160]})", fix) from None


def where_verdict(where: dict, stack: str) -> tuple[str, bool]:
    """The line `doctor --name` ends with, and whether the client computes on the stack."""
    if where.get("computed") == where.get("client"):
        return (f"LOCAL: the client computed on this machine ({where.get('client')}), not on stack {stack!r}: "
                f"`seamless-stack status --name {stack}` says whether its scheduler answers; source its environment "
                "again if it was rotated\n"), False
    return f"ok: a transformation computed on stack {stack!r} (on {where.get('computed')})\n", True


def doctor(python: str = "python3") -> tuple[Report, str]:
    report = compare(probe(python))
    text = render(report) + "".join(line + "\n" for line in advice(report))
    verdict = (f"MISMATCH: {', '.join(r.package for r in report.mismatches)} differ from the stack\n" if report.mismatches
               else "ok: this client matches the stack\n")
    return report, text + verdict


def version_warning(python: str = "python3") -> str | None:
    """For `connect`: one line when the python on PATH differs from the stack; never raises."""
    try:
        report = compare(probe(python))
    except StackError as exc:
        return f"could not check the client's versions ({exc})"
    if not report.mismatches:
        return None
    diffs = ", ".join(f"{r.package} {r.client} (stack {r.stack})" for r in report.mismatches[:6])
    more = f" and {len(report.mismatches) - 6} more" if len(report.mismatches) > 6 else ""
    return (f"{report.python} differs from the stack: {diffs}{more}; "
            f"`seamless-stack doctor --python {report.python}` says what to install")

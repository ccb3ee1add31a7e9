"""What the benchmarks share: the CLI as a subprocess, a private HOME, an `ssh` that knows a
test bed's key, the client venv, and one way of printing medians and ratios.

Benchmarks use only the CLI (`seamless-stack ...`), `seamless_stack.resources`, and the
test beds in testbeds/: never the driver's internal modules, which may change under them.

Every benchmark prints its result lines as

    <label>  <median>s            (one per side)
    ratio <what>  <number>        (parsed by tests/integration/test_benches.py)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from testbeds.common import SSHLogin

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "seamless-stack")
RATIO_LINE = re.compile(r"^\s*ratio\s+(\S+)\s+(-?\d+(?:\.\d+)?)\s*$", re.MULTILINE)

# Variables that would steer the CLI away from what a benchmark asks for.
_STEERING = ("SEAMLESS_", "RANDOM_PORT_", "HASHSERVER_", "DATABASE_DIR", "ENVIRONMENT_OUTPUT_FILE")


_STARTED = time.monotonic()


def log(line: str) -> None:
    """Progress on stderr, with the seconds since the benchmark started."""
    print(f"[bench {time.monotonic() - _STARTED:6.1f}s] {line}", file=sys.stderr, flush=True)


def short_id() -> str:
    return uuid.uuid4().hex[:6]


class Workspace:
    """A private HOME for the CLI (its state records, env files) and, when a key is given,
    an `ssh` first on PATH that uses it (ssh reads ~/.ssh/config from the password
    database, not from $HOME, so a wrapper is the way to hand it a key)."""

    def __init__(self, prefix: str, ssh_key: str | os.PathLike | None = None):
        self.home = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
        self.bin = self.home / "bin"
        self.bin.mkdir()
        if ssh_key:  # the test beds' one writer of ssh files, into this HOME's bin/ (first on PATH)
            SSHLogin(self.home, Path(ssh_key).resolve())
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(_STEERING)}
        self.env["HOME"] = str(self.home)
        self.env["PATH"] = f"{self.bin}:{self.env.get('PATH', '/usr/bin:/bin')}"

    def remove(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)

    def stacks_dir(self) -> Path:
        return self.home / ".seamless" / "stacks"

    def cli(self, *args: str, check: bool = True, timeout: float = 1800) -> subprocess.CompletedProcess:
        done = subprocess.run([CLI, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise SystemExit(f"seamless-stack {' '.join(args[:3])} ... failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return done

    def timed_cli(self, *args: str, timeout: float = 1800) -> float:
        start = time.monotonic()
        self.cli(*args, timeout=timeout)
        return time.monotonic() - start

    def timed_up(self, name: str, *up_args: str) -> float:
        """Seconds for `seamless-stack up ...` of stack `name`; the stack goes down again, also on failure."""
        try:
            return self.timed_cli(*up_args)
        finally:
            self.cli("down", "--name", name, check=False)

    def ssh(self, destination: str, command: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("capture_output", True)
        done = subprocess.run(["ssh", destination, command], env=self.env, **kwargs)
        if check and done.returncode != 0:
            err = done.stderr.decode() if isinstance(done.stderr, bytes) else (done.stderr or "")
            raise SystemExit(f"ssh {destination} {command[:60]!r} failed ({done.returncode}):\n{err[-3000:]}")
        return done


def image_tags(workspace: Workspace) -> dict[str, str]:
    """role -> tag of the images `up` uses, built if missing (`seamless-stack images build`)."""
    out = workspace.cli("images", "build").stdout
    return dict(line.split("\t")[:2] for line in out.splitlines() if "\t" in line)


def saved_mb(tags: list[str]) -> float:
    """MB that `docker save` writes for these images: every shared layer counted once, as
    they sit on disk and travel to a remote host."""
    with subprocess.Popen(["docker", "save", *tags], stdout=subprocess.PIPE) as save:
        size = sum(len(chunk) for chunk in iter(lambda: save.stdout.read(1 << 20), b""))
    if save.returncode:
        raise SystemExit(f"docker save {' '.join(tags)} failed ({save.returncode})")
    return size / 1e6


def client_venv() -> Path:
    """A Seamless client venv matching the stack (the tests' one when CI exported it)."""
    given = os.environ.get("SEAMLESS_STACK_CLIENT_VENV")
    if given:
        return Path(given)
    out = subprocess.run(["bash", str(ROOT / "scripts" / "client-venv.sh")], check=True, capture_output=True, text=True,
                         env={**os.environ, "SEAMLESS_STACK": CLI})  # the same CLI as the benchmark's
    return Path(out.stdout.strip().splitlines()[-1])


def client_run(venv: Path, env_file: Path, *command: str, timeout: float) -> subprocess.CompletedProcess:
    """`command` from a client that only sources the env file, its venv first on PATH (the
    driver's own seamless_stack.shell.sourced, spelled here: benchmarks use only the CLI)."""
    return subprocess.run(["bash", "-c", 'source "$1"; shift; exec "$@"', "-", str(env_file), *command], env={"PATH": f"{venv}/bin:/usr/bin:/bin", "HOME": str(env_file.parent)},
                          capture_output=True, text=True, timeout=timeout)


def seamless_run(venv: Path, env_file: Path, command: str, timeout: float = 600) -> float:
    """Seconds for `seamless-run COMMAND` from a client that only sources the env file."""
    start = time.monotonic()
    done = client_run(venv, env_file, "seamless-run", command, timeout=timeout)
    if done.returncode != 0:
        raise SystemExit(f"seamless-run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return time.monotonic() - start


def alternate(rounds: int, ours, plain, label: str) -> tuple[list[float], list[float]]:
    """Samples of two timed callables, in rounds whose order alternates (this machine is noisy)."""
    first, second = [], []
    for round_ in range(rounds):
        if round_ % 2 == 0:
            first.append(ours())
            second.append(plain())
        else:
            second.append(plain())
            first.append(ours())
        log(f"round {round_ + 1}/{rounds}: ours {first[-1]:.2f}s, {label} {second[-1]:.2f}s")
    return first, second


def report(title: str, rows: list[tuple[str, list[float]]], ratio: str, unit: str = "s") -> float:
    """Print the medians of (label, samples) rows and `ratio WHAT first/second`."""
    print(title)
    width = max(len(label) for label, _ in rows)
    medians = [statistics.median(samples) for _, samples in rows]
    for (label, samples), median in zip(rows, medians):
        each = ", ".join(f"{s:.2f}" for s in samples)
        print(f"  {label:<{width}}  {median:7.2f}{unit}   ({each})")
    value = medians[0] / medians[1]
    print(f"  ratio {ratio}  {value:.2f}", flush=True)
    return value


def project_files(connect_output: str) -> dict[str, str]:
    """{filename: text} of a Seamless project's files, from the lines `seamless-stack connect`
    printed (the benches and the configuration-route tests both write them from there)."""
    files, current = {}, None
    for line in connect_output.splitlines():
        if line.startswith("# seamless"):
            current = line[2:].strip()
            files[current] = []
        elif current and line.startswith("- "):
            files[current].append(line)
    if set(files) != {"seamless.profile.yaml", "seamless.yaml"}:
        raise SystemExit(f"unexpected output of `seamless-stack connect`:\n{connect_output}")
    return {filename: "\n".join(lines) + "\n" for filename, lines in files.items()}


class Tunnel:
    """`seamless-stack tunnel --format json` in the background, ready once its JSON object has
    closed (the env file holds local addresses while it runs); its stderr goes to a file in
    the workspace, so an unread pipe never blocks it."""

    def __init__(self, ws: Workspace, name: str, timeout: float = 120):
        self.stderr_path = ws.home / f"tunnel-{name}.stderr"
        self.stderr = self.stderr_path.open("w")
        self.process = subprocess.Popen([CLI, "tunnel", "--name", name, "--format", "json"], env=ws.env,
                                        stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        lines: list[str] = []
        deadline = time.monotonic() + timeout
        while not lines or not lines[-1].startswith("}"):
            line = self.process.stdout.readline()
            if not line or time.monotonic() > deadline:
                self.close()
                raise SystemExit(f"the tunnel did not come up:\n{self.stderr_path.read_text()[-2000:]}")
            lines.append(line)
        self.variables = json.loads("".join(lines))

    def close(self) -> int:
        """SIGINT, as Ctrl-C; its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.stderr.close()
        return self.process.returncode

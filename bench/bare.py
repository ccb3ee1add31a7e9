"""The stack's four services as plain processes on 127.0.0.1: the baseline of bench/vs_bare.py.

Built from the same lock files as the images (images/lock/*.txt, installed with --no-deps
as images/Dockerfile does), one venv per lock, made once with the host's python3 (Debian
bookworm's, like the images') and cached in ~/.cache/seamless-stack/bare-<digest>. Started
as the images start them (images/Dockerfile, compose/compose.yaml), unsecured like
`up local --insecure`: hashserver, database, the Dask scheduler with the Seamless preload
(images/preload/seamless_stack_preload.py), and N Dask workers with T x 3 Dask threads (T
Seamless workers each, Seamless' thread layout, as the images), each in its
own process group, on free ports, with buffers, database, HOME and TMPDIR in a temporary
folder. Ready means what the stack's health gate means: both /healthcheck answer OK, the
dashboard's /health answers ok, and the preload's /seamless-stack/ready counts N workers
whose Seamless plugin is set up. Then an env file with the variables `up local --insecure`
writes is written.

    .venv/bin/python -m bench.bare [--workers 1] [--threads 3]    # runs until Ctrl-C
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from seamless_stack.spec import StackSpec, option_default

ROOT = Path(__file__).resolve().parents[1]
LOCKS = {role: ROOT / "images" / "lock" / f"{role}.txt" for role in ("hashserver", "database", "dask")}
PRELOAD = ROOT / "images" / "preload" / "seamless_stack_preload.py"
SITE = ROOT / "images" / "site"  # the images' sitecustomize (log redaction, connection limits), which the preload uses
PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else "python3"  # Debian's, as in the images
HOST = "127.0.0.1"
THROTTLE = option_default(StackSpec, "throttle")  # Dask threads per Seamless worker, as the images
POLL_INTERVAL = 0.1  # as the health gate polls (stack/health.py)
# Variables that would steer the services (Seamless, Dask configuration) away from the images' setup.
_STEERING = ("SEAMLESS_", "DASK_", "HASHSERVER_", "DATABASE_DIR", "PYTHON")


def venvs() -> dict[str, Path]:
    """role -> venv with that lock installed; made once, then reused."""
    digest = hashlib.sha256(PYTHON.encode() + b"".join(lock.read_bytes() for lock in LOCKS.values())).hexdigest()[:12]
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "seamless-stack" / f"bare-{digest}"
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "w") as lockfile:
        fcntl.flock(lockfile, fcntl.LOCK_EX)  # two benchmarks at once: one builds, the other waits
        for role, lock in LOCKS.items():
            venv = base / role
            if (venv / ".complete").exists():
                continue
            shutil.rmtree(venv, ignore_errors=True)
            hashes = ["--require-hashes"] if "--hash" in lock.read_text() else []
            for command in ([PYTHON, "-m", "venv", str(venv)],
                            [str(venv / "bin" / "pip"), "install", "--quiet", "--no-deps", *hashes, "-r", str(lock)],
                            [str(venv / "bin" / "pip"), "check"]):
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode != 0:
                    raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
            (venv / ".complete").touch()
    return {role: base / role for role in LOCKS}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.read().decode(errors="replace")
    except OSError:  # refused, reset, timed out, HTTP errors: not ready yet
        return None


class BareStack:
    """hashserver, database, scheduler and `workers` Dask workers as subprocesses; a context manager.

    own=True: the Dask part is Seamless' own daskserver instead, `seamless-dask-wrapper` with a
    LocalCluster, as remote-http-launcher starts it for a local cluster (its status file holds
    the queue's parameters: `threads` cores, `workers` jobs): Seamless' own thread layout, the
    Seamless plugin registered by the client, no preload.
    """

    def __init__(self, workers: int = 1, threads: int = 3, own: bool = False):
        self.workers, self.threads, self.own = workers, threads, own
        self.root = Path(tempfile.mkdtemp(prefix="seamless-stack-bare-"))
        self.env_file = self.root / "bare.env"
        self.ports = {service: free_port() for service in ("hashserver", "database", "scheduler", "dashboard")}
        self.procs: dict[str, subprocess.Popen] = {}

    def __enter__(self) -> "BareStack":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _spawn(self, name: str, venv: Path, command: list[str], extra_env: dict[str, str] | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_STEERING)}
        env.update(PATH=f"{venv}/bin:{env.get('PATH', '/usr/bin:/bin')}", HOME=str(self.root),
                   TMPDIR=str(self.root / "tmp"), PYTHONUNBUFFERED="1", **(extra_env or {}))
        with open(self.root / "logs" / f"{name}.log", "wb") as log:
            self.procs[name] = subprocess.Popen([str(venv / "bin" / command[0]), *command[1:]], env=env, cwd=self.root,
                                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True)  # its own process group, for stop()

    def start(self, timeout: float = 300) -> float:
        """Start everything, wait until ready, write the env file; seconds from the first start to ready."""
        v = venvs()
        p = self.ports
        for folder in ("buffers", "database", "tmp", "logs"):
            (self.root / folder).mkdir()
        start = time.monotonic()
        self._spawn("hashserver", v["hashserver"], ["hashserver", str(self.root / "buffers"), "--writable",
                                                    "--layout", "prefix", "--host", HOST, "--port", str(p["hashserver"])])
        self._spawn("database", v["database"], ["seamless-database", str(self.root / "database" / "seamless.db"),
                                                "--writable", "--host", HOST, "--port", str(p["database"])])
        if self.own:
            self._spawn_own_daskserver(v["dask"])
        else:
            self._spawn_dask(v["dask"])
        self._wait(start, timeout)
        self._write_env_file()
        return time.monotonic() - start

    def _spawn_dask(self, venv: Path) -> None:
        """The scheduler and workers as the images start them."""
        p = self.ports
        dask_env = {"DASK_DISTRIBUTED__WORKER__DAEMON": "False", "DASK_DISTRIBUTED__SCHEDULER__UNKNOWN_TASK_DURATION": "1m",
                    "PYTHONPATH": str(SITE)}
        self._spawn("scheduler", venv, ["dask", "scheduler", "--protocol", "tcp", "--host", HOST,
                                             "--port", str(p["scheduler"]), "--dashboard-address", f"{HOST}:{p['dashboard']}",
                                             "--preload", str(PRELOAD)],
                    {**dask_env, "SEAMLESS_STACK_WORKER_BUFFER_URL": f"http://{HOST}:{p['hashserver']}",
                     "SEAMLESS_STACK_WORKER_DATABASE_URL": f"http://{HOST}:{p['database']}",
                     "SEAMLESS_STACK_SEAMLESS_WORKERS": str(self.threads)})
        for i in range(self.workers):  # worker dashboards on free ports: several workers share the host
            self._spawn(f"worker-{i + 1}", venv, ["dask", "worker", f"tcp://{HOST}:{p['scheduler']}",
                                                       "--nthreads", str(self.threads * THROTTLE), "--nworkers", "1",
                                                       "--host", HOST, "--dashboard-address", f"{HOST}:0"], dask_env)

    def _spawn_own_daskserver(self, venv: Path) -> None:
        """seamless-dask-wrapper reads its parameters from the status file and writes its ports
        into it once the LocalCluster's workers are up; it picks them from --port-range."""
        status = self.root / "daskserver.json"
        status.write_text(json.dumps({"parameters": {"cores": self.threads, "memory": "4GB", "walltime": "24:00:00",
                                                      "maximum_jobs": self.workers}}))
        low = free_port()
        self._spawn("daskserver", venv, ["seamless-dask-wrapper", "distributed::LocalCluster", "--host", HOST,
                                         "--port-range", str(low), str(min(low + 99, 65535)), "--status-file", str(status),
                                         "--timeout", "600"])  # remote-http-launcher's command line

    def _own_ready(self) -> bool:
        try:
            status = json.loads((self.root / "daskserver.json").read_text())
        except (OSError, ValueError):  # being replaced
            return False
        if status.get("status") == "failed":
            raise RuntimeError(f"seamless-dask-wrapper failed:\n{self.log_tail('daskserver')}")
        if status.get("status") != "running":
            return False
        self.ports["scheduler"], self.ports["dashboard"] = status["port"], status["dashboard_port"]
        return True

    def _ready(self) -> bool:
        base, dashboard = f"http://{HOST}", f"http://{HOST}:{self.ports['dashboard']}"
        if any("OK" not in (_get(f"{base}:{self.ports[s]}/healthcheck") or "") for s in ("hashserver", "database")):
            return False
        if self.own:
            return self._own_ready()
        if "ok" not in (_get(f"{dashboard}/health") or ""):
            return False
        report = json.loads(_get(f"{dashboard}/seamless-stack/ready") or "{}")
        return bool(report.get("plugin")) and report.get("seamless_workers", 0) >= self.workers

    def _wait(self, start: float, timeout: float) -> None:
        while not self._ready():
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"bare {name} exited ({proc.returncode}):\n{self.log_tail(name)}")
            if time.monotonic() - start > timeout:
                raise RuntimeError(f"bare services not ready after {timeout:.0f}s; scheduler log:\n{self.log_tail('scheduler')}")
            time.sleep(POLL_INTERVAL)

    def log_tail(self, name: str, chars: int = 3000) -> str:
        return (self.root / "logs" / f"{name}.log").read_text(errors="replace")[-chars:]

    def variables(self) -> dict[str, str]:
        """What `seamless-stack up local --insecure` writes into its env file."""
        hashserver, database = (f"http://{HOST}:{self.ports[s]}" for s in ("hashserver", "database"))
        scheduler = f"tcp://{HOST}:{self.ports['scheduler']}"
        entry = lambda url: {"url": url, "remote_url": url, "readonly": False}  # noqa: E731
        ssh_host = socket.gethostname()
        return {
            "SEAMLESS_DATABASE_IP": HOST,
            "SEAMLESS_DATABASE_PORT": str(self.ports["database"]),
            "SEAMLESS_READ_BUFFER_SERVERS": hashserver,
            "SEAMLESS_WRITE_BUFFER_SERVER": hashserver,
            "DASK_SCHEDULER_ADDRESS": scheduler,
            "SEAMLESS_REMOTE_CLIENTS": json.dumps({"buffer": [entry(hashserver)], "database": [entry(database)]},
                                                  separators=(",", ":")),
            "SEAMLESS_DASK_SCHEDULER": scheduler,
            "SEAMLESS_DASK_WORKERS": str(self.threads),
            "SEAMLESS_SSH_DATABASE_HOST": ssh_host,
            "SEAMLESS_SSH_DATABASE_PORT": str(self.ports["database"]),
            "SEAMLESS_SSH_HASHSERVER_HOST": ssh_host,
            "SEAMLESS_SSH_HASHSERVER_PORT": str(self.ports["hashserver"]),
            "SEAMLESS_SSH_DASK_SCHEDULER_HOST": ssh_host,
            "SEAMLESS_SSH_DASK_SCHEDULER_PORT": str(self.ports["scheduler"]),
        }

    def _write_env_file(self) -> None:
        lines = ["# bare seamless services (bench/bare.py); source this file"]
        lines += [f"export {k}={shlex.quote(v)}" for k, v in self.variables().items()]
        self.env_file.write_text("\n".join(lines) + "\n")
        self.env_file.chmod(0o600)

    def stop(self, grace: float = 15) -> None:
        """SIGTERM every process group (workers first), wait, then SIGKILL what is left; remove the folder."""
        groups = list(reversed(self.procs.values()))
        for proc in groups:
            _killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in groups:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in groups:  # stragglers: children that outlived their group's leader
            _killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        self.procs.clear()
        shutil.rmtree(self.root, ignore_errors=True)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=3)
    args = parser.parse_args(argv)
    venvs()
    with BareStack(args.workers, args.threads) as stack:
        print(f"ready in {stack.start():.1f}s; source {stack.env_file}", file=sys.stderr, flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()

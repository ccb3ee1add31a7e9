"""Integration fixtures: the real CLI in a private HOME, and a real Seamless client.

The client is a venv made by scripts/client-venv.sh from the stack's lock: it has
seamless-transformer, seamless-dask and distributed, and nothing of seamless-stack. It
only ever sees the environment file that `up` wrote.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from seamless_stack.shell import sourced
from testbeds.common import SSHLogin
from testbeds.remote_host import RemoteHost
from testbeds.slurm_cluster import SlurmCluster

ROOT = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).parent / "seamless-stack"
CLIENT_SCRIPTS = Path(__file__).parent / "client"


@pytest.fixture(scope="session")
def client_venv(docker_engine) -> Path:
    given = os.environ.get("SEAMLESS_STACK_CLIENT_VENV")
    if given:
        return Path(given)
    out = subprocess.run(["bash", str(ROOT / "scripts" / "client-venv.sh")], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def pytest_collection_modifyitems(config, items):
    """The benchmarks' smoke runs (test_benches.py) go last: the tests themselves then do the
    first image copy to the remote bed and the first SIF build on the cluster, and the
    benchmarks find both beds up (stable sort: the rest keeps its order)."""
    items.sort(key=lambda item: item.path.name == "test_benches.py")


# The test beds, built once per session and shared by every module that needs them
# (test_remote/test_slurm and the benchmarks' smoke runs in test_benches). Their names are
# unique per session: two sessions on one machine (two developers, CI next to a developer)
# must never meet on one bed, where one's start-up failure would remove the other's bed.
BED_SUFFIX = uuid.uuid4().hex[:6]


@pytest.fixture(scope="session")
def remote(docker_engine):
    """A remote Docker host: a container with sshd and its own dockerd (testbeds/remote_host.py)."""
    with RemoteHost(name=f"seamless-stack-test-remote-{BED_SUFFIX}") as host:
        # a second login with the same key, outside the docker group
        host.exec("useradd --create-home nodocker && usermod -p '*' nodocker && install -d -m 700 -o nodocker /home/nodocker/.ssh && "
                  "install -m 600 -o nodocker /home/seamless/.ssh/authorized_keys /home/nodocker/.ssh/")
        yield host


@pytest.fixture(scope="session")
def cluster(docker_engine):
    """A Slurm + Apptainer cluster: a login/controller node (no Docker), two compute nodes and a
    container registry with a CA the nodes trust (testbeds/slurm_cluster.py)."""
    with SlurmCluster(name=f"seamless-stack-test-slurm-{BED_SUFFIX}", compute_nodes=2, registry=True) as c:
        add_intruder(c)
        yield c


INTRUDER = "intruder"  # a second user of the cluster, with a key of its own


def add_intruder(cluster: SlurmCluster) -> None:
    """Another Unix user on every node (same uid everywhere, home on the shared /home), who may
    log in to the login node with its own key: the neighbour a shared cluster always has.
    `cluster.intruder` is its ssh login."""
    from testbeds.common import new_key

    key = cluster.workdir / "ssh" / "intruder_ed25519"
    public = new_key(key, "intruder")
    for node in [cluster.controller, *cluster.compute_nodes]:
        cluster.exec(f"useradd --uid 2001 --user-group --no-create-home --home-dir /home/{INTRUDER} "
                     f"--shell /bin/bash {INTRUDER} && usermod -p '*' {INTRUDER}", node=node, check=True)
    cluster.exec(f"install -d -m 700 -o {INTRUDER} -g {INTRUDER} /home/{INTRUDER} /home/{INTRUDER}/.ssh && "
                 f"echo {public!r} > /home/{INTRUDER}/.ssh/authorized_keys && "
                 f"chown {INTRUDER}: /home/{INTRUDER}/.ssh/authorized_keys && "
                 f"chmod 600 /home/{INTRUDER}/.ssh/authorized_keys", check=True)
    cluster.intruder = cluster.login_as(INTRUDER, key)


@dataclass
class Cli:
    """Runs `seamless-stack` as a user would, with HOME pointing at a private folder."""

    home: Path
    names: list[str]
    path_prefix: str | None = None  # e.g. a folder with an `ssh` that knows a test bed's key

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SEAMLESS_", "RANDOM_PORT_", "HASHSERVER_", "DATABASE_DIR", "ENVIRONMENT_OUTPUT_FILE"))}
        env["HOME"] = str(self.home)
        if self.path_prefix:
            env["PATH"] = f"{self.path_prefix}:{env['PATH']}"
        env.update(extra)
        return env

    def run(self, *args: str, check: bool = False, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
        result = subprocess.run([str(CLI), *args], capture_output=True, text=True, env=env or self.env(), timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"seamless-stack {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def use_ssh_key(self, key: Path, folder: Path) -> None:
        """An `ssh` first on PATH with a config for a test bed's key (any host), as
        ~/.ssh/config would be (ssh takes ~ from the password database, not $HOME)."""
        self.path_prefix = str(SSHLogin(folder, key).bin)

    def new_name(self) -> str:
        name = "t" + uuid.uuid4().hex[:8]
        self.names.append(name)
        return name

    def up(self, name: str, *args: str, method: str = "local", **kwargs) -> subprocess.CompletedProcess:
        if name not in self.names:
            self.names.append(name)
        return self.run("up", method, "--name", name, *args, **kwargs)

    def env_file(self, name: str) -> Path:
        return self.home / ".seamless" / "stacks" / f"{name}.env"


def wait_until(condition, timeout: float, what: str, interval: float = 0.2) -> None:
    """Poll until `condition()` holds (instead of sleeping a guess); fail naming `what`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s")
        time.sleep(interval)


def read_available(stream) -> str:
    """What a child's pipe holds right now, without waiting for more ("" when nothing, or at its end)."""
    fd = stream.fileno()
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 1 << 16).decode(errors="replace")
    except BlockingIOError:
        return ""
    finally:
        os.set_blocking(fd, True)


def project_containers(name: str) -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-a", "-q", "--filter", f"label=com.docker.compose.project=seamless-{name}"],
        capture_output=True, text=True, check=True,
    )
    return out.stdout.split()


def container(name: str, service: str) -> str:
    """The (first) container of one service of a stack, running or not."""
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project=seamless-{name}",
                          "--filter", f"label=com.docker.compose.service={service}"], capture_output=True, text=True, check=True)
    return out.stdout.split()[0]


# Where Dask workers run (a container, a node): their Seamless children (spawned by a worker
# process, itself spawned by its nanny: both `multiprocessing.spawn`), stopped for 3 s together.
# Prints their PIDs; exit 3 when there are none. (The shell running this skips itself: its own
# command line holds "resource_tracker".)
STALL = r"""
kids=""
for d in /proc/[0-9]*; do
  c=$(tr '\0' ' ' < "$d/cmdline" 2>/dev/null); case "$c" in *spawn_main*) ;; *) continue ;; esac
  case "$c" in *resource_tracker*) continue ;; esac
  parent=$(awk '/^PPid/ {print $2}' "$d/status")
  case "$(tr '\0' ' ' < /proc/$parent/cmdline 2>/dev/null)" in *spawn_main*) kids="$kids ${d#/proc/}" ;; esac
done
[ -n "$kids" ] || exit 3
kill -STOP $kids; sleep 3; kill -CONT $kids; echo $kids
"""


def rest_of(process: subprocess.Popen, timeout: float) -> tuple[str, str]:
    """What a client still prints until it ends, through its pipes' text wrappers: after a
    `readline`, `communicate` reads the raw pipes and loses the lines the wrapper has buffered.
    Killed when it runs past `timeout` (its returncode says so)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        out, err = pool.submit(process.stdout.read), pool.submit(process.stderr.read)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        return out.result(), err.result()


def assert_a_wedged_worker_is_replaced(cli, client, name: str, stall, count: int, timeout: float) -> list[str]:
    """The workers' Seamless children stopped for 3 s (`stall`: runs STALL where they are) while
    a client computes `count` transformations: every one completes within `timeout` (the defect:
    a hang, for good) and the stack is healthy again, with no manual step. The stalled PIDs."""
    steady = client.start(cli.env_file(name), "steady.py", str(count), "0.5")
    try:
        for _ in range(3):  # computing on a worker before the stall
            assert json.loads(steady.stdout.readline())["value"] is not None
        stalled = stall()
        out, err = rest_of(steady, timeout)
    finally:
        steady.kill()
    values = [json.loads(line)["value"] for line in out.splitlines()]
    assert steady.returncode == 0 and values == [i * i for i in range(3, count)], (stalled, err[-3000:])
    for _ in range(30):  # healthy again by itself
        if cli.run("status", "--name", name).returncode == 0:
            break
        time.sleep(2)
    status = cli.run("status", "--name", name)
    assert status.returncode == 0, status.stdout + status.stderr
    return stalled


def service_hostnames(name: str, service: str) -> set[str]:
    """Container hostnames (short IDs) of one service of a stack."""
    out = subprocess.run(
        ["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project=seamless-{name}",
         "--filter", f"label=com.docker.compose.service={service}"],
        capture_output=True, text=True, check=True,
    )
    return {cid[:12] for cid in out.stdout.split()}


@pytest.fixture
def cli(docker_engine, tmp_path) -> Cli:
    home = tmp_path / "home"
    home.mkdir()
    c = Cli(home=home, names=[])
    yield c
    for name in c.names:  # never leave a stack behind, whatever the test did
        c.run("down", "--name", name)
        for cid in project_containers(name):
            subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
        subprocess.run(["docker", "network", "rm", f"seamless-{name}_default"], capture_output=True)


@dataclass
class Client:
    venv: Path

    def _command(self, env_file: Path, *command: str) -> tuple[list[str], dict[str, str]]:
        """Source the env file in bash, then run the command with the client venv first on PATH."""
        return sourced(env_file, *command), {"PATH": f"{self.venv}/bin:/usr/bin:/bin", "HOME": str(env_file.parent)}

    def run(self, env_file: Path, *command: str, timeout: float = 180) -> subprocess.CompletedProcess:
        args, env = self._command(env_file, *command)
        return subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout)

    def start(self, env_file: Path, script: str, *args: str) -> subprocess.Popen:
        """A client script running in the background, its output line by line."""
        command, env = self._command(env_file, "python", str(CLIENT_SCRIPTS / script), *args)
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def python(self, env_file: Path, script: str, *args: str) -> subprocess.CompletedProcess:
        return self.run(env_file, "python", str(CLIENT_SCRIPTS / script), *args)


@pytest.fixture
def client(client_venv) -> Client:
    return Client(client_venv)


class TunnelProcess:
    """`seamless-stack tunnel` in the background, as a user would leave it running: started
    as a script's `&` job starts it, with SIGINT ignored, which the tunnel must overrule.

    As a context manager it closes on leaving, whatever happened, and keeps the exit code in
    `code` for the test to check after the block (an assert in the cleanup would hide the
    failure that ended the block):

        with TunnelProcess(cli, name) as tunnel:
            ...
        assert tunnel.code == 0
    """

    def __init__(self, cli, name):
        self.process = subprocess.Popen([str(CLI), "tunnel", "--name", name, "--format", "json"], env=cli.env(),
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        lines = []
        while not lines or not lines[-1].startswith("}"):
            line = self.process.stdout.readline()
            if not line:
                raise AssertionError(f"tunnel ended: {self.process.stderr.read()}")
            lines.append(line)
        self.variables = json.loads("".join(lines))
        self.code: int | None = None

    def close(self, timeout: float = 30) -> int | None:
        """Ctrl-C, as a user ends it: its exit code, or None when it had to be killed."""
        self.process.send_signal(signal.SIGINT)
        try:
            self.code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            self.code = None
        return self.code

    def __enter__(self) -> "TunnelProcess":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

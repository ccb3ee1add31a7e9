"""seamless_stack.testing without Docker: the stack is the Compose backend itself, what its
Compose calls see, the port-collision retry, the failure path's order (logs before
removal), and the environment's restoration."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
from testcontainers.compose import DockerCompose

from seamless_stack import testing, throwaway
from seamless_stack.backends.compose import ComposeBackend
from seamless_stack.errors import StackError
from seamless_stack.layout import ROLES
from seamless_stack.plan import ComposeRecord, Deployment, Placement
from seamless_stack.testing import SeamlessStack, StackStartFailed

FAKE_DOCKER = """#!{python}
import json, os, sys
env_file = sys.argv[sys.argv.index("--env-file") + 1] if "--env-file" in sys.argv else None
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps({{"argv": sys.argv[1:], "env": dict(os.environ),
                          "env_file": open(env_file).read() if env_file else None}}) + "\\n")
"""


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A private HOME: whatever lands under ~/.seamless/stacks is seen, and removed with it."""
    folder = tmp_path / "home"
    folder.mkdir()
    monkeypatch.setenv("HOME", str(folder))
    return folder


@pytest.fixture
def fake_docker(tmp_path, monkeypatch):
    """A `docker` first on PATH that records its arguments and environment."""
    binary = tmp_path / "bin" / "docker"
    binary.parent.mkdir()
    binary.write_text(FAKE_DOCKER.format(python=sys.executable))
    binary.chmod(0o755)
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    monkeypatch.setenv("PATH", f"{binary.parent}{os.pathsep}{os.environ['PATH']}")
    return lambda: [json.loads(line) for line in log.read_text().splitlines()]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def deployment(name: str, folder: Path) -> Deployment:
    return Deployment(name=name, method="local", workers=1, threads=2, bind="127.0.0.1", buffer_dir=str(folder / "buffers"),
                      database_dir=str(folder / "database"), env_file="/nowhere", settings={},
                      placement=Placement("here", {"hashserver": 61001, "database": 61002, "scheduler": 61003, "dashboard": 61004}),
                      compose=ComposeRecord(images={role: f"{role}:t" for role in ROLES}, uid=1000, gid=1000))


def test_the_stack_is_the_compose_backend_and_compose_sees_its_variables_over_the_users(home, fake_docker, tmp_path, monkeypatch):
    """One lifecycle: the plan, `up`, the failure rule and `down` are ComposeBackend's own. Compose
    lets the environment win over --env-file: the user's variables must not reach it."""
    monkeypatch.setenv("HASHSERVER_BUFFER_DIR", "/the/users/own")
    monkeypatch.setenv("THREADS", "64")
    monkeypatch.setenv("WORKER_PIDS_LIMIT", "1")  # used by compose.yaml with a default, not in the env file
    monkeypatch.setenv("COMPOSE_PROJECT_NAME", "someone-elses")
    monkeypatch.setenv("COMPOSE_PROFILES", "debug")

    def prepare(cls, spec, progress):
        prepared = cls(deployment(spec.name, Path(spec.buffer_dir).parent))
        prepared.warnings.append("an old engine")
        return prepared

    monkeypatch.setattr(ComposeBackend, "prepare", classmethod(prepare))
    lines = []
    stack = SeamlessStack(name="tcx-unit", directory=tmp_path, progress=lines.append)
    stack.folder = tmp_path / "folder"
    stack.folder.mkdir()
    stack._plan()
    backend = stack.backend
    assert type(backend) is ComposeBackend and backend.warnings == ["an old engine"]
    assert backend.env_path == stack.folder / "compose.env"
    backend.start(lines.append)  # what `seamless-stack up local` runs
    backend.down()
    compose = throwaway.compose(backend, stack.folder)  # what the throwaway stack runs: testcontainers'
    assert isinstance(compose, DockerCompose) and not compose.wait, "up --detach, then the driver's gate"
    compose.start()
    compose.stop()
    up, stop, down, tc_up, tc_down = fake_docker()
    assert up["argv"][-4:] == ["up", "--detach", "--pull", "never"] and "down" in down["argv"]
    assert stop["argv"][-1] == "worker" and "stop" in stop["argv"], "workers stop first, while the scheduler answers"
    assert tc_up["argv"][-2:] == ["up", "--detach"] and tc_down["argv"][-2:] == ["down", "--volumes"]
    assert f"HASHSERVER_BUFFER_DIR={stack.folder / 'buffers'}\n" in up["env_file"] and "THREADS=2\n" in up["env_file"]
    assert tc_up["env_file"] == up["env_file"], "the same variables, from the same writer"
    for call in (up, stop, down, tc_up, tc_down):
        argv = " ".join(call["argv"])
        assert f"--env-file {stack.folder / 'compose.env'}" in argv, argv
        project = call["env"].get("COMPOSE_PROJECT_NAME") or argv.split("--project-name ")[1].split()[0]
        assert project == "seamless-tcx-unit", argv
        for name in ("HASHSERVER_BUFFER_DIR", "THREADS", "WORKER_PIDS_LIMIT", "COMPOSE_PROFILES"):
            assert name not in call["env"], f"{name} would win over the env file"


@dataclass
class FakeDeployment:
    ports: dict[str, int]
    bind: str = "127.0.0.1"
    buffer_dir: str = "/nowhere"
    database_dir: str = "/nowhere"
    project: str = "seamless-tcx-unit"

    def connection(self):
        return SimpleNamespace(variables=lambda: {"SEAMLESS_DASK_SCHEDULER": f"tcp://127.0.0.1:{self.ports['scheduler']}"})


@dataclass
class FakeBackend:
    """Stands in for the Compose backend: `up` fails as the test says; what happens is
    recorded, in order, in the test's own list."""

    events: list[str]
    failures: list[str]
    deployment: FakeDeployment
    warnings: list[str] = field(default_factory=list)
    # docker for `lost_a_port`: no container of this stack holds a port
    docker: SimpleNamespace = field(default_factory=lambda: SimpleNamespace(container=SimpleNamespace(list=lambda **_: [])))

    def leftovers(self):
        return []

    def starting(self):
        return "starting stack 'tcx-unit'"

    def start(self):  # testcontainers' DockerCompose.start: `compose up`
        self.events.append("up")
        if self.failures:
            raise subprocess.CalledProcessError(1, ["docker", "compose", "up"], stderr=self.failures.pop(0).encode())

    def stop(self):  # DockerCompose.stop: `compose down --volumes`
        self.events.append("down")

    def logs(self, service=None, tail=None):
        self.events.append(f"logs {service}")
        return f"{service}-1  | started\n{service}-1  | trouble\n"


def fake_stack(tmp_path, monkeypatch, failures, plans):
    """A SeamlessStack whose plans are FakeBackends, one per plan, with these ports."""
    events = []
    stack = SeamlessStack(name="tcx-unit", directory=tmp_path / "temp", timeout=5, progress=events.append)
    (tmp_path / "temp").mkdir()
    plans = iter(plans)

    def plan():
        events.append("plan")
        stack.backend = FakeBackend(events, failures, FakeDeployment(next(plans)))

    monkeypatch.setattr(stack, "_plan", plan)
    monkeypatch.setattr(throwaway, "compose", lambda backend, folder: backend)  # the fake runs its own Compose
    monkeypatch.setattr(testing, "health_gate", lambda backend, timeout, progress: 0.0)
    return stack, events


def test_a_port_taken_meanwhile_means_plan_again(home, tmp_path, monkeypatch):
    with socket.create_server(("127.0.0.1", 0)) as squatter:  # the other stack, on a port of our first plan
        taken, free = {"scheduler": squatter.getsockname()[1]}, {"scheduler": free_port()}
        stack, events = fake_stack(tmp_path, monkeypatch, ["port of stack 'tcx-unit' is taken"], [taken, free])
        stack.start()
    assert [e for e in events if e in ("plan", "up", "down")] == ["plan", "up", "down", "plan", "up"]
    assert stack.environment() == {"SEAMLESS_DASK_SCHEDULER": f"tcp://127.0.0.1:{free['scheduler']}"}
    folder = stack.folder
    stack.stop()
    assert not folder.exists()


def test_a_failed_start_reads_the_logs_before_removing_anything(home, tmp_path, monkeypatch):
    stack, events = fake_stack(tmp_path, monkeypatch, ["docker compose up failed for stack 'tcx-unit' (no such image)"],
                               [{"scheduler": free_port()}])
    with pytest.raises(StackStartFailed) as caught:
        stack.start()
    message = str(caught.value)
    assert "did not become ready: `compose up ...` failed: docker compose up failed for stack 'tcx-unit' (no such image)" in message
    assert "--- worker: last 40 log lines ---\n    worker-1  | started\n    worker-1  | trouble" in message
    order = [e for e in events if e in ("up", "down") or e.startswith("logs")]
    assert order == ["up", "logs hashserver", "logs database", "logs scheduler", "logs worker", "down"], \
        "no port was lost: no second plan, and the logs are read before `down`"
    assert list((tmp_path / "temp").iterdir()) == [], "the temporary folder is gone"
    assert isinstance(caught.value.__cause__, subprocess.CalledProcessError)


def test_log_tails_never_raise():
    class Gone:
        def logs(self, service, tail=None):
            raise StackError("the engine went away")

    tail = throwaway.log_tail(Gone(), 5)
    assert "--- database: last 5 log lines ---\n    (logs unavailable: the engine went away)" in tail


def test_apply_sets_and_stop_restores_the_environment(home, tmp_path, monkeypatch):
    stack, _ = fake_stack(tmp_path, monkeypatch, [], [{"scheduler": 60001}])
    monkeypatch.setenv("SEAMLESS_DASK_SCHEDULER", "tcp://elsewhere:1")
    with stack:
        stack.apply()
        assert os.environ["SEAMLESS_DASK_SCHEDULER"] == "tcp://127.0.0.1:60001"
        assert (Path(stack.folder) / "client.env").stat().st_mode & 0o077 == 0
    assert os.environ["SEAMLESS_DASK_SCHEDULER"] == "tcp://elsewhere:1"
    with pytest.raises(RuntimeError):
        stack.environment()

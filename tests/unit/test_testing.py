"""seamless_stack.testing without Docker: what its Compose calls see, the port-collision
retry, the failure path's order (logs before removal), and the environment's restoration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from seamless_stack import testing
from seamless_stack.testing import SeamlessStack, StackStartFailed, _Compose

FAKE_DOCKER = """#!{python}
import json, os, sys, time
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps({{"argv": sys.argv[1:], "env": dict(os.environ), "cwd": os.getcwd()}}) + "\\n")
time.sleep(float(os.environ.get("FAKE_DOCKER_SLEEP", "0")))
"""


@pytest.fixture
def fake_docker(tmp_path, monkeypatch):
    """A `docker` that records its arguments and environment."""
    binary = tmp_path / "bin" / "docker"
    binary.parent.mkdir()
    binary.write_text(FAKE_DOCKER.format(python=sys.executable))
    binary.chmod(0o755)
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    return binary, lambda: [json.loads(line) for line in log.read_text().splitlines()]


def test_compose_calls_carry_our_variables_over_the_users(fake_docker, tmp_path, monkeypatch):
    binary, calls = fake_docker
    monkeypatch.setenv("HASHSERVER_BUFFER_DIR", "/the/users/own")  # would win over --env-file
    monkeypatch.setenv("COMPOSE_PROJECT_NAME", "someone-elses")
    monkeypatch.setenv("COMPOSE_PROFILES", "debug")
    compose = _Compose(context=str(tmp_path), compose_file_name=["compose.yaml"], env_file=[str(tmp_path / "e.env")],
                       docker_command_path=str(binary), wait=True, wait_timeout=7,
                       environment={"COMPOSE_PROJECT_NAME": "seamless-tcx-1", "HASHSERVER_BUFFER_DIR": "/tmp/x/buffers"})
    compose.start()
    compose.stop()
    up, down = calls()
    assert up["argv"] == ["compose", "-f", "compose.yaml", "--env-file", str(tmp_path / "e.env"), "up", "--wait", "--wait-timeout", "7"]
    assert down["argv"][-2:] == ["down", "--volumes"]
    for call in (up, down):
        assert call["env"]["COMPOSE_PROJECT_NAME"] == "seamless-tcx-1"
        assert call["env"]["HASHSERVER_BUFFER_DIR"] == "/tmp/x/buffers"
        assert "COMPOSE_PROFILES" not in call["env"]
        assert call["cwd"] == str(tmp_path)


class FakeCompose:
    """Stands in for DockerCompose: start fails as told; records what happened in order."""

    def __init__(self, events, failures):
        self.events, self.failures = events, failures
        self.wait_timeout = None

    def start(self):
        self.events.append("up")
        if self.failures:
            raise subprocess.CalledProcessError(1, ["docker", "compose", "up"], b"", self.failures.pop(0).encode())

    def stop(self):
        self.events.append("down")

    def get_containers(self, include_all=False):
        return []

    def get_logs(self, service):
        self.events.append(f"logs {service}")
        return f"{service}-1  | started\n{service}-1  | trouble\n", ""


def fake_stack(tmp_path, monkeypatch, failures):
    events = []
    stack = SeamlessStack(name="tcx-unit", directory=tmp_path, timeout=5, progress=events.append)

    def plan():
        events.append("plan")
        stack.compose = FakeCompose(events, failures)
        stack.backend = SimpleNamespace(deployment=FakeDeployment())

    monkeypatch.setattr(stack, "_plan", plan)
    monkeypatch.setattr(testing.SeamlessStack, "_remember_stacks_files", lambda self: None)
    return stack, events


def test_a_port_taken_meanwhile_means_plan_again(tmp_path, monkeypatch):
    stack, events = fake_stack(tmp_path, monkeypatch, ["Bind for 127.0.0.1:60123 failed: port is already allocated"])
    monkeypatch.setattr(testing, "health_gate", lambda backend, timeout, progress: 0.0)
    stack.start()
    assert [e for e in events if e in ("plan", "up", "down")] == ["plan", "up", "down", "plan", "up"]
    assert stack.environment() == {"SEAMLESS_DASK_SCHEDULER": "tcp://127.0.0.1:60001"}
    folder = stack.folder
    stack.stop()
    assert not folder.exists()


class FakeDeployment:
    buffer_dir = database_dir = "/nowhere"
    ports = {"scheduler": 60001}

    def connection(self):
        class C:
            @staticmethod
            def variables():
                return {"SEAMLESS_DASK_SCHEDULER": "tcp://127.0.0.1:60001"}

        return C()


def test_a_failed_start_reads_the_logs_before_removing_anything(tmp_path, monkeypatch):
    stack, events = fake_stack(tmp_path, monkeypatch, ["Container x  Waiting\napplication not healthy after 5s"])
    with pytest.raises(StackStartFailed) as caught:
        stack.start()
    message = str(caught.value)
    assert "docker compose up failed (exit 1): Container x  Waiting | application not healthy after 5s" in message
    assert "--- worker: last 40 log lines ---\n    worker-1  | started\n    worker-1  | trouble" in message
    order = [e for e in events if e == "down" or e.startswith("logs")]
    assert order == ["logs hashserver", "logs database", "logs scheduler", "logs worker", "down"]
    assert list(tmp_path.iterdir()) == [], "the temporary folder is gone"
    assert isinstance(caught.value.__cause__, subprocess.CalledProcessError)


def test_apply_sets_and_stop_restores_the_environment(tmp_path, monkeypatch):
    stack, _ = fake_stack(tmp_path, monkeypatch, [])
    monkeypatch.setattr(testing, "health_gate", lambda backend, timeout, progress: 0.0)
    monkeypatch.setenv("SEAMLESS_DASK_SCHEDULER", "tcp://elsewhere:1")
    with stack:
        stack.apply()
        assert os.environ["SEAMLESS_DASK_SCHEDULER"] == "tcp://127.0.0.1:60001"
        assert (Path(stack.folder) / "client.env").stat().st_mode & 0o077 == 0
    assert os.environ["SEAMLESS_DASK_SCHEDULER"] == "tcp://elsewhere:1"
    with pytest.raises(RuntimeError):
        stack.environment()


def test_a_service_that_dies_ends_the_wait_at_once(fake_docker, tmp_path, monkeypatch):
    """`compose up --wait` would wait for a crash-looping service until its timeout."""
    from seamless_stack.health import ServiceFailed

    binary, calls = fake_docker
    monkeypatch.setenv("FAKE_DOCKER_SLEEP", "60")
    checks = []

    def find_failure():
        checks.append(1)
        return ("database", "container x-database-1 is restarting") if len(checks) >= 2 else None

    compose = _Compose(context=str(tmp_path), docker_command_path=str(binary), wait=True, wait_timeout=60,
                       find_failure=find_failure)
    started = time.monotonic()
    with pytest.raises(ServiceFailed, match="database failed: container x-database-1 is restarting"):
        compose.start()
    assert time.monotonic() - started < 10 and len(checks) == 2
    assert calls()[0]["argv"][-3:] == ["--wait", "--wait-timeout", "60"]

"""Bad input: one clear line, a non-zero exit, nothing started or left over."""

from __future__ import annotations

import shutil
import socket
from contextlib import ExitStack

import pytest

from .conftest import project_containers


def assert_clean_failure(cli, name, result, *expected):
    assert result.returncode == 2, (result.returncode, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("seamless-stack: error:")]
    assert len(errors) == 1, result.stderr
    for text in expected:
        assert text in errors[0], errors[0]
    assert "Traceback" not in result.stderr
    assert project_containers(name) == [], "nothing left running"
    assert not (cli.home / ".seamless" / "stacks" / f"{name}.json").exists(), "no state left behind"
    assert not cli.env_file(name).exists(), "no environment output for a stack that is not up"


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--port-range", "abc"], ["invalid port range", "START-END"]),
        (["--port-range", "62010-62000"], ["is empty"]),
        (["--port-range", "100-200"], ["out of range"]),
        (["--port-range", "62000-62002"], ["too small", "widen --port-range"]),
        (["--scheduler-port", "70000"], ["out of range"]),
        (["--workers", "0"], ["--workers must be between 1 and 64"]),
        (["--bind", "not-an-ip"], ["is not an IP address"]),
        (["--bind", "192.0.2.1"], ["not an address of this machine"]),
        (["--name", "Bad Name!"], ["invalid stack name"]),
    ],
)
def test_invalid_options(cli, tmp_path, args, expected):
    name = "bad"
    result = cli.run("up", "local", "--name", name, "--buffer-dir", str(tmp_path / "b"), "--database-dir", str(tmp_path / "d"), *args)
    assert_clean_failure(cli, name, result, *expected)


def test_every_port_busy(cli, tmp_path):
    name = cli.new_name()
    with ExitStack() as stack:
        for port in range(62100, 62106):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", port))
            sock.listen()
        result = cli.up(name, "--port-range", "62100-62105", "--buffer-dir", str(tmp_path / "b"), "--database-dir", str(tmp_path / "d"))
    assert_clean_failure(cli, name, result, "no free port", "62100-62105")


def test_busy_fixed_scheduler_port(cli, tmp_path):
    name = cli.new_name()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 62200))
        sock.listen()
        result = cli.up(name, "--scheduler-port", "62200", "--buffer-dir", str(tmp_path / "b"), "--database-dir", str(tmp_path / "d"))
    assert_clean_failure(cli, name, result, "port 62200", "already in use")


def test_unwritable_storage_directory(cli, tmp_path):
    name = cli.new_name()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = cli.up(name, "--buffer-dir", str(blocker / "buffers"), "--database-dir", str(tmp_path / "d"))
    assert_clean_failure(cli, name, result, "buffer directory", "cannot be created")
    result = cli.up(name, "--buffer-dir", str(tmp_path / "b"), "--database-dir", str(blocker))
    assert_clean_failure(cli, name, result, "database directory", "is not a directory")


def test_docker_not_installed(cli, tmp_path):
    name = cli.new_name()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    env = cli.env(PATH=str(bin_dir))
    result = cli.run("up", "local", "--name", name, "--buffer-dir", str(tmp_path / "b"), "--database-dir", str(tmp_path / "d"), env=env)
    assert_clean_failure(cli, name, result, "docker command is not installed", "install-docker-debian.sh")


def test_docker_engine_not_running(cli, tmp_path):
    name = cli.new_name()
    env = cli.env(DOCKER_HOST=f"unix://{tmp_path}/no-such-docker.sock")
    result = cli.run("up", "local", "--name", name, "--buffer-dir", str(tmp_path / "b"), "--database-dir", str(tmp_path / "d"), env=env)
    assert_clean_failure(cli, name, result, "Docker engine does not answer", "start it")


def test_compose_v2_missing(cli, tmp_path):
    """The real docker CLI, on a PATH where its compose plugin cannot be found."""
    name = cli.new_name()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "docker"
    wrapper.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = compose ]; then echo "docker: \'compose\' is not a docker command." >&2; exit 1; fi\n'
        f'exec {shutil.which("docker")} "$@"\n'
    )
    wrapper.chmod(0o755)
    env = cli.env(PATH=f"{bin_dir}:/usr/bin:/bin")
    result = cli.run("up", "local", "--name", name, "--buffer-dir", str(tmp_path / "b"), "--database-dir", str(tmp_path / "d"), env=env)
    assert_clean_failure(cli, name, result, "Docker Compose v2", "missing")


@pytest.mark.parametrize("command", [["down"], ["status"], ["env"], ["logs"]])
def test_unknown_stack_name(cli, command):
    result = cli.run(*command, "--name", "nosuchstack")
    assert_clean_failure(cli, "nosuchstack", result, "no stack named 'nosuchstack'")


def test_second_up_converges_and_other_settings_are_refused(cli, tmp_path):
    name = cli.new_name()
    args = ("--buffer-dir", str(tmp_path / "b"), "--database-dir", str(tmp_path / "d"))
    assert cli.up(name, *args).returncode == 0
    before = cli.env_file(name).read_text()
    again = cli.up(name, *args)
    assert again.returncode == 0 and "already up and healthy" in again.stderr and again.stdout in before
    other = cli.up(name, "--threads", "2", "--workers", "2", *args)  # (--workers alone would scale it live)
    assert other.returncode == 2 and "other settings (threads 3 -> 2; workers 1 -> 2)" in other.stderr
    assert cli.run("status", "--name", name).returncode == 0, "the first stack is untouched"
    assert cli.env_file(name).read_text() == before


def test_readiness_failure_rolls_back(cli, tmp_path):
    """A stack that is not ready in time: the logs are shown and everything is removed."""
    name = cli.new_name()
    result = cli.up(name, "--timeout", "1", "--buffer-dir", str(tmp_path / "b"), "--database-dir", str(tmp_path / "d"))
    assert_clean_failure(cli, name, result, "not ready after 1s")
    assert "last log lines of" in result.stderr and "rolling back" in result.stderr


def test_status_of_a_known_stack_with_the_engine_gone(cli, tmp_path):
    name = cli.new_name()
    assert cli.up(name, "--buffer-dir", str(tmp_path / "b"), "--database-dir", str(tmp_path / "d")).returncode == 0
    result = cli.run("status", "--name", name, env=cli.env(DOCKER_HOST=f"unix://{tmp_path}/no-such-docker.sock"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "cannot list the containers of stack" in result.stderr and "Docker engine" in result.stderr

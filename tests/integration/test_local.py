"""`up local` against the real Docker engine, proven by a real Seamless client."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from seamless_stack.layout import SERVICE_ACCOUNT

from .conftest import ROOT, project_containers, service_hostnames


def sqlite_rows(db_dir: Path, table: str) -> list[tuple]:
    with sqlite3.connect(db_dir / "seamless.db") as db:
        return db.execute(f"select * from {table}").fetchall()


def buffer_path(buffer_dir: Path, data: bytes) -> Path:
    checksum = hashlib.sha256(data).hexdigest()
    return buffer_dir / checksum[:2] / checksum


@pytest.fixture
def dirs(tmp_path):
    return tmp_path / "buffers", tmp_path / "database"


def test_client_computes_on_workers_and_results_persist(cli, client, dirs):
    buffers, database = dirs
    name = cli.new_name()
    up = cli.up(name, "--workers", "2", "--threads", "2", "--buffer-dir", str(buffers), "--database-dir", str(database))
    assert up.returncode == 0, up.stderr
    env_file = cli.env_file(name)
    assert env_file.is_file(), "the environment output is written once the stack is ready"
    assert up.stdout == env_file.read_text().split("\n", 1)[1], "up prints what it writes"
    workers = service_hostnames(name, "worker")
    assert len(workers) == 2

    # 1. seamless-run: a bash transformation, computed in a worker container.
    marker = uuid.uuid4().hex
    run = client.run(env_file, "seamless-run", f"echo {marker}; expr 6 \\* 7; hostname")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.split()
    assert lines[:2] == [marker, "42"]
    assert lines[2] in workers and lines[2] != socket.gethostname()
    result = buffer_path(buffers, run.stdout.encode())
    assert result.is_file(), f"result buffer {result} is in HASHSERVER_BUFFER_DIR under its SHA-256"
    owner = pwd.getpwuid(result.stat().st_uid).pw_name
    assert owner == (SERVICE_ACCOUNT if os.getuid() == 0 else pwd.getpwuid(os.getuid()).pw_name), \
        "containers write as the invoking user (root: the named system account, never a bare number)"
    assert any(row[1] == result.name for row in sqlite_rows(database, "transformation")), "the database has it"

    # 2. A Python @direct transformation, computed in a worker container.
    direct = client.python(env_file, "direct.py", "3", "13")
    assert direct.returncode == 0, direct.stderr
    answer = json.loads(direct.stdout.strip().splitlines()[-1])
    assert answer["value"] == 3**13 and answer["host"] in workers
    transformations = sqlite_rows(database, "transformation")

    # 3. down, then up again: the same transformation comes from the database, not a worker.
    assert cli.run("down", "--name", name).returncode == 0
    assert project_containers(name) == [] and not env_file.exists()
    assert result.is_file()
    assert cli.up(name, "--workers", "2", "--threads", "2", "--buffer-dir", str(buffers), "--database-dir", str(database)).returncode == 0
    new_workers = service_hostnames(name, "worker")
    assert new_workers.isdisjoint(workers)
    again = json.loads(client.python(cli.env_file(name), "direct.py", "3", "13").stdout.strip().splitlines()[-1])
    assert again == answer, "answered from the database: the old worker's hostname, no recomputation"
    assert sqlite_rows(database, "transformation") == transformations


def test_two_stacks_side_by_side(cli, client, tmp_path):
    first, second = cli.new_name(), cli.new_name()
    for name in (first, second):
        result = cli.up(name, "--buffer-dir", str(tmp_path / name / "b"), "--database-dir", str(tmp_path / name / "d"))
        assert result.returncode == 0, result.stderr
    ports = [json.loads(cli.run("env", "--name", n, "--format", "json").stdout) for n in (first, second)]
    assert ports[0]["DASK_SCHEDULER_ADDRESS"] != ports[1]["DASK_SCHEDULER_ADDRESS"]
    for name in (first, second):
        out = client.run(cli.env_file(name), "seamless-run", f"echo {name}; hostname")
        assert out.returncode == 0 and out.stdout.split()[1] in service_hostnames(name, "worker")
    assert cli.run("down", "--name", first).returncode == 0
    status = cli.run("status", "--name", second)
    assert status.returncode == 0 and "2/1" not in status.stdout and "1/1 workers ready" in status.stdout


def test_env_formats_carry_the_same_values(cli, tmp_path):
    name = cli.new_name()
    assert cli.up(name, "--buffer-dir", str(tmp_path / "b"), "--database-dir", str(tmp_path / "d")).returncode == 0
    as_json = json.loads(cli.run("env", "--name", name, "--format", "json").stdout)
    # docker compose itself parses the dotenv form: a real dotenv reader.
    dotenv = tmp_path / "vars.env"
    dotenv.write_text(cli.run("env", "--name", name, "--format", "dotenv").stdout)
    compose = tmp_path / "echo.yaml"
    compose.write_text("services:\n  x:\n    image: scratch\n    environment:\n" + "".join(f"      {k}: ${{{k}}}\n" for k in as_json))
    config = subprocess.run(["docker", "compose", "-f", str(compose), "--env-file", str(dotenv), "config", "--format", "json"],
                            capture_output=True, text=True, check=True,  # (the process' own values would win)
                            env={k: v for k, v in os.environ.items() if k not in as_json})
    assert json.loads(config.stdout)["services"]["x"]["environment"] == as_json
    remote = json.loads(as_json["SEAMLESS_REMOTE_CLIENTS"])
    for entry in remote["buffer"] + remote["database"]:
        assert entry["url"] == entry["remote_url"], "clients connect to remote_url: both must be client-reachable"


def test_environment_variables_configure_up(cli, client, tmp_path):
    name = cli.new_name()
    out_file = tmp_path / "my-env.sh"
    env = cli.env(RANDOM_PORT_START="61500", RANDOM_PORT_END="61520", HASHSERVER_BUFFER_DIR=str(tmp_path / "hb"),
                  DATABASE_DIR=str(tmp_path / "db"), ENVIRONMENT_OUTPUT_FILE=str(out_file))
    result = cli.up(name, "--scheduler-port", "61600", env=env)
    assert result.returncode == 0, result.stderr
    values = json.loads(cli.run("env", "--name", name, "--format", "json").stdout)
    assert values["DASK_SCHEDULER_ADDRESS"] == "tls://127.0.0.1:61600"
    assert 61500 <= int(values["SEAMLESS_DATABASE_PORT"]) <= 61520
    assert out_file.is_file() and (tmp_path / "hb").is_dir() and (tmp_path / "db" / "seamless.db").is_file()
    assert client.run(out_file, "seamless-run", "echo from-env-file").stdout.strip() == "from-env-file"


def test_ports_are_published_on_loopback_only(docker_engine):
    """Needs only "a running stack": the throwaway one from seamless_stack.testing."""
    from seamless_stack.testing import SeamlessStack

    with SeamlessStack(workers=1, threads=1) as stack:
        out = subprocess.run(["docker", "ps", "--filter", f"label=com.docker.compose.project={stack.project}", "--format", "{{.Ports}}"],
                             capture_output=True, text=True, check=True).stdout
    published = [p for p in out.replace(",", " ").split() if "->" in p]
    assert len(published) == 4 and all(p.startswith("127.0.0.1:") for p in published)


def test_worker_with_user_requirements(cli, client, tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("six==1.16.0\n")
    name = cli.new_name()
    result = cli.up(name, "--worker-requirements", str(requirements),
                    "--buffer-dir", str(tmp_path / "b"), "--database-dir", str(tmp_path / "d"))
    assert result.returncode == 0, result.stderr
    out = client.run(cli.env_file(name), "seamless-run", "-g1", "python3 -c 'import six; print(six.__version__)'")
    assert out.returncode == 0 and out.stdout.strip() == "1.16.0", out.stderr


@pytest.fixture
def unprivileged(cli):
    """A real non-root user in the docker group, with a private folder (CI runs as root)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a test user (CI runs as root)")
    user = "seamless-stack-test"
    if subprocess.run(["id", user], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", user], check=True)
    subprocess.run(["usermod", "-aG", "docker", user], check=True)
    work = Path(tempfile.mkdtemp(prefix="seamless-stack-user-", dir="/tmp"))
    shutil.chown(work, user)
    uid = int(subprocess.run(["id", "-u", user], capture_output=True, text=True, check=True).stdout)
    # The user cannot reach root's Python; the system's is theirs too. Installing the
    # project as a wheel here also proves the wheel carries images/ and compose/.
    venv = Path(tempfile.mkdtemp(prefix="seamless-stack-user-venv-", dir="/tmp"))
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", str(ROOT)], check=True, capture_output=True)
    venv.chmod(0o755)

    def run(*args: str, **variables: str) -> subprocess.CompletedProcess:
        path = f"{venv}/bin:{os.environ['PATH']}"
        extra = [f"{key}={value}" for key, value in variables.items()]
        command = ["runuser", "-u", user, "--", "env", f"HOME={work}", f"PATH={path}", *extra, "seamless-stack", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=work)

    yield uid, work, run
    for name in cli.names:
        run("down", "--name", name)
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(venv, ignore_errors=True)


def test_containers_write_files_as_the_invoking_user(cli, client, unprivileged):
    uid, work, run = unprivileged
    name = cli.new_name()
    read_only = work / "read-only"
    read_only.mkdir()
    shutil.chown(read_only, uid)
    read_only.chmod(0o555)
    refused = run("up", "local", "--name", name, "--buffer-dir", str(read_only), "--database-dir", str(work / "d"))
    assert refused.returncode == 2 and "is not writable" in refused.stderr and project_containers(name) == []
    refused = run("up", "local", "--name", name, "--buffer-dir", str(work / "b"), "--database-dir", str(work / "d"),
                  ENVIRONMENT_OUTPUT_FILE=str(read_only / "out.env"))
    assert refused.returncode == 2 and "environment output file" in refused.stderr and project_containers(name) == []
    assert not (work / ".seamless" / "stacks" / f"{name}.json").exists()

    up = run("up", "local", "--name", name, "--buffer-dir", "buffers-rel", "--database-dir", str(work / "db"))
    assert up.returncode == 0, up.stderr
    env_file = work / ".seamless" / "stacks" / f"{name}.env"
    marker = uuid.uuid4().hex
    out = client.run(env_file, "seamless-run", f"echo {marker}")
    assert out.returncode == 0, out.stderr
    result = buffer_path(work / "buffers-rel", out.stdout.encode())
    assert result.is_file(), "a relative --buffer-dir is resolved against the working directory"
    for path in (result, work / "db" / "seamless.db"):
        assert path.stat().st_uid == uid, f"{path} belongs to the user who ran up"
    assert run("down", "--name", name).returncode == 0

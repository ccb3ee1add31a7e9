"""Operating a stack like an orchestrator, on the real engine: faults surface in `status`,
`up` converges without losing ports or data, broken records and lost records never wedge a
name, and bad input is one line with nothing left behind."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time

import pytest
from seamless_stack.api import SCHEDULER_RESTARTED

from .conftest import (CLI, STALL, assert_a_wedged_worker_is_replaced, container, project_containers, rest_of,
                       service_hostnames, wait_until)
from .test_errors import assert_clean_failure
from .test_security import assert_no_secret_in_logs, read_record


def storage(tmp_path, database: str = "d"):
    """A shared buffer store; a database of its own for every stack that runs beside another."""
    return "--buffer-dir", str(tmp_path / "b"), "--database-dir", str(tmp_path / database)


def started_at(cid: str) -> str:
    return subprocess.run(["docker", "inspect", "-f", "{{.State.StartedAt}}", cid], capture_output=True, text=True, check=True).stdout


def next_line(client: subprocess.Popen) -> dict:
    """The next line a client script prints; its error output if it ended instead."""
    line = client.stdout.readline()
    if not line:
        raise AssertionError(f"the client ended ({client.wait()}): {client.stderr.read()[-3000:]}")
    return json.loads(line)


def kill_and_wait_healed(cli, name: str, service: str) -> float:
    """`docker kill` of a service (Docker's restart policy leaves a container killed from
    outside alone); seconds until it runs again and the stack is healthy, with nobody acting."""
    cid = container(name, service)
    before = started_at(cid)
    subprocess.run(["docker", "kill", cid], check=True, capture_output=True)
    killed = time.monotonic()
    wait_until(lambda: started_at(cid) != before and cli.run("status", "--name", name).returncode == 0, 30,
               f"{service} healthy again by itself", interval=0.5)
    return round(time.monotonic() - killed, 1)


def test_killed_services_come_back_by_themselves_same_ports_same_data(cli, client, tmp_path):
    """Each service killed in turn is healthy again within 30 s with nobody acting. The
    database, a worker and the hashserver killed while a client computes: its run completes,
    one retry per transformation at most. The scheduler killed while a client computes: the
    client may not follow it (docs/upstream.md), status says so, what it got is right, and a new
    client computes. Nothing watches the supervisor itself: `up` starts it again."""
    name = cli.new_name()
    assert cli.up(name, *storage(tmp_path)).returncode == 0
    env_before = cli.env_file(name).read_text()
    first = client.run(cli.env_file(name), "seamless-run", "echo kill-test; hostname")
    assert first.returncode == 0, first.stderr
    count = 60
    steady = client.start(cli.env_file(name), "steady.py", str(count), "0.5", "1")
    healed, said = {}, []
    try:
        for service in ("database", "worker", "hashserver"):
            said.append(next_line(steady))
            while "value" not in said[-1]:  # a result since the last kill, not only a retry
                said.append(next_line(steady))
            healed[service] = kill_and_wait_healed(cli, name, service)
        out, err = rest_of(steady, 300)
    finally:
        steady.kill()
    said += [json.loads(line) for line in out.splitlines()]
    values = [line["value"] for line in said if "value" in line]
    assert steady.returncode == 0 and values == [i * i for i in range(count)], err[-3000:]
    print("client retries:", [line for line in said if "retry" in line])

    follower = client.start(cli.env_file(name), "steady.py", "20", "0.5", "1")
    try:
        assert "value" in next_line(follower)
        healed["scheduler"] = kill_and_wait_healed(cli, name, "scheduler")
        out, err = rest_of(follower, 60)  # killed if it hangs: what it said until then
    finally:
        follower.kill()
    got = [json.loads(line) for line in out.splitlines()]
    assert all(line["value"] == line["i"] ** 2 for line in got if "value" in line), got
    print("a client computing while the scheduler was killed followed it:", follower.returncode == 0,
          "ValueError: IOStream is not idle" in err)
    print("healthy again after docker kill, s:", healed)
    status = cli.run("status", "--name", name)
    for service in healed:
        assert f"the supervisor started {service} again 1 time(s)" in status.stdout, status.stdout
    assert "the scheduler started again at" in status.stdout and SCHEDULER_RESTARTED in status.stdout
    second = client.run(cli.env_file(name), "seamless-run", "echo kill-test; hostname")
    assert second.stdout == first.stdout, "the result came back from the database (the first worker's hostname)"
    # the failures the kills caused carry the services' URLs (the secret inside): no log keeps it
    assert_no_secret_in_logs(cli, client, name, read_record(cli, name))

    subprocess.run(["docker", "kill", container(name, "supervisor")], check=True, capture_output=True)
    down = cli.run("status", "--name", name)
    assert down.returncode == 1 and "supervisor exited" in down.stderr, down.stdout + down.stderr
    again = cli.up(name, *storage(tmp_path))
    assert again.returncode == 0 and "started again: supervisor" in again.stderr, again.stderr
    assert cli.run("status", "--name", name).returncode == 0
    assert cli.env_file(name).read_text() == env_before, "same ports"


def test_a_wedged_worker_is_replaced_with_no_manual_step(cli, client, tmp_path):
    """The worker's Seamless children stopped for 3 s (a loaded node, swap, a debugger) while a
    client computes: every transformation completes, and status is healthy again, with no
    `restart` by anyone."""
    name = cli.new_name()
    assert cli.up(name, *storage(tmp_path), "--threads", "2").returncode == 0

    def stall() -> list[str]:  # in the worker container, as its own user
        return subprocess.run(["docker", "exec", container(name, "worker"), "sh", "-c", STALL],
                              capture_output=True, text=True, check=True).stdout.split()

    stalled = assert_a_wedged_worker_is_replaced(cli, client, name, stall, count=40, timeout=120)
    assert len(stalled) == 2, stalled


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs as the buffer directory")
def test_a_full_buffer_directory_is_an_error_not_a_hang_and_serves_again_once_space_is_freed(cli, client, tmp_path):
    """A small file system as the buffer directory, filled by a client: its transformations
    end in errors, not in a hang (the hashserver kept an unkept upload's promise for 10 minutes
    and every read of that buffer waited); `status` warns while space is low and fails, naming
    the free space, once it is full; grown, the stack serves again with no restart, and no
    partial file stays; a result recorded without its buffer is forgotten when the database
    starts again."""
    buffers = tmp_path / "b"
    buffers.mkdir(mode=0o700)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=320m,mode=0700", "tmpfs", str(buffers)], check=True)
    name = cli.new_name()
    try:
        assert cli.up(name, "--buffer-dir", str(buffers), "--database-dir", str(tmp_path / "d")).returncode == 0
        low = cli.run("status", "--name", name)
        assert low.returncode == 0 and f"hashserver storage: space is low: {buffers} has" in low.stdout, low.stdout
        filled = client.python(cli.env_file(name), "big.py", "18", "12")  # 216 MB; the hashserver keeps 128 MB free
        lines = [json.loads(line) for line in filled.stdout.splitlines()]
        assert filled.returncode == 0 and len(lines) == 18, filled.stderr[-3000:]
        assert any("bytes" in line for line in lines) and any("error" in line for line in lines), lines
        print("a client filling the disk:", lines)
        full = cli.run("status", "--name", name)
        assert full.returncode == 1 and f"{buffers} is full (" in full.stderr and "refuses writes that would leave less than 128 MB" in full.stderr
        subprocess.run(["mount", "-o", "remount,size=640m", str(buffers)], check=True)
        assert cli.run("status", "--name", name).returncode == 0, "space freed: healthy, with no restart"
        again = client.python(cli.env_file(name), "big.py", "2", "12")
        assert [("bytes" in json.loads(line)) for line in again.stdout.splitlines()] == [True, True], again.stdout + again.stderr[-3000:]
        stored = {path.name for path in buffers.rglob("*") if path.is_file()}
        assert not [name for name in stored if re.fullmatch(r"[0-9a-f]{64}-\w{8}", name)], "partial files left"
        # A refused result is still recorded (by the unmodified client, which computes it itself
        # after the miss and records it while its upload runs): the database forgets it at start.
        assert cli.run("restart", "database", "--name", name).returncode == 0
        forgot = cli.run("logs", "database", "--name", name).stdout
        assert "forgot" in forgot and "result(s) recorded without their buffer" in forgot, forgot[-2000:]
        with sqlite3.connect(tmp_path / "d" / "seamless.db") as db:
            results = {row[0] for row in db.execute("SELECT result FROM \"transformation\"")}
        computed = sum("bytes" in line for line in lines) + 2
        assert results <= stored and len(results) >= computed, f"recorded without their buffer: {sorted(results - stored)}"
    finally:
        cli.run("down", "--name", name)
        subprocess.run(["umount", str(buffers)], capture_output=True)


def test_a_stack_scales_live_while_clients_compute(cli, client, tmp_path):
    """1 -> 4 -> 2 -> 1 workers (the last step by `up` with only --workers changed) while four
    clients compute 200 transformations, no retry allowed: every result right, none failed, the
    added workers computed some, `status` shows each count, no service restarted."""
    name, clients, each = cli.new_name(), 4, 50
    assert cli.up(name, *storage(tmp_path)).returncode == 0
    services = {service: started_at(container(name, service)) for service in ("hashserver", "database", "scheduler")}
    running = [client.start(cli.env_file(name), "steady.py", str(each), "0.2") for _ in range(clients)]
    said = [[] for _ in running]
    try:
        for workers in (4, 2, 1):
            for lines, steady in zip(said, running):  # every client computing between the steps
                lines += [next_line(steady) for _ in range(3)]
            if workers == 1:
                scaled = cli.up(name, *storage(tmp_path), "--workers", "1")
                assert "scaled live (workers 2 -> 1)" in scaled.stderr, scaled.stderr
            else:
                scaled = cli.run("scale", "--name", name, "--workers", str(workers))
            assert scaled.returncode == 0, scaled.stderr
            status = cli.run("status", "--name", name)
            assert status.returncode == 0 and f"workers: {workers}/{workers} workers ready; {workers} worker(s)" in status.stdout, \
                status.stdout + status.stderr
            assert len(service_hostnames(name, "worker")) == workers
        for lines, steady in zip(said, running):
            out, err = rest_of(steady, 300)
            lines += [json.loads(line) for line in out.splitlines()]
            assert steady.returncode == 0 and [line["value"] for line in lines] == [i * i for i in range(each)], err[-3000:]
    finally:
        for steady in running:
            steady.kill()
    hosts = [line["host"] for lines in said for line in lines]
    print("transformations per worker:", {host: hosts.count(host) for host in set(hosts)})
    assert len(set(hosts)) >= 2, "the added workers computed too"
    assert {service: started_at(container(name, service)) for service in services} == services, "no service restarted"
    assert json.loads((cli.home / ".seamless" / "stacks" / f"{name}.json").read_text())["workers"] == 1


def test_restart_one_service(cli, client, tmp_path):
    name = cli.new_name()
    assert cli.up(name, *storage(tmp_path)).returncode == 0
    before = container(name, "database")
    result = cli.run("restart", "database", "--name", name)
    assert result.returncode == 0, result.stderr
    assert container(name, "database") == before and cli.run("status", "--name", name).returncode == 0
    # a client computing while the scheduler restarts follows it: its port is held from the
    # process' first moment to its last, so no reconnect meets a closed port behind Docker's proxy
    steady = client.start(cli.env_file(name), "steady.py", "20", "0.5", "1")
    try:
        said = [next_line(steady)]
        scheduler = cli.run("restart", "scheduler", "--name", name)
        out, err = rest_of(steady, 180)
    finally:
        steady.kill()
    assert scheduler.returncode == 0 and SCHEDULER_RESTARTED in scheduler.stderr, scheduler.stderr
    said += [json.loads(line) for line in out.splitlines()]
    assert steady.returncode == 0 and [line["value"] for line in said if "value" in line] == [i * i for i in range(20)], \
        err[-3000:]
    assert len([line for line in said if "retry" in line]) <= 1, said
    # `doctor --name` proves where the client computes: on a worker; with the scheduler
    # gone, the unmodified client computes on this machine without a word, and doctor says so
    doctor = ("doctor", "--python", str(client.venv / "bin" / "python"), "--name", name)
    on_stack = cli.run(*doctor)
    assert on_stack.returncode == 0 and f"ok: a transformation computed on stack {name!r}" in on_stack.stdout, \
        on_stack.stdout + on_stack.stderr
    # the supervisor stopped too, or it starts the scheduler again within a second or two
    subprocess.run(["docker", "stop", container(name, "supervisor"), container(name, "scheduler")], check=True, capture_output=True)
    local = cli.run(*doctor)
    assert local.returncode == 1 and "LOCAL: the client computed on this machine" in local.stdout, local.stdout + local.stderr
    assert cli.up(name, *storage(tmp_path)).returncode == 0
    codes = {}  # what `down` does to each: SIGTERM; a clean shutdown is status 0 (the hashserver's was 143)
    for service in ("supervisor", "worker", "scheduler", "hashserver", "database"):  # the supervisor first, as `down` does
        subprocess.run(["docker", "stop", container(name, service)], check=True, capture_output=True)
        codes[service] = subprocess.run(["docker", "inspect", "-f", "{{.State.ExitCode}}", container(name, service)],
                                        capture_output=True, text=True, check=True).stdout.strip()
    assert codes == dict.fromkeys(codes, "0"), codes


def test_a_deleted_or_replaced_storage_folder_makes_status_unhealthy_and_up_repairs_it(cli, client, tmp_path):
    name = cli.new_name()
    assert cli.up(name, *storage(tmp_path)).returncode == 0
    shutil.rmtree(tmp_path / "b")
    result = cli.run("status", "--name", name)
    assert result.returncode == 1 and f"{tmp_path / 'b'} is gone" in result.stdout + result.stderr
    # `up` used to say "already up and healthy" here; it makes the folder again and recreates
    # the hashserver (whose container still held the deleted folder)
    repaired = cli.up(name, *storage(tmp_path))
    assert repaired.returncode == 0 and "making it again, recreating hashserver" in repaired.stderr, repaired.stderr
    assert (tmp_path / "b").stat().st_mode & 0o777 == 0o700
    assert cli.run("status", "--name", name).returncode == 0
    run = client.run(cli.env_file(name), "seamless-run", "echo stored-again")
    assert run.returncode == 0 and run.stdout.strip() == "stored-again", run.stderr
    assert any(p.is_file() for p in (tmp_path / "b").rglob("*")), "the result buffer landed in the new folder"
    # Deleted and made again by hand: the path exists and is writable, but the running
    # database still writes to the deleted folder. status looks through the container.
    shutil.rmtree(tmp_path / "d")
    (tmp_path / "d").mkdir(mode=0o700)
    replaced = cli.run("status", "--name", name)
    assert replaced.returncode == 1 and f"{tmp_path / 'd'} was replaced while the database ran" in replaced.stderr, \
        replaced.stdout + replaced.stderr
    again = cli.up(name, *storage(tmp_path))
    assert again.returncode == 0 and "recreating database" in again.stderr, again.stderr
    assert cli.run("status", "--name", name).returncode == 0
    run = client.run(cli.env_file(name), "seamless-run", "echo recorded-again")
    assert run.returncode == 0 and run.stdout.strip() == "recorded-again", run.stderr
    assert (tmp_path / "d" / "seamless.db").is_file(), "the database writes to the new folder"


CORRUPT_RECORDS = ["{not json", "{}", '{"name": 3}', "[1, 2]", ""]


def test_a_corrupt_record_is_one_line_and_affects_no_other_stack(cli, tmp_path):
    good = cli.new_name()
    assert cli.up(good, *storage(tmp_path)).returncode == 0
    records = cli.home / ".seamless" / "stacks"
    cli.names.append("broken")
    for content in CORRUPT_RECORDS:
        (records / "broken.json").write_text(content)
        for command in (["env"], ["status"], ["logs"]):
            result = cli.run(*command, "--name", "broken")
            assert result.returncode == 2 and "Traceback" not in result.stderr, (content, command)
            assert result.stderr.strip().startswith("seamless-stack: error: the state record of stack 'broken'"), content
            assert "seamless-stack down --name broken" in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert cli.run("status", "--name", good).returncode == 0, "another stack is not affected"
    other = cli.new_name()
    assert cli.up(other, *storage(tmp_path, "d-other")).returncode == 0, "up of another stack is not affected"
    assert cli.run("down", "--name", "broken").returncode == 0 and not (records / "broken.json").exists()


def test_a_lost_record_is_never_duplicated(cli, tmp_path):
    name = cli.new_name()
    assert cli.up(name, *storage(tmp_path)).returncode == 0
    running = sorted(project_containers(name))
    (cli.home / ".seamless" / "stacks" / f"{name}.json").unlink()
    result = cli.up(name, *storage(tmp_path))
    assert result.returncode == 2 and "has no state record but" in result.stderr
    assert f"seamless-stack down --name {name}" in result.stderr
    assert sorted(project_containers(name)) == running, "nothing new was created"
    assert cli.run("down", "--name", name).returncode == 0
    assert project_containers(name) == []
    assert cli.up(name, *storage(tmp_path)).returncode == 0, "the name is usable again"


@pytest.mark.parametrize("where", ["below-a-file", "a-directory"])
def test_an_unwritable_output_file_is_refused_before_anything_starts(cli, tmp_path, where):
    """(A folder the user cannot write: test_local's unprivileged-user test, since root writes anywhere.)"""
    name = cli.new_name()
    (tmp_path / "a-file").write_text("")
    target = {"below-a-file": tmp_path / "a-file" / "out.env", "a-directory": tmp_path}[where]
    result = cli.run("up", "local", "--name", name, *storage(tmp_path), env=cli.env(ENVIRONMENT_OUTPUT_FILE=str(target)))
    assert_clean_failure(cli, name, result, "environment output file")


# 40+ distinct bad inputs through the real CLI: one line each, exit 2, nothing left behind.
BAD_INPUTS = [
    [], ["up"], ["up", "nowhere"], ["frobnicate"], ["up", "local", "--nonsense"],
    ["up", "local", "--workers", "many"], ["up", "local", "--workers", "0"], ["up", "local", "--workers", "100000"],
    ["up", "local", "--threads", "0"], ["up", "local", "--threads", "100000"], ["up", "local", "--timeout", "0"],
    ["up", "local", "--timeout", "x"], ["up", "local", "--scheduler-port", "0"], ["up", "local", "--scheduler-port", "70000"],
    ["up", "local", "--scheduler-port", "80"], ["up", "local", "--port-range", "abc"], ["up", "local", "--port-range", "62010-62000"],
    ["up", "local", "--port-range", "100-200"], ["up", "local", "--port-range", "62000-62002"], ["up", "local", "--bind", "::1"],
    ["up", "local", "--bind", "not-an-ip"], ["up", "local", "--bind", "192.0.2.1"], ["up", "local", "--name", "Bad Name!"],
    ["up", "local", "--name", ""], ["up", "local", "--name", "x" * 41], ["up", "local", "--format", "xml"],
    ["up", "remote"], ["up", "remote", "--host", "a@b@c"], ["up", "remote", "--host", "h:99999"],
    ["up", "remote", "--host", "h", "--ssh", "--bind", "0.0.0.0"], ["up", "slurm", "--insecure"],
    ["up", "local", "--insecure", "--bind", "0.0.0.0"], ["up", "local", "--insecure", "--rotate"],
    ["up", "slurm", "--max-jobs", "100000"], ["up", "slurm", "--max-jobs", "0"], ["up", "slurm", "--min-jobs", "5", "--max-jobs", "2"],
    ["up", "slurm", "--local-workers", "-2"], ["up", "slurm", "--cpus", "0"], ["up", "slurm", "--time", "soon"],
    ["up", "slurm", "--memory", "lots"], ["up", "slurm", "--partition", "a b"], ["up", "slurm", "--job-extra", "--x\n#SBATCH --y"],
    ["up", "slurm", "--job-extra", "gres=gpu"], ["up", "slurm", "--worker-tmpdir", "/tmp\nrm -rf ~"],
    ["logs", "--tail", "-3"], ["logs", "nosuchservice"], ["restart", "nosuch"], ["env", "--format", "xml"],
    ["down", "--name", "nosuchstack"], ["status", "--name", "nosuchstack"], ["images", "frob"],
]


def test_cli_robustness(cli, tmp_path):
    assert len({tuple(args) for args in BAD_INPUTS}) >= 40
    before = set(subprocess.run(["docker", "ps", "-aq"], capture_output=True, text=True).stdout.split())
    for args in BAD_INPUTS:
        if args[:2] in (["up", "local"], ["up", "slurm"], ["up", "remote"]) and "--name" not in args:
            args = [*args, "--name", "robust", *storage(tmp_path)]
        result = cli.run(*args, timeout=60)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (args, result.returncode, result.stderr)
        assert len(lines) == 1 and lines[0].startswith("seamless-stack: error: "), (args, result.stderr)
        assert "Traceback" not in result.stderr and result.stdout == "", args
    stacks = cli.home / ".seamless" / "stacks"
    assert not stacks.exists() or list(stacks.iterdir()) == [], "no state, environment or Compose file left"
    assert set(subprocess.run(["docker", "ps", "-aq"], capture_output=True, text=True).stdout.split()) <= before
    networks = subprocess.run(["docker", "network", "ls", "--filter", "label=com.docker.compose.project=seamless-robust", "-q"],
                              capture_output=True, text=True).stdout.split()
    assert networks == []


# -- one operation per stack; signals ------------------------------------------------------------
def start_up(cli, name: str, *args: str, ignore_sigint: bool = False) -> subprocess.Popen:
    """`up local` in the background, as a script's `&` job starts it (SIGINT ignored, if asked)."""
    return subprocess.Popen([str(CLI), "up", "local", "--name", name, *args], env=cli.env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None)


def read_until(process: subprocess.Popen, text: str, said: list[str]) -> None:
    """Read the process's stderr line by line until a line holds `text` (the process still running)."""
    while True:
        line = process.stderr.readline()
        assert line, f"ended before saying {text!r}: {''.join(said)}"
        said.append(line)
        if text in line:
            return


def test_two_ups_of_one_name_at_once_give_one_stack_and_one_clear_line(cli, tmp_path):
    """Two `up`s of one name used to race in credentials and Compose names and leave no stack."""
    name = cli.new_name()
    first, said = start_up(cli, name, *storage(tmp_path)), []
    read_until(first, "starting stack", said)
    second = cli.up(name, *storage(tmp_path))
    errors = [line for line in second.stderr.splitlines() if line.startswith("seamless-stack: error:")]
    assert second.returncode == 2 and len(errors) == 1 and "Traceback" not in second.stderr, second.stderr
    assert f"another `up` of stack {name!r} is running (pid {first.pid})" in errors[0], errors[0]
    _, rest = first.communicate(timeout=600)
    assert first.returncode == 0, "".join(said) + rest
    assert cli.run("status", "--name", name).returncode == 0
    assert cli.run("down", "--name", name).returncode == 0
    assert not (cli.home / ".seamless" / "stacks" / f"{name}.lock").exists(), "no lock left behind"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_up_rolls_back_like_ctrl_c(cli, tmp_path, sig):
    """SIGTERM (a scheduler's kill, systemd) and SIGINT to an `up` started with SIGINT ignored
    (a script's `&` job): both roll back, say so, and leave nothing."""
    name = cli.new_name()
    up, said = start_up(cli, name, *storage(tmp_path), ignore_sigint=sig == signal.SIGINT), []
    read_until(up, "starting stack", said)
    up.send_signal(sig)
    _, rest = up.communicate(timeout=120)
    said.append(rest)
    assert up.returncode == 128 + sig, "".join(said)
    assert "rolling back" in rest and f"seamless-stack: interrupted ({signal.Signals(sig).name})" in rest, rest
    assert project_containers(name) == [], "nothing left running"
    assert not (cli.home / ".seamless" / "stacks" / f"{name}.json").exists(), "no record of a stack that is not there"


def test_a_lost_credentials_folder_is_one_line_naming_it_and_rotate_repairs_it(cli, client, tmp_path):
    """Before: `No such file or directory (no file)` from status and up, nothing to go on."""
    name = cli.new_name()
    assert cli.up(name, *storage(tmp_path)).returncode == 0
    folder = cli.home / ".seamless" / "stacks" / f"{name}.tls"
    shutil.rmtree(folder)
    for args in (["status", "--name", name], ["up", "local", "--name", name, *storage(tmp_path)]):
        result = cli.run(*args)
        errors = [line for line in result.stderr.splitlines() if line.startswith("seamless-stack: error:")]
        assert result.returncode == 2 and len(errors) == 1, result.stderr
        assert f"the stack's credentials in {folder} cannot be read" in errors[0] and "up --rotate" in errors[0], errors[0]
    assert cli.run("down", "--name", name).returncode == 0
    assert cli.up(name, "--rotate", *storage(tmp_path)).returncode == 0
    run = client.run(cli.env_file(name), "seamless-run", "echo repaired")
    assert run.returncode == 0 and run.stdout.strip() == "repaired", run.stderr

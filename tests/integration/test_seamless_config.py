"""Seamless projects use a stack through Seamless' own configuration, proven by a real client.

The client is the venv of scripts/client-venv.sh (nothing of seamless-stack inside). It runs
an unmodified project folder (seamless.yaml, seamless.profile.yaml, a script that calls
seamless.config.init()) with the same HOME as the CLI, so it sees the cluster file and the
launcher client files that `connect` wrote, and no SEAMLESS_* variable at all.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path


from bench.common import project_files
from bench.nested_vs_own import NESTED_WORKLOAD, SEAMLESS_RACE

from seamless_stack.processes import alive

from .conftest import CLIENT_SCRIPTS, service_hostnames, wait_until

SERVICES = ("hashserver", "database", "daskserver")


def stack_name(cli) -> str:
    name = "cfg" + uuid.uuid4().hex[:8]
    cli.names.append(name)  # the cli fixture takes it down, whatever the test did
    return name


@dataclass
class SeamlessProject:
    """A project folder run by the client venv, with HOME = the CLI's HOME and nothing else."""

    folder: Path
    venv: Path
    home: Path

    def write_config(self, connect_output: str) -> None:
        """The files' lines exactly as `connect` printed them."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for filename, text in project_files(connect_output).items():
            (self.folder / filename).write_text(text)
        shutil.copy(CLIENT_SCRIPTS / "seamless_project.py", self.folder / "script.py")

    def env(self) -> dict[str, str]:
        return {"PATH": f"{self.venv}/bin:/usr/bin:/bin", "HOME": str(self.home)}

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(["python", "script.py", *args], cwd=self.folder, env=self.env(),
                              capture_output=True, text=True, timeout=timeout)

    def result(self, *args: str) -> dict:
        out = self.run(*args)
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    def resolve_key(self, service: str, cluster: str, project: str, stage: str | None = None) -> str:
        """The key as the client's own Seamless installation computes it."""
        args = ["seamless-service-resolve", "--service", service, "--cluster", cluster, "--project", project]
        out = subprocess.run(args + (["--stage", stage] if stage else []), cwd=self.folder, env=self.env(),
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)["key"]

    def processes(self) -> list[str]:
        """Processes that carry this HOME: anything the client (or a launcher) left running."""
        found = []
        for environ in Path("/proc").glob("[0-9]*/environ"):
            try:
                if f"HOME={self.home}\0".encode() in environ.read_bytes():
                    found.append((environ.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:200])
            except OSError:
                continue
        return found


def background_tunnel(cli, name: str) -> int:
    """The pid of the tunnel serving the stack's projects (the project record has it), alive."""
    pid = json.loads((cli.home / ".seamless" / "stacks" / f"{name}.projects.json").read_text())["tunnel"]["pid"]
    assert alive(pid) and b"tunnel" in Path(f"/proc/{pid}/cmdline").read_bytes()
    return pid


def client_files(home: Path) -> dict[str, Path]:
    folder = home / ".remote-http-launcher" / "client"
    return {p.stem: p for p in folder.glob("*.json")} if folder.is_dir() else {}


def buffer_path(buffer_dir: Path, checksum: str) -> Path:
    return buffer_dir / checksum[:2] / checksum


def scheduler_plugin(venv: Path, home: Path, address: str) -> dict:
    """The Seamless worker plugin registered on the scheduler, as a Dask client reads it."""
    code = ("import json, pickle, sys, warnings\nwarnings.filterwarnings('ignore')\nfrom distributed import Client\n"
            "def get(dask_scheduler):\n"
            "    return pickle.loads(dask_scheduler.worker_plugins['seamless-worker-setup']).remote_clients\n"
            "with Client(sys.argv[1], timeout='20s') as c:\n    print(json.dumps(c.run_on_scheduler(get)))\n")
    out = subprocess.run([f"{venv}/bin/python", "-c", code, address], capture_output=True, text=True, timeout=120,
                         env={"PATH": f"{venv}/bin:/usr/bin:/bin", "HOME": str(home)})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def mismatched_venv(client_venv: Path, folder: Path, cloudpickle: str = "3.1.3") -> Path:
    """A real interpreter with the client venv's packages, but another cloudpickle as its
    metadata says: a venv whose own site-packages (first on sys.path) holds that
    cloudpickle's dist-info, layered over the client venv's site-packages by a .pth file."""
    subprocess.run([f"{client_venv}/bin/python", "-m", "venv", "--without-pip", str(folder)], check=True)
    client_site = next(client_venv.glob("lib/python3*/site-packages"))
    site = next(folder.glob("lib/python3*/site-packages"))
    (site / "client-venv.pth").write_text(f"{client_site}\n")
    dist = site / f"cloudpickle-{cloudpickle}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: cloudpickle\nVersion: {cloudpickle}\n")
    subprocess.run([f"{folder}/bin/python", "-c", "import dask, distributed, cloudpickle, seamless"], check=True)
    return folder


# -- the local stack -------------------------------------------------------------------------
def test_a_seamless_project_computes_on_a_local_stack(cli, client_venv, tmp_path):
    """A secured stack (the default), used with no terminal kept open: `up --project` and
    `connect` start the tunnel its owner-only forwarder lives in, in the background; `status`
    names it when it dies, `up` starts it again, `down` stops it."""
    buffers, database = tmp_path / "buffers", tmp_path / "database"
    name = stack_name(cli)
    cluster = f"seamless-stack-{name}"
    env = cli.env(PATH=f"{client_venv}/bin:{os.environ['PATH']}")  # python3 on PATH: the matching client
    dirs = ("--buffer-dir", str(buffers), "--database-dir", str(database))

    # 1. `up --project` connects right away and starts the tunnel; stdout stays the environment alone.
    up = cli.up(name, "--workers", "2", "--threads", "2", *dirs, "--project", "demo", env=env)
    assert up.returncode == 0, up.stderr
    assert up.stdout == cli.env_file(name).read_text().split("\n", 1)[1], "up prints only the environment"
    warnings = [line for line in up.stderr.splitlines() if "WARNING" in line and "Docker engine" not in line]
    assert "- cluster: " + cluster in up.stderr and warnings == [], warnings  # (an engine before 28 is named)
    assert "the tunnel for its Seamless projects runs in the background" in up.stderr, up.stderr
    tunnel = background_tunnel(cli, name)
    log = cli.home / ".seamless" / "stacks" / f"{name}.tunnel.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    connect = cli.run("connect", "--name", name, "--project", "demo", "--stage", "gpu", env=env)
    assert connect.returncode == 0 and "WARNING" not in connect.stderr, connect.stderr
    assert background_tunnel(cli, name) == tunnel, "one tunnel serves every project of the stack"
    project = SeamlessProject(tmp_path / "project", client_venv, cli.home)
    project.write_config(connect.stdout)
    assert (project.folder / "seamless.profile.yaml").read_text() == f"- cluster: {cluster}\n"
    assert (project.folder / "seamless.yaml").read_text() == "- project: demo\n- execution: remote\n- remote: daskserver\n"

    # 2. The files: keys exactly as the client's seamless-config computes them, owner-only.
    files = client_files(cli.home)
    keys = {project.resolve_key(s, cluster, "demo", stage) for s in SERVICES for stage in (None, "gpu")}
    keys.add(f"pure-daskserver-{cluster}-default")  # pure-Dask stages: seamless-config's key_template, one per cluster
    assert set(files) == keys and len(keys) == 7
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files.values())
    assert (cli.home / ".seamless" / "clusters" / f"{cluster}.yaml").is_file()
    assert not (cli.home / ".seamless" / "clusters.yaml").exists()
    daskserver = json.loads(files[f"daskserver-{cluster}-rw-demo"].read_text())
    hashserver = json.loads(files[f"hashserver-{cluster}-rw-demo"].read_text())
    assert daskserver["hostname"] == "127.0.0.1"

    # 3. The project computes on our workers; its results land in our buffer directory and database.
    workers = service_hostnames(name, "worker")
    answer = project.result("5")
    assert answer["direct"] == {"value": 10, "host": answer["direct"]["host"]} and answer["direct"]["host"] in workers
    assert answer["delayed"]["value"] == 6 and answer["delayed"]["host"] in workers
    assert buffer_path(buffers, answer["result_checksum"]).is_file()
    with sqlite3.connect(database / "seamless.db") as db:
        rows = db.execute("select * from transformation").fetchall()
    assert any(row[1] == answer["result_checksum"] for row in rows), "the database has it"
    staged = project.result("7", "gpu")  # the stage's keys, the same stack
    assert staged["delayed"]["value"] == 8 and staged["delayed"]["host"] in workers and staged["direct"]["host"] in workers
    assert buffer_path(buffers, staged["result_checksum"]).is_file()

    # 4. Nothing was launched: no launcher state for a server, no process with this HOME but the tunnel.
    assert not (cli.home / ".remote-http-launcher" / "server").exists()
    assert [cmd for cmd in project.processes() if "tunnel" not in cmd] == []
    assert set(client_files(cli.home)) == keys, "every file answered its health check: none was deleted"

    # 5. Workers keep their own addresses: the preload's plugin, worker-facing, with the secret.
    plugin = scheduler_plugin(client_venv, cli.home, f"tcp://127.0.0.1:{daskserver['port']}")
    assert plugin["buffer"][0]["url"].startswith("https://seamless:") and "@hashserver:" in plugin["buffer"][0]["url"]
    assert "@database:" in plugin["database"][0]["url"]

    # 6. The forwarder admits this user's processes only; its log holds no secret.
    knock = ["/usr/bin/python3", "-c", "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=10)",
             f"http://127.0.0.1:{hashserver['port']}/healthcheck"]
    assert subprocess.run(knock, capture_output=True).returncode == 0
    other = subprocess.run(["setpriv", "--reuid=12345", "--regid=12345", "--clear-groups", *knock], capture_output=True, text=True)
    assert other.returncode != 0 and ("RemoteDisconnected" in other.stderr or "reset" in other.stderr), other.stderr
    secret = (cli.home / ".seamless" / "stacks" / f"{name}.tls" / "http.secret").read_text().strip()
    assert secret not in log.read_text() and "configuration route" in log.read_text()
    status = cli.run("status", "--name", name)
    assert status.returncode == 0 and "seamless projects: demo, demo (stage gpu)" in status.stdout

    # 7. The tunnel killed: status names it, `up` starts it again, the project computes again.
    os.kill(tunnel, signal.SIGKILL)
    wait_until(lambda: not alive(tunnel), 10, "the tunnel gone")
    dead = cli.run("status", "--name", name)
    assert dead.returncode == 1 and "the tunnel its Seamless projects need is not running" in dead.stderr, dead.stderr
    again = cli.up(name, "--workers", "2", "--threads", "2", *dirs, env=env)
    assert again.returncode == 0 and "runs in the background" in again.stderr, again.stderr
    assert background_tunnel(cli, name) != tunnel and cli.run("status", "--name", name).returncode == 0
    assert project.result("5") == answer, "from the database, through the new tunnel"

    # 8. down stops the tunnel: no process left, no client file; the same script then fails,
    # saying which stack and what to run.
    tunnel = background_tunnel(cli, name)
    down = cli.run("down", "--name", name)
    assert down.returncode == 0 and "stopped the background tunnel" in down.stderr, down.stderr
    assert not alive(tunnel) and client_files(cli.home) == {}
    failed = project.run("5")
    assert failed.returncode != 0
    assert f"stack {name} is down" in failed.stderr and f"seamless-stack up local --name {name}" in failed.stderr
    assert not (cli.home / ".remote-http-launcher" / "server").exists()
    down_status = cli.run("status", "--name", name)
    assert down_status.returncode == 2 and f"seamless-stack up local --name {name}" in down_status.stderr

    # 9. up again (new ports, new containers): the tunnel and the files follow, the earlier results are found.
    assert cli.up(name, "--workers", "2", "--threads", "2", *dirs, env=env).returncode == 0
    assert set(client_files(cli.home)) == keys
    assert service_hostnames(name, "worker").isdisjoint(workers)
    assert project.result("5") == answer, "from the database: the old workers' host names, no recomputation"

    # 10. connect warns about a client with other versions; disconnect removes everything, the tunnel too.
    other = mismatched_venv(client_venv, tmp_path / "other-venv")
    warned = cli.run("connect", "--name", name, "--project", "other", env=cli.env(PATH=f"{other}/bin:{os.environ['PATH']}"))
    assert warned.returncode == 0 and "WARNING" in warned.stderr and "cloudpickle 3.1.3 (stack 3.1.2)" in warned.stderr
    tunnel = background_tunnel(cli, name)
    disconnected = cli.run("disconnect", "--name", name, "--all")
    assert disconnected.returncode == 0 and "stopped the background tunnel" in disconnected.stderr, disconnected.stderr
    assert client_files(cli.home) == {} and not (cli.home / ".seamless" / "clusters" / f"{cluster}.yaml").exists()
    assert not alive(tunnel)


# -- the version check ------------------------------------------------------------------------
def test_doctor_compares_a_real_client_with_the_stack(cli, client_venv, tmp_path):
    requirements = cli.run("client-requirements")
    assert requirements.returncode == 0 and "cloudpickle==3.1.2" in requirements.stdout

    ok = cli.run("doctor", "--python", str(client_venv / "bin" / "python"))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok: this client matches the stack" in ok.stdout and "MISMATCH" not in ok.stdout

    other = mismatched_venv(client_venv, tmp_path / "other-venv")
    bad = cli.run("doctor", "--python", str(other / "bin" / "python"))
    assert bad.returncode == 1, bad.stdout + bad.stderr
    row = next(line.split() for line in bad.stdout.splitlines() if line.startswith("cloudpickle"))
    assert row == ["cloudpickle", "3.1.3", "3.1.2", "MISMATCH"]
    assert "cloudpickle==3.1.2" in bad.stdout and "client-requirements" in bad.stdout and "pip install" in bad.stdout

    on_path = cli.run("doctor", env=cli.env(PATH=f"{other}/bin:{os.environ['PATH']}"))  # default: python3 on PATH
    assert on_path.returncode == 1 and str(other) in on_path.stdout


# -- a faithful deployment: Seamless' own test shapes, through `connect` ------------------------


def run_json(project: SeamlessProject, env: dict, script: str, *args: str) -> dict:
    out = subprocess.run(["python", script, *args], cwd=project.folder, env=env,
                         capture_output=True, text=True, timeout=300)
    if out.returncode != 0 and SEAMLESS_RACE in out.stderr:  # Seamless' own, not ours: see bench/nested_vs_own.py
        print(f"{script}: Seamless' delegation race ({SEAMLESS_RACE!r}); once more")
        out = subprocess.run(["python", script, *args], cwd=project.folder, env=env,
                             capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_nested_transformations_and_pure_dask_stages_on_connected_stacks(cli, client_venv, tmp_path):
    """Seamless' thread layout (Dask threads = Seamless workers x throttle 3): nested work that
    holds threads while its children run completes at --threads 1 and 2; a pure-Dask stage
    finds its launcher file; the shell has sourced the stack's env file as the quick start says;
    a second stack on a held database directory is refused in one line."""
    env = cli.env(PATH=f"{client_venv}/bin:{os.environ['PATH']}")
    first, second = stack_name(cli), stack_name(cli)
    shared_database = tmp_path / "database"
    confined = ("--port-range", "58000-58099")  # the first stack's ports, and so its tunnel's
    for name, threads, dirs in ((first, "1", ("--database-dir", str(shared_database), *confined)), (second, "2", ())):
        up = cli.up(name, "--threads", threads, *dirs, "--project", "nest", env=env)
        assert up.returncode == 0, up.stderr
    assert (cli.home / ".seamless" / f"database-{second}" / "seamless.db").is_file(), "its own database by default"

    refused = cli.up(stack_name(cli), "--database-dir", str(shared_database), env=env)
    last = refused.stderr.strip().splitlines()[-1]
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert last.startswith(f"seamless-stack: error: database directory {shared_database} is held by stack {first!r}"), last

    for name, threads in ((first, 1), (second, 2)):
        connect = cli.run("connect", "--name", name, "--project", "nest", "--stage", "pure-dask", env=env)
        assert connect.returncode == 0 and "pure Dask" in connect.stderr, connect.stderr
        project = SeamlessProject(tmp_path / f"project-{name}", client_venv, cli.home)
        project.write_config(connect.stdout)
        with (project.folder / "seamless.yaml").open("a") as f:  # Seamless' own pure-Dask stage
            f.write("- stage pure-dask:\n    - persistent: false\n")
        shutil.copy(NESTED_WORKLOAD, project.folder)  # the nested benchmark's client, route mode
        shutil.copy(CLIENT_SCRIPTS / "pure_dask_project.py", project.folder)
        sourced = subprocess.run(["bash", "-c", f"source {cli.env_file(name)} && env -0"], capture_output=True, check=True)
        shell = {**dict(item.split("=", 1) for item in sourced.stdout.decode().split("\0") if "=" in item), **project.env()}
        assert "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT" in shell, "the stack's env file is sourced"

        # the tunnel `up --project` started in the background serves the project
        workers = service_hostnames(name, "worker")
        tag = uuid.uuid4().hex[:8]
        outer = 8  # more than the Dask threads: 1:1 threads hang at the first, root-task queuing at 4
        nested = run_json(project, shell, NESTED_WORKLOAD.name, "route", str(outer), tag)
        labels = sorted(f"{tag}-{i}-{m}-{leaf}" for i in range(outer) for m in "12" for leaf in "ab")
        assert nested["labels"] == labels and set(nested["hosts"]) <= workers, nested
        pure = run_json(project, shell, "pure_dask_project.py", "5")
        assert pure["values"] == [0, 1, 4, 9, 16] and set(pure["hosts"]) <= workers, pure
        files = client_files(cli.home)
        assert f"pure-daskserver-seamless-stack-{name}-default" in files
        if name == first:  # the tunnel's forwarder draws from the stack's own range
            ports = {json.loads(path.read_text())["port"] for key, path in files.items() if name in key}
            assert ports and all(58000 <= port <= 58099 for port in ports), ports

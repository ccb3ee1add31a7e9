"""`up slurm` against a real Slurm + Apptainer cluster made of containers.

The host acts as the workstation: `up slurm --login` builds the SIFs on the login node
from our images, submits the services job, and dask-jobqueue (inside the scheduler
container, through the host-side relay) launches worker jobs on demand. A real Seamless
client reaches the services through `seamless-stack tunnel`, or directly. The cluster
(fixture `cluster`) lives in conftest.py: one per session, shared with the benchmarks'
smoke runs.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from seamless_stack import credentials
from seamless_stack.processes import alive

from .conftest import INTRUDER, STALL, TunnelProcess, assert_a_wedged_worker_is_replaced, wait_until
from .test_security import (INTRUDER_UID, PROBE, assert_doors_shut, assert_refused, assert_silent_connections_closed,
                            assert_the_owner_gets_in, probe, probe_config, read_record, scheduler_image)

# The services job takes a whole (2-core) node, so worker jobs land on the other one.
JOB_OPTIONS = ["--partition", "main", "--cpus", "2", "--memory", "600M", "--time", "02:00:00",
               "--threads", "1", "--worker-memory", "600MB", "--worker-walltime", "00:30:00", "--timeout", "900"]


@pytest.fixture
def scli(cli, cluster, tmp_path):
    cli.use_ssh_key(cluster.key_path, tmp_path / "ssh-bin")
    yield cli
    for name in cli.names:
        cli.run("down", "--name", name)
    assert our_jobs(cluster) == [], "nothing left in squeue"


def our_jobs(cluster) -> list[str]:
    out = cluster.ssh("squeue -h -o '%i|%j|%T|%N'").stdout
    return [line for line in out.splitlines() if "|seamless-" in line]


def worker_jobs(cluster, name) -> list[str]:
    return [line for line in our_jobs(cluster) if f"seamless-{name}-worker" in line]


def services_node(cli, name) -> str:
    record = json.loads((cli.home / ".seamless" / "stacks" / f"{name}.json").read_text())
    return record["slurm"]["node"]


def assert_only_the_owner_gets_in_on_the_cluster(scli, cluster, name: str) -> None:
    """The owner's probe (a container on the cluster network, with the credentials) gets
    everything. The intruder gets nothing: from another machine on the cluster network, logged
    in on the login node with its own key, and on a compute node; nor can it read the
    credentials or the jobs' logs on the shared file system."""
    record = read_record(scli, name)
    cfg = probe_config(record, record["placement"]["host_name"])
    image = scheduler_image(scli)
    assert_the_owner_gets_in(image, record, cfg, network=cluster.network)
    assert_refused(probe(image, cfg, f"{INTRUDER_UID}:{INTRUDER_UID}", network=cluster.network))
    assert_doors_shut(image, record, cfg, network=cluster.network)
    on_login = cluster.intruder.run(["python3", "-", json.dumps(cfg)], input=PROBE, timeout=120)
    assert on_login.returncode == 0, on_login.stderr
    assert_refused(json.loads(on_login.stdout.splitlines()[-1]))
    on_node = cluster.exec(["python3", "-c", PROBE, json.dumps(cfg)], node=cluster.compute_nodes[0], user=INTRUDER, timeout=120)
    assert on_node.returncode == 0, on_node.stderr
    assert_refused(json.loads(on_node.stdout.splitlines()[-1]))
    stack_dir = record["slurm"]["stack_dir"]
    for path in (f"{stack_dir}/tls/http.secret", f"{stack_dir}/tls/server.key", f"{stack_dir}/services.json"):
        denied = cluster.intruder.run(["cat", path])
        assert denied.returncode != 0 and "Permission denied" in denied.stderr, (path, denied.stdout)
    modes = cluster.exec(f"stat -c %a {stack_dir} {stack_dir}/tls", user=cluster.user).stdout.split()
    assert modes == ["700", "700"], modes


# From another node, every TCP listener of a worker job's node, over HTTP and HTTPS: which
# answer as a web server (a dashboard would). Workers run with --no-dashboard; their comm and
# nanny ports speak Dask over mutual TLS, slurmd and sshd speak their own protocols.
WEB_PROBE = r"""
import json, ssl, sys, urllib.error, urllib.request
host, ports = sys.argv[1], json.loads(sys.argv[2])
answers = {}
for port in ports:
    for scheme in ("http", "https"):
        try:
            context = ssl._create_unverified_context() if scheme == "https" else None
            with urllib.request.urlopen(f"{scheme}://{host}:{port}/", timeout=5, context=context) as response:
                answers[f"{scheme}:{port}"] = response.status
        except urllib.error.HTTPError as exc:
            answers[f"{scheme}:{port}"] = exc.code
        except Exception as exc:
            answers[f"{scheme}:{port}"] = type(exc).__name__
print(json.dumps(answers))
"""


def listening_ports(cluster, node: str) -> list[int]:
    """Every TCP port in LISTEN on a node (its network namespace's /proc/net/tcp and tcp6)."""
    table = cluster.exec("cat /proc/net/tcp /proc/net/tcp6", node=node, check=True).stdout
    rows = [line.split() for line in table.splitlines()]  # "N: local rem st ..." after a header row each
    return sorted({int(row[1].rsplit(":", 1)[1], 16) for row in rows if len(row) > 3 and row[0].endswith(":") and row[3] == "0A"})


def assert_no_web_server_on_the_worker_node(cluster, job: str, from_node: str) -> None:
    """While a worker job runs (its squeue line): an intruder on another node finds no HTTP(S)
    answer on any of that node's listeners (no worker dashboard with task keys for the cluster)."""
    node = job.split("|")[3]
    ports = listening_ports(cluster, node)
    assert ports, f"nothing listens on {node}?"
    seen = cluster.exec(["python3", "-c", WEB_PROBE, node, json.dumps(ports)], node=from_node, user=INTRUDER, timeout=300)
    assert seen.returncode == 0, seen.stderr
    answers = json.loads(seen.stdout.splitlines()[-1])
    assert not [door for door, answer in answers.items() if isinstance(answer, int)], answers


def assert_the_cluster_side_holds_nothing_to_take(cluster, name: str) -> None:
    """After a workload: the credentials every container binds hold neither the CA key nor
    the client key; no job log holds the secret; storage is the owner's alone."""
    home = Path(cluster.home_path) / cluster.user
    stack_dir = home / ".seamless" / "stacks" / f"{name}.slurm"
    held = {p.name for p in (stack_dir / "tls").iterdir()}
    assert held == set(credentials.SERVICE_FILES) and not held & {"ca.key", "client.key", "client.crt"}, held
    secret = (stack_dir / "tls" / "http.secret").read_text().strip()
    logs = [*stack_dir.glob("services-*.out"), *(stack_dir / "workers").glob("*.out")]
    assert len(logs) >= 2, logs
    for log in logs:
        assert secret not in log.read_text(errors="replace"), f"the secret is in {log.name}"
    storage = [home / ".seamless" / "buffers", home / ".seamless" / f"database-{name}",
               home / ".seamless" / f"database-{name}" / "seamless.db"]
    storage += [p for p in (home / ".seamless" / "buffers").rglob("*") if p.is_file()][:5]
    loose = {str(p.relative_to(home)): oct(p.stat().st_mode & 0o777) for p in storage if p.stat().st_mode & 0o077}
    assert loose == {}, f"readable by others: {loose}"


def test_slurm_over_ssh_adaptive_workers(scli, client, cluster):
    name = scli.new_name()
    up = scli.up(name, "--login", cluster.destination, "--max-jobs", "3", *JOB_OPTIONS, method="slurm", timeout=1800)
    assert up.returncode == 0, up.stderr
    env_file = scli.env_file(name)
    assert "SEAMLESS_SSH_DASK_SCHEDULER_HOST" in env_file.read_text()
    assert worker_jobs(cluster, name) == [], "adaptive from zero worker jobs"
    node = services_node(scli, name)
    assert_only_the_owner_gets_in_on_the_cluster(scli, cluster, name)

    with TunnelProcess(scli, name) as tunnel:
        marker = uuid.uuid4().hex
        run = client.run(env_file, "seamless-run", f"echo {marker}; hostname", timeout=600)
        assert run.returncode == 0, run.stderr
        computed_on = run.stdout.split()[1]
        assert computed_on in cluster.compute_nodes and computed_on != node, "a worker job on another node"
        checksum = hashlib.sha256(run.stdout.encode()).hexdigest()
        home = Path(cluster.home_path) / cluster.user
        assert (home / ".seamless" / "buffers" / checksum[:2] / checksum).is_file()
        assert (home / ".seamless" / f"database-{name}" / "seamless.db").is_file()

        # a burst: adaptive scaling goes to >= 2 worker jobs, then back to 0 when idle
        burst = [subprocess.Popen(["bash", "-c", f'source "$1"; exec seamless-run "sleep 20; echo {marker}-{i}"', "-", str(env_file)],
                                  env={"PATH": f"{client.venv}/bin:/usr/bin:/bin", "HOME": str(env_file.parent)},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(6)]
        most, probed = 0, False
        while any(p.poll() is None for p in burst):
            running = [job for job in worker_jobs(cluster, name) if "|RUNNING|" in job]
            most = max(most, len(worker_jobs(cluster, name)))
            if running and not probed:
                assert_no_web_server_on_the_worker_node(cluster, running[0], from_node=node)
                probed = True
            time.sleep(2)
        assert probed, "no worker job ran during the burst"
        outputs = [p.stdout.read().strip() for p in burst]
        assert outputs == [f"{marker}-{i}" for i in range(6)], [p.stderr.read()[-500:] for p in burst]
        assert most >= 2, f"adaptive scaling reached only {most} worker job(s)"
        deadline = time.monotonic() + 180
        while worker_jobs(cluster, name) and time.monotonic() < deadline:
            time.sleep(3)
        assert worker_jobs(cluster, name) == [], "idle: back to zero worker jobs"

        # live bounds (`scale`): worker jobs follow, the services job and its ports stay
        before = json.loads((scli.home / ".seamless" / "stacks" / f"{name}.json").read_text())
        raised = scli.run("scale", "--name", name, "--min-jobs", "2")
        assert raised.returncode == 0 and "adaptive worker jobs 2-3" in raised.stderr, raised.stderr
        assert len(worker_jobs(cluster, name)) >= 2, "kept while idle: back once both were ready"
        assert "adaptive worker jobs (2-3)" in scli.run("status", "--name", name).stdout
        lowered = scli.run("scale", "--name", name, "--min-jobs", "0", "--max-jobs", "1")
        assert lowered.returncode == 0, lowered.stderr
        wait_until(lambda: worker_jobs(cluster, name) == [], 180, "idle worker jobs released under the new bounds")
        after = json.loads((scli.home / ".seamless" / "stacks" / f"{name}.json").read_text())
        assert (after["slurm"]["job_id"], after["placement"]) == (before["slurm"]["job_id"], before["placement"])
        assert [job for job in our_jobs(cluster) if f"{before['slurm']['job_id']}|" in job and "|RUNNING|" in job], \
            "the services job still runs"
        logged = scli.run("logs", "services", "--name", name).stdout
        assert "adaptive bounds now 2-3 worker jobs" in logged and "adaptive bounds now 0-1 worker jobs" in logged
    assert tunnel.code == 0, "the tunnel closes cleanly on Ctrl-C"
    assert_the_cluster_side_holds_nothing_to_take(cluster, name)

    status = scli.run("status", "--name", name)
    assert status.returncode == 0 and "services" in status.stdout, status.stdout
    assert f"[services] node {node}" in scli.run("logs", "services", "--name", name).stdout
    assert scli.run("down", "--name", name).returncode == 0
    assert our_jobs(cluster) == []

    # up again: the earlier result comes from the database
    again = scli.up(name, "--login", cluster.destination, *JOB_OPTIONS, method="slurm", timeout=1800)
    assert again.returncode == 0, again.stderr
    with TunnelProcess(scli, name) as tunnel:
        rerun = client.run(env_file, "seamless-run", f"echo {marker}; hostname", timeout=300)
        assert rerun.stdout == run.stdout


def test_slurm_direct_single_node(scli, client, cluster):
    name = scli.new_name()
    up = scli.up(name, "--login", cluster.destination, "--direct", "--local-workers", "1", *JOB_OPTIONS,
                 method="slurm", timeout=1800)
    assert up.returncode == 0, up.stderr
    values = json.loads(scli.run("env", "--name", name, "--format", "json").stdout)
    node = services_node(scli, name)
    assert values["SEAMLESS_SSH_DASK_SCHEDULER_HOST"] == node
    assert not values["SEAMLESS_DATABASE_IP"].startswith("127."), "direct: the services node's address"
    assert values["SEAMLESS_DASK_SCHEDULER"].startswith("tls://") and "https://seamless:" in values["SEAMLESS_REMOTE_CLIENTS"]
    run = client.run(scli.env_file(name), "seamless-run", "echo direct; hostname", timeout=300)
    assert run.returncode == 0 and run.stdout.split() == ["direct", node], run.stderr
    # A transformation sees neither the owner's home (SSH keys) nor the job's working directory.
    home = client.run(scli.env_file(name), "seamless-run", f"ls /home/{cluster.user}/.ssh || echo no-home-{uuid.uuid4().hex}",
                      timeout=300)
    assert home.returncode == 0 and "authorized_keys" not in home.stdout and "no-home-" in home.stdout, home.stdout
    assert_only_the_owner_gets_in_on_the_cluster(scli, cluster, name)
    assert_silent_connections_closed(read_record(scli, name), values["SEAMLESS_DATABASE_IP"])
    assert worker_jobs(cluster, name) == [], "single node: the workers live in the services job"
    stalled = assert_a_wedged_worker_is_replaced(scli, client, name, lambda: cluster.exec(STALL, node=node, check=True).stdout.split(),
                                                 count=30, timeout=240)
    assert stalled, "the workers' Seamless children on the services node"
    # A service killed inside the services job is started again by the job, with nobody acting.
    healed = {}
    for service, command in (("hashserver", "seamless-stack-guard hashserver"), ("scheduler", "dask scheduler")):
        killed = cluster.exec(KILL.replace("PATTERN", command), node=node, check=True).stdout.split()
        assert killed, f"no {service} process on {node}"
        started = time.monotonic()
        wait_until(lambda: scli.run("status", "--name", name).returncode == 0, 60, f"{service} healthy again by itself", interval=1)
        healed[service] = round(time.monotonic() - started, 1)
    print("Slurm services job: healthy again after a kill, s:", healed)
    status = scli.run("status", "--name", name).stdout
    for service in healed:
        assert f"the services job started {service} again 1 time(s)" in status, status
    run = client.run(scli.env_file(name), "seamless-run", f"echo after-the-kills-{uuid.uuid4().hex}", timeout=300)
    assert run.returncode == 0 and "after-the-kills-" in run.stdout, run.stderr


# Every process whose command line holds PATTERN, killed (SIGKILL); prints their PIDs. The shell
# running this skips itself (its own command line holds the pattern).
KILL = r"""
for d in /proc/[0-9]*; do
  [ "${d#/proc/}" = "$$" ] && continue
  case "$(tr '\0' ' ' < "$d/cmdline" 2>/dev/null)" in *"PATTERN"*) kill -KILL "${d#/proc/}" 2>/dev/null && echo "${d#/proc/}" ;; esac
done
"""


def test_images_sif_on_the_login_node(scli, cluster):
    """`images sif --login`: the SIFs of our images in the cluster's SIF cache (the default
    folder, where `up slurm --login` made them: built once, then reused)."""
    result = scli.run("images", "sif", "--login", cluster.destination)
    assert result.returncode == 0, result.stderr
    sifs = dict(line.split("\t") for line in result.stdout.splitlines())
    assert set(sifs) == {"hashserver", "database", "scheduler", "worker"}
    for path in sifs.values():
        assert path.startswith("/home/seamless/.seamless/sif/") and path.endswith(".sif")
        assert (Path(cluster.home_path) / path.removeprefix("/home/")).is_file()
    again = scli.run("images", "sif", "--login", cluster.destination)
    assert again.stdout == result.stdout and "building" not in again.stderr, "built once, then reused"


def _fails(result, *texts):
    errors = [line for line in result.stderr.splitlines() if line.startswith("seamless-stack: error:")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr
    for text in texts:
        assert text in errors[0], errors[0]


def test_slurm_bad_input(scli, cluster):
    name = scli.new_name()
    login = ["--login", cluster.destination]
    _fails(scli.up(name, *login, "--partition", "nope", method="slurm"), "partition 'nope' does not exist", "main")
    _fails(scli.up(name, *login, "--worker-walltime", "soon", method="slurm"), "is not a Slurm time")
    cluster.exec("mv /usr/bin/apptainer /usr/bin/apptainer.off")
    try:
        _fails(scli.up(name, *login, method="slurm"), "apptainer not found on")
    finally:
        cluster.exec("mv /usr/bin/apptainer.off /usr/bin/apptainer")
    cluster.exec("mv /usr/bin/sbatch /usr/bin/sbatch.off")
    try:
        _fails(scli.up(name, *login, method="slurm"), "sbatch not found on")
    finally:
        cluster.exec("mv /usr/bin/sbatch.off /usr/bin/sbatch")
    # no Docker here and no SIF in that folder there
    no_docker = scli.env(PATH=f"{scli.path_prefix}:/usr/bin:/bin")
    no_docker["PATH"] = ":".join(p for p in no_docker["PATH"].split(":") if not Path(p, "docker").exists())
    _fails(scli.run("up", "slurm", "--name", name, *login, "--sif-dir", "empty-sifs", env=no_docker), "no SIF for")
    # a port range too small on the node: the job says so, is cancelled, nothing stays queued
    busy = scli.up(name, *login, *JOB_OPTIONS, "--port-range", "61000-61002", method="slurm", timeout=1800)
    _fails(busy)
    assert "only 3 free ports" in busy.stderr or "ended before its services started" in busy.stderr
    assert our_jobs(cluster) == []


def test_a_seamless_project_through_the_tunnel(scli, client_venv, cluster, tmp_path):
    """Seamless' own configuration route (seamless.config.init()) on a Slurm stack over SSH:
    `up --project` starts the tunnel in the background (SSH forwards and the owner-only
    forwarder); the project's files hold its ports while it runs; `down` stops it."""
    from .test_seamless_config import SERVICES, SeamlessProject, background_tunnel, buffer_path, client_files, scheduler_plugin

    name = "cfg" + uuid.uuid4().hex[:8]
    scli.names.append(name)
    cluster_name = f"seamless-stack-{name}"
    up = scli.up(name, "--login", cluster.destination, *JOB_OPTIONS, "--project", "demo", method="slurm", timeout=1800)
    assert up.returncode == 0, up.stderr
    assert "the tunnel for its Seamless projects runs in the background" in up.stderr, up.stderr
    tunnel = background_tunnel(scli, name)
    connect = scli.run("connect", "--name", name, "--project", "demo", "--stage", "gpu")
    assert connect.returncode == 0, connect.stderr
    project = SeamlessProject(tmp_path / "project", client_venv, scli.home)
    project.write_config(connect.stdout)

    record = json.loads((scli.home / ".seamless" / "stacks" / f"{name}.json").read_text())
    remote_ports, node_address = record["placement"]["ports"], record["placement"]["host_name"]
    node = services_node(scli, name)
    files = client_files(scli.home)
    keys = {project.resolve_key(s, cluster_name, "demo", stage) for s in SERVICES for stage in (None, "gpu")}
    keys.add(f"pure-daskserver-{cluster_name}-default")  # pure-Dask stages: one per cluster
    assert set(files) == keys
    hashserver = json.loads(files[f"hashserver-{cluster_name}-rw-demo"].read_text())
    daskserver = json.loads(files[f"daskserver-{cluster_name}-rw-demo"].read_text())
    assert hashserver["hostname"] == "127.0.0.1" and hashserver["tunneled-port"] == remote_ports["hashserver"]
    exported = dict(line.removeprefix("export ").split("=", 1) for line in scli.env_file(name).read_text().splitlines()
                    if line.startswith("export "))  # the env file holds the tunnel's local ports while it runs
    ssh_forward = int(exported["SEAMLESS_WRITE_BUFFER_SERVER"].strip("'\"").rsplit(":", 1)[1])
    assert hashserver["port"] != ssh_forward, "the project uses the owner-only forwarder, not the SSH forward itself"

    answer = project.result("3")
    for result in (answer["direct"], answer["delayed"]):
        assert result["host"] in cluster.compute_nodes and result["host"] != node, "a worker job on another node"
    home = Path(cluster.home_path) / cluster.user
    assert buffer_path(home / ".seamless" / "buffers", answer["result_checksum"]).is_file()
    staged = project.result("4", "gpu")
    assert staged["delayed"]["value"] == 5 and staged["delayed"]["host"] in cluster.compute_nodes

    # nothing launched: no launcher server state, no process with this HOME but the tunnel's
    assert not (scli.home / ".remote-http-launcher" / "server").exists()
    left = [cmd for cmd in project.processes() if "tunnel" not in cmd and not cmd.startswith(("ssh ", "/usr/bin/ssh "))]
    assert left == []
    # workers keep the services node's address (the preload), not the tunnel's 127.0.0.1
    plugin = scheduler_plugin(client_venv, scli.home, f"tcp://127.0.0.1:{daskserver['port']}")
    url = plugin["buffer"][0]["url"]
    assert url.startswith("https://seamless:") and url.endswith(f"@{node_address}:{remote_ports['hashserver']}")
    assert scli.run("status", "--name", name).returncode == 0

    down = scli.run("down", "--name", name)
    assert down.returncode == 0 and "stopped the background tunnel" in down.stderr, down.stderr
    assert not alive(tunnel) and client_files(scli.home) == {}, "the tunnel's ports are gone with it"
    failed = project.run("3")
    assert failed.returncode != 0
    assert f"stack {name} is down" in failed.stderr and f"seamless-stack up slurm --name {name}" in failed.stderr

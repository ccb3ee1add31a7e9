"""`up remote` against a real remote Docker host: a container with sshd and its own dockerd.

The host acts as the workstation: the CLI reaches the remote over real SSH (key auth), moves
the images with docker save | ssh docker load, and a real Seamless client computes on the
remote's workers, directly or through `seamless-stack tunnel`. The bed (fixture `remote`)
lives in conftest.py: one per session, shared with the benchmarks' smoke runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from .conftest import CLI, read_available, wait_until
from .test_security import (INTRUDER_UID, OWNER_REQUEST, SQUATTER, squatter_captures, assert_only_the_owner_gets_in,
                            assert_silent_connections_closed, read_record)


@pytest.fixture
def rcli(cli, remote, tmp_path):
    """The CLI with an `ssh` that knows the bed's key (as a user's ~/.ssh/config would)."""
    cli.use_ssh_key(remote.key_path, tmp_path / "ssh-bin")
    yield cli
    for name in cli.names:
        cli.run("down", "--name", name)
    remote.ssh("docker ps -aq | xargs -r docker rm -f; docker network prune -f")


def remote_workers(remote) -> set[str]:
    out = remote.ssh("docker ps -q --filter label=com.docker.compose.service=worker").stdout
    return {cid[:12] for cid in out.split()}


def remote_file_exists(remote, path: str) -> bool:
    return remote.ssh(f"test -f {path}").returncode == 0


def test_remote_direct_images_moved_results_on_remote(rcli, client, remote):
    name = rcli.new_name()
    buffers = f"/home/{remote.user}/stack-{name}/buffers"
    up = rcli.up(name, "--host", remote.destination, "--direct", "--buffer-dir", buffers, method="remote")
    assert up.returncode == 0, up.stderr
    assert "WARNING" not in up.stderr, "a public bind is secured: nothing to warn about"
    env = json.loads(rcli.run("env", "--name", name, "--format", "json").stdout)
    assert env["SEAMLESS_DATABASE_IP"] == remote.address
    assert env["SEAMLESS_DASK_SCHEDULER"].startswith(f"tls://{remote.address}:"), "Dask mutual TLS, credentials on the remote"
    assert "https://seamless:" in env["SEAMLESS_REMOTE_CLIENTS"] and env["SSL_CERT_FILE"].endswith("bundle.pem"), \
        "the links leave the machine: HTTPS, with the secret"
    # An intruder container on the remote's network gets nothing; the owner's probe everything.
    assert_only_the_owner_gets_in(read_record(rcli, name), remote.address, network=remote.network)
    remote_folder = f"/home/{remote.user}/.seamless/stacks/{name}.tls"
    modes = remote.ssh(f"stat -c '%a %n' {remote_folder} {remote_folder}/*").stdout.split("\n")
    assert modes[0].startswith("700 ") and all(line.startswith("600 ") for line in modes[1:] if line), modes
    assert "ca.key" not in remote.ssh(f"ls {remote_folder}").stdout, "the CA key stays with the owner"
    assert_silent_connections_closed(read_record(rcli, name), remote.address)

    marker = uuid.uuid4().hex
    run = client.run(rcli.env_file(name), "seamless-run", f"echo {marker}; hostname")
    assert run.returncode == 0, run.stderr
    assert run.stdout.split()[1] in remote_workers(remote), "computed on a worker on the remote"
    checksum = hashlib.sha256(run.stdout.encode()).hexdigest()
    assert remote_file_exists(remote, f"{buffers}/{checksum[:2]}/{checksum}"), "result buffer in the remote buffer dir"
    owner = remote.ssh(f"stat -c %u {buffers}/{checksum[:2]}/{checksum}").stdout.strip()
    assert owner == remote.ssh("id -u").stdout.strip(), "files belong to the remote user"
    assert remote_file_exists(remote, f"/home/{remote.user}/.seamless/database-{name}/seamless.db"), "default dir is the remote user's, one per stack"

    # status and logs work as for local stacks; down/up keeps the data and moves no image again
    status = rcli.run("status", "--name", name)
    assert status.returncode == 0 and "1/1 workers ready" in status.stdout, status.stdout
    assert "distributed" in rcli.run("logs", "scheduler", "--name", name, "--tail", "20").stdout
    assert rcli.run("down", "--name", name).returncode == 0
    assert remote_workers(remote) == set()
    again = rcli.up(name, "--host", remote.destination, "--direct", "--buffer-dir", buffers, method="remote")
    assert again.returncode == 0 and "images already on" in again.stderr
    rerun = client.run(rcli.env_file(name), "seamless-run", f"echo {marker}; hostname")
    assert rerun.stdout == run.stdout, "answered from the remote database: the old worker's hostname"


def test_remote_ssh_with_tunnel(rcli, client, remote):
    name = rcli.new_name()
    up = rcli.up(name, "--host", remote.destination, "--ssh", method="remote")
    assert up.returncode == 0, up.stderr
    env_file = rcli.env_file(name)
    only_ssh = env_file.read_text()
    assert "SEAMLESS_SSH_DASK_SCHEDULER_PORT" in only_ssh and "SEAMLESS_REMOTE_CLIENTS" not in only_ssh
    ports = json.loads(rcli.run("env", "--name", name, "--format", "json").stdout)
    for key in ("SEAMLESS_SSH_DATABASE_PORT", "SEAMLESS_SSH_HASHSERVER_PORT", "SEAMLESS_SSH_DASK_SCHEDULER_PORT"):
        with socket.socket() as sock:
            sock.settimeout(2)
            assert sock.connect_ex((remote.address, int(ports[key]))) != 0, "nothing reachable on the remote's address"

    assert_a_second_user_of_the_remote_gets_nothing(rcli, remote, name)

    tunnel = subprocess.Popen([str(CLI), "tunnel", "--name", name, "--format", "json"], env=rcli.env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    said = []  # the tunnel's stderr, as far as the test has read it
    try:
        local = json.loads(_read_json(tunnel))
        assert local["SEAMLESS_DASK_SCHEDULER"].startswith("tls://127.0.0.1:")
        assert "https://seamless:" in local["SEAMLESS_REMOTE_CLIENTS"], "over SSH: HTTPS through the tunnel, with the secret"
        run = client.run(env_file, "seamless-run", "echo through-the-tunnel; hostname")
        assert run.returncode == 0, run.stderr
        assert run.stdout.split()[1] in remote_workers(remote)

        # the SSH connection drops, and another user takes the hashserver's local port before the
        # tunnel can: the owner's client sends it a TLS hello and no secret; the tunnel names the
        # port in one line, and comes back on the same local ports once it is free
        port = int(re.search(r"https://[^@\s]+@127\.0\.0\.1:(\d+)", local["SEAMLESS_REMOTE_CLIENTS"])[1])
        squatter = subprocess.Popen(["setpriv", f"--reuid={INTRUDER_UID}", f"--regid={INTRUDER_UID}", "--clear-groups",
                                     "/usr/bin/python3", "-c", SQUATTER, str(port)], stdout=subprocess.PIPE, text=True)
        try:
            ssh_children = subprocess.run(["pgrep", "-P", str(tunnel.pid), "ssh"], capture_output=True, text=True).stdout.split()
            assert ssh_children
            for pid in ssh_children:
                os.kill(int(pid), signal.SIGKILL)
            assert squatter.stdout.readline().strip() == "bound"
            asked = client.run(env_file, "python", "-c", OWNER_REQUEST)
            assert asked.returncode == 0 and asked.stdout.startswith("refused"), asked.stdout + asked.stderr[-2000:]
            captures = squatter_captures(squatter)  # the tunnel's own port checks may come first, empty
            secret = (Path(read_record(rcli, name)["credentials_dir"]) / "http.secret").read_text().strip()
            assert captures and captures[-1][:1] == b"\x16", f"the owner's client came, with a TLS hello: {captures}"
            assert not any(secret.encode() in got for got in captures), "the squatter got more than a TLS hello"

            def named() -> bool:
                said.append(read_available(tunnel.stderr))
                return re.search(rf"local port {port} of the tunnel to \S+ is taken by another process", "".join(said)) is not None

            wait_until(named, timeout=60, what="the tunnel naming the taken port")
        finally:
            squatter.kill()
            squatter.wait()
        freed = len("".join(said))

        def reconnected() -> bool:
            assert tunnel.poll() is None, f"the tunnel ended: {''.join(said)}{tunnel.stderr.read()}"
            said.append(read_available(tunnel.stderr))
            return "[seamless-stack] reconnected\n" in "".join(said)[freed:]

        wait_until(reconnected, timeout=60, what="the tunnel reconnecting (forwards standing again)")
        again = client.run(env_file, "seamless-run", "echo after-reconnect")
        assert again.returncode == 0 and again.stdout.strip() == "after-reconnect", again.stderr
    finally:
        tunnel.send_signal(signal.SIGINT)
        code = tunnel.wait(timeout=20)
    assert code == 0, "".join(said) + tunnel.stderr.read()
    assert env_file.read_text() == only_ssh, "without the tunnel, the env file holds the SSH section only"


KNOCK = r"""
h=$1 d=$2 s=$3 b=$4 known=$5 auth=$6 stack=$7   # ports; the checksum of "x"; "owner": with the secret file
code() {
    if [ "$auth" = owner ]; then
        printf 'user = "seamless:%s"\n' "$(cat ~/.seamless/stacks/$stack.tls/http.secret)" |
            curl -K - --cacert ~/.seamless/stacks/$stack.tls/ca.crt -s -o /dev/null -w '%{http_code}' "$@"
    else  # an intruder does not care whom it talks to
        curl -k -s -o /dev/null -w '%{http_code}' "$@"
    fi
}
echo "buffer PUT $(code -X PUT --data-binary x https://127.0.0.1:$h/$known)"
echo "buffer GET $(code https://127.0.0.1:$h/$known)"
echo "database PUT $(code -X PUT --data-binary '{"type": "transformation", "checksum": "'$known'", "value": "'$known'"}' https://127.0.0.1:$d/)"
echo "dashboard $(curl -sk -o /dev/null -w '%{http_code}' https://127.0.0.1:$b/health; echo " exit $?")"
echo "scheduler $(curl -sk -v https://127.0.0.1:$s/ 2>&1 | grep -io 'certificate required' | head -1)"
"""


def assert_a_second_user_of_the_remote_gets_nothing(rcli, remote, name: str) -> None:
    """Another user of the remote host, against its loopback (where an --ssh stack listens):
    refused everywhere; the owner's same requests, with the secret, pass."""
    record = json.loads((rcli.home / ".seamless" / "stacks" / f"{name}.json").read_text())
    ports = record["placement"]["ports"]
    known = hashlib.sha256(b"x").hexdigest()
    args = [str(ports[s]) for s in ("hashserver", "database", "scheduler", "dashboard")] + [known]
    owner = remote.ssh(["sh", "-c", KNOCK, "-", *args, "owner", name]).stdout
    assert re.search(r"buffer PUT 20[01]\b", owner) and "buffer GET 200" in owner and "database PUT 200" in owner, owner
    other = subprocess.run(["docker", "exec", "-u", "nodocker", remote.name, "sh", "-c", KNOCK, "-", *args, "intruder"],
                           capture_output=True, text=True).stdout
    assert "buffer GET 401" in other and "buffer PUT 401" in other and "database PUT 401" in other, other
    assert "dashboard 000" in other and "certificate required" in other.lower(), other
    denied = subprocess.run(["docker", "exec", "-u", "nodocker", remote.name, "cat",
                             f"/home/{remote.user}/.seamless/stacks/{name}.tls/http.secret"], capture_output=True, text=True)
    assert denied.returncode != 0 and "Permission denied" in denied.stderr


def test_a_seamless_project_on_a_remote_stack_over_ssh_with_no_terminal_kept_open(rcli, client_venv, remote, tmp_path):
    """`up remote --project` starts the tunnel (SSH forwards, owner-only forwarder) in the
    background: an unmodified project (seamless.config.init()) computes on the remote's workers;
    the tunnel killed, status names it and up starts it again; down leaves no process."""
    from seamless_stack.processes import alive

    from .test_seamless_config import SeamlessProject, background_tunnel, client_files

    name = rcli.new_name()
    up = rcli.up(name, "--host", remote.destination, "--ssh", "--project", "demo", method="remote")
    assert up.returncode == 0 and "runs in the background" in up.stderr, up.stderr
    connect = rcli.run("connect", "--name", name, "--project", "demo")  # the project's lines; the tunnel runs already
    assert connect.returncode == 0 and "runs in the background" not in connect.stderr, connect.stderr
    project = SeamlessProject(tmp_path / "project", client_venv, rcli.home)
    project.write_config(connect.stdout)
    answer = project.result("5")
    assert answer["direct"]["host"] in remote_workers(remote) and answer["delayed"]["value"] == 6

    tunnel = background_tunnel(rcli, name)
    os.kill(tunnel, signal.SIGKILL)
    wait_until(lambda: not alive(tunnel), 10, "the tunnel gone")
    dead = rcli.run("status", "--name", name)
    assert dead.returncode == 1 and "the tunnel its Seamless projects need is not running" in dead.stderr, dead.stderr
    again = rcli.up(name, "--host", remote.destination, "--ssh", method="remote")
    assert again.returncode == 0 and "runs in the background" in again.stderr, again.stderr
    assert project.result("5") == answer, "from the remote database, through the new tunnel"

    tunnel = background_tunnel(rcli, name)
    assert rcli.run("down", "--name", name).returncode == 0
    assert not alive(tunnel) and client_files(rcli.home) == {}


def _read_json(process: subprocess.Popen, timeout: float = 60) -> str:
    """The tunnel prints its environment as one JSON object once the forwards stand."""
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"tunnel ended: {process.stderr.read()}")
        lines.append(line)
        if line.startswith("}"):
            return "".join(lines)
    raise AssertionError("no environment from the tunnel")


@pytest.mark.parametrize(
    "host, expected",
    [
        ("seamless@127.0.0.1:1", "cannot reach seamless@127.0.0.1:1 over SSH"),
        ("nobody-here@{address}", "SSH authentication to nobody-here@"),
        ("nodocker@{address}", "does not answer"),
    ],
)
def test_remote_connection_errors(rcli, remote, host, expected):
    name = rcli.new_name()
    result = rcli.up(name, "--host", host.format(address=remote.address), method="remote")
    assert result.returncode == 2 and expected in result.stderr, result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("seamless-stack: error:")]) == 1
    assert remote_workers(remote) == set()


def test_remote_directory_not_writable(rcli, remote):
    name = rcli.new_name()
    result = rcli.up(name, "--host", remote.destination, "--buffer-dir", "/root/buffers", method="remote")
    assert result.returncode == 2 and "/root/buffers on" in result.stderr and "cannot be created" in result.stderr
    assert remote.ssh("docker ps -aq").stdout.strip() == "", "nothing started on the remote"

"""Hardened service containers: never uid 0, no capabilities, no privilege gain, a bound on
processes, read-only root file systems; and the storage's file permissions bind the services.

Through the real `up local`: as root, the driver runs the services as an unprivileged
UID:GID and hands the storage directories to it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

IMAGES = ("hashserver", "database", "scheduler", "worker")
SERVICES = (*IMAGES, "supervisor")  # the supervisor runs from the database image
READ_ONLY_ROOT = set(SERVICES)  # compose/compose.yaml, supervise.yaml: read_only: true for all
ENGINE_SOCKET = "/var/run/docker.sock"


def stack_containers(name: str) -> dict[str, list[dict]]:
    """service -> `docker inspect` of each of its running containers."""
    ids = subprocess.run(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project=seamless-{name}"],
                         capture_output=True, text=True, check=True).stdout.split()
    inspected = json.loads(subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True, check=True).stdout)
    by_service: dict[str, list[dict]] = {}
    for container in inspected:
        by_service.setdefault(container["Config"]["Labels"]["com.docker.compose.service"], []).append(container)
    return by_service


def names_root(user: str) -> bool:
    """Config.User as Docker reads it: "" means the image's user, "0", "root", "0:0", "root:x"..."""
    uid = user.split(":", 1)[0].strip()
    return uid in ("", "0", "root")


def process_status(container: dict) -> list[dict[str, str]]:
    """/proc/<pid>/status of every process of a container, read on the host."""
    pids = subprocess.run(["docker", "top", container["Id"], "-eo", "pid"], capture_output=True, text=True,
                          check=True).stdout.split()[1:]
    statuses = []
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:  # a health check that just ended
            continue
        statuses.append(dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line))
    return statuses


def root_mount_options(container: dict) -> list[str]:
    """The mount options of / as the container's processes see it."""
    for line in Path(f"/proc/{container['State']['Pid']}/mounts").read_text().splitlines():
        fields = line.split()
        if fields[1] == "/":
            return fields[3].split(",")
    raise AssertionError(f"no / in the mounts of {container['Name']}")


def in_container(container: dict, command: str) -> subprocess.CompletedProcess:
    """Runs as the container's own user (docker exec's default)."""
    return subprocess.run(["docker", "exec", container["Id"], "sh", "-c", command], capture_output=True, text=True)


CREDENTIALS_HELD = {
    "hashserver": {"http.secret", "ca.crt", "server.crt", "server.key"},
    "database": {"http.secret", "ca.crt", "server.crt", "server.key"},
    "scheduler": {"http.secret", "ca.crt", "server.crt", "server.key", "bundle.pem"},
    "worker": {"ca.crt", "server.crt", "server.key", "bundle.pem"},
    "supervisor": set(),
}


def test_every_service_container_is_hardened(cli, client, tmp_path):
    name = "hard" + uuid.uuid4().hex[:8]
    up = cli.up(name, "--workers", "2", "--threads", "1", "--worker-memory-limit", "2G",
                "--buffer-dir", str(tmp_path / "buffers"), "--database-dir", str(tmp_path / "database"))
    assert up.returncode == 0, up.stderr
    run = client.run(cli.env_file(name), "seamless-run", "expr 6 \\* 7")
    assert run.returncode == 0 and run.stdout.strip() == "42", run.stderr

    containers = stack_containers(name)
    assert sorted(containers) == sorted(SERVICES) and len(containers["worker"]) == 2
    for service, instances in containers.items():
        for container in instances:
            where = f"{service} ({container['Name']})"
            config, host = container["Config"], container["HostConfig"]
            assert not names_root(config["User"]), f"{where} runs as {config['User']!r}"
            assert "ALL" in (host["CapDrop"] or []), f"{where}: cap_drop ALL"
            assert any(opt.startswith("no-new-privileges") and not opt.endswith("false")
                       for opt in host["SecurityOpt"] or []), f"{where}: no-new-privileges"
            assert (host["PidsLimit"] or 0) > 0, f"{where}: a pids limit"
            limit = {"worker": 2 << 30, "supervisor": 128 << 20}.get(service, 4 << 30)  # --worker-memory-limit 2G; --memory-limit's default
            # The engine's socket (as good as root on the host): the supervisor's alone, and it has no network at all.
            sockets = [m["Destination"] for m in container["Mounts"] if m["Destination"].endswith(".sock")]
            assert sockets == ([ENGINE_SOCKET] if service == "supervisor" else []), f"{where} binds {sockets}"
            assert (host["NetworkMode"] == "none") == (service == "supervisor"), f"{where}: network {host['NetworkMode']}"
            assert host["Memory"] == limit, f"{where}: memory limit {host['Memory']}, not {limit}"
            # What the kernel says of every process, whatever Docker was told.
            statuses = process_status(container)
            assert statuses, f"{where}: no processes?"
            for status in statuses:
                ids = status["Uid"].split() + status["Gid"].split() + status.get("Groups", "").split()
                assert "0" not in ids, f"{where}: {status['Name']} has uid/gid 0: {status['Uid']} / {status['Gid']} / {status.get('Groups')}"
                assert int(status["CapBnd"], 16) == 0 and int(status["CapEff"], 16) == 0, f"{where}: {status['Name']} has capabilities"
                assert status["NoNewPrivs"].strip() == "1", f"{where}: {status['Name']} may gain privileges"
            if service in READ_ONLY_ROOT:
                assert host["ReadonlyRootfs"] is True, f"{where}: read-only root file system"
                assert "/tmp" in (host["Tmpfs"] or {}), f"{where}: a tmpfs on /tmp"
                assert "ro" in root_mount_options(container), f"{where}: / is mounted writable"
                assert in_container(container, "touch /tmp/probe && rm /tmp/probe").returncode == 0, f"{where}: /tmp is not writable"
            # Least credentials: what the service uses, never the CA key or the client identity.
            held = set(in_container(container, "ls /tls").stdout.split())
            assert held == CREDENTIALS_HELD[service], f"{where} holds {sorted(held)}"


def _request(method: str, url: str, body: dict | None = None, ssl_context=None) -> tuple[int, str]:
    """urllib leaves the URL's `user:secret@` alone: it becomes Basic auth here, as in aiohttp."""
    data = json.dumps(body).encode() if body is not None else None
    parts = urllib.parse.urlsplit(url)
    plain = parts._replace(netloc=f"{parts.hostname}:{parts.port}").geturl()
    request = urllib.request.Request(plain, data=data, method=method)
    if parts.password:
        token = base64.b64encode(f"{parts.username}:{parts.password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=30, context=ssl_context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _restart_and_wait(container: str, url: str, ssl_context, timeout: float = 120) -> None:
    """seamless-database keeps its SQLite file open: file permissions count at the next open."""
    subprocess.run(["docker", "restart", "-t", "10", container], capture_output=True, check=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if _request("GET", f"{url}/healthcheck", ssl_context=ssl_context) == (200, "OK"):
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"the database did not come back after a restart within {timeout:.0f}s")


def test_a_read_only_database_file_is_read_only_to_the_service(cli, client, tmp_path):
    """Without capabilities, the service is bound by the file's mode like any user: no
    CAP_DAC_OVERRIDE to write through a `chmod 444` (root with default capabilities would)."""
    name = "hard" + uuid.uuid4().hex[:8]
    database = tmp_path / "database"
    up = cli.up(name, "--buffer-dir", str(tmp_path / "buffers"), "--database-dir", str(database))
    assert up.returncode == 0, up.stderr
    run = client.run(cli.env_file(name), "seamless-run", "expr 6 \\* 7")
    assert run.returncode == 0 and run.stdout.strip() == "42", run.stderr
    db_file = database / "seamless.db"
    assert db_file.is_file()

    values = json.loads(cli.run("env", "--name", name, "--format", "json").stdout)
    url = json.loads(values["SEAMLESS_REMOTE_CLIENTS"])["database"][0]["url"]  # with the stack's secret
    context = ssl.create_default_context(cafile=values["SSL_CERT_FILE"])  # the stack's HTTPS
    (db_container,) = [c["Id"] for c in stack_containers(name)["database"]]

    def put_result(tag: str) -> tuple[str, int]:
        """A transformation result, PUT as a Seamless client does: JSON in the body, at /."""
        checksum = hashlib.sha256(f"{name}-{tag}-transformation".encode()).hexdigest()
        result = hashlib.sha256(f"{name}-{tag}-result".encode()).hexdigest()
        status, _ = _request("PUT", url + "/", {"type": "transformation", "checksum": checksum, "value": result}, context)
        return checksum, status

    def stored(checksum: str) -> bool:
        with sqlite3.connect(f"file:{db_file}?mode=ro", uri=True) as db:
            return bool(db.execute("select 1 from transformation where checksum = ?", (checksum,)).fetchall())

    try:
        db_file.chmod(0o444)
        _restart_and_wait(db_container, url, context)
        checksum, status = put_result("read-only")
        assert status != 200, "a PUT into a chmod 444 database file was accepted"
        assert _request("GET", url + "/", {"type": "transformation", "checksum": checksum}, context)[0] == 404
        assert not stored(checksum), "the write landed in a chmod 444 database file"
    finally:
        db_file.chmod(0o644)

    _restart_and_wait(db_container, url, context)
    checksum, status = put_result("writable")
    assert status == 200
    assert stored(checksum), "chmod 644 makes the database writable again"


SLIM_CHECK = """
import importlib.util, json, pathlib, sysconfig
site = pathlib.Path(sysconfig.get_paths()["purelib"])
zstd = None
if importlib.util.find_spec("zstandard"):
    import zstandard
    zstd = zstandard.backend
print(json.dumps({"pip": importlib.util.find_spec("pip") is not None,
                  "setuptools": importlib.util.find_spec("setuptools") is not None,
                  "tests": [str(p.relative_to(site)) for p in site.rglob("tests") if p.is_dir()],
                  "zstandard": zstd}))
"""


def test_images_ship_only_what_runs(cli):
    """No pip or setuptools in the images (pip-install brings its own and takes it away), no
    test suites, and zstandard still imports, with its C backend (its cffi one is dropped)."""
    listed = [line.split("\t") for line in cli.run("images", "list", check=True).stdout.splitlines() if "\t" in line]
    assert {row[0] for row in listed} == set(IMAGES), listed
    for role, tag, *_ in listed:
        out = subprocess.run(["docker", "run", "--rm", "--entrypoint", "python3", tag, "-c", SLIM_CHECK],
                             capture_output=True, text=True, check=True).stdout
        found = json.loads(out)
        assert found["pip"] is False and found["setuptools"] is False, (role, found)
        assert found["tests"] == [], (role, found["tests"][:5])
        if role != "database":  # the hashserver, scheduler and worker locks have zstandard
            assert found["zstandard"] == "cext", (role, found)

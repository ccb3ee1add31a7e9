"""Nobody but the stack's owner gets in: an intruder on the same machine (another UID,
on the host's network, with Dask installed) is refused by every service, and cannot read
the credentials; the owner's unmodified client, given only the environment output, computes.

Every probe runs twice: as the owner with the credentials (each request must succeed, so a
probe that could not reach the service cannot pass for a refusal) and as the intruder."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from .conftest import CLI

INTRUDER_UID = 12345

PROBE = r"""
import base64, hashlib, json, os, ssl, sys, urllib.error, urllib.request
cfg = json.loads(sys.argv[1])
secret = cfg.get("secret")
context = ssl.create_default_context()
context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # an intruder does not care whom it talks to
if cfg.get("client_cert"):
    context.load_cert_chain(*cfg["client_cert"])

def http(method, url, body=None, secret=None):
    request = urllib.request.Request(url, data=body, method=method)
    if secret:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"seamless:{secret}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10, context=context if url.startswith("https:") else None) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except Exception as exc:
        return type(exc).__name__

known = hashlib.sha256(cfg["known"].encode()).hexdigest()
mine = b"written by " + str(os.getuid()).encode()
fake_transformation = hashlib.sha256(b"a transformation nobody computed " + mine).hexdigest()
if cfg.get("store"):  # the owner stores a buffer the intruder will then try to read
    assert http("PUT", f"{cfg['hashserver']}/{known}", cfg["known"].encode(), secret) == 200
results = {
    "buffer PUT": http("PUT", f"{cfg['hashserver']}/{hashlib.sha256(mine).hexdigest()}", mine, secret),
    "buffer GET": http("GET", f"{cfg['hashserver']}/{known}", secret=secret),
    "database PUT (poisoning)": http("PUT", cfg["database"], json.dumps(
        {"type": "transformation", "checksum": fake_transformation, "value": known}).encode(), secret),
    "database GET": http("GET", cfg["database"], json.dumps({"type": "transformation", "checksum": fake_transformation}).encode(), secret),
}
if secret:
    results["wrong secret"] = http("GET", f"{cfg['hashserver']}/{known}", secret="x" * len(secret))
results["dashboard"] = http("GET", f"{cfg['dashboard']}/health")
results["dashboard, plain http"] = http("GET", cfg["dashboard"].replace("https:", "http:") + "/health")
import socket
host, port = cfg["scheduler"].split(":")
try:  # the TLS handshake itself, with the client certificate if we have one
    with socket.create_connection((host, int(port)), timeout=5) as raw, context.wrap_socket(raw) as tls:
        tls.settimeout(3)
        # TLS 1.3: the server's verdict on our certificate arrives after the handshake. Only
        # read: data sent to a server that refused us races its close (a reset, and the alert
        # is lost to an EOF).
        tls.recv(1)
        results["Dask TLS handshake"] = "accepted"
except (socket.timeout, TimeoutError):
    results["Dask TLS handshake"] = "accepted"  # the server waits for a Dask message
except Exception as exc:
    results["Dask TLS handshake"] = f"refused: {exc}"
try:
    from distributed import Client
except ImportError:  # a plain python3 on a cluster node: the handshake above says it all
    Client = None
for scheme in ("tls", "tcp") if Client else ():
    try:
        with Client(f"{scheme}://{cfg['scheduler']}", timeout=10) as client:
            results[f"Dask {scheme}://"] = "ran code as uid %d" % client.run_on_scheduler(os.getuid)
    except Exception as exc:
        results[f"Dask {scheme}://"] = type(exc).__name__
print(json.dumps(results))
"""


def probe(image: str, cfg: dict, user: str, env: dict[str, str] | None = None, mounts: list[str] = (), network: str = "host") -> dict:
    """Run PROBE in a container of our scheduler image (it has distributed) as `user`."""
    command = ["docker", "run", "--rm", "--network", network, "--user", user, "--read-only", "--tmpfs", "/tmp"]
    for key, value in (env or {}).items():
        command += ["-e", f"{key}={value}"]
    for mount in mounts:
        command += ["-v", mount]
    out = subprocess.run([*command, image, "python", "-c", PROBE, json.dumps(cfg)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def probe_config(record: dict, host: str) -> dict:
    """Where the probe knocks: the stack's published ports on `host`."""
    ports = record["placement"]["ports"]
    http = "https" if record["method"] == "slurm" or record["bind"] not in ("127.0.0.1", "localhost") else "http"
    return {"hashserver": f"{http}://{host}:{ports['hashserver']}", "database": f"{http}://{host}:{ports['database']}",
            "dashboard": f"https://{host}:{ports['dashboard']}", "scheduler": f"{host}:{ports['scheduler']}",
            "known": "a buffer the owner stored " + record["name"]}


def scheduler_image(cli) -> str:
    out = subprocess.run([str(CLI), "images", "list"], capture_output=True, text=True, env=cli.env(), check=True).stdout
    return next(line.split()[1] for line in out.splitlines() if line.startswith("scheduler"))


def assert_the_owner_gets_in(image: str, record: dict, cfg: dict, network: str = "host") -> None:
    """The owner's probe, with the credentials: every request succeeds (so a refusal seen by
    the intruder's identical probe is the stack's doing, not an unreachable port)."""
    folder = Path(record["credentials_dir"])
    secret = (folder / "http.secret").read_text().strip()
    owner = probe(image, {**cfg, "secret": secret, "store": True, "client_cert": ["/creds/client.crt", "/creds/client.key"]}, "0:0",
                  env={"DASK_DISTRIBUTED__COMM__TLS__CA_FILE": "/creds/ca.crt",
                       "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": "/creds/client.crt",
                       "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": "/creds/client.key"},
                  mounts=[f"{folder}:/creds:ro"], network=network)
    assert owner["buffer PUT"] in (200, 201), owner  # 201: stored now; 200: it was there
    assert owner["buffer GET"] == owner["database PUT (poisoning)"] == owner["database GET"] == 200, owner
    assert owner["wrong secret"] == 401 and owner["dashboard"] == 200, owner
    assert owner["Dask tls://"].startswith("ran code") and owner["Dask TLS handshake"] == "accepted", owner


def assert_refused(intruder: dict) -> None:
    for what in ("buffer PUT", "buffer GET", "database PUT (poisoning)", "database GET"):
        assert intruder[what] == 401, (what, intruder)
    assert intruder["dashboard"] == "SSLError" and intruder["dashboard, plain http"] != 200, intruder
    assert "CERTIFICATE_REQUIRED" in intruder["Dask TLS handshake"].upper(), intruder
    assert not any(str(answer).startswith("ran code") for answer in intruder.values()), intruder


def assert_only_the_owner_gets_in(record: dict, host: str, network: str = "host") -> None:
    """The owner's probe gets everything; the intruder's, from a container as another UID, nothing."""
    image = record["compose"]["images"]["scheduler"] if record.get("compose") else None
    cfg = probe_config(record, host)
    assert_the_owner_gets_in(image, record, cfg, network)
    assert_refused(probe(image, cfg, f"{INTRUDER_UID}:{INTRUDER_UID}", network=network))


def assert_owner_only_files(record: dict, env_file: Path) -> None:
    """The credentials and the environment output (it holds the secret)."""
    folder = Path(record["credentials_dir"])
    assert folder.stat().st_mode & 0o777 == 0o700
    for path in [*folder.iterdir(), env_file]:
        assert path.stat().st_mode & 0o077 == 0, path


def read_record(cli, name: str) -> dict:
    return json.loads((cli.home / ".seamless" / "stacks" / f"{name}.json").read_text())


def test_an_intruder_on_the_machine_gets_nothing_the_owner_gets_everything(cli, client, tmp_path):
    name = cli.new_name()
    assert cli.up(name, "--buffer-dir", str(tmp_path / "b"), "--database-dir", str(tmp_path / "d")).returncode == 0
    record = read_record(cli, name)
    assert_only_the_owner_gets_in(record, "127.0.0.1")
    assert_owner_only_files(record, cli.env_file(name))
    # The owner's real client, given only the environment output, still computes.
    run = client.run(cli.env_file(name), "seamless-run", "echo owner-computes")
    assert run.returncode == 0 and run.stdout.strip() == "owner-computes", run.stderr
    env = json.loads(cli.run("env", "--name", name, "--format", "json").stdout)
    assert env["SEAMLESS_DASK_SCHEDULER"].startswith("tls://") and "@127.0.0.1:" in env["SEAMLESS_REMOTE_CLIENTS"]


def test_insecure_is_refused_off_loopback_and_said_loudly(cli, tmp_path):
    refused = cli.run("up", "local", "--name", cli.new_name(), "--insecure", "--bind", "0.0.0.0")
    assert refused.returncode == 2 and "--insecure is only for a local stack published on 127.0.0.1" in refused.stderr
    name = cli.new_name()
    up = cli.up(name, "--insecure", "--buffer-dir", str(tmp_path / "b"), "--database-dir", str(tmp_path / "d"))
    assert up.returncode == 0 and "WARNING: INSECURE stack" in up.stderr, up.stderr
    status = cli.run("status", "--name", name)
    assert "security: NONE (--insecure)" in status.stdout


def test_rotate_makes_new_credentials_and_the_old_ones_stop_working(cli, client, tmp_path):
    name = cli.new_name()
    storage = ("--buffer-dir", str(tmp_path / "b"), "--database-dir", str(tmp_path / "d"))
    assert cli.up(name, *storage).returncode == 0
    assert "security: Dask mutual TLS" in cli.run("status", "--name", name).stdout
    old = read_record(cli, name)
    old_secret = (Path(old["credentials_dir"]) / "http.secret").read_text()
    old_ca = (Path(old["credentials_dir"]) / "ca.crt").read_text()
    refused = cli.up(name, *storage, "--rotate")
    assert refused.returncode == 2 and f"seamless-stack down --name {name}" in refused.stderr, "not while it runs"
    assert cli.run("down", "--name", name).returncode == 0
    assert cli.up(name, *storage).returncode == 0
    assert (Path(old["credentials_dir"]) / "http.secret").read_text() == old_secret, "kept across down/up"
    assert cli.run("down", "--name", name).returncode == 0
    assert cli.up(name, *storage, "--rotate").returncode == 0
    new = read_record(cli, name)
    assert (Path(new["credentials_dir"]) / "http.secret").read_text() != old_secret
    assert (Path(new["credentials_dir"]) / "ca.crt").read_text() != old_ca
    cfg = probe_config(new, "127.0.0.1")
    with_old = probe(new["compose"]["images"]["scheduler"], {**cfg, "secret": old_secret.strip()}, f"{INTRUDER_UID}:{INTRUDER_UID}")
    assert with_old["buffer GET"] == with_old["database GET"] == 401, with_old
    run = client.run(cli.env_file(name), "seamless-run", "echo rotated")
    assert run.returncode == 0 and run.stdout.strip() == "rotated", run.stderr

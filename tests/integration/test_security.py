"""Nobody but the stack's owner gets in: an intruder on the same machine (another UID,
on the host's network, with Dask installed) is refused by every service, and cannot read
the credentials; the owner's unmodified client, given only the environment output, computes.

Every probe runs twice: as the owner with the credentials (each request must succeed, so a
probe that could not reach the service cannot pass for a refusal) and as the intruder."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

INTRUDER_UID = 12345

PROBE = r"""
import base64, hashlib, json, os, ssl, sys, urllib.error, urllib.request
cfg = json.loads(sys.argv[1])
secret = cfg.get("secret")

def http(method, url, body=None, secret=None, context=None):
    request = urllib.request.Request(url, data=body, method=method)
    if secret:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"seamless:{secret}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except Exception as exc:
        return type(exc).__name__

known = hashlib.sha256(cfg["known"].encode()).hexdigest()
mine = b"written by " + str(os.getuid()).encode()
fake_transformation = hashlib.sha256(b"a transformation nobody computed " + mine).hexdigest()
results = {
    "buffer PUT": http("PUT", f"{cfg['hashserver']}/{hashlib.sha256(mine).hexdigest()}", mine, secret),
    "buffer GET": http("GET", f"{cfg['hashserver']}/{known}", secret=secret),
    "database PUT (poisoning)": http("PUT", cfg["database"], json.dumps(
        {"type": "transformation", "checksum": fake_transformation, "value": known}).encode(), secret),
    "database GET": http("GET", cfg["database"], json.dumps({"type": "transformation", "checksum": fake_transformation}).encode(), secret),
}
if secret:
    results["wrong secret"] = http("GET", f"{cfg['hashserver']}/{known}", secret="x" * len(secret))
context = ssl.create_default_context()
context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # an intruder does not care whom it talks to
if cfg.get("client_cert"):
    context.load_cert_chain(*cfg["client_cert"])
results["dashboard"] = http("GET", f"{cfg['dashboard']}/health", context=context)
results["dashboard, plain http"] = http("GET", cfg["dashboard"].replace("https:", "http:") + "/health")
import socket
host, port = cfg["scheduler"].split(":")
try:  # the TLS handshake itself, with the client certificate if we have one
    with socket.create_connection((host, int(port)), timeout=5) as raw, context.wrap_socket(raw) as tls:
        tls.settimeout(3)
        tls.sendall(b"hello")
        tls.recv(1)  # TLS 1.3: the server's verdict on our certificate arrives here
        results["Dask TLS handshake"] = "accepted"
except (socket.timeout, TimeoutError):
    results["Dask TLS handshake"] = "accepted"  # the server waits for a Dask message
except Exception as exc:
    results["Dask TLS handshake"] = f"refused: {exc}"
from distributed import Client
for scheme in ("tls", "tcp"):
    try:
        with Client(f"{scheme}://{cfg['scheduler']}", timeout=10) as client:
            results[f"Dask {scheme}://"] = "ran code as uid %d" % client.run_on_scheduler(os.getuid)
    except Exception as exc:
        results[f"Dask {scheme}://"] = type(exc).__name__
print(json.dumps(results))
"""


def probe(image: str, cfg: dict, user: str, env: dict[str, str] | None = None, mounts: list[str] = ()) -> dict:
    command = ["docker", "run", "--rm", "--network", "host", "--user", user, "--read-only", "--tmpfs", "/tmp"]
    for key, value in (env or {}).items():
        command += ["-e", f"{key}={value}"]
    for mount in mounts:
        command += ["-v", mount]
    out = subprocess.run([*command, image, "python", "-c", PROBE, json.dumps(cfg)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_an_intruder_on_the_machine_gets_nothing_the_owner_gets_everything(cli, client, tmp_path):
    name = cli.new_name()
    buffers = tmp_path / "b"
    assert cli.up(name, "--buffer-dir", str(buffers), "--database-dir", str(tmp_path / "d")).returncode == 0
    env = json.loads(cli.run("env", "--name", name, "--format", "json").stdout)
    record = json.loads((cli.home / ".seamless" / "stacks" / f"{name}.json").read_text())
    folder = Path(record["credentials_dir"])
    image = record["compose"]["images"]["scheduler"]
    ports = record["placement"]["ports"]
    secret = (folder / "http.secret").read_text().strip()
    known = "a buffer the owner stored " + name
    cfg = {"hashserver": f"http://127.0.0.1:{ports['hashserver']}", "database": f"http://127.0.0.1:{ports['database']}",
           "dashboard": f"https://127.0.0.1:{ports['dashboard']}", "scheduler": f"127.0.0.1:{ports['scheduler']}",
           "known": known}
    subprocess.run(["curl", "-sf", "-u", f"seamless:{secret}", "-X", "PUT", "--data-binary", known,
                    f"{cfg['hashserver']}/{hashlib.sha256(known.encode()).hexdigest()}"], check=True)

    owner = probe(image, {**cfg, "secret": secret, "client_cert": ["/creds/client.crt", "/creds/client.key"]}, "0:0",
                  env={"DASK_DISTRIBUTED__COMM__TLS__CA_FILE": "/creds/ca.crt",
                       "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": "/creds/client.crt",
                       "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": "/creds/client.key"},
                  mounts=[f"{folder}:/creds:ro"])
    assert owner["buffer PUT"] == owner["buffer GET"] == owner["database PUT (poisoning)"] == 200, owner
    assert owner["database GET"] == 200 and owner["wrong secret"] == 401, owner
    assert owner["dashboard"] == 200 and owner["Dask tls://"].startswith("ran code"), owner
    assert owner["Dask TLS handshake"] == "accepted", owner

    intruder = probe(image, cfg, f"{INTRUDER_UID}:{INTRUDER_UID}")
    for what in ("buffer PUT", "buffer GET", "database PUT (poisoning)", "database GET"):
        assert intruder[what] == 401, (what, intruder)
    assert intruder["dashboard"] == "SSLError" and intruder["dashboard, plain http"] != 200, intruder
    assert "CERTIFICATE_REQUIRED" in intruder["Dask TLS handshake"].upper(), intruder
    assert not any(str(answer).startswith("ran code") for answer in intruder.values()), intruder

    # The credentials and the environment output (it holds the secret): owner-only.
    assert folder.stat().st_mode & 0o777 == 0o700
    for path in [*folder.iterdir(), cli.env_file(name)]:
        assert path.stat().st_mode & 0o077 == 0, path

    # The owner's real client, given only the environment output, still computes.
    run = client.run(cli.env_file(name), "seamless-run", "echo owner-computes")
    assert run.returncode == 0 and run.stdout.strip() == "owner-computes", run.stderr
    assert env["SEAMLESS_DASK_SCHEDULER"].startswith("tls://") and f"seamless:{secret}@" in env["SEAMLESS_REMOTE_CLIENTS"]


def test_insecure_is_refused_off_loopback_and_said_loudly(cli, tmp_path):
    refused = cli.run("up", "local", "--name", cli.new_name(), "--insecure", "--bind", "0.0.0.0")
    assert refused.returncode == 2 and "--insecure is only for a local stack published on 127.0.0.1" in refused.stderr
    name = cli.new_name()
    up = cli.up(name, "--insecure", "--buffer-dir", str(tmp_path / "b"), "--database-dir", str(tmp_path / "d"))
    assert up.returncode == 0 and "WARNING: INSECURE stack" in up.stderr, up.stderr
    status = cli.run("status", "--name", name)
    assert "security: NONE (--insecure)" in status.stdout

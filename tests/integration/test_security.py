"""Nobody but the stack's owner gets in: an intruder on the same machine (another UID,
on the host's network, with Dask installed) is refused by every service, and cannot read
the credentials; the owner's unmodified client, given only the environment output, computes.

Every probe runs twice: as the owner with the credentials (each request must succeed, so a
probe that could not reach the service cannot pass for a refusal) and as the intruder."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import time
from pathlib import Path

from .conftest import CLI, container, read_available

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
    except urllib.error.URLError as exc:  # no HTTP answer: name what ended the connection
        return f"URLError({type(exc.reason).__name__})" if isinstance(exc.reason, BaseException) else "URLError"
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


# Every door of the hashserver and database, as an intruder knocks: each method x each
# spelling of a path (the health check's, the root, a checksum's, the promise and has routes),
# over the scheme the service speaks. Raw requests: no client library normalises the target.
DOORS = r"""
import hashlib, http.client, json, socket, ssl, sys
cfg = json.loads(sys.argv[1])
checksum = hashlib.sha256(b"a buffer nobody stored").hexdigest()
forged = hashlib.sha256(b"a transformation nobody computed").hexdigest()
record = json.dumps({"type": "transformation", "checksum": forged, "value": checksum}).encode()
methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND", "BREW"]
paths = ["/healthcheck", "/healthcheck/", "//healthcheck", "/HEALTHCHECK", "/Healthcheck", "/%68ealthcheck",
         "/healthcheck%2F", "/healthcheck?x=1", "/healthcheck?", "/healthcheck;x", "/./healthcheck",
         "/x/../healthcheck", "/healthcheck%00", "/", "", "*", f"/{checksum}", f"/promise/{checksum}", "/has",
         "/docs", "/openapi.json", "http://localhost/healthcheck"]
context = ssl.create_default_context()
context.check_hostname, context.verify_mode = False, ssl.CERT_NONE

def knock(url, method, path, body=None, headers=()):
    scheme, _, hostport = url.partition("://")
    host, port = hostport.rsplit(":", 1)
    kind = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
    conn = kind(host, int(port), timeout=15, **({"context": context} if scheme == "https" else {}))
    try:
        conn.putrequest(method, path, skip_host=False, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return [response.status, response.read(200).decode("latin-1")]
    except Exception as exc:
        return [type(exc).__name__, str(exc)[:100]]
    finally:
        conn.close()

answers = {}
for service in ("hashserver", "database"):
    for method in methods:
        for path in paths:
            body = record if method in ("PUT", "POST", "PATCH") else None
            answers[f"{service} {method} {path or '(empty)'}"] = knock(cfg[service], method, path, body)
    answers[f"{service} websocket"] = knock(cfg[service], "GET", "/ws", headers=[
        ("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")])
    answers[f"{service} 20 MB body"] = knock(cfg[service], "PUT", "/healthcheck", b"x" * (20 << 20))
print(json.dumps({"answers": answers, "forged": forged}))
"""


# The health check as the guard sees it: the same raw target once the server's parser is done
# (an empty query; the absolute form's path). Its own "OK", no server code either way.
HEALTH_SPELLINGS = ("/healthcheck", "/healthcheck?", "http://localhost/healthcheck")


# What the servers' HTTP parsers (uvicorn, aiohttp) answer to a request they cannot parse
# (an unknown method, an empty target): before any middleware, so before any server code.
# aiohttp refuses an asterisk-form target of a method other than OPTIONS with 400 "*".
PARSER_REFUSALS = ("Invalid HTTP request received.", "Invalid method encountered", "400, message", "Bad Request")


def assert_every_door_shut(answers: dict) -> None:
    """Without the secret only GET/HEAD of exactly /healthcheck answer (200, 'OK'); every
    other request is the guard's 401 (or refused before HTTP), never an answer of the app."""
    wrong = {}
    for door, (status, text) in answers.items():
        _, method, *path = door.split(" ", 2)
        if method in ("GET", "HEAD") and path and path[0] in HEALTH_SPELLINGS:
            ok = (status, text) == (200, "OK" if method == "GET" else "") or status == 401
        elif method == "websocket":
            ok = status in (401, 403)  # 403: closed before the handshake was accepted
        elif isinstance(status, int):
            ok = status == 401 or (status == 400 and (text.startswith(PARSER_REFUSALS) or (path == ["*"] and text in ("*", ""))))
        else:  # the connection was refused or reset before any request got through
            ok = True
        if not ok:
            wrong[door] = (status, text)
    assert not wrong, json.dumps(wrong)


def probe(image: str, cfg: dict, user: str, env: dict[str, str] | None = None, mounts: list[str] = (), network: str = "host",
          script: str = PROBE):
    """Run PROBE (or another script) in a container of our scheduler image (it has distributed) as `user`."""
    command = ["docker", "run", "--rm", "--network", network, "--user", user, "--read-only", "--tmpfs", "/tmp"]
    for key, value in (env or {}).items():
        command += ["-e", f"{key}={value}"]
    for mount in mounts:
        command += ["-v", mount]
    out = subprocess.run([*command, image, "python", "-c", script, json.dumps(cfg)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def probe_config(record: dict, host: str) -> dict:
    """Where the probe knocks: the stack's published ports on `host`."""
    ports = record["placement"]["ports"]
    http = "https" if record.get("credentials_dir") else "http"  # every secured stack speaks HTTPS
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


# How PROBE names a connection the server refused before any HTTP answer: a TLS alert, a
# reset, a close, a refused connect; bare (raised while reading the answer) or inside urllib's
# URLError (raised while sending the request, e.g. under load the reset that ends a refused
# handshake). Not a refusal: any HTTP status, a timeout, an error of the probe itself.
REFUSALS = frozenset({"SSLError", "SSLEOFError", "SSLZeroReturnError", "ConnectionResetError", "ConnectionRefusedError",
                      "ConnectionAbortedError", "BrokenPipeError", "RemoteDisconnected"})


def refused(answer) -> bool:
    """Whether PROBE's answer for one request is a refusal at the TLS or connection level."""
    name = answer if isinstance(answer, str) else ""
    inner = re.fullmatch(r"URLError\((\w+)\)", name)
    return (inner[1] if inner else name) in REFUSALS


def assert_refused(intruder: dict) -> None:
    for what in ("buffer PUT", "buffer GET", "database PUT (poisoning)", "database GET"):
        assert intruder[what] == 401, (what, intruder)
    # The dashboard wants the client certificate: no HTTP answer at all, the connection refused.
    assert refused(intruder["dashboard"]) and intruder["dashboard, plain http"] != 200, intruder
    assert "CERTIFICATE_REQUIRED" in intruder["Dask TLS handshake"].upper(), intruder
    assert not any(str(answer).startswith("ran code") for answer in intruder.values()), intruder


def assert_only_the_owner_gets_in(record: dict, host: str, network: str = "host") -> None:
    """The owner's probe gets everything; the intruder's, from a container as another UID,
    nothing, through any door."""
    image = record["compose"]["images"]["scheduler"] if record.get("compose") else None
    cfg = probe_config(record, host)
    assert_the_owner_gets_in(image, record, cfg, network)
    assert_refused(probe(image, cfg, f"{INTRUDER_UID}:{INTRUDER_UID}", network=network))
    assert_doors_shut(image, record, cfg, network)


def assert_doors_shut(image: str, record: dict, cfg: dict, network: str) -> None:
    """Every door knocked on as an intruder; then the owner checks no forged result was stored."""
    knocked = probe(image, cfg, f"{INTRUDER_UID}:{INTRUDER_UID}", network=network, script=DOORS)
    assert_every_door_shut(knocked["answers"])
    secret = (Path(record["credentials_dir"]) / "http.secret").read_text().strip()
    check = ("import base64, json, sys, ssl, urllib.request, urllib.error\n"
             "cfg = json.loads(sys.argv[1]); c = ssl.create_default_context(); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE\n"
             "r = urllib.request.Request(cfg['database'], data=json.dumps({'type': 'transformation', 'checksum': cfg['forged']}).encode(), method='GET')\n"
             "r.add_header('Authorization', 'Basic ' + base64.b64encode(('seamless:' + cfg['secret']).encode()).decode())\n"
             "try:\n    print(json.dumps(urllib.request.urlopen(r, timeout=10, context=c if cfg['database'].startswith('https') else None).status))\n"
             "except urllib.error.HTTPError as e:\n    print(json.dumps(e.code))\n")
    assert probe(image, {**cfg, "secret": secret, "forged": knocked["forged"]}, "0:0", network=network, script=check) == 404, \
        "a forged result was stored"


def assert_owner_only_files(record: dict, env_file: Path) -> None:
    """The credentials and the environment output (it holds the secret)."""
    folder = Path(record["credentials_dir"])
    assert folder.stat().st_mode & 0o777 == 0o700
    for path in [*folder.iterdir(), env_file]:
        assert path.stat().st_mode & 0o077 == 0, path


def read_record(cli, name: str) -> dict:
    return json.loads((cli.home / ".seamless" / "stacks" / f"{name}.json").read_text())


DASK_LOGS = """
import json, os, warnings
warnings.filterwarnings("ignore")
from distributed import Client
with Client(os.environ["DASK_SCHEDULER_ADDRESS"], timeout="30s") as c:  # what the dashboard's log pages show
    print(json.dumps({"scheduler": c.get_scheduler_logs(n=1000), "workers": c.get_worker_logs(n=1000), "nanny": c.get_worker_logs(n=1000, nanny=True)}))
"""


def assert_no_secret_in_logs(cli, client, name: str, record: dict) -> None:
    """After a workload: not in `seamless-stack logs`, Docker's own log files, nor the logs
    the scheduler and workers keep for the dashboard (Seamless logs its URLs: redacted)."""
    secret = (Path(record["credentials_dir"]) / "http.secret").read_text().strip()
    logs = cli.run("logs", "--name", name)
    assert logs.returncode == 0 and "Seamless worker setup completed" in logs.stdout, logs.stderr
    assert "seamless:***@" in logs.stdout, "the workers' remote clients are logged, redacted"
    containers = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project=seamless-{name}"],
                                capture_output=True, text=True, check=True).stdout.split()
    files = subprocess.run(["docker", "inspect", "-f", "{{.LogPath}}", *containers], capture_output=True, text=True,
                           check=True).stdout.split()
    dask = client.run(cli.env_file(name), "python", "-c", DASK_LOGS)
    assert dask.returncode == 0, dask.stderr[-2000:]
    texts = {"seamless-stack logs": logs.stdout + logs.stderr, "Dask's logs": dask.stdout,
             **{path: Path(path).read_text(errors="replace") for path in files}}
    assert [where for where, text in texts.items() if secret in text] == [], "the secret is in a log"


def assert_silent_connections_closed(record: dict, host: str, within: float = 60) -> None:
    """A connection that sends nothing (no request, no TLS handshake) holds no socket for good:
    every listener closes it within a minute."""
    import socket
    import time
    sockets = {}
    for service, port in record["placement"]["ports"].items():
        sockets[service] = socket.create_connection((host, port), timeout=10)
        sockets[service].settimeout(0.2)
    deadline, closed = time.monotonic() + within, {}
    while sockets and time.monotonic() < deadline:
        for service, sock in list(sockets.items()):
            try:
                if sock.recv(1024) == b"":
                    closed[service] = sockets.pop(service)
            except socket.timeout:
                pass
            except OSError:
                closed[service] = sockets.pop(service)
    for sock in [*sockets.values(), *closed.values()]:
        sock.close()
    assert not sockets, f"still open after {within:.0f}s: {sorted(sockets)}"


def connection_limits() -> dict[str, int]:
    """Each listener's limit, as the images define it (images/site/sitecustomize.py)."""
    import runpy
    from seamless_stack.resources import images_dir
    site = runpy.run_path(str(images_dir() / "site" / "sitecustomize.py"))
    return {"hashserver": site["GUARD_OPEN_FILES"], "database": site["GUARD_OPEN_FILES"],
            "scheduler": site["DASK_CONNECTIONS"], "dashboard": site["DASHBOARD_CONNECTIONS"]}


def service_process(name: str, service: str) -> Path:
    """/proc of the service's own process (the child of the container's init)."""
    init = subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", container(name, service)],
                          capture_output=True, text=True, check=True).stdout.strip()
    child = Path(f"/proc/{init}/task/{init}/children").read_text().split()[0]
    return Path(f"/proc/{child}")


def assert_connection_limits(name: str, record: dict, host: str, extra: int = 64) -> None:
    """A flood of connections (no credentials, nothing sent) on every listener: no service holds
    more sockets than its limit, and each serves its owner again once the flood ends."""
    import resource
    import socket
    import time
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limits = connection_limits()
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 2 * sum(limits.values()) + 4 * extra)), hard))
    ports, held = record["placement"]["ports"], {}
    processes = {service: service_process(name, "scheduler" if service == "dashboard" else service) for service in limits}
    try:
        for service, limit in limits.items():
            held[service] = []
            for _ in range(limit + extra):
                try:
                    held[service].append(socket.create_connection((host, ports[service]), timeout=5))
                except OSError:  # the backlog is full: the kernel turns the rest away
                    break
        time.sleep(3)
        sockets = {service: sum(1 for fd in (processes[service] / "fd").iterdir()
                                if fd.exists() and "socket:" in str(fd.readlink())) for service in limits}
        over = {s: (sockets[s], limits[s]) for s in ("hashserver", "database") if sockets[s] > limits[s]}
        # the scheduler's process holds the dashboard's and Dask's sockets: both limits together
        if sockets["scheduler"] > limits["scheduler"] + limits["dashboard"] + 64:
            over["scheduler"] = (sockets["scheduler"], limits["scheduler"] + limits["dashboard"])
        assert over == {}, f"sockets held over the limit: {over}"
    finally:
        for sock in (s for group in held.values() for s in group):
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_an_intruder_on_the_machine_gets_nothing_the_owner_gets_everything(cli, client, tmp_path):
    name = cli.new_name()
    assert cli.up(name, "--buffer-dir", str(tmp_path / "b"), "--database-dir", str(tmp_path / "d")).returncode == 0
    record = read_record(cli, name)
    assert_only_the_owner_gets_in(record, "127.0.0.1")
    assert_owner_only_files(record, cli.env_file(name))
    # The owner's real client, given only the environment output, still computes.
    run = client.run(cli.env_file(name), "seamless-run", "echo owner-computes")
    assert run.returncode == 0 and run.stdout.strip() == "owner-computes", run.stderr
    # Data at rest: the storage folders, every buffer and folder the hashserver made, the
    # database file, the stack folder: nothing for group or others, whatever the servers do.
    stored = [tmp_path / "b", *(tmp_path / "b").rglob("*"), tmp_path / "d", *(tmp_path / "d").iterdir(),
              cli.home / ".seamless" / "stacks"]
    assert any(path.is_file() for path in (tmp_path / "b").rglob("*")), "the workload stored buffers"
    assert [str(path) for path in stored if path.stat().st_mode & 0o077] == [], "readable by others"
    assert_no_secret_in_logs(cli, client, name, record)
    assert_silent_connections_closed(record, "127.0.0.1")
    assert_connection_limits(name, record, "127.0.0.1")
    again = client.run(cli.env_file(name), "seamless-run", "echo after-the-flood")
    assert again.returncode == 0 and again.stdout.strip() == "after-the-flood", again.stderr
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


def assert_up_renews_certificates_near_their_end(cli, client, name: str, storage: tuple, record: dict) -> None:
    """Certificates 2 days from their end on a running stack: `up` signs them again under the
    same CA and restarts each service once; the hashserver presents the new one, and the
    owner's client computes with the environment it already had."""
    import socket
    import ssl
    import time
    from seamless_stack import credentials
    folder = Path(record["credentials_dir"])
    env_before, client_key = cli.env_file(name).read_text(), (folder / "client.key").read_text()
    names = credentials._alt_names(credentials.Credentials(folder).names())
    for file, key, alt in (("server.crt", "server.key", names), ("client.crt", "client.key", None)):
        subprocess.run(["openssl", "req", "-x509", "-key", str(folder / key), "-CA", str(folder / "ca.crt"), "-CAkey",
                        str(folder / "ca.key"), "-days", "2", "-subj", "/CN=ending soon",
                        *(("-addext", f"subjectAltName={alt}") if alt else ()), "-out", str(folder / file)],
                       check=True, capture_output=True)

    def presented() -> int:
        """Seconds until the end of the certificate the hashserver presents."""
        context = ssl.create_default_context(cafile=str(folder / "ca.crt"))
        context.check_hostname = False
        port = record["placement"]["ports"]["hashserver"]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, context.wrap_socket(raw) as tls:
            return ssl.cert_time_to_seconds(tls.getpeercert()["notAfter"]) - int(time.time())

    assert cli.run("restart", "--name", name, "hashserver").returncode == 0
    assert presented() < 3 * 86400, "the stack now serves the ending certificate"
    assert "certificates end within 30 days" in cli.run("status", "--name", name).stdout
    up = cli.up(name, *storage)
    assert up.returncode == 0 and "certificates end within" in up.stderr and "started again" in up.stderr, up.stderr
    assert presented() > 60 * 86400, "renewed, and served"
    assert (folder / "client.key").read_text() == client_key and cli.env_file(name).read_text() == env_before
    run = client.run(cli.env_file(name), "seamless-run", "echo renewed")
    assert run.returncode == 0 and run.stdout.strip() == "renewed", run.stderr
    again = cli.up(name, *storage)
    assert again.returncode == 0 and "already up and healthy" in again.stderr, again.stderr
    assert "certificates end" not in cli.run("status", "--name", name).stdout


def test_rotate_makes_new_credentials_and_the_old_ones_stop_working(cli, client, tmp_path):
    name = cli.new_name()
    storage = ("--buffer-dir", str(tmp_path / "b"), "--database-dir", str(tmp_path / "d"))
    assert cli.up(name, *storage).returncode == 0
    assert "security: Dask mutual TLS" in cli.run("status", "--name", name).stdout
    old = read_record(cli, name)
    old_secret = (Path(old["credentials_dir"]) / "http.secret").read_text()
    old_ca = (Path(old["credentials_dir"]) / "ca.crt").read_text()
    assert_up_renews_certificates_near_their_end(cli, client, name, storage, old)
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


SQUATTER = """
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as any squatter would: TIME_WAIT rows do not stop it
for _ in range(100):  # the engine's proxy may take a moment to let the port go
    try:
        s.bind(("127.0.0.1", int(sys.argv[1])))
        break
    except OSError:
        time.sleep(0.1)
s.listen(); s.settimeout(0.5)
print("bound", flush=True)
deadline = time.monotonic() + 300
while time.monotonic() < deadline:
    try:
        conn, _ = s.accept()
    except socket.timeout:
        continue
    conn.settimeout(3)
    got = b""  # a probe that only connects (the tunnel checking its port) leaves an empty line
    try:
        got = conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nOK")  # whatever a client wants to hear
        got += conn.recv(65536)
    except OSError:
        pass
    print(got.hex(), flush=True)
    conn.close()
"""

def squatter_captures(squatter: subprocess.Popen, timeout: float = 30) -> list[bytes]:
    """What the squatter got, one entry per connection, up to the first that carried bytes: the
    owner's. Probes that only connect (a tunnel checking its local port) may come first."""
    captures, pending = [], ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not any(captures):
        pending += read_available(squatter.stdout)
        *lines, pending = pending.split("\n")
        captures += [bytes.fromhex(line.strip()) for line in lines]
        if squatter.poll() is not None and not pending:
            break
        time.sleep(0.1)
    return captures


OWNER_REQUEST = """
import asyncio, json, os, warnings
warnings.filterwarnings("ignore")
import aiohttp
async def main():
    url = json.loads(os.environ["SEAMLESS_REMOTE_CLIENTS"])["buffer"][0]["url"]  # as seamless_remote does
    async with aiohttp.ClientSession() as session:
        try:
            async with session.get(url + "/healthcheck", timeout=aiohttp.ClientTimeout(total=10)) as response:
                print("answered", response.status)
        except Exception as exc:
            print("refused", type(exc).__name__)
asyncio.run(main())
"""


def test_a_port_taken_while_a_service_was_down_yields_no_secret_and_is_named_in_one_line(cli, client, tmp_path):
    """Another user binds the hashserver's port while it is stopped. The owner's client, as
    Seamless' (aiohttp, the secret in the URL), checks the stack's certificate first: the squatter
    gets a TLS hello and nothing else. `restart` says which port is taken, in one line; once the
    port is free, `restart` brings the service back."""
    name = cli.new_name()
    assert cli.up(name, "--buffer-dir", str(tmp_path / "b"), "--database-dir", str(tmp_path / "d")).returncode == 0
    port = read_record(cli, name)["placement"]["ports"]["hashserver"]
    container = subprocess.run(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project=seamless-{name}",
                                "--filter", "label=com.docker.compose.service=hashserver"], capture_output=True, text=True,
                               check=True).stdout.strip()
    # The supervisor would start it again within a second or two: the window is the squatter's
    # chance, and the supervisor gone makes it last.
    supervisor = subprocess.run(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project=seamless-{name}",
                                 "--filter", "label=com.docker.compose.service=supervisor"], capture_output=True, text=True,
                                check=True).stdout.strip()
    subprocess.run(["docker", "stop", "-t", "5", supervisor, container], check=True, capture_output=True)
    squatter = subprocess.Popen(["setpriv", f"--reuid={INTRUDER_UID}", f"--regid={INTRUDER_UID}", "--clear-groups",
                                 "/usr/bin/python3", "-c", SQUATTER, str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert squatter.stdout.readline().strip() == "bound"
        asked = client.run(cli.env_file(name), "python", "-c", OWNER_REQUEST)
        assert asked.returncode == 0 and asked.stdout.startswith("refused"), asked.stdout + asked.stderr[-2000:]
        captures = squatter_captures(squatter)
        secret = (Path(read_record(cli, name)["credentials_dir"]) / "http.secret").read_text().strip()
        token = base64.b64encode(f"seamless:{secret}".encode())
        assert captures and captures[-1][:1] == b"\x16", f"the client came, with a TLS hello: {captures}"
        assert not any(secret.encode() in got or token in got for got in captures), "the squatter got the secret"
        taken = cli.run("restart", "hashserver", "--name", name)
        errors = [line for line in taken.stderr.splitlines() if line.startswith("seamless-stack: error:")]
        assert taken.returncode == 2 and len(errors) == 1, taken.stderr
        assert f"port {port} (127.0.0.1) of stack {name!r} is taken by another process" in errors[0], errors[0]
    finally:
        squatter.kill()
        squatter.wait()
    back = cli.run("restart", "hashserver", "--name", name)
    assert back.returncode == 0, back.stderr

"""Per-stack credentials: nobody without them uses the stack.

Made at `up` in the stack's folder (`~/.seamless/stacks/<name>.tls`, mode 0700, files 0600):

  ca.crt, ca.key          a private CA for this stack alone
  server.crt, server.key  the scheduler's, workers' and (where links leave the machine) the
                          hashserver's and database's certificate, signed by the CA
  client.crt, client.key  the client identity a Dask client must present (mutual TLS)
  http.secret             the secret the hashserver and database demand of every request
  bundle.pem              the system's CA roots plus ca.crt: SSL_CERT_FILE for clients and
                          workers (it replaces the system bundle, so it must still hold it)

The files are never in an image layer, a job script or an environment variable: services,
workers and clients are given their paths. Kept across `down`/`up`; `up --rotate` remakes them.
"""

from __future__ import annotations

import ipaddress
import secrets
import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import StackError
from .files import write_private
from .layout import SERVICE_ROLES
from .progress import Progress
from .shell import Shell, quote

FILES = ("ca.crt", "ca.key", "server.crt", "server.key", "client.crt", "client.key", "http.secret", "bundle.pem")
# Where every container sees the stack's credentials (compose/secure.yaml binds them there
# file by file, apptainer/services-job.sh and the worker jobs bind the tls/ folder).
CONTAINER_DIR = "/tls"
USER = "seamless"  # the user name in the URLs' credentials; only the secret is checked
# Names the services have inside a Compose network, and the loopback names tunnels use.
COMPOSE_NAMES = ("localhost", "127.0.0.1", *SERVICE_ROLES)
# Lifetimes: the CA (which clients trust) long; the certificates short, renewed at `up` when
# RENEW_DAYS or fewer remain under the same CA (the client's with the key clients already
# hold), so running clients see no change.
CA_DAYS, LEAF_DAYS, RENEW_DAYS = 3650, 90, 30
KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")  # openssl req


def in_container(file: str) -> str:
    """The path a container sees one of the stack's credential files at."""
    return f"{CONTAINER_DIR}/{file}"


@dataclass(frozen=True)
class Credentials:
    folder: Path

    def path(self, file: str) -> str:
        return str(self.folder / file)

    @property
    def secret(self) -> str:
        try:
            return (self.folder / "http.secret").read_text().strip()
        except OSError as exc:
            raise unreadable(self.folder, exc.strerror) from None

    def check(self) -> None:
        """The one-line repair, before anything uses a folder that lost files."""
        missing = [f for f in FILES if not (self.folder / f).is_file()]
        if missing:
            raise unreadable(self.folder, f"missing: {', '.join(missing)}")

    @property
    def complete(self) -> bool:
        return all((self.folder / f).is_file() for f in FILES)

    def names(self) -> set[str]:
        """The host names and addresses server.crt is valid for."""
        return {_normal(name) for name in _names(self.path("server.crt"), "subjectAltName")}

    def expiring(self) -> bool:
        """Whether server.crt or client.crt ends within RENEW_DAYS: the next `up` signs them again."""
        return any(_expiring(self.path(file)) for file in ("server.crt", "client.crt"))

    def permitted(self) -> set[str]:
        """The names the CA may certify (its name constraints; none: a CA made before them)."""
        return {_normal(name.split("/", 1)[0]) for name in _names(self.path("ca.crt"), "nameConstraints")}


def ensure(folder: Path, stack: str, names: tuple[str, ...] = (), rotate: bool = False,
           progress: Progress = lambda line: None) -> Credentials:
    """The stack's credentials, made once (all of them anew with `rotate`). server.crt alone
    is signed again when it lacks one of `names` (an address clients now use) that the CA's
    name constraints permit: the CA, the client identity and the secret, which clients hold,
    stay. A name outside them (a node added to the cluster, another --bind) makes all anew,
    with a line saying so. Owner-only throughout."""
    creds = Credentials(folder)
    wanted = {_normal(name) for name in (*COMPOSE_NAMES, *names) if name}
    if rotate or not creds.complete:
        _make_identity(creds, stack, wanted)
    elif not wanted <= (permitted := creds.permitted()):
        why = f"may not certify {', '.join(sorted(wanted - permitted))}" if permitted else "predates name constraints"
        progress(f"new credentials for stack {stack!r}: its CA {why}; clients source the environment again")
        _make_identity(creds, stack, wanted)
    elif _expiring(creds.path("client.crt")):
        _sign_client(creds, stack, renew=True)
    if creds.complete and wanted <= creds.names() and not _expiring(creds.path("server.crt")):
        return creds
    # Dask servers are clients of each other too (workers dial the scheduler and back).
    _openssl("req", "-x509", *KEY, *_signed_by(creds), "-subj", f"/CN=seamless-stack {stack} services",
             "-addext", f"subjectAltName={_alt_names(wanted)}", "-addext", "extendedKeyUsage=serverAuth,clientAuth",
             "-keyout", creds.path("server.key"), "-out", creds.path("server.crt"))
    for file in ("server.crt", "server.key"):
        (folder / file).chmod(0o600)
    return creds


def _signed_by(creds: Credentials) -> tuple[str, ...]:
    return ("-CA", creds.path("ca.crt"), "-CAkey", creds.path("ca.key"), "-days", str(LEAF_DAYS),
            "-addext", "basicConstraints=critical,CA:FALSE")


def _sign_client(creds: Credentials, stack: str, renew: bool = False) -> None:
    """The client identity: a new key, or (renew) the one clients already hold."""
    key = ("-key", creds.path("client.key")) if renew else (*KEY, "-keyout", creds.path("client.key"))
    _openssl("req", "-x509", *key, *_signed_by(creds), "-subj", f"/CN=seamless-stack {stack} client",
             "-addext", "extendedKeyUsage=clientAuth", "-out", creds.path("client.crt"))
    for file in ("client.crt", "client.key"):
        (creds.folder / file).chmod(0o600)


def _expiring(certificate: str) -> bool:
    """Whether it ends within RENEW_DAYS (or cannot be read)."""
    check = subprocess.run(["openssl", "x509", "-in", certificate, "-noout", "-checkend", str(RENEW_DAYS * 86400)],
                           capture_output=True)
    return check.returncode != 0


def _make_identity(creds: Credentials, stack: str, names: set[str]) -> None:
    """A new CA (for `names` alone), client identity, secret and bundle; server.crt follows."""
    folder = creds.folder
    if shutil.which("openssl") is None:
        raise StackError("openssl is needed to make the stack's credentials", "install it (Debian: apt-get install openssl)")
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, mode=0o700)
    folder.chmod(0o700)
    # pathlen:0: the CA signs only end certificates, never another CA; and only for `names`.
    _openssl("req", "-x509", *KEY, "-days", str(CA_DAYS), "-subj", f"/CN=seamless-stack {stack} CA",
             "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-addext", f"nameConstraints={_name_constraints(names)}",
             "-keyout", creds.path("ca.key"), "-out", creds.path("ca.crt"))
    _sign_client(creds, stack)
    _write(folder / "http.secret", secrets.token_urlsafe(32) + "\n")
    _write(folder / "bundle.pem", _system_roots() + (folder / "ca.crt").read_text())
    for file in FILES:
        if (folder / file).exists():
            (folder / file).chmod(0o600)


SERVICE_FILES = ("ca.crt", "server.crt", "server.key", "http.secret", "bundle.pem")  # what services and workers read


def install(shell: Shell, folder: Path, target: str, owner: tuple[int, int] | None = None) -> str:
    """Copy what services and workers need (not the CA key, not the client identity) to
    `target` through a Shell: folder 700, files 600 from their first byte."""
    shell.run(f"rm -rf {quote(target)} && mkdir -p -m 700 {quote(target)}", what="making the credentials folder")
    for file in SERVICE_FILES:
        shell.write(f"{target}/{file}", (folder / file).read_bytes(), mode="600")
    if owner:
        shell.run(f'[ "$(id -u)" != 0 ] || chown -R {owner[0]}:{owner[1]} {quote(target)}', what="handing over the credentials")
    return target


def _entry(name: str, constraint: bool = False) -> str:
    """A name as openssl's extension syntax has it; a constraint's address is a one-address net."""
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return f"DNS:{name}"
    return f"IP:{address}/{ipaddress.ip_network(address).netmask}" if constraint else f"IP:{address}"


def _normal(name: str) -> str:
    """One spelling per address (openssl prints IPv6 constraints in full)."""
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name


def _alt_names(names: set[str]) -> str:
    return ",".join(sorted(_entry(n) for n in names if n))


def _name_constraints(names: set[str]) -> str:
    """Exactly these names (and, for a DNS name, names under it): the CA certifies nothing
    else, so the bundle clients trust as SSL_CERT_FILE vouches for no other server."""
    return "critical," + ",".join(sorted(f"permitted;{_entry(n, constraint=True)}" for n in names if n))


def _names(certificate: str, extension: str) -> set[str]:
    """The DNS and IP entries of one extension of a certificate (IP constraints as ADDRESS/MASK)."""
    text = _openssl("x509", "-in", certificate, "-noout", "-ext", extension)
    entries = text.replace("\n", ",").split(",")
    return {e.split(":", 1)[1].strip() for e in entries if e.strip().startswith(("DNS:", "IP:", "IP Address:"))}


def _system_roots() -> str:
    """This machine's CA bundle, so clients and workers still reach public HTTPS servers."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile, "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            text = Path(candidate).read_text()
            return text if text.endswith("\n") else text + "\n"
    return ""


def _write(path: Path, text: str) -> None:
    write_private(path, text)


def _openssl(*args: str) -> str:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise StackError(f"openssl could not make the stack's credentials: {result.stderr.strip()[-300:]}",
                         "check that `openssl version` is 3.0 or newer")
    return result.stdout


def dask_client_variables(folder: str) -> dict[str, str]:
    """What a Dask client needs for the stack's mutual TLS: the CA and its client identity.

    Not REQUIRE_ENCRYPTION: the addresses beside these are tls:// anyway, and in a shell that
    sourced them it would refuse the plain tcp:// of Seamless' configuration route (the
    owner-only forwarder of `seamless-stack tunnel`), breaking connected projects."""
    return {
        "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": f"{folder}/ca.crt",
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": f"{folder}/client.crt",
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": f"{folder}/client.key",
    }


def client_ssl_context(folder: str) -> ssl.SSLContext:
    """For the driver's own requests (health gate, status): trust the stack's CA, present the
    client certificate (the dashboard demands it). Host names are not checked, as Dask does not."""
    try:  # ssl's errors name no file: say which folder, and the repair
        context = ssl.create_default_context(cafile=f"{folder}/ca.crt")
        context.check_hostname = False
        context.load_cert_chain(f"{folder}/client.crt", f"{folder}/client.key")
    except (OSError, ssl.SSLError) as exc:
        raise unreadable(folder, getattr(exc, "strerror", None) or str(exc)) from None
    return context


def unreadable(folder, reason: str) -> StackError:
    return StackError(f"the stack's credentials in {folder} cannot be read ({reason})",
                      "bring the stack down and up again with `up --rotate`")

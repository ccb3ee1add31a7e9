"""Connection info: the environment output that Seamless clients source.

Three sections, all carrying the same addresses:
- direct: SEAMLESS_DATABASE_IP/PORT, SEAMLESS_READ_BUFFER_SERVERS, SEAMLESS_WRITE_BUFFER_SERVER,
  DASK_SCHEDULER_ADDRESS (what users of the classic scripts rely on);
- today's clients: SEAMLESS_REMOTE_CLIENTS, SEAMLESS_DASK_SCHEDULER, SEAMLESS_DASK_WORKERS.
  Trap: a client that reads SEAMLESS_REMOTE_CLIENTS from the environment connects to
  `remote_url`, not `url`; so both hold the client-reachable address. Workers never use
  these: the scheduler preload gives them their own, worker-facing addresses;
- SSH: SEAMLESS_SSH_<SERVICE>_HOST/PORT, where to point `ssh -L` at.

A secured stack (the default) adds the client side of its credentials: the HTTP secret inside
the hashserver and database URLs (`seamless_remote` sends it as Basic auth), SSL_CERT_FILE
(system roots plus the stack's CA) where those URLs are https, and the Dask client
certificate for the tls:// scheduler. The output holds a secret: files get mode 0600.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from . import credentials
from .files import write_private

FORMATS = ("shell", "dotenv", "json")


@dataclass(frozen=True)
class Connection:
    host: str  # address a client uses for the published ports
    hashserver_port: int
    database_port: int
    scheduler_port: int
    dashboard_port: int
    seamless_workers: int  # Seamless workers per Dask worker
    ssh_host: str  # host to SSH to; the services listen on its loopback...
    ssh_ports: dict[str, int] | None = None  # ...on these ports (default: the ports above)
    direct: bool = True  # False: only the SSH section (clients need a tunnel first)
    credentials_dir: str | None = None  # the stack's credentials here; None: an --insecure stack
    http_tls: bool = False  # hashserver and database speak https

    def variables(self) -> dict[str, str]:
        ssh_ports = self.ssh_ports or {"hashserver": self.hashserver_port, "database": self.database_port,
                                       "scheduler": self.scheduler_port}
        ssh_section = {
            "SEAMLESS_SSH_DATABASE_HOST": self.ssh_host,
            "SEAMLESS_SSH_DATABASE_PORT": str(ssh_ports["database"]),
            "SEAMLESS_SSH_HASHSERVER_HOST": self.ssh_host,
            "SEAMLESS_SSH_HASHSERVER_PORT": str(ssh_ports["hashserver"]),
            "SEAMLESS_SSH_DASK_SCHEDULER_HOST": self.ssh_host,
            "SEAMLESS_SSH_DASK_SCHEDULER_PORT": str(ssh_ports["scheduler"]),
        }
        return {**self.client_variables(), **ssh_section} if self.direct else ssh_section

    def client_variables(self) -> dict[str, str]:
        hashserver, database = self.http_url(self.hashserver_port), self.http_url(self.database_port)
        scheme = "tls" if self.credentials_dir else "tcp"
        scheduler = f"{scheme}://{self.host}:{self.scheduler_port}"
        secured = {}
        if self.credentials_dir:
            secured = credentials.dask_client_variables(self.credentials_dir)
            if self.http_tls:
                secured["SSL_CERT_FILE"] = f"{self.credentials_dir}/bundle.pem"

        def client_entry(url: str) -> dict:
            return {"url": url, "remote_url": url, "readonly": False}

        remote_clients = {"buffer": [client_entry(hashserver)], "database": [client_entry(database)]}
        return {
            "SEAMLESS_DATABASE_IP": self.host,
            "SEAMLESS_DATABASE_PORT": str(self.database_port),
            "SEAMLESS_READ_BUFFER_SERVERS": hashserver,
            "SEAMLESS_WRITE_BUFFER_SERVER": hashserver,
            "DASK_SCHEDULER_ADDRESS": scheduler,
            "SEAMLESS_REMOTE_CLIENTS": json.dumps(remote_clients, separators=(",", ":")),
            "SEAMLESS_DASK_SCHEDULER": scheduler,
            "SEAMLESS_DASK_WORKERS": str(self.seamless_workers),
            **secured,
        }

    def ports(self) -> dict[str, int]:
        return {"hashserver": self.hashserver_port, "database": self.database_port,
                "scheduler": self.scheduler_port, "dashboard": self.dashboard_port}

    def http_url(self, port: int, with_secret: bool = True) -> str:
        """http(s)://[seamless:SECRET@]host:port; the secret is read from the stack's folder."""
        scheme = "https" if self.http_tls else "http"
        auth = ""
        if with_secret and self.credentials_dir:
            auth = f"{credentials.USER}:{credentials.Credentials(Path(self.credentials_dir)).secret}@"
        return f"{scheme}://{auth}{self.host}:{port}"


def _dotenv_quote(value: str) -> str:
    """Single quotes are literal in dotenv (Compose, python-dotenv); fall back to double quotes."""
    if "'" not in value and "\n" not in value:
        return f"'{value}'"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def render(variables: dict[str, str], fmt: str = "shell", header: str | None = None) -> str:
    """Render the variables; shell output is `export K=V` lines, safely quoted and sourceable."""
    if fmt == "json":
        return json.dumps(variables, indent=2) + "\n"
    lines = [f"# {header}"] if header else []
    if fmt == "shell":
        lines += [f"export {key}={shlex.quote(value)}" for key, value in variables.items()]
    elif fmt == "dotenv":
        lines += [f"{key}={_dotenv_quote(value)}" for key, value in variables.items()]
    else:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return "\n".join(lines) + "\n"


class Described(Protocol):
    """What the environment file says of its stack (a plan.Deployment; plan imports this module)."""

    name: str
    method: str
    access: str
    env_file: str

    def connection(self) -> Connection: ...


def write_env_file(stack: Described, connection: Connection | None = None) -> Path:
    """The environment output as a file to `source`: owner-only, as it carries the stack's secret.
    `connection` replaces the stack's own addresses (a tunnel's local ports) while it stands."""
    header = f"seamless-stack {stack.name!r} ({stack.method}, {stack.access}); source this file"
    text = render((connection or stack.connection()).variables(), "shell", header=header)
    return write_private(Path(stack.env_file), text)

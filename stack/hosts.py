"""Docker hosts: where the engine runs, the storage lives and the ports are checked.

LocalHost is this machine. SSHDockerHost is a remote machine reached over SSH: its engine
is driven through the docker CLI's ssh:// transport (Compose runs here, so the remote
needs Docker but no Compose), its directories and ports are checked with one SSH call,
and images are copied over with `docker save | ssh docker load` (no registry).
Both prepare storage with the same shell script (storage.py), run through their Shell.
"""

from __future__ import annotations

import functools
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import credentials, docker_tools
from .errors import StackError
from .layout import SERVICE_ACCOUNT, StackFiles
from .ports import port_is_free
from .progress import Progress
from .shell import CommandFailed, LocalShell, SSHShell, stream
from .ssh import Destination, explain_ssh_failure
from .storage import prepare_dirs


# The account, made once where the services run: a system account with a group of its own,
# no home, no login; useradd picks free IDs, so it never takes an existing user's UID or GID.
ACCOUNT_SCRIPT = (f'id -u {SERVICE_ACCOUNT} >/dev/null 2>&1 || useradd --system --user-group --no-create-home '
                  f'--home-dir /nonexistent --shell /usr/sbin/nologin {SERVICE_ACCOUNT} >/dev/null 2>&1 '
                  f'|| {{ echo NOACCOUNT; exit 0; }}; echo "$(id -u {SERVICE_ACCOUNT}) $(id -g {SERVICE_ACCOUNT})"')


# The engine's Unix socket where the engine runs, and its group: for the supervisor service
# (compose/supervise.yaml). DOCKER_HOST, else the docker CLI's current context; nothing
# for an engine reached otherwise (tcp://, ssh:// onwards).
ENGINE_SOCKET_SCRIPT = (r"""h=${DOCKER_HOST:-$(docker context inspect --format '{{.Endpoints.docker.Host}}' 2>/dev/null)}; """
                        r"""case $h in unix://*) p=${h#unix://}; [ -S "$p" ] && echo "SOCKET $(stat -c %g "$p") $p";; esac; true""")


def engine_socket(answer: str) -> tuple[str, int] | None:
    """(path, group) from ENGINE_SOCKET_SCRIPT's line, if it gave one."""
    for line in answer.splitlines():
        key, _, value = line.partition(" ")
        if key == "SOCKET":
            gid, _, path = value.partition(" ")
            return path, int(gid)
    return None


def service_ids(uid: int, gid: int, shell) -> tuple[int, int]:
    """The services never run as root: root's stacks run as the named system account
    SERVICE_ACCOUNT (made if missing), whose files `ls -l` shows by name."""
    if uid != 0:
        return uid, gid
    answer = shell.run(ACCOUNT_SCRIPT, what=f"making the {SERVICE_ACCOUNT} account").strip()
    if answer == "NOACCOUNT" or len(answer.split()) != 2:
        raise StackError(f"root's stacks run as the system account {SERVICE_ACCOUNT!r}, which cannot be made on {shell}",
                         f"create it (`useradd --system --user-group {SERVICE_ACCOUNT}`), or run seamless-stack as a user")
    account_uid, account_gid = (int(x) for x in answer.split())
    return account_uid, account_gid


class LocalHost:
    docker_host: str | None = None
    name = socket.gethostname()

    def __init__(self) -> None:
        self.shell = LocalShell()
        self.home = os.environ.get("HOME", str(Path.home()))
        self.uid, self.gid = service_ids(os.getuid(), os.getgid(), self.shell)

    @functools.cached_property
    def engine_socket(self) -> tuple[str, int] | None:
        """(path, group) of the engine's socket: asked only by a plan, not by every status."""
        return engine_socket(self.shell.run(ENGINE_SOCKET_SCRIPT, what="finding the Docker engine's socket"))

    def check_bind(self, address: str) -> None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((address, 0))
            except OSError:
                raise StackError(f"--bind {address} is not an address of this machine",
                                 "give one of its interface addresses, 127.0.0.1 (default) or 0.0.0.0") from None

    def is_free(self, port: int, bind: str) -> bool:
        return port_is_free(port, bind)

    def prepare_dirs(self, dirs: dict[str, str], progress: Progress) -> dict[str, str]:
        return prepare_dirs(self.shell, self.home, dirs, owner=(self.uid, self.gid), progress=progress)

    def push_images(self, docker, tags: dict[str, str], progress: Progress) -> None:
        """Images are built here: nothing to move."""

    def install_credentials(self, folder: Path, name: str) -> str:
        """The credentials are already here; when root runs us, the services' user must read them."""
        if os.getuid() == 0:
            for path in (folder, *folder.iterdir()):
                os.chown(path, self.uid, self.gid)
        return str(folder)


def listening_ports(proc_net_tcp: str) -> set[int]:
    """Ports in LISTEN state (0A) from /proc/net/tcp{,6} text: needs nothing on the remote but cat."""
    ports = set()
    for line in proc_net_tcp.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[3] == "0A" and ":" in fields[1]:
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


PROBE = r"""
command -v docker >/dev/null 2>&1 || { echo "NO-DOCKER"; exit 0; }
v=$(docker version --format '{{.Server.Version}}' 2>&1) || { echo "NO-ENGINE $v" | tr '\n' ' '; exit 0; }
echo "DOCKER $v"
echo "ID $(id -u) $(id -g)"
echo "HOME $HOME"
echo "HOSTNAME $(hostname)"
""" + ENGINE_SOCKET_SCRIPT + r"""
cat /proc/net/tcp /proc/net/tcp6 2>/dev/null
"""


@dataclass
class SSHDockerHost:
    destination: Destination
    uid: int = 0
    gid: int = 0
    home: str = ""
    docker_version: str = ""
    busy: set[int] = field(default_factory=set)
    engine_socket: tuple[str, int] | None = None  # (path, group) on the remote

    def __post_init__(self) -> None:
        self.shell = SSHShell(self.destination)

    @property
    def docker_host(self) -> str:
        return self.destination.docker_host

    @property
    def name(self) -> str:
        return self.destination.host

    def probe(self) -> "SSHDockerHost":
        """One SSH round trip: Docker there and usable, who we are, which ports listen."""
        out = self.shell.run(PROBE, what="probing the Docker host")
        first = out.splitlines()[0] if out else ""
        if first.startswith("NO-DOCKER"):
            raise StackError(f"no Docker on {self.destination}", "install a Docker engine there (Debian: scripts/install-docker-debian.sh)")
        if first.startswith("NO-ENGINE"):
            raise StackError(f"the Docker engine on {self.destination} does not answer ({first[10:].strip()})",
                             "start it there, and add the remote user to the `docker` group")
        for line in out.splitlines():
            key, _, value = line.partition(" ")
            if key == "DOCKER":
                self.docker_version = value
            elif key == "ID":
                self.uid, self.gid = service_ids(*(int(x) for x in value.split()), self.shell)
            elif key == "HOME":
                self.home = value
        self.busy = listening_ports(out)
        self.engine_socket = engine_socket(out)
        return self

    def check_bind(self, address: str) -> None:
        """Publishing on an address the remote lacks fails at `compose up`, which rolls back."""

    def is_free(self, port: int, bind: str) -> bool:
        return port not in self.busy

    def prepare_dirs(self, dirs: dict[str, str], progress: Progress) -> dict[str, str]:
        """On the remote: Compose would otherwise create missing bind-mount sources there
        silently, empty and owned by root."""
        return prepare_dirs(self.shell, self.home, dirs, owner=(self.uid, self.gid), progress=progress)

    def install_credentials(self, folder: Path, name: str) -> str:
        """Copy what the services need of the stack's credentials to the remote (folder 700,
        files 600), for its containers. The CA key and the client identity stay here."""
        return credentials.install(self.shell, folder, StackFiles.of(name).remote_tls(self.home), owner=(self.uid, self.gid))

    def push_images(self, docker, tags: dict[str, str], progress: Progress) -> None:
        """Copy the images the remote lacks (by image ID) in one `docker save | docker load`."""
        local = docker_tools.docker_client()
        missing = []
        for tag in dict.fromkeys(tags.values()):
            wanted = local.image.inspect(tag).id
            if not docker.image.exists(tag) or docker.image.inspect(tag).id != wanted:
                missing.append(tag)
        if not missing:
            progress(f"images already on {self.destination}")
            return
        progress(f"copying {len(missing)} image(s) to {self.destination}: {', '.join(missing)}")
        started = time.monotonic()
        sent = copy_images(missing, self.destination, progress)
        seconds = time.monotonic() - started
        progress(f"copied {sent / 1e6:.0f} MB in {seconds:.1f}s ({sent / 1e6 / max(seconds, 0.001):.0f} MB/s)")


def copy_images(tags: list[str], destination: Destination, progress: Progress) -> int:
    """`docker save TAGS | ssh docker load`: shared layers travel once. Returns bytes sent."""
    try:
        return stream([docker_tools.docker_binary(), "save", *tags],
                      SSHShell(destination).argv("docker load --quiet"), progress)
    except CommandFailed as exc:
        if exc.code == 255:
            raise explain_ssh_failure(destination, exc.stderr) from None
        raise StackError(f"docker load on {destination} failed ({exc.stderr.strip()[-200:]})", "check disk space and Docker there") from None

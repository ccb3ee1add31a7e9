"""Docker hosts: where the engine runs, the storage lives and the ports are checked.

LocalHost is this machine. SSHDockerHost is a remote machine reached over SSH: its engine
is driven through the docker CLI's ssh:// transport (Compose runs here, so the remote
needs Docker but no Compose), its directories and ports are checked with one SSH call,
and images are copied over with `docker save | ssh docker load` (no registry).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import docker_tools, ssh
from .errors import StackError
from .ports import port_is_free
from .spec import expand

Progress = Callable[[str], None]


class LocalHost:
    docker_host: str | None = None
    name = socket.gethostname()

    def __init__(self) -> None:
        self.uid, self.gid = os.getuid(), os.getgid()

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

    def prepare_dirs(self, dirs: dict[str, str]) -> dict[str, str]:
        """Create the storage directories if missing and prove they are writable."""
        resolved = {}
        for what, raw in dirs.items():
            path = expand(raw, os.environ)
            if path.exists() and not path.is_dir():
                raise StackError(f"{what} {path} is not a directory", f"choose a directory as {what}")
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StackError(f"cannot create {what} {path} ({exc.strerror})", f"choose a writable {what}") from None
            if not os.access(path, os.W_OK | os.X_OK):
                raise StackError(f"{what} {path} is not writable", f"fix its permissions or choose another {what}")
            resolved[what] = str(path)
        return resolved

    def push_images(self, docker, tags: dict[str, str], progress: Progress) -> None:
        """Images are built here: nothing to move."""

    def install_tls(self, folder: Path, name: str) -> str:
        """The certificate folder is already here."""
        return str(folder)


def remote_path(raw: str, home: str) -> str:
    """A path as given for another machine: `~/x` and relative paths are in that user's home."""
    return raw if raw.startswith("/") else f"{home}/{raw[2:] if raw.startswith('~/') else raw}"


def prepare_remote_dirs(run: Callable[[str], str], home: str, where: str, dirs: dict[str, str]) -> dict[str, str]:
    """Create and check storage directories with a shell elsewhere; `~` and relative paths
    are taken from that user's home. Returns what -> absolute path."""
    problems = {"NOTDIR": "is not a directory", "NOMKDIR": "cannot be created", "NOWRITE": "is not writable"}
    resolved = {}
    for what, raw in dirs.items():
        path = remote_path(raw, home)
        script = (f'd={ssh._quote(path)}; [ -e "$d" ] && [ ! -d "$d" ] && {{ echo NOTDIR; exit 0; }}; '
                  f'mkdir -p -- "$d" 2>/dev/null || {{ echo NOMKDIR; exit 0; }}; '
                  f'[ -w "$d" ] && [ -x "$d" ] || {{ echo NOWRITE; exit 0; }}; cd -- "$d" && pwd -P')
        answer = run(script).strip()
        if answer in problems:
            raise StackError(f"{what} {path} on {where} {problems[answer]}", f"choose another {what} there, or fix its permissions")
        resolved[what] = answer
    return resolved


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
cat /proc/net/tcp /proc/net/tcp6 2>/dev/null
"""


@dataclass
class SSHDockerHost:
    destination: ssh.Destination
    uid: int = 0
    gid: int = 0
    home: str = ""
    docker_version: str = ""
    busy: set[int] = field(default_factory=set)

    @property
    def docker_host(self) -> str:
        return self.destination.docker_host

    @property
    def name(self) -> str:
        return self.destination.host

    def probe(self) -> "SSHDockerHost":
        """One SSH round trip: Docker there and usable, who we are, which ports listen."""
        out = ssh.run(self.destination, PROBE)
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
                self.uid, self.gid = (int(x) for x in value.split())
            elif key == "HOME":
                self.home = value
        self.busy = listening_ports(out)
        return self

    def check_bind(self, address: str) -> None:
        """Publishing on an address the remote lacks fails at `compose up`, which rolls back."""

    def is_free(self, port: int, bind: str) -> bool:
        return port not in self.busy

    def prepare_dirs(self, dirs: dict[str, str]) -> dict[str, str]:
        """Create and check the directories *on the remote*: Compose would otherwise create
        missing bind-mount sources there silently, empty and owned by root."""
        return prepare_remote_dirs(lambda script: ssh.run(self.destination, script), self.home, str(self.destination), dirs)

    def install_tls(self, folder: Path, name: str) -> str:
        """Copy the stack's certificate and key to the remote (mode 600), for its containers."""
        target = f"{self.home}/.seamless/stacks/{name}.tls"
        for file in sorted(folder.iterdir()):
            script = f"umask 077; mkdir -p {ssh._quote(target)} && cat > {ssh._quote(target + '/' + file.name)}"
            ssh.run(self.destination, script, input=file.read_bytes())
        return target

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


def copy_images(tags: list[str], destination: ssh.Destination, progress: Progress) -> int:
    """`docker save TAGS | ssh docker load`: shared layers travel once. Returns bytes sent."""
    try:
        sent, _ = ssh.stream([docker_tools.docker_binary(), "save", *tags],
                             destination.ssh_args() + ["docker", "load", "--quiet"], progress)
    except ssh.RemoteCommandFailed as exc:
        if exc.code == 255:
            raise ssh.explain_ssh_failure(destination, exc.stderr) from None
        raise StackError(f"docker load on {destination} failed: {exc.stderr}", "check disk space and Docker there") from None
    return sent

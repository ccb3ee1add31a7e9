"""SSH: destinations, tunnels and SSH errors, with the user's own ssh and config.

Everything goes through the system `ssh` binary (as the docker CLI's ssh:// transport
does), so ~/.ssh/config, agents and jump hosts work the same for both. Errors are
classified into one line that says how to fix them. Commands run through shell.SSHShell.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
from dataclasses import dataclass

from .errors import StackError

# OpenSSH's words for a local forward it cannot listen on: `bind [127.0.0.1]:PORT: Address already
# in use`, then `cannot listen to port: PORT`.
_TAKEN = re.compile(r"bind \[?[^\]\s]*\]?:(\d+): Address already in use|cannot listen to port: (\d+)")

BATCH = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]


@dataclass(frozen=True)
class Destination:
    """USER@HOST[:PORT] (user and port optional)."""

    host: str
    user: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> "Destination":
        match = re.fullmatch(r"(?:([A-Za-z0-9._-]+)@)?([A-Za-z0-9._-]+|\[[0-9a-fA-F:]+\])(?::(\d{1,5}))?", text or "")
        if not match or (match.group(3) and not 0 < int(match.group(3)) < 65536):
            raise StackError(f"invalid remote host {text!r}", "write it as USER@HOST[:PORT], e.g. alice@bigbox or bigbox:2222")
        user, host, port = match.groups()
        return cls(host=host.strip("[]"), user=user, port=int(port) if port else None)

    @property
    def target(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def __str__(self) -> str:
        return self.target + (f":{self.port}" if self.port else "")

    @property
    def docker_host(self) -> str:
        """DOCKER_HOST for the docker CLI's own ssh transport."""
        return f"ssh://{self.target}" + (f":{self.port}" if self.port else "")

    def ssh_args(self) -> list[str]:
        return ["ssh", *BATCH, *(["-p", str(self.port)] if self.port else []), self.target]


def explain_ssh_failure(destination: Destination, stderr: str) -> StackError:
    text = stderr.strip().splitlines()[-1] if stderr.strip() else "ssh failed"
    if "Permission denied" in stderr or "Too many authentication failures" in stderr:
        return StackError(f"SSH authentication to {destination} failed ({text})",
                          "check your key (ssh-copy-id, ssh-agent) or ~/.ssh/config for that host")
    if "Host key verification failed" in stderr:
        return StackError(f"the host key of {destination} is unknown or changed", "connect once with `ssh` to check and accept it")
    return StackError(f"cannot reach {destination} over SSH ({text})", "check the host name, port and network, and that sshd runs there")


def local_port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Tunnel:
    """`ssh -N -L` forwards from local ports, through the SSH host, as a context manager.

    forwards: name -> (local_port, target_port), to the SSH host's own 127.0.0.1, or to
    target_host as the SSH host sees it (a compute node behind a login node).
    Ready once every local port accepts.
    """

    def __init__(self, destination: Destination, forwards: dict[str, tuple[int, int]], target_host: str = "127.0.0.1"):
        self.target_host = target_host
        self.destination = destination
        self.forwards = forwards
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        args = ["-N", "-o", "ExitOnForwardFailure=yes"]
        for local, remote in self.forwards.values():
            args += ["-L", f"127.0.0.1:{local}:{self.target_host}:{remote}"]
        ssh = self.destination.ssh_args()
        return ssh[:-1] + args + ssh[-1:]

    def start(self, timeout: float = 20) -> "Tunnel":
        self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + timeout
        while not all(local_port_open(local) for local, _ in self.forwards.values()):
            if self.process.poll() is not None:
                stderr = self.process.stderr.read()
                taken = _TAKEN.search(stderr)
                if taken:  # another process (a squatter?) holds one of our local ports
                    raise StackError(f"local port {taken[1] or taken[2]} of the tunnel to {self.destination} is taken by another process",
                                     "stop what uses it: the forwards stand again once it is free")
                if "forwarding" in stderr.lower():
                    raise StackError(f"SSH port forwarding to {self.destination} failed ({' | '.join(stderr.split(chr(10)))})",
                                     "a local port is busy: stop what uses it or try again")
                raise explain_ssh_failure(self.destination, stderr)
            if time.monotonic() > deadline:
                self.stop()
                raise StackError(f"SSH tunnel to {self.destination} not ready after {timeout:.0f}s")
            time.sleep(0.1)
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> "Tunnel":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

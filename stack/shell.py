"""A shell somewhere: this machine, or another one over SSH. Quoting lives here only.

The remote Docker host and the Slurm login node are both "a POSIX shell we run short
scripts in"; LocalShell and SSHShell give them one interface, so every caller gets the
same timeouts and the same one-line errors (SSH failures classified, a failing command
reported with its stderr, a timeout named).
"""

from __future__ import annotations

import atexit
import functools
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path, PurePosixPath

from .errors import StackError
from .progress import Progress
from .ssh import Destination, explain_ssh_failure


def sourced(env_file, *command: str) -> list[str]:
    """A command line that runs `command` in bash after sourcing a stack's environment file,
    as a user's shell that sourced it would (its variables exported)."""
    return ["bash", "-c", 'source "$1"; shift; exec "$@"', "-", str(env_file), *command]


def quote(text: str) -> str:
    return shlex.quote(str(text))


class CommandFailed(StackError):
    """A command ran and exited non-zero; `stderr` keeps its whole error output."""

    def __init__(self, what: str, where: str, code: int, stderr: str, fix: str | None = None):
        self.code, self.stderr = code, stderr
        last = stderr.strip().splitlines()[-1] if stderr.strip() else "no error output"
        super().__init__(f"{what} failed on {where} (exit {code}: {last})", fix or "see the message; fix it there and try again")


class Shell:
    """Runs POSIX shell scripts: `argv(script)` says how, subclasses say where."""

    def argv(self, script: str) -> list[str]:
        raise NotImplementedError

    def run(self, script: str, *, input: bytes | None = None, timeout: float = 120, what: str | None = None) -> str:
        """Run the script; return its stdout. Any failure is a StackError (CommandFailed if it exited non-zero)."""
        try:
            result = subprocess.run(self.argv(script), input=input, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise StackError(f"{what or 'a command'} on {self} did not finish within {timeout:.0f}s",
                             "check that machine and its load, then try again") from None
        except FileNotFoundError as exc:
            raise StackError(f"{exc.filename} is not installed here", "install it (Debian: openssh-client for ssh)") from None
        stderr = result.stderr.decode(errors="replace")
        self.check_transport(result.returncode, stderr)
        if result.returncode != 0:
            raise CommandFailed(what or f"`{script.strip().split()[0] if script.strip() else 'sh'}`", str(self), result.returncode, stderr)
        return result.stdout.decode(errors="replace")

    def check_transport(self, code: int, stderr: str) -> None:
        """Raise if the way to the shell (not the script) failed."""

    def write(self, path: str, data: bytes, mode: str | None = None) -> None:
        """Write a file there (creating its folder); with mode, e.g. 600, the file gets it before any data."""
        umask = "umask 077; " if mode == "600" else ""
        self.run(f"{umask}mkdir -p {quote(PurePosixPath(path).parent)} && cat > {quote(path)}", input=data, what=f"writing {path}")

    def stream_to(self, path: str, command: list[str], progress: Progress) -> int:
        """Pipe a local command's output into a file there; return the bytes sent."""
        try:
            return stream(command, self.argv(f"cat > {quote(path)}"), progress)
        except CommandFailed as exc:
            raise StackError(f"copying to {path} on {self} failed ({exc.stderr.strip()[-200:]})", "check disk space there") from None


class LocalShell(Shell):
    def argv(self, script: str) -> list[str]:
        return ["sh", "-c", script]

    def __str__(self) -> str:
        return "this machine"


class SSHShell(Shell):
    def __init__(self, destination: Destination):
        self.destination = destination

    def argv(self, script: str) -> list[str]:
        ssh = self.destination.ssh_args()
        return [ssh[0], *shared_connection(), *ssh[1:], "sh", "-c", quote(script)]

    def check_transport(self, code: int, stderr: str) -> None:
        if code == 255:
            raise explain_ssh_failure(self.destination, stderr)

    def __str__(self) -> str:
        return str(self.destination)


def shared_connection() -> list[str]:
    """ssh options that make every command of this process to a host share one connection
    (OpenSSH ControlMaster): a login per `up`, not per round trip. The master leaves with
    this process (closed at exit; ControlPersist bounds it if the process is killed)."""
    return ["-o", "ControlMaster=auto", "-o", f"ControlPath={_control_dir()}/%C", "-o", "ControlPersist=30"]


@functools.cache
def _control_dir() -> str:
    """This process's folder for SSH control sockets, made on first use (mode 0700: only we reach them)."""
    folder = tempfile.mkdtemp(prefix="seamless-stack-ssh-")
    atexit.register(_close_connections, folder)
    return folder


def _close_connections(folder: str) -> None:
    for socket_path in Path(folder).glob("*"):
        subprocess.run(["ssh", "-o", f"ControlPath={socket_path}", "-O", "exit", "seamless-stack"], capture_output=True, timeout=10)
    shutil.rmtree(folder, ignore_errors=True)


def shell_for(destination: Destination | None) -> Shell:
    return SSHShell(destination) if destination else LocalShell()


def stream(producer: list[str], consumer: list[str], progress: Progress, chunk: int = 1 << 20) -> int:
    """Pipe producer's stdout into consumer (e.g. docker save -> ssh docker load), reporting
    megabytes as they go. Returns the bytes sent; raises when either side fails."""
    source = subprocess.Popen(producer, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sink = subprocess.Popen(consumer, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sent, reported, sink_gone = 0, time.monotonic(), False
    try:
        for data in iter(lambda: source.stdout.read(chunk), b""):
            sink.stdin.write(data)
            sent += len(data)
            if time.monotonic() - reported > 3:
                progress(f"  {sent / 1e6:.0f} MB sent")
                reported = time.monotonic()
        sink.stdin.close()
    except BrokenPipeError:  # the receiving side ended first: its failure, not the producer's
        sink_gone = True
        source.kill()
    source.wait()
    sink_error = sink.stderr.read().decode(errors="replace")
    sink.wait()
    if sink_gone or (sink.returncode != 0 and source.returncode == 0):
        raise CommandFailed(f"`{' '.join(consumer[-3:])}`", "the receiving side", sink.returncode or 1, sink_error)
    if source.returncode != 0:
        raise CommandFailed(f"`{' '.join(producer[:2])}`", "this machine", source.returncode,
                            source.stderr.read().decode(errors="replace"))
    if sink.returncode != 0:
        raise CommandFailed(f"`{' '.join(consumer[-3:])}`", "the receiving side", sink.returncode, sink_error)
    return sent

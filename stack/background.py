"""The tunnel a stack's connected Seamless projects need, kept running in the background.

A secured stack (its owner-only forwarder adds the credentials Seamless' configuration route
cannot carry) and a stack over SSH (its forwards) are reached by `seamless-stack tunnel`.
`connect` and `up` start that same command here in its own session, so no terminal stays
open: its output goes to an owner-only log in the stack folder (never the environment: it
holds the secret), and it records its pid and ports in the project record as a foreground
tunnel does. `down` and the last `disconnect` stop it; `status` fails while projects wait
for one that died, and `up` or `connect` start it again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import seamless_config, state
from .errors import StackError
from .files import PRIVATE_FILE, private_dir
from .layout import StackFiles
from .processes import alive
from .progress import Progress

READY_WAIT = 60.0  # seconds for the tunnel to hold its ports (an SSH connection included)
STOP_WAIT = 10.0  # seconds it gets to put the project files back before it is killed


def wanted(deployment) -> bool:
    """Projects are connected to this stack (up), and it is reached through a tunnel."""
    return seamless_config.needs_tunnel(deployment) and bool(seamless_config.connected(deployment.name))


def running(name: str) -> int | None:
    """The pid of the tunnel (background or foreground) that serves the projects now."""
    return seamless_config.tunnel_pid(name)


def ensure(name: str, progress: Progress) -> None:
    """Start the background tunnel unless one runs or none is needed; back once it holds its ports."""
    if not wanted(state.load(name)) or running(name):
        return
    log_path = StackFiles.of(name).tunnel_log
    private_dir(log_path.parent)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE)
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", "import sys; from seamless_stack.cli import main; sys.exit(main())",
             "tunnel", "--name", name],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    finally:
        os.close(log)
    deadline = time.monotonic() + READY_WAIT
    while running(name) != process.pid:
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process(process.pid)
            said = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
            raise StackError(f"the background tunnel of stack {name!r} did not start ({said[-1] if said else 'no output'})",
                             f"see {log_path}; `seamless-stack tunnel --name {name}` in a terminal shows the same")
        time.sleep(0.2)
    progress(f"the tunnel for its Seamless projects runs in the background (pid {process.pid}, log {log_path}); "
             f"`seamless-stack down` or the last `disconnect` stops it")


def stop(name: str, progress: Progress) -> None:
    """Stop the background tunnel, if one runs: it puts the project files back as it ends."""
    pid = running(name)
    if pid and _is_background_tunnel(pid, name):
        stop_process(pid)
        progress(f"stopped the background tunnel of stack {name!r} (pid {pid})")


def stop_process(pid: int) -> None:
    """SIGTERM (the tunnel closes as on Ctrl-C), then SIGKILL after STOP_WAIT."""
    for sig, wait in ((signal.SIGTERM, STOP_WAIT), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # our own child (ensure's): reaped here
    except ChildProcessError:
        pass
    return alive(pid)


def _is_background_tunnel(pid: int, name: str) -> bool:
    """Ours to stop: the `tunnel --name NAME` command started by ensure, not a user's terminal."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        session = os.getsid(pid)
    except OSError:
        return False
    return b"tunnel" in args and name.encode() in args and session == pid

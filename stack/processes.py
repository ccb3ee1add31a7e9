"""Whether a process of ours still runs, by pid (the tunnel a project record names)."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """Running: it exists and is not a zombie (a killed process whose parent, or the init that
    inherited it, has not reaped it yet still answers signal 0)."""
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")

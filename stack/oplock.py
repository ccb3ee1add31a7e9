"""One operation per stack at a time: `up`, `down` and `restart` of one name never overlap.

Two `up`s of one name at once raced in credential creation and Compose's names and ended with
no stack at all. Each operation holds an flock on ~/.seamless/stacks/<name>.lock while it
runs; the kernel releases it when the process ends, however it ends, so a crash leaves no
stale lock. The file says who holds it, for the one-line refusal.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from typing import Iterator

from .errors import StackError
from .files import PRIVATE_FILE, private_dir
from .layout import StackFiles


@contextlib.contextmanager
def held(name: str, operation: str) -> Iterator[None]:
    """Hold stack `name` for `operation` (up, down, scale, restart), or refuse at once naming the holder.
    The file is removed when the operation ends (still locked, so no one locks a removed file
    meanwhile: whoever locked a file the path no longer names tries again)."""
    path = StackFiles.of(name).lock
    private_dir(path.parent)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").split()
            os.close(fd)
            pid, what = (holder + ["?", "an operation"])[:2]
            raise StackError(f"another `{what}` of stack {name!r} is running (pid {pid})",
                             "wait for it to end, or stop it, then try again") from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # removed by the holder that just ended: lock the path's new file
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {operation}\n".encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)  # releases the lock

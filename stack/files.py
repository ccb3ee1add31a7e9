"""Private files and folders: the one writer for everything seamless-stack keeps on disk.

The stack folder holds records, environment output (the secret), credentials and Compose
variables: owner-only, written whole (readers never see half a file) and never through a
link planted where the file goes (O_NOFOLLOW on the temporary name, O_EXCL so an existing
one is not reused).
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_dir(path: Path) -> Path:
    """Create the folder owner-only, or tighten an existing one that others could enter."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    if path.stat().st_mode & 0o077:
        path.chmod(PRIVATE_DIR)
    return path


def write_private(path: Path, text: str, mode: int = PRIVATE_FILE) -> Path:
    """Replace `path` atomically with `text`, mode `mode` from its first byte; its folder is
    made owner-only when it is new."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, mode)  # whatever the umask took away
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path

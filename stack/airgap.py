"""The air-gapped base image: Debian bookworm + python3 from Debian packages, no registry.

debootstrap (minbase, python3, python3-venv, ca-certificates) from the mirror named in the
host's own apt sources, then `tar | docker import`. Its userland equals the default
slim Debian base with Debian's python3, so the images CI tests are the images users run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from python_on_whales import DockerClient

from .errors import StackError

BASE_TAG = "seamless-stack/base:bookworm"
SUITE = "bookworm"
PACKAGES = "python3,python3-venv,ca-certificates"
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))


def _source_texts(paths: Iterable[Path]) -> list[str]:
    texts = []
    for path in paths:
        files = sorted(path.glob("*.sources")) + sorted(path.glob("*.list")) if path.is_dir() else [path]
        texts += [f.read_text(errors="replace") for f in files if f.is_file()]
    return texts


def debian_mirror(texts: Iterable[str]) -> str | None:
    """The first Debian archive URI in apt sources (deb822 `URIs:` or one-line `deb URI ...`)."""
    for text in texts:
        for line in text.splitlines():
            line = line.strip()
            match = re.match(r"^URIs:\s*(\S+)", line) or re.match(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
            if not match:
                continue
            uri = match.group(1)
            if "security" in uri or "debian" not in uri:
                continue
            return uri
    return None


# What slim Debian images leave out too: package caches, lists, docs, manuals, translations.
PRUNE = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info")


def slim_down(root: Path) -> None:
    """Drop what no service needs (about half the size); licences stay."""
    for folder in PRUNE:
        for path in sorted((root / folder).rglob("*"), reverse=True):  # children first
            if path.is_symlink() or path.is_file():
                if path.name not in ("copyright", "lock"):
                    path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()


def make_base(
    docker: DockerClient,
    progress: Callable[[str], None],
    tag: str = BASE_TAG,
    suite: str = SUITE,
    packages: str = PACKAGES,
) -> str:
    """debootstrap SUITE with PACKAGES, slimmed down, imported as TAG (test beds use it too)."""
    if shutil.which("debootstrap") is None:
        raise StackError("debootstrap is not installed", "apt-get install debootstrap (or pass --base-image NAME from a registry)")
    if os.geteuid() != 0:
        raise StackError("making the base image needs root (debootstrap)", "run `sudo seamless-stack images base` once")
    mirror = debian_mirror(_source_texts(APT_SOURCES))
    if mirror is None:
        raise StackError("no Debian mirror found in the apt sources", "add one to /etc/apt/sources.list.d/")
    with tempfile.TemporaryDirectory(prefix="seamless-stack-base-", dir="/var/tmp") as tmp:
        root = Path(tmp) / "rootfs"
        progress(f"debootstrap {suite} ({packages}) from the host's apt mirror, about a minute")
        command = ["debootstrap", "--variant=minbase", f"--include={packages}", suite, str(root), mirror]
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
            last = []
            for line in proc.stdout:
                last = (last + [line.rstrip()])[-15:]
                if line.startswith("I: Retrieving") or line.startswith("I: Installing core") or line.startswith("I: Base system"):
                    progress(f"  {line.strip()}")
        if proc.returncode != 0:
            raise StackError("debootstrap failed:\n" + "\n".join(last) + "\n", "check the apt mirror and disk space")
        slim_down(root)
        progress(f"importing the root filesystem as {tag}")
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        docker_call = [str(p) for p in docker.client_config.get_client_call_with_path()]
        imported = subprocess.run(docker_call + ["import", "-", tag], stdin=tar.stdout, capture_output=True, text=True)
        tar.stdout.close()
        tar.wait()
        if imported.returncode != 0 or tar.returncode != 0:
            raise StackError(f"docker import of the base failed: {imported.stderr.strip()}")
    progress(f"made {tag}")
    return tag

"""SIFs of our images on the cluster: named by image digest, built once, reused."""

from __future__ import annotations

import time
from pathlib import PurePosixPath
from typing import Callable

from .. import docker_tools
from ..errors import StackError
from ..layout import ROLES
from ..shell import CommandFailed, Shell, quote

Progress = Callable[[str], None]


def sif_name(tag: str) -> str:
    """seamless-stack/scheduler:abc123 -> scheduler-abc123.sif: a rebuilt image is a new SIF."""
    repository, _, digest = tag.partition(":")
    return f"{repository.rsplit('/', 1)[-1]}-{digest}.sif"


def current_sifs(shell: Shell, sif_dir: str) -> dict[str, str]:
    """Without Docker here: the SIFs last built into sif_dir (its <role>.sif links)."""
    found = shell.run(" ".join(f"[ -f {quote(sif_dir + '/' + r + '.sif')} ] && echo {r};" for r in ROLES) + " true").split()
    missing = [r for r in ROLES[:3] if r not in found]
    if missing:
        raise StackError(f"no SIF for {', '.join(missing)} in {sif_dir} on {shell}, and no Docker here to build one",
                         "run `seamless-stack up slurm --login ...` once from a machine with Docker, or copy the SIFs there")
    return {r: f"{sif_dir}/{r if r in found else 'scheduler'}.sif" for r in ROLES}


def ensure_sifs(shell: Shell, tags: dict[str, str], sif_dir: str, progress: Progress) -> dict[str, str]:
    """The SIF of every image, on the cluster; built from our images only where missing.

    The worker and scheduler images differ only in their start command, so worker jobs run
    the scheduler's SIF (with dask-jobqueue's worker command) unless the worker image is
    a derived one with the user's libraries. <role>.sif links name the newest SIFs.
    """
    wanted = {role: tag for role, tag in tags.items() if role != "worker" or "worker-custom" in tag}
    paths = {role: f"{sif_dir}/{sif_name(tag)}" for role, tag in wanted.items()}
    present = set(shell.run(" ".join(f"[ -f {quote(p)} ] && echo {quote(p)};" for p in paths.values()) + " true").split())
    docker = docker_tools.docker_binary() if len(present) < len(paths) else None
    for role, path in paths.items():
        if path in present:
            continue
        progress(f"building {path} on {shell} from {wanted[role]}")
        archive = f"{path}.tar"
        shell.run(f"mkdir -p {quote(sif_dir)}")
        started = time.monotonic()
        sent = shell.stream_to(archive, [docker, "save", wanted[role]], progress)
        progress(f"  copied {sent / 1e6:.0f} MB in {time.monotonic() - started:.1f}s; apptainer build")
        try:
            shell.run(f"apptainer build --force {quote(path + '.tmp')} docker-archive://{quote(archive)} "
                      f"&& mv {quote(path + '.tmp')} {quote(path)}; status=$?; rm -f {quote(archive)}; exit $status",
                      timeout=1800, what=f"apptainer build of {path}")
        except CommandFailed as exc:
            raise StackError(f"apptainer build of {path} failed on {shell} ({exc.stderr.strip()[-300:]})",
                             "check disk space and Apptainer there") from None
    shell.run(" ".join(f"ln -sfn {quote(PurePosixPath(p).name)} {quote(sif_dir + '/' + r + '.sif')};" for r, p in paths.items()))
    paths.setdefault("worker", paths["scheduler"])
    return paths


def build_sifs(shell: Shell, tags: dict[str, str], sif_dir: str, progress: Progress) -> dict[str, str]:
    """`images sif`: the SIFs of our images, here or on a login node (needs apptainer there)."""
    if not shell.run("command -v apptainer || true").strip():
        raise StackError(f"apptainer not found on {shell}", "install Apptainer there, or build on a login node with --login")
    return ensure_sifs(shell, tags, sif_dir, progress)

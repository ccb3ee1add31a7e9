"""The facade for what stacks run from: `seamless-stack images` (base, build, list, push, sif).

Beside api.py, which is about stacks: these make and list images and SIFs before any stack
exists. Each takes plain values and returns what the CLI prints; Docker is asked for only
where the route needs it (a SIF pulled from a registry needs none).
"""

from __future__ import annotations

from pathlib import Path

from python_on_whales import DockerClient

from . import airgap, docker_tools, images, registry
from .backends import SlurmBackend
from .errors import StackError
from .progress import Progress, quiet
from .shell import shell_for
from .spec import SlurmOptions, build_spec
from .storage import absolute


def _engine() -> DockerClient:
    docker = docker_tools.docker_client()
    docker_tools.check_engine(docker)
    return docker


def _requirements(path: str | None) -> Path | None:
    return Path(path).resolve() if path else None


def make_base(force: bool = False, progress: Progress = quiet) -> str:
    """The air-gapped base image (kept if it exists, unless forced); its tag."""
    docker = _engine()
    if docker.image.exists(airgap.BASE_TAG) and not force:
        progress(f"{airgap.BASE_TAG} exists (use --force to remake it)")
    else:
        airgap.make_base(docker, progress)
    return airgap.BASE_TAG


def build(base_image: str | None = None, worker_requirements: str | None = None, force: bool = False,
          progress: Progress = quiet) -> dict[str, str]:
    """Build what is missing (everything, forced): role -> tag."""
    return images.build_images(_engine(), base_image=base_image, worker_requirements=_requirements(worker_requirements),
                               progress=progress, force=force)


def listing() -> list[tuple[str, str, str]]:
    """(role, tag, size) of the images `up` would use; size "not built" where missing."""
    docker = _engine()
    base = images.local_base(docker)
    if base is None:
        raise StackError("no base image yet", "run `seamless-stack images build` (or `images base` without a registry)")
    return [(role, tag, f"{docker.image.inspect(tag).size / 1e6:.0f} MB" if docker.image.exists(tag) else "not built")
            for role, tag in images.image_tags(docker, base).items()]


def push(target: str, worker_requirements: str | None = None, progress: Progress = quiet) -> dict[str, str]:
    """Build what is missing and push it to REGISTRY[/PREFIX]: role -> reference by digest."""
    docker = _engine()
    registry.parse_target(target)
    requirements = _requirements(worker_requirements)
    tags = images.build_images(docker, worker_requirements=requirements, progress=progress)
    return images.push_images(docker, tags, target, requirements, progress)


def sifs(out: str, login: str | None = None, worker_requirements: str | None = None, registry_target: str | None = None,
         progress: Progress = quiet) -> dict[str, str]:
    """The SIFs in `out` (on the login node, with `login`), by the same routes as `up slurm`: role -> path."""
    spec = build_spec(method="slurm", remote=login, worker_requirements=worker_requirements,
                      slurm=SlurmOptions(sif_dir=out, registry=registry_target))
    shell = shell_for(spec.remote)
    home = shell.run('echo "$HOME"').strip()
    return SlurmBackend.sifs(spec, shell, absolute(out, home), progress)

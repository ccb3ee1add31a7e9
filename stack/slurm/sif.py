"""SIFs of our images on the cluster, in a cache folder shared by every stack (and, with a
group-writable --sif-dir, by a group): named by the image they hold, checked by its labels,
made only where missing or stale. Three routes: pulled from a registry by digest (the login
node without Docker), built from local Docker images copied over SSH, or a folder of SIFs
put there by hand (air-gapped sites).
"""

from __future__ import annotations

import time
from pathlib import PurePosixPath

from .. import docker_tools, images, registry
from ..errors import StackError
from ..layout import ROLES
from ..progress import Progress
from ..shell import Shell, quote
from .apptainer import Apptainer


def sif_name(tag: str) -> str:
    """seamless-stack/scheduler:abc123 -> scheduler-abc123.sif: a rebuilt image is a new SIF."""
    repository, _, digest = tag.partition(":")
    return f"{repository.rsplit('/', 1)[-1]}-{digest}.sif"


def wanted_roles(worker_custom: bool) -> tuple[str, ...]:
    """The worker and scheduler images differ only in their start command, so worker jobs run
    the scheduler's SIF (with dask-jobqueue's worker command) unless the worker is a derived image."""
    return ROLES if worker_custom else ROLES[:3]


def current_sifs(shell: Shell, sif_dir: str) -> dict[str, str]:
    """Without Docker or a registry: the SIFs last made in sif_dir (its <role>.sif links)."""
    found = shell.run(" ".join(f"[ -f {quote(sif_dir + '/' + r + '.sif')} ] && echo {r};" for r in ROLES) + " true").split()
    missing = [r for r in ROLES[:3] if r not in found]
    if missing:
        raise StackError(f"no SIF for {', '.join(missing)} in {sif_dir} on {shell}, and neither Docker here nor --registry",
                         "push the images from a machine with Docker (`seamless-stack images push REGISTRY`) and pass "
                         "--registry REGISTRY (or SEAMLESS_STACK_REGISTRY), or copy SIFs there (`seamless-stack images sif`)")
    return {r: f"{sif_dir}/{r if r in found else 'scheduler'}.sif" for r in ROLES}


def _reusable(apptainer: Apptainer, shell: Shell, paths: dict[str, str], expected: dict[str, dict[str, str]],
              progress: Progress) -> set[str]:
    """The roles whose SIF exists and carries the labels of the image it should hold."""
    present = set(shell.run(" ".join(f"[ -f {quote(p)} ] && echo {quote(p)};" for p in paths.values()) + " true").split())
    reusable = set()
    for role, path in paths.items():
        if path not in present:
            continue
        labels = apptainer.labels(path)
        if _holds(labels, expected[role]):
            reusable.add(role)
        else:
            progress(f"{path} is stale (its labels say {labels.get(images.LABEL_ROLE)} {labels.get(images.LABEL_DEFINITION)}): making it anew")
    return reusable


def _made(apptainer: Apptainer, shell: Shell, path: str, source: str, expected: dict[str, str], progress: Progress) -> None:
    """Make the SIF, then check it holds the image it should (a registry tag can point anywhere)."""
    apptainer.build(path, source, progress)
    labels = apptainer.labels(path)
    if not _holds(labels, expected):
        shell.run(f"rm -f {quote(path)}")
        found = f"{labels.get(images.LABEL_ROLE)} {labels.get(images.LABEL_DEFINITION)}"
        raise StackError(f"{source} holds {found}, not {' '.join(expected.values())}",
                         "push this version's images again (`seamless-stack images push REGISTRY[/PREFIX]` where Docker runs)")


def _holds(labels: dict[str, str], expected: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in expected.items())


def _link(shell: Shell, sif_dir: str, paths: dict[str, str]) -> dict[str, str]:
    """<role>.sif links name the newest SIFs (the air-gapped route finds them there)."""
    shell.run(" ".join(f"ln -sfn {quote(PurePosixPath(p).name)} {quote(sif_dir + '/' + r + '.sif')};" for r, p in paths.items()))
    return {**paths, "worker": paths.get("worker", paths["scheduler"])}


def pull_sifs(apptainer: Apptainer, shell: Shell, target: str, worker_requirements, sif_dir: str,
              progress: Progress) -> dict[str, str]:
    """The registry route: each image by the digest its definition tag names there, as a SIF."""
    roles = wanted_roles(worker_requirements is not None)
    paths, sources, expected = {}, {}, {}
    for role in roles:
        custom = worker_requirements if role == "worker" else None
        name = f"{images.REPOSITORY}/{'worker-custom' if custom else role}"
        lookup = images.definition_tag(custom)
        repository = registry.repository(target, name)
        digest = registry.manifest_digest(f"{repository}:{lookup}")
        sources[role] = f"docker://{repository}@{digest}"
        paths[role] = f"{sif_dir}/{name.rsplit('/', 1)[-1]}-{digest.split(':')[1][:16]}.sif"
        expected[role] = images.labels(role, custom)
    shell.run(f"mkdir -p {quote(sif_dir)}")
    reusable = _reusable(apptainer, shell, paths, expected, progress)
    for role in roles:
        if role in reusable:
            progress(f"{role}: {paths[role]} (cached)")
            continue
        progress(f"{role}: pulling {sources[role]} into {paths[role]} on {shell}")
        started = time.monotonic()
        _made(apptainer, shell, paths[role], sources[role], expected[role], progress)
        progress(f"  {role}: SIF made in {time.monotonic() - started:.0f} s")
    return _link(shell, sif_dir, paths)


def ensure_sifs(apptainer: Apptainer, shell: Shell, tags: dict[str, str], sif_dir: str,
                progress: Progress, worker_requirements=None) -> dict[str, str]:
    """The Docker route: SIFs built from our local images, copied to the cluster where missing."""
    roles = wanted_roles("worker-custom" in tags["worker"])
    paths = {role: f"{sif_dir}/{sif_name(tags[role])}" for role in roles}
    expected = {role: images.labels(role, worker_requirements if role == "worker" else None) for role in roles}
    shell.run(f"mkdir -p {quote(sif_dir)}")
    reusable = _reusable(apptainer, shell, paths, expected, progress)
    docker = docker_tools.docker_binary() if len(reusable) < len(paths) else None
    for role, path in paths.items():
        if role in reusable:
            continue
        progress(f"building {path} on {shell} from {tags[role]}")
        archive = f"{path}.tar"
        started = time.monotonic()
        sent = shell.stream_to(archive, [docker, "save", tags[role]], progress)
        progress(f"  copied {sent / 1e6:.0f} MB in {time.monotonic() - started:.1f}s; apptainer build")
        try:
            _made(apptainer, shell, path, f"docker-archive://{archive}", expected[role], progress)
        finally:
            shell.run(f"rm -f {quote(archive)}")
    return _link(shell, sif_dir, paths)

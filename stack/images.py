"""The four images: names, content-addressed tags, and building them with BuildKit.

Tags are digests of the image definition (Dockerfile, lock files, scripts, base image
name), so a changed definition means a new tag and `up` builds what is missing. The
host CA bundle goes in as a BuildKit secret, never into a layer.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections import deque
from pathlib import Path

from python_on_whales import DockerClient, DockerException

from . import airgap, docker_tools, registry
from .errors import StackError
from .layout import ROLES
from .progress import Progress, quiet
from .resources import images_dir

DEFAULT_BASE = "debian:bookworm-slim"
REPOSITORY = "seamless-stack"


def _digest(parts: list[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:12]


# Labels every image (and so every SIF made from it) carries: a stale SIF is told by them.
LABEL_ROLE = "org.seamless-stack.role"
LABEL_DEFINITION = "org.seamless-stack.definition"


def _definition_parts() -> list[bytes]:
    folder = images_dir()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return [part for path in files for part in (str(path.relative_to(folder)).encode(), path.read_bytes())]


def definition_digest(base_id: str) -> str:
    """Digest of the base image's ID and every file of the image definition: the content tag."""
    return _digest([base_id.encode(), *_definition_parts()])


def definition_tag(worker_requirements: Path | None = None) -> str:
    """The image definition this seamless-stack carries (base aside), plus the worker's own
    requirements for a derived worker: what a machine without Docker can name in a registry."""
    parts = _definition_parts() + ([b"worker-custom", worker_requirements.read_bytes()] if worker_requirements else [])
    return "def-" + _digest(parts)


def labels(role: str, worker_requirements: Path | None = None) -> dict[str, str]:
    return {LABEL_ROLE: role, LABEL_DEFINITION: definition_tag(worker_requirements)}


def image_tags(docker: DockerClient, base_image: str) -> dict[str, str]:
    digest = definition_digest(docker.image.inspect(base_image).id)
    return {role: f"{REPOSITORY}/{role}:{digest}" for role in ROLES}


def custom_worker_tag(worker_tag: str, worker_requirements: Path) -> str:
    """The derived worker image: it depends on the worker image and the requirements' content."""
    return f"{REPOSITORY}/worker-custom:{_digest([worker_tag.encode(), worker_requirements.read_bytes()])}"


def ca_bundle() -> Path | None:
    """The host's CA bundle (for TLS-intercepting proxies), as pip/requests would use it."""
    for variable in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        value = os.environ.get(variable)
        if value and Path(value).is_file():
            return Path(value)
    default = Path("/etc/ssl/certs/ca-certificates.crt")
    return default if default.is_file() else None


def pip_index_url() -> str | None:
    """The package index the host's pip is configured with, if any (never hard-coded)."""
    if os.environ.get("PIP_INDEX_URL"):
        return os.environ["PIP_INDEX_URL"]
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", "global.index-url"],
            capture_output=True, text=True, timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (result.stdout.strip() or None) if result.returncode == 0 else None


def build_secrets(folder: Path) -> list[str]:
    """BuildKit secrets: the CA bundle and the pip index (which may carry credentials)."""
    secrets = []
    ca = ca_bundle()
    if ca:
        secrets.append(f"id=ca,src={ca}")
    index = pip_index_url()
    if index:
        index_file = folder / "pip_index"
        index_file.write_text(index)
        index_file.chmod(0o600)
        secrets.append(f"id=pip_index,src={index_file}")
    return secrets


def image_exists(docker: DockerClient, tag: str) -> bool:
    return docker.image.exists(tag)


def local_base(docker: DockerClient) -> str | None:
    """The base `up` uses when none is asked for, if it is already here."""
    for candidate in (airgap.BASE_TAG, DEFAULT_BASE):
        if image_exists(docker, candidate):
            return candidate
    return None


def choose_base(docker: DockerClient, requested: str | None, progress: Progress) -> str:
    """The base image: as asked; else the air-gapped one if made; else the default, pulled
    if need be; and where that cannot be pulled, the air-gapped one is made."""
    if requested:
        if not image_exists(docker, requested):
            progress(f"pulling base image {requested}")
            try:
                docker.image.pull(requested, quiet=True)
            except DockerException:
                raise StackError(
                    f"base image {requested} is neither here nor pullable",
                    "check the name, or run `seamless-stack images base` and omit --base-image",
                ) from None
        return requested
    local = local_base(docker)
    if local:
        return local
    progress(f"pulling base image {DEFAULT_BASE}")
    try:
        docker.image.pull(DEFAULT_BASE, quiet=True)
        return DEFAULT_BASE
    except DockerException:
        progress(f"cannot pull {DEFAULT_BASE} (no registry?): making {airgap.BASE_TAG} from Debian packages")
    airgap.make_base(docker, progress=progress)
    return airgap.BASE_TAG


def _buildx(docker: DockerClient, progress: Progress, what: str, secrets: list[str], **kwargs) -> None:
    """docker buildx build, streaming its step lines as progress."""
    tail: deque[str] = deque(maxlen=25)
    try:
        for raw in docker.buildx.build(load=True, secrets=secrets, stream_logs=True, progress="plain", **kwargs):
            line = str(raw).rstrip()
            tail.append(line)
            if line.startswith("#") and " [" in line and "[internal]" not in line and "DONE" not in line:
                progress(f"  {what}: {line.split(' ', 1)[1][:110]}")
    except DockerException as exc:
        detail = "\n".join(tail) or str(exc)
        raise StackError(f"building {what} failed:\n{detail}\n", "fix the cause above and run again") from None


def build_images(
    docker: DockerClient,
    *,
    base_image: str | None = None,
    worker_requirements: Path | None = None,
    progress: Progress = quiet,
    force: bool = False,
) -> dict[str, str]:
    """Build whatever image is missing (all, with force). Returns role -> tag."""
    if worker_requirements is not None and not worker_requirements.is_file():
        raise StackError(f"worker requirements file {worker_requirements} not found", "give the path of a pip requirements file")
    base = choose_base(docker, base_image, progress)
    standard = image_tags(docker, base)
    tags = dict(standard)
    if worker_requirements is not None:
        tags["worker"] = custom_worker_tag(standard["worker"], worker_requirements)
    present = set() if force else docker_tools.present_images(docker, sorted(set(standard.values()) | set(tags.values())))
    missing = [role for role in ROLES if standard[role] not in present]
    custom_missing = worker_requirements is not None and tags["worker"] not in present
    if not missing and not custom_missing:
        return tags  # the usual `up`: no buildx check, no pip config lookup
    docker_tools.check_buildx(docker)
    with tempfile.TemporaryDirectory(prefix="seamless-stack-build-") as scratch:
        secrets = build_secrets(Path(scratch))
        for role in missing:
            progress(f"building image {standard[role]} (base {base})")
            _buildx(
                docker, progress, role, secrets,
                context_path=images_dir(), target=role, tags=[standard[role]], build_args={"BASE_IMAGE": base},
                labels=labels(role),
            )
        if custom_missing:
            progress(f"building image {tags['worker']} (worker + {worker_requirements})")
            context = Path(scratch) / "context"
            context.mkdir()
            shutil.copyfile(worker_requirements, context / "requirements.txt")
            _buildx(
                docker, progress, "worker-custom", secrets,
                context_path=context, file=images_dir() / "worker-custom.Dockerfile",
                tags=[tags["worker"]], build_args={"WORKER_IMAGE": standard["worker"]},
                labels=labels("worker", worker_requirements),
            )
    return tags


def push_images(docker: DockerClient, tags: dict[str, str], target: str, worker_requirements: Path | None,
                progress: Progress) -> dict[str, str]:
    """Push each image under its content tag and its definition tag; role -> REGISTRY/...@sha256:..."""
    pushed = {}
    for role, tag in tags.items():
        name, _, content = tag.partition(":")
        repo = registry.repository(target, name)
        lookup = definition_tag(worker_requirements if "worker-custom" in name else None)
        progress(f"pushing {tag} as {repo}:{content} and :{lookup}")
        for remote in (f"{repo}:{content}", f"{repo}:{lookup}"):
            docker.image.tag(tag, remote)
            try:
                docker.image.push(remote, quiet=True)
            except DockerException as exc:
                raise StackError(f"pushing {remote} failed ({str(exc).strip().splitlines()[-1][:300]})",
                                 f"check the registry and your login there (`docker login {target.split('/')[0]}`)") from None
        digests = [d for d in docker.image.inspect(tag).repo_digests if d.startswith(repo + "@")]
        for remote in (f"{repo}:{content}", f"{repo}:{lookup}"):
            docker.image.remove(remote)  # the tags only: the image stays
        pushed[role] = digests[0] if digests else f"{repo}:{content}"
    return pushed

"""Finding Docker and checking it can do what we need, with errors that say how to fix it."""

from __future__ import annotations

import json
import shutil

from python_on_whales import DockerClient, DockerException
from python_on_whales.utils import run

from .errors import StackError, error_text

INSTALL_HINT = "install Docker with Compose v2 and buildx (Debian: sudo bash scripts/install-docker-debian.sh)"


def docker_binary() -> str:
    # Never let python-on-whales download a docker CLI of its own: find the user's.
    path = shutil.which("docker")
    if path is None:
        raise StackError("the docker command is not installed", INSTALL_HINT)
    return path


def check_engine(docker: DockerClient) -> str:
    """The engine's version; a one-line error when it does not answer."""
    try:
        version = docker.version()  # fails like `docker info` when the engine is down or its socket closed, 3x faster
    except DockerException as exc:
        raise StackError(
            f"the Docker engine does not answer ({error_text(exc)})",
            "start it (`sudo dockerd &` or `systemctl start docker`) and check access to its socket",
        ) from None
    return str(getattr(getattr(version, "server", None), "version", "") or "")


def loopback_publishing_warning(version: str, where: str = "") -> str | None:
    """Docker before 28 lets hosts on its networks reach ports published on 127.0.0.1 by
    routing to the container's address (forwarding on, no filter); Docker 28 drops that."""
    try:
        major = int(version.split(".")[0])
    except ValueError:
        return None
    if major >= 28:
        return None
    return (f"Docker engine {version}{where} lets other hosts of its networks reach ports published on 127.0.0.1 "
            "(routed to the containers; fixed in Docker 28): the stack's credentials still guard every port; "
            "upgrade the engine to close it (docs/security.md)")


def check_compose(docker: DockerClient) -> None:
    try:
        version = docker.compose.version()
    except DockerException:
        raise StackError("Docker Compose v2 (`docker compose`) is missing", INSTALL_HINT) from None
    if " v1." in version or version.strip().startswith("1."):
        raise StackError(f"Docker Compose is too old ({version.strip()})", INSTALL_HINT)


def present_images(docker: DockerClient, tags: list[str]) -> set[str]:
    """Which of these tags the engine has: one CLI call when all are there (the usual `up`)."""
    try:
        run(docker.docker_cmd + ["image", "inspect", "--format", "{{.Id}}", *tags])
        return set(tags)
    except DockerException:
        return {tag for tag in tags if docker.image.exists(tag)}


def check_buildx(docker: DockerClient) -> None:
    try:
        docker.buildx.version()
    except DockerException:
        raise StackError("docker buildx (BuildKit) is missing: it is needed to build the images", INSTALL_HINT) from None


def docker_client(host: str | None = None, **compose) -> DockerClient:
    return DockerClient(client_call=[docker_binary()], host=host, **compose)


def inspect_containers(docker: DockerClient, filters: list[tuple[str, str]]) -> list[dict]:
    """`docker inspect` of every matching container in two CLI calls, not one per container
    (python-on-whales inspects lazily, one call each): the health gate asks every second,
    and on a small machine each docker call takes CPU from the services starting up."""
    ids = [c.id for c in docker.container.list(all=True, filters=filters)]
    if not ids:
        return []
    return json.loads(run(docker.docker_cmd + ["container", "inspect", *ids]))

"""Our images in a container registry: names there, and the digest a name points at.

`images push REGISTRY[/PREFIX]` puts each image under two tags: its content tag, and its
definition tag (a digest of the image definition this seamless-stack carries, which a login
node without Docker can compute). `up slurm --registry` asks the registry which manifest the
definition tag names and pulls exactly that (`@sha256:...`), so the SIF is the pushed image.
Registry credentials come from the user's Docker or Apptainer login, never from our files.
"""

from __future__ import annotations

import base64
import json
import os
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from .errors import StackError

MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json", "application/vnd.docker.distribution.manifest.v2+json",
])
TARGET = re.compile(r"[a-z0-9.-]+(:\d+)?(/[a-z0-9._-]+)*")


def parse_target(text: str) -> tuple[str, str]:
    """REGISTRY[/PREFIX] -> (registry host[:port], prefix without slashes)."""
    registry = text.split("/")[0]
    # Docker's rule: the first component names a registry if it has a dot or a port, or is localhost.
    if not TARGET.fullmatch(text) or not ("." in registry or ":" in registry or registry == "localhost"):
        raise StackError(f"--registry {text!r} is not REGISTRY[/PREFIX]",
                         "give a registry host (with a dot or a port), e.g. registry.example.org/group or 10.0.0.5:5000")
    return registry, text.partition("/")[2]


def repository(target: str, image: str) -> str:
    """REGISTRY/PREFIX + seamless-stack/scheduler -> REGISTRY/PREFIX/seamless-stack/scheduler."""
    return f"{target.rstrip('/')}/{image}"


def manifest_digest(reference: str) -> str:
    """sha256:... of REGISTRY/REPO:TAG, asked of the registry's v2 API (anonymous, Bearer or Basic)."""
    registry, _, rest = reference.partition("/")
    repo, _, tag = rest.rpartition(":")
    url = f"https://{registry}/v2/{repo}/manifests/{tag}"
    headers = {"Accept": MANIFEST_TYPES}
    try:
        return _head(url, headers)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise StackError(f"{reference} is not in the registry",
                             "push this version's images first: `seamless-stack images push REGISTRY[/PREFIX]` where Docker runs") from None
        if exc.code != 401:
            raise StackError(f"registry {registry} answered {exc.code} {exc.reason} for {reference}", "check --registry") from None
        headers["Authorization"] = _authorization(registry, exc.headers.get("WWW-Authenticate", ""), repo)
    try:
        return _head(url, headers)
    except urllib.error.HTTPError as exc:
        raise StackError(f"registry {registry} refused {reference} ({exc.code} {exc.reason})",
                         f"log in as the cluster user: `apptainer registry login docker://{registry}` or `docker login {registry}`") from None


def _head(url: str, headers: dict[str, str]) -> str:
    request = urllib.request.Request(url, method="HEAD", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30, context=ssl.create_default_context()) as answer:
            digest = answer.headers.get("Docker-Content-Digest", "")
    except urllib.error.URLError as exc:
        if isinstance(exc, urllib.error.HTTPError):
            raise
        raise StackError(f"cannot reach the registry at {url.split('/v2/')[0]} ({exc.reason})",
                         "check --registry, and that this machine trusts its certificate (SSL_CERT_FILE)") from None
    if not digest.startswith("sha256:"):
        raise StackError(f"{url} gave no manifest digest", "use a registry that speaks the OCI distribution API")
    return digest


def _authorization(registry: str, challenge: str, repo: str) -> str:
    """Basic with the user's stored login, or a Bearer token from the realm the registry names."""
    login = stored_login(registry)
    scheme, _, params = challenge.partition(" ")
    if scheme.lower() != "bearer":
        if not login:
            raise StackError(f"registry {registry} wants a login", f"`apptainer registry login docker://{registry}` or `docker login {registry}`")
        return f"Basic {login}"
    fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
    query = urllib.parse.urlencode({"service": fields.get("service", ""), "scope": fields.get("scope", f"repository:{repo}:pull")})
    request = urllib.request.Request(f"{fields.get('realm', '')}?{query}", headers={"Authorization": f"Basic {login}"} if login else {})
    try:
        with urllib.request.urlopen(request, timeout=30, context=ssl.create_default_context()) as answer:
            token = json.load(answer)
    except (urllib.error.URLError, ValueError) as exc:
        raise StackError(f"registry {registry}: no token from {fields.get('realm')} ({exc})", "check your registry login") from None
    return f"Bearer {token.get('token') or token.get('access_token', '')}"


def stored_login(registry: str) -> str | None:
    """base64 user:password from Apptainer's or Docker's login for this registry, if any."""
    home = Path(os.path.expanduser("~"))
    for config in (home / ".apptainer" / "docker-config.json", Path(os.environ.get("DOCKER_CONFIG", home / ".docker")) / "config.json"):
        try:
            auths = json.loads(config.read_text()).get("auths", {})
        except (OSError, ValueError):
            continue
        for key in (registry, f"https://{registry}", f"https://{registry}/v1/", f"https://{registry}/v2/"):
            if auths.get(key, {}).get("auth"):
                return auths[key]["auth"]
            if auths.get(key, {}).get("username"):
                entry = auths[key]
                return base64.b64encode(f"{entry['username']}:{entry.get('password', '')}".encode()).decode()
    return None

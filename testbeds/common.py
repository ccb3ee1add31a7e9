"""Helpers shared by the container test beds (remote_host, slurm_cluster).

Both beds run privileged-ish containers from images built locally on demand, and both
give tests a fresh ssh key plus an ssh config file; the pieces that are the same live here.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

# Plain --privileged fails on hosts without CAP_SYS_RESOURCE; this is the working set.
# Each bed adds what only it needs (cgroup access for dockerd, /dev/fuse for Apptainer).
RUN_FLAGS = [
    "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
    "--security-opt", "systempaths=unconfined",
]


def stderr_progress(line: str) -> None:
    print(line, file=sys.stderr)


def docker(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run the docker CLI with text output captured; with check, fail with docker's own message."""
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    done = subprocess.run(["docker", *args], text=True, **kw)
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])} ... failed: "
                           f"{(done.stderr or done.stdout or '').strip()[-2000:]}")
    return done


def files_hash(files: list[Path], names: bool = True) -> str:
    """Short hash of the files that make an image; stored as a label so edits cause a rebuild.

    names=False leaves the file names out: the Slurm bed always hashed that way, and
    keeping it means its already-built image still matches (no needless rebuild).
    """
    h = hashlib.sha256()
    for f in files:
        h.update((f.name.encode() + b"\0" if names else b"") + f.read_bytes())
    return h.hexdigest()[:16]


def ensure_image(image: str, context: Path, label: str, digest: str, progress, note: str) -> str:
    """Build ``image`` from ``context`` (FROM the local base) unless its ``label`` is ``digest``.

    Rebuilding only on a changed digest keeps test start-up fast; the previous build,
    left untagged, is removed so rebuilds do not pile up (skipped while still in use).
    """
    found = docker("image", "inspect", "-f", f'{{{{.Id}}}} {{{{index .Config.Labels "{label}"}}}}',
                   image, check=False)
    found_id, _, found_digest = found.stdout.strip().partition(" ")
    if found.returncode == 0 and found_digest == digest:
        return image
    from testbeds.base import ensure_base

    ensure_base(progress)
    progress(f"building {image} ({note})")
    built = subprocess.run(["docker", "build", "--label", f"{label}={digest}", "-t", image, str(context)],
                           capture_output=True, text=True, env={**os.environ, "DOCKER_BUILDKIT": "1"})
    if built.returncode != 0:
        raise RuntimeError(f"building {image} failed:\n{built.stdout[-3000:]}{built.stderr[-3000:]}")
    if found.returncode == 0:
        old = docker("image", "inspect", "-f", "{{.RepoTags}}", found_id, check=False).stdout.strip()
        if old == "[]":
            docker("rmi", found_id, check=False)
    return image


def container_ip(name: str) -> str:
    """The container's IP on its (single, user-defined) network."""
    return docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                  name).stdout.strip()


def new_key(path: Path, comment: str) -> str:
    """Generate a passphrase-less ed25519 key pair at ``path``; return the public key line.

    Each bed gets its own key so tests never touch the user's keys or ssh agent.
    """
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True)
    return path.with_suffix(".pub").read_text().strip()


def ssh_config_text(hosts: str, address: str, user: str, key_path: Path, port: int = 22) -> str:
    """A Host entry for ``ssh -F``: only the bed's key, and no host-key prompts or
    known_hosts entries (every bed has fresh host keys, often on a reused IP)."""
    return (
        f"Host {hosts}\n"
        f"    HostName {address}\n"
        f"    Port {port}\n"
        f"    User {user}\n"
        f"    IdentityFile {key_path}\n"
        "    IdentitiesOnly yes\n"
        "    StrictHostKeyChecking no\n"
        "    UserKnownHostsFile /dev/null\n"
        "    LogLevel ERROR\n"
    )


def ssh_argv(config_path: Path, alias: str, cmd: str) -> list[str]:
    """argv for a non-interactive ssh through the bed's config (fails fast, never prompts)."""
    return ["ssh", "-F", str(config_path), "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", alias, cmd]

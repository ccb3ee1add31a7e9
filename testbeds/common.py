"""Helpers shared by the container test beds (remote_host, slurm_cluster).

Both beds run privileged-ish containers from images built locally on demand, and both
give tests a fresh ssh key plus an ssh config file; the pieces that are the same live here:
the one writer of ssh client files (SSHLogin) and the beds' base class (Testbed).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

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


def ssh_config_text(key_path: Path, hosts: str = "*", address: str | None = None, user: str | None = None,
                    port: int | None = None) -> str:
    """The one ssh config text of the beds and tests: only this key, and no host-key prompts or
    known_hosts entries (every bed has fresh host keys, often on a reused IP). hosts "*" with
    no address: any host, as the caller names it (the CLI's destination)."""
    options = [("HostName", address), ("Port", port), ("User", user), ("IdentityFile", key_path),
               ("IdentitiesOnly", "yes"), ("StrictHostKeyChecking", "no"), ("UserKnownHostsFile", "/dev/null"),
               ("LogLevel", "ERROR")]
    return f"Host {hosts}\n" + "".join(f"    {key} {value}\n" for key, value in options if value is not None)


def ssh_argv(config_path: Path, alias: str, cmd: str) -> list[str]:
    """argv for a non-interactive ssh through the bed's config (fails fast, never prompts)."""
    return ["ssh", "-F", str(config_path), "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", alias, cmd]


class SSHLogin:
    """One login over ssh with one key, in `folder`: `config` (ssh_config_text) and `bin/ssh`,
    the real ssh with that config. OpenSSH reads ~/.ssh/config from the password database,
    not from $HOME, so a wrapper first on PATH is how a test hands the CLI (or docker's
    ssh:// transport) a key. `run` logs in as the config's user at `alias`."""

    def __init__(self, folder: Path, key_path: Path, address: str | None = None, user: str | None = None,
                 alias: str | None = None, port: int | None = None):
        self.folder, self.alias = folder, alias or address
        self.config = folder / "config"
        self.bin = folder / "bin"
        self.bin.mkdir(parents=True, exist_ok=True)
        hosts = " ".join(dict.fromkeys(h for h in (alias, address) if h)) or "*"
        self.text = ssh_config_text(key_path, hosts, address, user, port)
        self.config.write_text(self.text)
        wrapper = self.bin / "ssh"
        wrapper.write_text(f'#!/bin/sh\nexec {shutil.which("ssh") or "/usr/bin/ssh"} -F {self.config} "$@"\n')
        wrapper.chmod(0o755)

    def argv(self, cmd: str | Sequence[str]) -> list[str]:
        return ssh_argv(self.config, self.alias, cmd if isinstance(cmd, str) else shlex.join(cmd))

    def run(self, cmd: str | Sequence[str], *, timeout: float = 60, check: bool = False,
            input: str | None = None) -> subprocess.CompletedProcess:
        """Run a shell command there over real ssh; output captured as text."""
        return subprocess.run(self.argv(cmd), input=input, capture_output=True, text=True, timeout=timeout, check=check)


class Testbed:
    """What the two beds share: a work folder (the login key, its ssh files, whatever the
    bed mounts), a user who logs in with a fresh key, the lifecycle (a context manager;
    a start that fails removes everything), and one `ssh` and one `exec` for tests.

    A bed sets name, user, alias, main_container and timeout, and implements _ensure_image,
    _make(public_key) (the containers; sets login_address), _wait_ready and _remove (by
    labels, so that another process can remove it too); _preflight may refuse to start."""

    user: str
    alias: str
    main_container: str  # where `exec` runs unless told otherwise
    workdir_parent: str | None = None  # where the work folder is made (None: the system's temp folder)

    def __init__(self, name: str, timeout: float):
        self.name, self.timeout = name, timeout
        self.workdir: Path | None = None
        self.login_address: str | None = None
        self.login: SSHLogin | None = None

    @property
    def key_path(self) -> Path:
        return self.workdir / "ssh" / "id_ed25519"

    @property
    def ssh_config_path(self) -> Path:
        return self.workdir / "ssh" / "config"

    @property
    def bin_dir(self) -> Path:
        """Holds the `ssh` wrapper for this bed's login (first on PATH for the docker CLI)."""
        return self.workdir / "ssh" / "bin"

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.login_address}"

    # -- lifecycle
    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self):
        self._ensure_image()
        self._preflight()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir=self.workdir_parent))
        try:
            (self.workdir / "ssh").mkdir()
            public_key = new_key(self.key_path, self.name)
            self._make(public_key)
            self.login = SSHLogin(self.workdir / "ssh", self.key_path, self.login_address, self.user, self.alias)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Remove everything of the bed (idempotent)."""
        self._remove()
        self.workdir = None

    def _preflight(self) -> None:
        """Refuse to start (before anything is made), e.g. when a bed of this name exists."""

    def _ensure_image(self) -> None:
        raise NotImplementedError

    def _make(self, public_key: str) -> None:
        raise NotImplementedError

    def _wait_ready(self) -> None:
        raise NotImplementedError

    def _remove(self) -> None:
        raise NotImplementedError

    # -- using the bed
    def ssh_config_text(self) -> str:
        return self.login.text

    def login_as(self, user: str, key_path: Path) -> SSHLogin:
        """Another user's way in to the login address, with a key of its own."""
        return SSHLogin(self.workdir / f"ssh-{user}", key_path, self.login_address, user, alias=f"{user}-{self.alias}")

    def ssh_argv(self, cmd: str | Sequence[str]) -> list[str]:
        """argv for running cmd as the bed's user over ssh (for Popen pipelines)."""
        return self.login.argv(cmd)

    def ssh(self, cmd: str | Sequence[str], *, timeout: float = 60, check: bool = False,
            input: str | None = None) -> subprocess.CompletedProcess:
        """Run cmd as the bed's user at its login address, over real ssh; output captured as text."""
        return self.login.run(cmd, timeout=timeout, check=check, input=input)

    def exec(self, cmd: str | Sequence[str], *, node: str | None = None, user: str = "root", timeout: float = 60,
             check: bool = False) -> subprocess.CompletedProcess:
        """`docker exec` in a container of the bed (main_container unless `node` is given), no ssh
        involved; a string goes through bash. check: a failure raises with docker's output."""
        argv = ["bash", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        return docker("exec", "-u", user, node or self.main_container, *argv, check=check, timeout=timeout)

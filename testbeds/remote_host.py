"""A throwaway "remote Docker host" for tests: sshd + its own dockerd in one container.

Why: seamless-stack must deploy to a Docker engine reached over SSH
(``DOCKER_HOST=ssh://user@host``). This bed gives tests such a host with its own
IP address (own user-defined network), a non-root login ``seamless`` (docker group,
key-only auth, fresh ed25519 key per bed) and an inner dockerd (vfs storage).

    with RemoteHost(name="seamless-remote") as host:
        host.ssh("docker info")                       # CompletedProcess
        env = {**os.environ, **host.docker_env()}
        subprocess.run(["docker", "compose", "version"], env=env)   # runs against the bed

By hand:  python -m testbeds.remote_host start [--name N]   (prints address, config)
          python -m testbeds.remote_host stop  [--name N]

Pointing the host's docker CLI / Compose at the bed: both exec the system ``ssh``
binary (``ssh -o ConnectTimeout=30 -T -l seamless -- IP docker system dial-stdio``)
and pass no identity file. OpenSSH reads ``~/.ssh/config`` from the passwd home
directory, NOT from ``$HOME``, so setting HOME does not help. ``docker_env()``
therefore returns ``DOCKER_HOST=ssh://seamless@IP`` plus a ``PATH`` whose first entry
holds an ``ssh`` wrapper that runs ``/usr/bin/ssh -F <bed config>``. The bed's config
matches both the alias and the IP, so ``ssh -F <config> <alias>`` and
``ssh -F <config> seamless@IP`` both work. To use a plain ``ssh`` instead, append
``host.ssh_config_text()`` to a config file of your choice (``add_to_ssh_config``).

Network rule: traffic goes only to the bed's IP, a container the tests created.
Needs: Docker engine, the ``ssh``/``ssh-keygen`` clients, and the base image from
``testbeds.base`` (built on demand).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IMAGE = "seamless-stack-testbed/remote:latest"
CONTEXT = Path(__file__).parent / "remote"
# Label on our image (value: context hash) and on containers/networks (value: temp dir).
LABEL = "seamless-stack-testbed.remote"
USER = "seamless"
# Same caps as the Slurm bed; plain --privileged fails here (host lacks CAP_SYS_RESOURCE).
# --cgroupns host + rw cgroup mount let the inner dockerd create container cgroups.
RUN_FLAGS = [
    "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
    "--security-opt", "systempaths=unconfined",
    "--cgroupns", "host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
]


def _docker(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], check=check, capture_output=True, text=True, **kw)


def _context_hash() -> str:
    """Hash of the build context, stored as an image label so edits trigger a rebuild."""
    h = hashlib.sha256()
    for f in sorted(CONTEXT.iterdir()):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def ensure_image(progress=lambda line: print(line, file=sys.stderr)) -> str:
    """Build the bed image (FROM the local trixie base, no registry) unless up to date."""
    digest = _context_hash()
    have = _docker("image", "inspect", "-f", f'{{{{index .Config.Labels "{LABEL}"}}}}', IMAGE,
                   check=False)
    if have.returncode == 0 and have.stdout.strip() == digest:
        return IMAGE
    from testbeds.base import ensure_base

    ensure_base(progress)
    progress(f"building {IMAGE} (apt inside, about 20 s)")
    argv = ["docker", "build", "--label", f"{LABEL}={digest}", "-t", IMAGE, str(CONTEXT)]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"building {IMAGE} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return IMAGE


class RemoteHost:
    """A remote Docker host as a container; a context manager that cleans up after itself."""

    ssh_port = 22
    user = USER

    def __init__(self, name: str = "seamless-remote", timeout: float = 90.0):
        self.name = name
        self.alias = name
        self.network = f"{name}-net"
        self.timeout = timeout
        self.address: str | None = None
        self.tmpdir: Path | None = None

    # -- paths in the temp dir ------------------------------------------------------
    @property
    def key_path(self) -> Path:
        return self.tmpdir / "id_ed25519"

    @property
    def ssh_config_path(self) -> Path:
        return self.tmpdir / "ssh_config"

    @property
    def bin_dir(self) -> Path:
        """Holds the ``ssh`` wrapper that docker_env() puts first on PATH."""
        return self.tmpdir / "bin"

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.address}"

    @property
    def docker_host(self) -> str:
        return f"ssh://{self.destination}"

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> "RemoteHost":
        ensure_image()
        self.tmpdir = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        try:
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", self.name,
                            "-f", str(self.key_path)], check=True)
            pubkey = self.key_path.with_suffix(".pub").read_text().strip()
            label = f"{LABEL}={self.tmpdir}"
            _docker("network", "create", "--label", label, self.network)
            _docker("run", "-d", "--name", self.name, "--hostname", self.name,
                    "--label", label, "--network", self.network,
                    "-e", f"AUTHORIZED_KEY={pubkey}", *RUN_FLAGS, IMAGE)
            self.address = _docker("inspect", "-f",
                                   "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                                   self.name).stdout.strip()
            self._write_client_files()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Remove the container, its network and the temp dir (keys, config). Idempotent."""
        _remove(self.name, self.network, self.tmpdir)

    def __enter__(self) -> "RemoteHost":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- client side ----------------------------------------------------------------
    def ssh_config_text(self) -> str:
        return (
            f"Host {self.alias} {self.address}\n"
            f"    HostName {self.address}\n"
            f"    Port {self.ssh_port}\n"
            f"    User {self.user}\n"
            f"    IdentityFile {self.key_path}\n"
            f"    IdentitiesOnly yes\n"
            f"    StrictHostKeyChecking no\n"
            f"    UserKnownHostsFile /dev/null\n"
            f"    LogLevel ERROR\n"
        )

    def add_to_ssh_config(self, path: str | os.PathLike) -> None:
        """Append this bed's Host entry to an ssh config file (e.g. for a plain ``ssh``)."""
        path = Path(path)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write("\n" + self.ssh_config_text())

    def _write_client_files(self) -> None:
        self.ssh_config_path.write_text(self.ssh_config_text())
        self.bin_dir.mkdir()
        wrapper = self.bin_dir / "ssh"
        real_ssh = shutil.which("ssh") or "/usr/bin/ssh"
        wrapper.write_text(f'#!/bin/sh\nexec {real_ssh} -F {self.ssh_config_path} "$@"\n')
        wrapper.chmod(0o755)

    def docker_env(self) -> dict[str, str]:
        """Env vars that point the host's docker CLI and Compose at the bed's dockerd."""
        return {"DOCKER_HOST": self.docker_host,
                "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}

    def ssh_argv(self, cmd: str | list[str]) -> list[str]:
        """argv for running ``cmd`` on the bed as ``seamless`` (for Popen pipelines)."""
        if not isinstance(cmd, str):
            cmd = shlex.join(cmd)
        return ["ssh", "-F", str(self.ssh_config_path), "-o", "ConnectTimeout=5",
                "-o", "BatchMode=yes", self.alias, cmd]

    def ssh(self, cmd: str | list[str], **kw) -> subprocess.CompletedProcess:
        """Run ``cmd`` on the bed over ssh; output captured as text unless overridden."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(self.ssh_argv(cmd), **kw)

    def exec(self, cmd: str | list[str], **kw) -> subprocess.CompletedProcess:
        """Run ``cmd`` in the bed as root via ``docker exec`` (no ssh involved)."""
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(["docker", "exec", self.name, *argv], **kw)

    def _wait_ready(self) -> None:
        """Wait until sshd answers and the inner dockerd serves ``docker info`` over ssh."""
        deadline = time.monotonic() + self.timeout
        last = ""
        while time.monotonic() < deadline:
            state = _docker("inspect", "-f", "{{.State.Running}}", self.name, check=False)
            if state.stdout.strip() != "true":
                break
            proc = self.ssh("docker info --format '{{.ServerVersion}}'", timeout=15)
            if proc.returncode == 0 and proc.stdout.strip():
                return
            last = (proc.stderr or proc.stdout).strip()
            time.sleep(1)
        logs = _docker("logs", "--tail", "30", self.name, check=False)
        dockerd = self.exec("tail -n 30 /var/log/dockerd.log")
        raise RuntimeError(
            f"remote host {self.name} ({self.address}) not ready within {self.timeout:.0f} s.\n"
            f"last ssh error: {last}\n--- container log ---\n{logs.stdout}{logs.stderr}"
            f"--- dockerd.log ---\n{dockerd.stdout}{dockerd.stderr}")


_REMOVE_NESTED = 'ids=$(docker ps -aq); [ -z "$ids" ] || docker rm -f $ids'


def _remove(name: str, network: str, tmpdir: Path | None) -> None:
    # Nested containers first: killed with the bed, their cgroups (host hierarchy) would leak.
    try:
        _docker("exec", name, "sh", "-c", _REMOVE_NESTED, check=False, timeout=60)
    except subprocess.TimeoutExpired:
        pass
    _docker("rm", "-f", "-v", name, check=False)
    _docker("network", "rm", network, check=False)
    if tmpdir is not None:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m testbeds.remote_host",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--name", default="seamless-remote")
    args = parser.parse_args(argv)
    if args.action == "start":
        host = RemoteHost(name=args.name).start()
        print(f"address:      {host.address}")
        print(f"destination:  {host.destination}")
        print(f"ssh config:   {host.ssh_config_path}")
        print(f"ssh:          ssh -F {host.ssh_config_path} {host.alias}")
        print(f"docker env:   export DOCKER_HOST={host.docker_host} PATH={host.bin_dir}:$PATH")
        print(f"stop with:    python -m testbeds.remote_host stop --name {host.name}")
    else:
        # The temp dir is recorded in the container's label so a later process can remove it.
        label = _docker("inspect", "-f", f'{{{{index .Config.Labels "{LABEL}"}}}}', args.name,
                        check=False).stdout.strip()
        tmpdir = Path(label) if label else None
        if tmpdir and not (tmpdir.is_dir() and tmpdir.name.startswith(f"{args.name}-")):
            tmpdir = None  # never remove anything that is not our own temp dir
        _remove(args.name, f"{args.name}-net", tmpdir)
        print(f"removed {args.name}")


if __name__ == "__main__":
    _main()

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
import os
import shutil
import subprocess
import time
from pathlib import Path

from testbeds import common
from testbeds.common import docker

IMAGE = "seamless-stack-testbed/remote:latest"
CONTEXT = Path(__file__).parent / "remote"
# Label on our image (value: context hash) and on containers/networks (value: temp dir).
LABEL = "seamless-stack-testbed.remote"
USER = "seamless"
# --cgroupns host + rw cgroup mount let the inner dockerd create container cgroups.
RUN_FLAGS = [*common.RUN_FLAGS, "--cgroupns", "host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw"]


def ensure_image(progress=common.stderr_progress) -> str:
    """Build the bed image (FROM the local trixie base, no registry) unless up to date."""
    digest = common.files_hash(sorted(CONTEXT.iterdir()))
    return common.ensure_image(IMAGE, CONTEXT, LABEL, digest, progress, "apt inside, about 20 s")


class RemoteHost(common.Testbed):
    """A remote Docker host as a container; a context manager that cleans up after itself."""

    user = USER

    def __init__(self, name: str = "seamless-remote", timeout: float = 90.0):
        super().__init__(name, timeout)
        self.alias = self.main_container = name
        self.network = f"{name}-net"

    @property
    def address(self) -> str | None:
        return self.login_address

    @property
    def docker_host(self) -> str:
        return f"ssh://{self.destination}"

    # -- lifecycle (common.Testbed.start)
    def _ensure_image(self) -> None:
        ensure_image()

    def _make(self, public_key: str) -> None:
        label = f"{LABEL}={self.workdir}"
        docker("network", "create", "--label", label, self.network)
        docker("run", "-d", "--name", self.name, "--hostname", self.name,
               "--label", label, "--network", self.network,
               "-e", f"AUTHORIZED_KEY={public_key}", *RUN_FLAGS, IMAGE)
        self.login_address = common.container_ip(self.name)

    def _remove(self) -> None:
        """Remove the container, its network and the work folder (keys, config). Idempotent."""
        _remove(self.name, self.network, self.workdir)

    # -- client side ----------------------------------------------------------------
    def add_to_ssh_config(self, path: str | os.PathLike) -> None:
        """Append this bed's Host entry to an ssh config file (e.g. for a plain ``ssh``)."""
        path = Path(path)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write("\n" + self.ssh_config_text())

    def docker_env(self) -> dict[str, str]:
        """Env vars that point the host's docker CLI and Compose at the bed's dockerd."""
        return {"DOCKER_HOST": self.docker_host,
                "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}

    def _wait_ready(self) -> None:
        """Wait until sshd answers and the inner dockerd serves ``docker info`` over ssh."""
        deadline = time.monotonic() + self.timeout
        last = ""
        while time.monotonic() < deadline:
            state = docker("inspect", "-f", "{{.State.Running}}", self.name, check=False)
            if state.stdout.strip() != "true":
                break
            proc = self.ssh("docker info --format '{{.ServerVersion}}'", timeout=15)
            if proc.returncode == 0 and proc.stdout.strip():
                return
            last = (proc.stderr or proc.stdout).strip()
            time.sleep(1)
        logs = docker("logs", "--tail", "30", self.name, check=False)
        dockerd = self.exec("tail -n 30 /var/log/dockerd.log")
        raise RuntimeError(
            f"remote host {self.name} ({self.address}) not ready within {self.timeout:.0f} s.\n"
            f"last ssh error: {last}\n--- container log ---\n{logs.stdout}{logs.stderr}"
            f"--- dockerd.log ---\n{dockerd.stdout}{dockerd.stderr}")


_REMOVE_NESTED = 'ids=$(docker ps -aq); [ -z "$ids" ] || docker rm -f $ids'


def _remove(name: str, network: str, tmpdir: Path | None) -> None:
    # Nested containers first: killed with the bed, their cgroups (host hierarchy) would leak.
    try:
        docker("exec", name, "sh", "-c", _REMOVE_NESTED, check=False, timeout=60)
    except subprocess.TimeoutExpired:
        pass
    docker("rm", "-f", "-v", name, check=False)
    docker("network", "rm", network, check=False)
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
        label = docker("inspect", "-f", f'{{{{index .Config.Labels "{LABEL}"}}}}', args.name,
                       check=False).stdout.strip()
        tmpdir = Path(label) if label else None
        if tmpdir and not (tmpdir.is_dir() and tmpdir.name.startswith(f"{args.name}-")):
            tmpdir = None  # never remove anything that is not our own temp dir
        _remove(args.name, f"{args.name}-net", tmpdir)
        print(f"removed {args.name}")


if __name__ == "__main__":
    _main()

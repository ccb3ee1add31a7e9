"""A small real Slurm cluster in Docker containers, for testing the Slurm deployment methods.

One controller that is also the login node (slurmctld + sshd) and N compute nodes (slurmd),
all from the image seamless-stack-testbed/slurm:latest (Debian trixie, Slurm, munge,
Apptainer from sid), on a network of their own so that each node has its own IP and
name. /home is a host directory shared by all nodes; the user `seamless` (uid 2000) logs
in on the login node with a freshly generated key.

    with SlurmCluster(compute_nodes=2) as cluster:
        cluster.ssh("srun -N1 hostname")

    python -m testbeds.slurm_cluster start [--name N] [--nodes 2]   # leaves it running
    python -m testbeds.slurm_cluster stop [--name N]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from string import Template

from testbeds import common
from testbeds.common import docker

IMAGE = "seamless-stack-testbed/slurm:latest"
HERE = Path(__file__).resolve().parent / "slurm"
LABEL = "seamless-stack-testbed.slurm"  # value: the cluster name; finds everything for `stop`
USER, UID = "seamless", 2000
RUN_FLAGS = [*common.RUN_FLAGS, "--device", "/dev/fuse"]  # fuse: Apptainer mounts SIFs


def ensure_image(progress=common.stderr_progress) -> str:
    """Build IMAGE (and the trixie base) unless an up-to-date one exists."""
    # Only what goes into the image: slurm.conf.template and cgroup.conf are mounted at run time.
    digest = common.files_hash([HERE / "Dockerfile", HERE / "entrypoint.sh"], names=False)
    return common.ensure_image(IMAGE, HERE, "testbed.hash", digest, progress, "about 20 s to a few minutes")


class SlurmCluster:
    """Context manager for the test cluster; see the module docstring."""

    def __init__(self, name: str | None = None, compute_nodes: int = 2, cpus: int = 2,
                 memory_mb: int = 2000, timeout: float = 120):
        self.name = name or f"slurmtb-{secrets.token_hex(3)}"
        self.controller = f"{self.name}-login"
        self.compute_nodes = [f"{self.name}-c{i + 1}" for i in range(compute_nodes)]
        self.network = f"{self.name}-net"
        self.cpus, self.memory_mb, self.timeout = cpus, memory_mb, timeout
        self.user = USER
        self.alias = self.controller
        self.workdir: Path | None = None
        self.login_address: str | None = None

    # -- paths inside the work directory (one temp dir holds everything we create on the host)
    @property
    def home_path(self) -> Path:
        """The shared /home, as seen from the host: copy files into home_path / 'seamless'."""
        return self.workdir / "home"

    @property
    def key_path(self) -> Path:
        return self.workdir / "ssh" / "id_ed25519"

    @property
    def ssh_config_path(self) -> Path:
        return self.workdir / "ssh" / "config"

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.login_address}"

    # -- life cycle
    def __enter__(self) -> "SlurmCluster":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "SlurmCluster":
        ensure_image()
        if docker("ps", "-aq", "--filter", f"label={LABEL}={self.name}").stdout.strip():
            raise RuntimeError(f"a test cluster named {self.name!r} exists: "
                               f"python -m testbeds.slurm_cluster stop --name {self.name}")
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir="/var/tmp"))
        try:
            self._write_files()
            labels = ["--label", f"{LABEL}={self.name}", "--label", f"{LABEL}.workdir={self.workdir}"]
            docker("network", "create", *labels, self.network)
            # Computes first: slurmctld resolves their names when it starts.
            for node in [*self.compute_nodes, self.controller]:
                role = "controller" if node == self.controller else "compute"
                docker("run", "-d", "--init", "--name", node, "--hostname", node, "--network", self.network,
                       *labels, *RUN_FLAGS,
                       "-v", f"{self.workdir / 'config'}:/config:ro", "-v", f"{self.home_path}:/home",
                       IMAGE, role)
            self.login_address = common.container_ip(self.controller)
            self._write_ssh_config()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Remove the containers, network and work directory of this cluster (also from another process)."""
        stop_cluster(self.name)
        self.workdir = None

    # -- set-up helpers
    def _write_files(self) -> None:
        config, home, ssh = self.workdir / "config", self.workdir / "home", self.workdir / "ssh"
        for d in (config, home, ssh):
            d.mkdir()
        self.workdir.chmod(0o755)  # the user must be able to traverse into /home
        home.chmod(0o755)
        (config / "munge.key").write_bytes(secrets.token_bytes(1024))
        (config / "slurm.conf").write_text(Template((HERE / "slurm.conf.template").read_text()).substitute(
            name=self.name, controller=self.controller, nodes=",".join(self.compute_nodes),
            cpus=self.cpus, memory=self.memory_mb))
        shutil.copy(HERE / "cgroup.conf", config / "cgroup.conf")
        pubkey = common.new_key(self.key_path, f"{self.name}-test")
        # The key goes straight into the shared home; the controller's entrypoint fixes dir modes.
        dot_ssh = home / USER / ".ssh"
        dot_ssh.mkdir(parents=True)
        (dot_ssh / "authorized_keys").write_text(pubkey + "\n")
        for p in (home / USER, dot_ssh, dot_ssh / "authorized_keys"):
            os.chown(p, UID, UID)
        dot_ssh.chmod(0o700)
        (dot_ssh / "authorized_keys").chmod(0o600)

    def _write_ssh_config(self) -> None:
        self.ssh_config_path.write_text(
            common.ssh_config_text(self.alias, self.login_address, self.user, self.key_path))

    def _wait_ready(self) -> None:
        """Until every compute node is idle in sinfo and sshd lets the user in; else fail with log tails."""
        deadline = time.monotonic() + self.timeout
        states: dict[str, str] = {}
        ssh_ok = False
        problem = f"not ready after {self.timeout:.0f} s"
        while time.monotonic() < deadline:
            running = docker("ps", "-q", "--filter", f"label={LABEL}={self.name}", "--filter", "status=running")
            if len(running.stdout.split()) < 1 + len(self.compute_nodes):
                problem = "a node container stopped"
                break
            states = self.node_states()
            if all(states.get(n) == "idle" for n in self.compute_nodes):
                ssh_ok = ssh_ok or self.ssh("true", timeout=10, check=False).returncode == 0
                if ssh_ok:
                    return
            time.sleep(1)
        logs = "\n".join(
            f"--- docker logs {c} (tail)\n" + docker("logs", "--tail", "25", c, check=False, stderr=subprocess.STDOUT).stdout
            for c in [self.controller, *self.compute_nodes])
        raise RuntimeError(f"Slurm test cluster {self.name}: {problem} "
                           f"(node states {states}, ssh {'ok' if ssh_ok else 'not answering'})\n{logs}")

    # -- using the cluster
    def ssh(self, cmd: str, timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess:
        """Run a shell command as `seamless` on the login node, over real ssh."""
        return subprocess.run(common.ssh_argv(self.ssh_config_path, self.alias, cmd),
                              capture_output=True, text=True, timeout=timeout, check=check)

    def exec(self, node: str, cmd: str | list[str], timeout: float = 60, check: bool = False,
             user: str = "root") -> subprocess.CompletedProcess:
        """docker exec on a node (a name from compute_nodes, or controller); a string goes through bash."""
        argv = ["bash", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        return docker("exec", "-u", user, node, *argv, check=check, timeout=timeout)

    def node_states(self) -> dict[str, str]:
        out = self.exec(self.controller, ["sinfo", "-h", "-N", "-o", "%N %t"], timeout=20)
        return dict(line.split() for line in out.stdout.splitlines() if len(line.split()) == 2)

    def squeue(self) -> list[tuple[str, str]]:
        """(job id, state) of every job of every user, e.g. [("3", "RUNNING")]."""
        out = self.exec(self.controller, ["squeue", "-h", "-a", "-o", "%i %T"], timeout=20, check=True)
        return [tuple(line.split()) for line in out.stdout.splitlines() if line.strip()]

    def info(self) -> dict:
        return {"name": self.name, "login_address": self.login_address, "destination": self.destination,
                "alias": self.alias, "ssh_config_path": str(self.ssh_config_path), "key_path": str(self.key_path),
                "home_path": str(self.home_path), "compute_nodes": self.compute_nodes}


def stop_cluster(name: str) -> None:
    """Remove everything labelled with this cluster name: containers, network, work directory."""
    containers = docker("ps", "-aq", "--filter", f"label={LABEL}={name}", check=False).stdout.split()
    workdirs = set()
    for cid in containers:
        found = docker("inspect", "-f", f'{{{{ index .Config.Labels "{LABEL}.workdir" }}}}', cid, check=False)
        workdirs.add(found.stdout.strip())
    networks = docker("network", "ls", "-q", "--filter", f"label={LABEL}={name}", check=False).stdout.split()
    for net in networks:
        found = docker("network", "inspect", "-f", f'{{{{ index .Labels "{LABEL}.workdir" }}}}', net, check=False)
        workdirs.add(found.stdout.strip())
    if containers:
        docker("rm", "-f", "-v", *containers, check=False)
    if networks:
        docker("network", "rm", *networks, check=False)
    for wd in workdirs:
        # Only our own temp dirs: /var/tmp/<name>-XXXX.
        if wd and Path(wd).parent == Path("/var/tmp") and Path(wd).name.startswith(f"{name}-"):
            shutil.rmtree(wd, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbeds.slurm_cluster", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start a cluster and leave it running")
    start.add_argument("--name", default="slurmtb")
    start.add_argument("--nodes", type=int, default=2)
    stop = sub.add_parser("stop", help="remove a cluster")
    stop.add_argument("--name", default="slurmtb")
    args = parser.parse_args(argv)
    if args.command == "stop":
        stop_cluster(args.name)
        return 0
    t0 = time.monotonic()
    cluster = SlurmCluster(name=args.name, compute_nodes=args.nodes).start()
    info = cluster.info()
    print(f"login address:   {info['login_address']}")
    print(f"destination:     {info['destination']}")
    print(f"ssh config:      {info['ssh_config_path']}   (ssh -F {info['ssh_config_path']} {info['alias']})")
    print(f"shared home:     {info['home_path']}/{USER}")
    print(f"compute nodes:   {' '.join(info['compute_nodes'])}")
    print(f"ready in {time.monotonic() - t0:.1f} s; stop with: python -m testbeds.slurm_cluster stop --name {args.name}")
    print(json.dumps(info), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

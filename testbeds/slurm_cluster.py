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
import hashlib
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

IMAGE = "seamless-stack-testbed/slurm:latest"
HERE = Path(__file__).resolve().parent / "slurm"
LABEL = "seamless-stack-testbed.slurm"  # value: the cluster name; finds everything for `stop`
USER, UID = "seamless", 2000
# Plain --privileged fails on hosts without CAP_SYS_RESOURCE; this is the working set.
RUN_FLAGS = [
    "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
    "--security-opt", "systempaths=unconfined", "--device", "/dev/fuse",
]


def _docker(*args: str, check: bool = True, timeout: float | None = None, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("stderr", subprocess.PIPE)
    done = subprocess.run(["docker", *args], stdout=subprocess.PIPE, text=True, timeout=timeout, **kw)
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])} ... failed: {(done.stderr or done.stdout).strip()[-2000:]}")
    return done


def _image_hash() -> str:
    """Hash of what goes into the image, so an edited Dockerfile or entrypoint causes a rebuild."""
    h = hashlib.sha256()
    for name in ("Dockerfile", "entrypoint.sh"):
        h.update((HERE / name).read_bytes())
    return h.hexdigest()[:16]


def ensure_image(progress=lambda line: print(line, file=sys.stderr)) -> str:
    """Build IMAGE (and the trixie base) unless an up-to-date one exists."""
    wanted = _image_hash()
    found = _docker("image", "inspect", "-f", "{{.Id}} {{ index .Config.Labels \"testbed.hash\" }}", IMAGE, check=False)
    found_id, _, found_hash = found.stdout.strip().partition(" ")
    if found.returncode == 0 and found_hash == wanted:
        return IMAGE
    from testbeds.base import ensure_base

    ensure_base(progress)
    progress(f"building {IMAGE} (about 20 s to a few minutes)")
    built = subprocess.run(
        ["docker", "build", "--label", f"testbed.hash={wanted}", "-t", IMAGE, str(HERE)],
        capture_output=True, text=True, env={**os.environ, "DOCKER_BUILDKIT": "1"},
    )
    if built.returncode != 0:
        raise RuntimeError(f"building {IMAGE} failed:\n{built.stderr[-3000:]}")
    if found.returncode == 0:  # drop our previous build, now untagged (fails harmlessly if in use)
        old = _docker("image", "inspect", "-f", "{{.RepoTags}}", found_id, check=False).stdout.strip()
        if old == "[]":
            _docker("rmi", found_id, check=False)
    return IMAGE


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
        if _docker("ps", "-aq", "--filter", f"label={LABEL}={self.name}").stdout.strip():
            raise RuntimeError(f"a test cluster named {self.name!r} exists: "
                               f"python -m testbeds.slurm_cluster stop --name {self.name}")
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir="/var/tmp"))
        try:
            self._write_files()
            labels = ["--label", f"{LABEL}={self.name}", "--label", f"{LABEL}.workdir={self.workdir}"]
            _docker("network", "create", *labels, self.network)
            # Computes first: slurmctld resolves their names when it starts.
            for node in [*self.compute_nodes, self.controller]:
                role = "controller" if node == self.controller else "compute"
                _docker("run", "-d", "--init", "--name", node, "--hostname", node, "--network", self.network,
                        *labels, *RUN_FLAGS,
                        "-v", f"{self.workdir / 'config'}:/config:ro", "-v", f"{self.home_path}:/home",
                        IMAGE, role)
            self.login_address = _docker(
                "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", self.controller
            ).stdout.strip()
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
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{self.name}-test",
                        "-f", str(self.key_path)], check=True)
        # The key goes straight into the shared home; the controller's entrypoint fixes dir modes.
        dot_ssh = home / USER / ".ssh"
        dot_ssh.mkdir(parents=True)
        (dot_ssh / "authorized_keys").write_text(self.key_path.with_suffix(".pub").read_text())
        for p in (home / USER, dot_ssh, dot_ssh / "authorized_keys"):
            os.chown(p, UID, UID)
        dot_ssh.chmod(0o700)
        (dot_ssh / "authorized_keys").chmod(0o600)

    def _write_ssh_config(self) -> None:
        self.ssh_config_path.write_text(
            f"Host {self.alias}\n"
            f"    HostName {self.login_address}\n"
            f"    User {self.user}\n"
            f"    IdentityFile {self.key_path}\n"
            "    IdentitiesOnly yes\n"
            "    StrictHostKeyChecking no\n"
            "    UserKnownHostsFile /dev/null\n"
            "    LogLevel ERROR\n"
        )

    def _wait_ready(self) -> None:
        """Until every compute node is idle in sinfo and sshd lets the user in; else fail with log tails."""
        deadline = time.monotonic() + self.timeout
        states: dict[str, str] = {}
        ssh_ok = False
        problem = f"not ready after {self.timeout:.0f} s"
        while time.monotonic() < deadline:
            running = _docker("ps", "-q", "--filter", f"label={LABEL}={self.name}", "--filter", "status=running")
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
            f"--- docker logs {c} (tail)\n" + _docker("logs", "--tail", "25", c, check=False, stderr=subprocess.STDOUT).stdout
            for c in [self.controller, *self.compute_nodes])
        raise RuntimeError(f"Slurm test cluster {self.name}: {problem} "
                           f"(node states {states}, ssh {'ok' if ssh_ok else 'not answering'})\n{logs}")

    # -- using the cluster
    def ssh(self, cmd: str, timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess:
        """Run a shell command as `seamless` on the login node, over real ssh."""
        return subprocess.run(["ssh", "-F", str(self.ssh_config_path), "-o", "BatchMode=yes",
                               "-o", "ConnectTimeout=5", self.alias, cmd],
                              capture_output=True, text=True, timeout=timeout, check=check)

    def exec(self, node: str, cmd: str | list[str], timeout: float = 60, check: bool = False,
             user: str = "root") -> subprocess.CompletedProcess:
        """docker exec on a node (a name from compute_nodes, or controller); a string goes through bash."""
        argv = ["bash", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        return _docker("exec", "-u", user, node, *argv, check=check, timeout=timeout)

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
    containers = _docker("ps", "-aq", "--filter", f"label={LABEL}={name}", check=False).stdout.split()
    workdirs = set()
    for cid in containers:
        found = _docker("inspect", "-f", f'{{{{ index .Config.Labels "{LABEL}.workdir" }}}}', cid, check=False)
        workdirs.add(found.stdout.strip())
    networks = _docker("network", "ls", "-q", "--filter", f"label={LABEL}={name}", check=False).stdout.split()
    for net in networks:
        found = _docker("network", "inspect", "-f", f'{{{{ index .Labels "{LABEL}.workdir" }}}}', net, check=False)
        workdirs.add(found.stdout.strip())
    if containers:
        _docker("rm", "-f", "-v", *containers, check=False)
    if networks:
        _docker("network", "rm", *networks, check=False)
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

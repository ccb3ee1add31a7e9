"""A small real Slurm cluster in Docker containers, for testing the Slurm deployment methods.

One controller that is also the login node (slurmctld + sshd) and N compute nodes (slurmd),
all from the image seamless-stack-testbed/slurm:latest (Debian trixie, Slurm, munge,
Apptainer from sid), on a network of their own so that each node has its own IP and
name. /home is a host directory shared by all nodes; the user `seamless` (uid 2000) logs
in on the login node with a freshly generated key.

    with SlurmCluster(compute_nodes=2) as cluster:
        cluster.ssh("srun -N1 hostname")

With registry=True the bed also runs a real container registry (Debian's docker-registry)
over TLS with a CA of the bed's own that every node trusts: nodes pull from
`cluster.registry`, the host's docker pushes to `cluster.registry_on_host` (127.0.0.1 is
an insecure registry to Docker by default, so no daemon config). `install_seamless_stack()`
puts seamless-stack into a venv of `seamless` on the login node from a wheelhouse built
on the host: like many real login nodes, the bed has neither PyPI nor docker.

    python -m testbeds.slurm_cluster start [--name N] [--nodes 2] [--registry]   # leaves it running
    python -m testbeds.slurm_cluster stop [--name N]
"""

from __future__ import annotations

import argparse
import fcntl
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
REGISTRY_PORT = 5000
# The login node's Python (Debian trixie): the wheelhouse is resolved for it, not for the host.
# trixie's glibc is 2.41, so any manylinux tag up to that fits.
LOGIN_PYTHON = ["--python-version", "3.13", "--implementation", "cp", "--abi", "cp313",
                *(a for m in range(41, 16, -1) for a in ("--platform", f"manylinux_2_{m}_x86_64")),
                "--platform", "manylinux2014_x86_64"]


def ensure_image(progress=common.stderr_progress) -> str:
    """Build IMAGE (and the trixie base) unless an up-to-date one exists."""
    # Only what goes into the image: slurm.conf.template and cgroup.conf are mounted at run time.
    digest = common.files_hash([HERE / "Dockerfile", HERE / "entrypoint.sh"], names=False)
    return common.ensure_image(IMAGE, HERE, "testbed.hash", digest, progress, "about 20 s to a few minutes")


class SlurmCluster(common.Testbed):
    """Context manager for the test cluster; see the module docstring."""

    user = USER
    workdir_parent = "/var/tmp"  # stop_cluster removes only work folders there

    def __init__(self, name: str | None = None, compute_nodes: int = 2, cpus: int = 2,
                 memory_mb: int = 2000, timeout: float = 120, registry: bool = False):
        super().__init__(name or f"slurmtb-{secrets.token_hex(3)}", timeout)
        self.controller = f"{self.name}-login"
        self.alias = self.main_container = self.controller
        self.compute_nodes = [f"{self.name}-c{i + 1}" for i in range(compute_nodes)]
        # How nodes reach the registry; registry_on_host (127.0.0.1:<port>) is known once started.
        self.registry_container = f"{self.name}-registry" if registry else None
        self.registry = f"{self.registry_container}:{REGISTRY_PORT}" if registry else None
        self.registry_on_host: str | None = None
        self.network = f"{self.name}-net"
        self.cpus, self.memory_mb = cpus, memory_mb

    # -- paths inside the work directory (one temp dir holds everything we create on the host)
    @property
    def home_path(self) -> Path:
        """The shared /home, as seen from the host: copy files into home_path / 'seamless'."""
        return self.workdir / "home"

    @property
    def registry_ca_path(self) -> Path:
        """The CA that signed the registry's certificate (every node trusts it)."""
        return self.workdir / "config" / "registry-ca.crt"

    # -- life cycle (common.Testbed.start)
    def _ensure_image(self) -> None:
        ensure_image()

    def _preflight(self) -> None:
        if docker("ps", "-aq", "--filter", f"label={LABEL}={self.name}").stdout.strip():
            raise RuntimeError(f"a test cluster named {self.name!r} exists: "
                               f"python -m testbeds.slurm_cluster stop --name {self.name}")

    def _make(self, public_key: str) -> None:
        self._write_files(public_key)
        labels = ["--label", f"{LABEL}={self.name}", "--label", f"{LABEL}.workdir={self.workdir}"]
        docker("network", "create", *labels, self.network)
        if self.registry:
            # Needs none of the nodes' caps; its /config holds only its own cert and key.
            docker("run", "-d", "--init", "--name", self.registry_container, "--hostname", self.registry_container,
                   "--network", self.network, *labels, "-p", f"127.0.0.1::{REGISTRY_PORT}",
                   "-v", f"{self.workdir / 'registry'}:/config:ro", IMAGE, "registry")
            port = docker("port", self.registry_container, f"{REGISTRY_PORT}/tcp").stdout.split()[0]
            self.registry_on_host = f"127.0.0.1:{port.rsplit(':', 1)[1]}"
        # Computes first: slurmctld resolves their names when it starts.
        for node in [*self.compute_nodes, self.controller]:
            role = "controller" if node == self.controller else "compute"
            docker("run", "-d", "--init", "--name", node, "--hostname", node, "--network", self.network,
                   *labels, *RUN_FLAGS,
                   "-v", f"{self.workdir / 'config'}:/config:ro", "-v", f"{self.home_path}:/home",
                   IMAGE, role)
        self.login_address = common.container_ip(self.controller)

    def _remove(self) -> None:
        """Remove the containers, network and work directory of this cluster (also from another process)."""
        stop_cluster(self.name)

    # -- set-up helpers
    def _write_files(self, public_key: str) -> None:
        config, home = self.workdir / "config", self.workdir / "home"
        for d in (config, home):
            d.mkdir()
        self.workdir.chmod(0o755)  # the user must be able to traverse into /home
        home.chmod(0o755)
        (config / "munge.key").write_bytes(secrets.token_bytes(1024))
        (config / "slurm.conf").write_text(Template((HERE / "slurm.conf.template").read_text()).substitute(
            name=self.name, controller=self.controller, nodes=",".join(self.compute_nodes),
            cpus=self.cpus, memory=self.memory_mb))
        shutil.copy(HERE / "cgroup.conf", config / "cgroup.conf")
        # The key goes straight into the shared home; the controller's entrypoint fixes dir modes.
        dot_ssh = home / USER / ".ssh"
        dot_ssh.mkdir(parents=True)
        (dot_ssh / "authorized_keys").write_text(public_key + "\n")
        for p in (home / USER, dot_ssh, dot_ssh / "authorized_keys"):
            os.chown(p, UID, UID)
        dot_ssh.chmod(0o700)
        (dot_ssh / "authorized_keys").chmod(0o600)
        if self.registry:
            make_registry_certs(self.workdir, self.registry_container, self.registry_ca_path)

    def _wait_ready(self) -> None:
        """Until every compute node is idle in sinfo, sshd lets the user in and the registry (if any)
        answers the login node over TLS; else fail with log tails."""
        deadline = time.monotonic() + self.timeout
        states: dict[str, str] = {}
        ssh_ok = False
        problem = f"not ready after {self.timeout:.0f} s"
        containers = [self.controller, *self.compute_nodes, *([self.registry_container] if self.registry else [])]
        registry_ok = not self.registry
        while time.monotonic() < deadline:
            running = docker("ps", "-q", "--filter", f"label={LABEL}={self.name}", "--filter", "status=running")
            if len(running.stdout.split()) < len(containers):
                problem = "a container stopped"
                break
            states = self.node_states()
            if all(states.get(n) == "idle" for n in self.compute_nodes):
                ssh_ok = ssh_ok or self.ssh("true", timeout=10, check=False).returncode == 0
                # From the login node as the user: proves the registry serves and the CA is trusted.
                registry_ok = registry_ok or self.exec([
                    "python3", "-c", f"import urllib.request; urllib.request.urlopen('https://{self.registry}/v2/', timeout=5)"],
                    user=USER, timeout=20).returncode == 0
                if ssh_ok and registry_ok:
                    return
            time.sleep(1)
        logs = "\n".join(
            f"--- docker logs {c} (tail)\n" + docker("logs", "--tail", "25", c, check=False, stderr=subprocess.STDOUT).stdout
            for c in containers)
        raise RuntimeError(f"Slurm test cluster {self.name}: {problem} (node states {states}, "
                           f"ssh {'ok' if ssh_ok else 'not answering'}, registry {'ok' if registry_ok else 'not answering'})\n{logs}")

    # -- using the cluster
    def node_states(self) -> dict[str, str]:
        out = self.exec(["sinfo", "-h", "-N", "-o", "%N %t"], timeout=20)
        return dict(line.split() for line in out.stdout.splitlines() if len(line.split()) == 2)

    def squeue(self) -> list[tuple[str, str]]:
        """(job id, state) of every job of every user, e.g. [("3", "RUNNING")]."""
        out = self.exec(["squeue", "-h", "-a", "-o", "%i %T"], timeout=20, check=True)
        return [tuple(line.split()) for line in out.stdout.splitlines() if line.strip()]

    def install_seamless_stack(self, project_dir: str | os.PathLike) -> str:
        """Install seamless-stack (from project_dir) into ~/venv of `seamless` on the login node,
        offline from a wheelhouse in the shared home; return the path of its executable there."""
        wheels = self.home_path / USER / "wheels"
        shutil.rmtree(wheels, ignore_errors=True)
        shutil.copytree(wheelhouse(project_dir), wheels)
        for p in (wheels, *wheels.iterdir()):
            os.chown(p, UID, UID)
        done = self.ssh("python3 -m venv --clear ~/venv && PIP_DISABLE_PIP_VERSION_CHECK=1 "
                        "~/venv/bin/pip install -q --no-index --find-links ~/wheels seamless-stack", timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"installing seamless-stack on {self.controller} failed:\n{done.stdout}{done.stderr}")
        return f"/home/{USER}/venv/bin/seamless-stack"

    def info(self) -> dict:
        return {"name": self.name, "login_address": self.login_address, "destination": self.destination,
                "alias": self.alias, "ssh_config_path": str(self.ssh_config_path), "key_path": str(self.key_path),
                "home_path": str(self.home_path), "compute_nodes": self.compute_nodes,
                "registry": self.registry, "registry_on_host": self.registry_on_host,
                "registry_ca_path": str(self.registry_ca_path) if self.registry else None}


def make_registry_certs(workdir: Path, host: str, ca_copy: Path) -> None:
    """A throwaway CA (key kept in workdir/ca, never mounted) and a server certificate for the
    registry, valid for ``host``, localhost and 127.0.0.1, in workdir/registry; the CA goes to
    ``ca_copy`` for the nodes. Explicit extensions: Python 3.13's ssl verifies strictly (X509_STRICT)."""
    ca, reg = workdir / "ca", workdir / "registry"
    ca.mkdir()
    reg.mkdir()
    (ca / "openssl.cnf").write_text(
        "[req]\ndistinguished_name = dn\n[dn]\n"
        "[ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n"
        "subjectKeyIdentifier = hash\n"
        "[leaf]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n"
        f"extendedKeyUsage = serverAuth\nsubjectAltName = DNS:{host},DNS:localhost,IP:127.0.0.1\n"
        "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid:always\n")
    cnf, key = ["-config", str(ca / "openssl.cnf")], ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    for argv in (
        ["req", "-x509", *cnf, "-extensions", "ca", *key, "-keyout", ca / "ca.key", "-out", ca / "ca.crt",
         "-days", "30", "-subj", f"/CN={host} test CA"],
        ["req", "-new", *cnf, *key, "-keyout", reg / "registry.key", "-out", ca / "registry.csr", "-subj", f"/CN={host}"],
        ["x509", "-req", "-in", ca / "registry.csr", "-CA", ca / "ca.crt", "-CAkey", ca / "ca.key", "-CAcreateserial",
         "-days", "30", "-extfile", ca / "openssl.cnf", "-extensions", "leaf", "-out", reg / "registry.crt"],
    ):
        subprocess.run(["openssl", *map(str, argv)], check=True, capture_output=True)
    shutil.copy(ca / "ca.crt", ca_copy)


def wheelhouse(project_dir: str | os.PathLike) -> Path:
    """Wheels of seamless-stack (from project_dir) and its dependencies for the LOGIN node's Python,
    built with the host's pip and PyPI (the bed has none). Cached in /var/tmp under a hash of the
    project's sources, so a test run builds it once."""
    project = Path(project_dir).resolve()
    sources = [project / "pyproject.toml", project / "README.md"]
    for root, dirs, files in os.walk(project / "stack", followlinks=True):  # stack/_data links to images/ etc.
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        sources += [Path(root, f) for f in sorted(files)]
    cache = Path("/var/tmp") / f"seamless-stack-wheels-{common.files_hash(sources)}"
    with open("/var/tmp/seamless-stack-wheels.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel callers wait for one build instead of each building
        if not cache.is_dir():
            # Every source edit makes a new one (a few MB): drop those older than a day.
            for old in Path("/var/tmp").glob("seamless-stack-wheels-*/"):
                if time.time() - old.stat().st_mtime > 86400:
                    shutil.rmtree(old, ignore_errors=True)
            tmp = Path(tempfile.mkdtemp(prefix=f"{cache.name}-", dir="/var/tmp"))
            pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
            try:
                # From a clean copy: an in-tree build would reuse a stale build/lib (deleted modules live on).
                shutil.copytree(project, tmp / "src", symlinks=True,
                                ignore=shutil.ignore_patterns(".*", "build", "dist", "*.egg-info", "__pycache__"))
                subprocess.run([*pip, "wheel", "--no-deps", "-w", tmp, tmp / "src"], check=True, capture_output=True, text=True)
                shutil.rmtree(tmp / "src")
                # Resolving the project's own wheel pulls in exactly its declared dependencies.
                subprocess.run([*pip, "download", "--only-binary=:all:", *LOGIN_PYTHON, "-d", tmp,
                                *tmp.glob("seamless_stack-*.whl")], check=True, capture_output=True, text=True)
            except subprocess.CalledProcessError as e:
                shutil.rmtree(tmp, ignore_errors=True)
                raise RuntimeError(f"building the wheelhouse failed: {e.cmd}\n{e.stdout[-2000:]}{e.stderr[-2000:]}") from None
            tmp.rename(cache)
    return cache


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
    start.add_argument("--registry", action="store_true", help="also run the bed's TLS container registry")
    stop = sub.add_parser("stop", help="remove a cluster")
    stop.add_argument("--name", default="slurmtb")
    args = parser.parse_args(argv)
    if args.command == "stop":
        stop_cluster(args.name)
        return 0
    t0 = time.monotonic()
    cluster = SlurmCluster(name=args.name, compute_nodes=args.nodes, registry=args.registry).start()
    info = cluster.info()
    print(f"login address:   {info['login_address']}")
    print(f"destination:     {info['destination']}")
    print(f"ssh config:      {info['ssh_config_path']}   (ssh -F {info['ssh_config_path']} {info['alias']})")
    print(f"shared home:     {info['home_path']}/{USER}")
    print(f"compute nodes:   {' '.join(info['compute_nodes'])}")
    if cluster.registry:
        print(f"registry:        {info['registry']} (nodes), {info['registry_on_host']} (host's docker push)")
    print(f"ready in {time.monotonic() - t0:.1f} s; stop with: python -m testbeds.slurm_cluster stop --name {args.name}")
    print(json.dumps(info), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

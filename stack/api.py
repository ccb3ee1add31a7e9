"""The facade: up, down, status, env, logs, tunnel. spec -> plan -> backend -> health gate -> connection.

Everything a user can get wrong is checked before anything starts; anything that fails
after something started is rolled back, so no half-started stack is ever left behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from . import docker_tools, images, slurm, state, tls
from .backends import ComposeBackend, SlurmBackend
from .connection import Connection, render
from .errors import StackError
from .health import ServiceFailed, stack_waits, wait_until_ready
from .hosts import LocalHost, SSHDockerHost, prepare_remote_dirs, remote_path
from .plan import Deployment, make_plan
from .ports import allocate_ports, port_is_free
from .spec import DEFAULT_PORT_RANGE, SERVICES, StackSpec, stacks_dir
from .ssh import Destination, Tunnel

Progress = Callable[[str], None]
CLASSIC_PORTS = {"hashserver": 5577, "database": 5522, "scheduler": 8786, "dashboard": 8787}


def _host(spec: StackSpec):
    return LocalHost() if spec.remote is None else SSHDockerHost(spec.remote).probe()


def _reserved_ports(spec: StackSpec, docker_host: str | None) -> set[int]:
    """Ports recorded by our other stacks on the same Docker host, held even while stopped."""
    return {port for d in state.load_all() if d.name != spec.name and d.docker_host == docker_host
            for port in d.ports.values()}


def _existing(name: str) -> Deployment | None:
    try:
        return state.load(name)
    except StackError:
        return None


@contextlib.contextmanager
def client_view(deployment: Deployment) -> Iterator[Connection]:
    """The stack as a client here sees it; over SSH, through a temporary tunnel."""
    if deployment.access != "ssh":
        yield deployment.connection()
        return
    local = allocate_ports(SERVICES, DEFAULT_PORT_RANGE, is_free=port_is_free)
    with _tunnel(deployment, local):
        yield deployment.connection(local_ports=local)


def _tunnel(deployment: Deployment, local: dict[str, int]) -> Tunnel:
    """SSH forwards from these local ports to each of the stack's services."""
    forwards = {service: (local[service], deployment.ports[service]) for service in SERVICES}
    return Tunnel(Destination.parse(deployment.ssh_destination), forwards, deployment.tunnel_target)


def backend_for(deployment: Deployment):
    return SlurmBackend(deployment) if deployment.method == "slurm" else ComposeBackend(deployment)


def up(spec: StackSpec, progress: Progress = lambda line: None) -> Deployment:
    """Build what is missing, start the stack, pass the health gate, write the env output."""
    started = time.monotonic()
    previous = _existing(spec.name)
    if previous is not None and backend_for(previous).is_up():
        raise StackError(
            f"stack {spec.name!r} is already up (scheduler port {previous.ports.get('scheduler', '?')})",
            f"use it (`seamless-stack env --name {spec.name}`), stop it (`seamless-stack down --name {spec.name}`) or pick another --name",
        )
    prepare = _prepare_slurm if spec.method == "slurm" else _prepare_compose
    deployment, backend, start = prepare(spec, progress)
    state.save(deployment)  # from here on, `down` finds whatever gets started
    try:
        deployment = start()
        state.save(deployment)
        with client_view(deployment) as view:
            ready_in = wait_until_ready(
                stack_waits(view, deployment.workers), timeout=spec.timeout, progress=progress, find_failure=backend.find_failure
            )
    except BaseException as exc:  # also Ctrl-C: never leave a half-started stack
        if isinstance(exc, ServiceFailed):
            progress(f"last log lines of {exc.service}:\n{_indent(backend.logs(exc.service, tail=25))}")
        progress(f"rolling back: stopping stack {spec.name!r}")
        backend.down()
        state.forget(spec.name)
        raise
    write_env_file(deployment)
    progress(f"stack {spec.name!r} ready in {ready_in:.1f}s ({time.monotonic() - started:.1f}s in all); environment in {deployment.env_file}")
    if deployment.access == "ssh":
        progress(f"services listen on {deployment.host_name} behind {deployment.ssh_destination}: "
                 f"run `seamless-stack tunnel --name {spec.name}` to reach them")
    return deployment


def _prepare_compose(spec: StackSpec, progress: Progress):
    local_docker = docker_tools.docker_client()
    docker_tools.check_engine(local_docker)
    docker_tools.check_compose(local_docker)
    host = _host(spec)
    tags = images.build_images(
        local_docker, base_image=spec.base_image, worker_requirements=spec.worker_requirements, progress=progress
    )
    tls_dirs = None
    if spec.tls:
        folder = tls.make_certificate(stacks_dir() / f"{spec.name}.tls", spec.name)
        tls_dirs = (str(folder), host.install_tls(folder, spec.name))
    deployment = make_plan(spec, tags, host, reserved_ports=_reserved_ports(spec, host.docker_host), tls_dirs=tls_dirs)
    backend = ComposeBackend(deployment)
    host.push_images(backend.docker, tags, progress)
    where = f" on {spec.remote}" if spec.remote else ""
    progress(f"starting stack {spec.name!r}{where}: {deployment.workers} worker(s) x {deployment.threads} threads, ports {deployment.ports}")

    def start() -> Deployment:
        backend.up()
        return deployment

    return deployment, backend, start


def _prepare_slurm(spec: StackSpec, progress: Progress):
    shell = slurm.ClusterShell(spec.remote)
    facts = slurm.probe(shell)
    options = spec.slurm
    for partition in (options.partition, options.worker_queue):
        slurm.check_partition(facts, shell, partition)
    sif_dir = remote_path(options.sif_dir, facts.home)
    if shutil.which("docker") is None:  # e.g. on the login node itself: use the SIFs there
        tags, sifs = {}, slurm.current_sifs(shell, sif_dir)
    else:
        local_docker = docker_tools.docker_client()
        docker_tools.check_engine(local_docker)
        tags = images.build_images(
            local_docker, base_image=spec.base_image, worker_requirements=spec.worker_requirements, progress=progress
        )
        sifs = slurm.ensure_sifs(shell, tags, sif_dir, progress)
    buffer_dir, database_dir = prepare_remote_dirs(shell.run, facts.home, str(shell), {
        "buffer directory (--buffer-dir)": spec.buffer_dir, "database directory (--database-dir)": spec.database_dir,
    }).values()
    stack_dir = f"{facts.home}/.seamless/stacks/{spec.name}.slurm"
    shell.run(f"mkdir -p {stack_dir}/workers && rm -f {stack_dir}/services.json")
    shell.write(f"{stack_dir}/seamless_stack_node.py", (slurm.APPTAINER_DIR / "seamless_stack_node.py").read_bytes())
    mode = "local" if options.local_workers else "adaptive"
    deployment = Deployment(
        name=spec.name, method="slurm", project=spec.project, ports={}, images=tags,
        workers=options.local_workers or options.min_jobs, threads=spec.threads, bind="0.0.0.0",
        buffer_dir=buffer_dir, database_dir=database_dir,
        env_file=str(spec.env_file or stacks_dir() / f"{spec.name}.env"), uid=0, gid=0, host_name="",
        ssh_destination=str(spec.remote) if spec.remote else None, access=spec.access,
        slurm={"stack_dir": stack_dir, "sifs": sifs, "mode": mode, "login": str(shell)},
    )
    script = slurm.services_job_script(spec, deployment, sifs, stack_dir)
    backend = SlurmBackend(deployment)
    return deployment, backend, lambda: backend.start(script, spec.timeout, progress)


def build_sifs(tags: dict[str, str], out: str, login: str | None, progress: Progress) -> dict[str, str]:
    """`images sif`: the SIFs of our images, here or on a login node (needs apptainer there)."""
    shell = slurm.ClusterShell(Destination.parse(login) if login else None)
    home = shell.run('echo "$HOME"').strip()
    if not shell.run("command -v apptainer || true").strip():
        raise StackError(f"apptainer not found on {shell}", "install Apptainer there, or build on a login node with --login")
    return slurm.ensure_sifs(shell, tags, remote_path(out, home), progress)


def write_env_file(deployment: Deployment, connection: Connection | None = None) -> Path:
    path = Path(deployment.env_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"seamless-stack {deployment.name!r} ({deployment.method}, {deployment.access}); source this file"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render((connection or deployment.connection()).variables(), "shell", header=header))
    os.replace(tmp, path)
    return path


def down(name: str, progress: Progress = lambda line: None) -> Deployment:
    deployment = state.load(name)
    backend = backend_for(deployment)
    progress(f"stopping stack {name!r}")
    backend.down()
    Path(deployment.env_file).unlink(missing_ok=True)
    state.forget(name)
    progress(f"stack {name!r} is down; data stays in {deployment.buffer_dir} and {deployment.database_dir}")
    return deployment


def env(name: str, fmt: str = "shell") -> str:
    deployment = state.load(name)
    return render(deployment.connection().variables(), fmt)


def logs(name: str, service: str | None = None, tail: int | None = None) -> str:
    return backend_for(state.load(name)).logs(service, tail)


def tunnel(name: str, fmt: str, on_ready: Callable[[str], None], progress: Progress,
           port_range: tuple[int, int] = DEFAULT_PORT_RANGE) -> None:
    """Forward free local ports (the classic ones where free) to a stack's services; block.

    While the tunnel stands, the stack's environment file holds the local addresses; if the
    SSH connection drops it is re-established on the same ports. Ctrl-C closes it cleanly.
    """
    deployment = state.load(name)
    if deployment.ssh_destination is None:
        raise StackError(f"stack {name!r} is reached directly, not over SSH: it needs no tunnel",
                         f"source its environment (`seamless-stack env --name {name}`)")
    classic = {s: p for s, p in CLASSIC_PORTS.items() if port_is_free(p)}
    local = allocate_ports(SERVICES, port_range, is_free=port_is_free, fixed=classic)
    connection = deployment.connection(local_ports=local)
    session = _tunnel(deployment, local)
    destination = session.destination
    try:
        session.start()
        write_env_file(deployment, connection)
        on_ready(render(connection.variables(), fmt))
        progress(f"tunnel to {destination} open ({', '.join(f'{s} {lp}->{rp}' for s, (lp, rp) in session.forwards.items())}); Ctrl-C closes it")
        while True:
            time.sleep(1)
            if not session.alive():
                progress(f"SSH connection to {destination} lost; reconnecting")
                try:
                    session.start()
                    progress("reconnected")
                except StackError as exc:
                    progress(f"reconnect failed ({exc}); retrying in 3s")
                    time.sleep(3)
    finally:
        session.stop()
        write_env_file(deployment)  # back to what holds without the tunnel
        progress("tunnel closed")


@dataclass
class ServiceStatus:
    service: str
    container: str
    state: str
    health: str
    port: str
    answer: str  # what the live health check says


@dataclass
class StackStatus:
    deployment: Deployment
    services: list[ServiceStatus]
    workers_ready: str


def status(name: str) -> StackStatus:
    deployment = state.load(name)
    backend = backend_for(deployment)
    try:
        with client_view(deployment) as view:
            answers = {wait.service: wait.check() for wait in stack_waits(view, deployment.workers)}
    except StackError as exc:
        answers = {s: (False, f"unreachable: {exc}") for s in ("hashserver", "database", "scheduler", "worker")}
    ports = {
        "hashserver": str(deployment.ports["hashserver"]),
        "database": str(deployment.ports["database"]),
        "scheduler": f"{deployment.ports['scheduler']} (dashboard {deployment.ports['dashboard']})",
    }
    rows = [
        ServiceStatus(s.service, s.container, s.state, s.health or "-", ports.get(s.service, "-"),
                      "ok" if answers.get(s.service, (False, ""))[0] else answers.get(s.service, (False, "-"))[1])
        for s in backend.services()
    ]
    return StackStatus(deployment, rows, answers["worker"][1])


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())

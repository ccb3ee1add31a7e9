"""SlurmBackend: a Deployment as one long-running services job plus worker jobs.

The services job runs hashserver, database and scheduler as Apptainer containers on one
node and picks its ports there; workers are Slurm jobs submitted on demand by
dask-jobqueue (adaptive), or containers inside the services job (single-node variant).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace

from .. import credentials, docker_tools, images
from ..errors import StackError
from ..health import ServiceFailed
from ..layout import NODE_HELPER, ROLES, SERVICE_ROLES, ClusterFiles, StackFiles, compose_project
from ..plan import Deployment, Placement, slurm_plan
from ..progress import Progress
from ..shell import Shell, quote, shell_for
from ..slurm import APPTAINER_DIR, cluster, commands, sif
from ..slurm.apptainer import apptainer_for
from ..slurm.fit import fit
from ..slurm.jobscript import services_job_script, worker_job_options
from ..spec import StackSpec, job_range
from ..ssh import Destination
from ..storage import absolute, prepare_dirs, storage_problems
from .base import CRASH_LOOP_RESTARTS, Backend, ServiceState



def job_names(project: str) -> tuple[str, str]:
    """(services job, worker jobs): `down` cancels both by name."""
    return f"{project}-services", f"{project}-worker"


RESTART_WINDOW = 600  # seconds: apptainer/services-job.sh's back-off window; restarts within it count as a crash loop


class SlurmBackend(Backend):
    def __init__(self, deployment: Deployment, script: str | None = None):
        super().__init__(deployment)
        login = deployment.ssh_destination
        self.shell: Shell = shell_for(Destination.parse(login) if login else None)
        self.script = script  # the services job, when this backend was prepared from a spec
        self.timeout = 300.0  # seconds the services job may take to report its ports

    @property
    def names(self) -> tuple[str, str]:
        return job_names(self.deployment.project)

    # -- plan ---------------------------------------------------------------------------
    @classmethod
    def prepare(cls, spec: StackSpec, progress: Progress) -> "SlurmBackend":
        shell = shell_for(spec.remote)
        facts = cluster.probe(shell)
        options = spec.slurm
        for partition in (options.partition, options.worker_queue):
            cluster.check_partition(facts, shell, partition)
        asked, (spec, notes) = spec, fit(spec, facts)  # job sizes the nodes can hold
        for note in notes:
            progress(note)
        sifs = cls.sifs(spec, shell, absolute(options.sif_dir, facts.home), progress)
        dirs = prepare_dirs(shell, facts.home, {
            "buffer directory (--buffer-dir)": spec.buffer_dir, "database directory (--database-dir)": spec.database_dir,
        }, progress=progress)
        stack_dir = StackFiles.of(spec.name).slurm_dir(facts.home)
        # Services may land on any node: the certificate names them all (and loopback, for tunnels).
        creds = credentials.ensure(StackFiles.of(spec.name).tls, spec.name, facts.nodes, spec.rotate, progress)
        # Owner-only: the credentials, and the jobs' logs (Seamless' worker plugin logs its URLs, secret included).
        shell.run(f"mkdir -p {quote(stack_dir)} && chmod 700 {quote(stack_dir)}", what="making the stack folder")
        credentials.install(shell, creds.folder, ClusterFiles(stack_dir).tls)
        deployment = slurm_plan(spec, tuple(dirs.values()), stack_dir, sifs, str(shell), str(creds.folder))
        deployment = replace(deployment, settings=asked.settings())  # what the user asked: a second `up` compares it
        names = job_names(deployment.project)
        if deployment.slurm.mode == "adaptive":
            estimate = cluster.check_worker_jobs(shell, sifs["scheduler"], worker_job_options(spec, deployment), names[1], facts)
            progress(f"worker jobs: {spec.threads} CPUs, {spec.slurm.worker_memory} each; sbatch --test-only: {estimate}")
        backend = cls(deployment, services_job_script(spec, deployment, names[0]))
        backend.timeout = spec.timeout
        return backend

    @staticmethod
    def sifs(spec: StackSpec, shell: Shell, sif_dir: str, progress: Progress) -> dict[str, str]:
        """The SIFs, by the first route that applies: a registry, local Docker, or what sif_dir holds."""
        if not spec.slurm.registry and shutil.which("docker") is None:  # e.g. SIFs copied to the login node by hand
            return sif.current_sifs(shell, sif_dir)
        apptainer = apptainer_for(shell)
        progress(f"{apptainer.version()} on {shell}")
        if spec.slurm.registry:
            return sif.pull_sifs(apptainer, shell, spec.slurm.registry, spec.worker_requirements, sif_dir, progress)
        local_docker = docker_tools.docker_client()
        docker_tools.check_engine(local_docker)
        tags = images.build_images(local_docker, base_image=spec.base_image,
                                   worker_requirements=spec.worker_requirements, progress=progress)
        return sif.ensure_sifs(apptainer, shell, tags, sif_dir, progress, spec.worker_requirements)

    def leftovers(self) -> list[str]:
        return [f"job {job.id} ({job.name})" for job in cluster.jobs(self.shell, self.names)]

    @classmethod
    def remove_leftovers(cls, name: str, progress: Progress) -> bool:
        """Jobs by their names, when this machine is a Slurm login node (a login node reached
        over SSH was in the lost record)."""
        if shutil.which("squeue") is None:
            return False
        shell, names = shell_for(None), job_names(compose_project(name))
        try:
            found = cluster.jobs(shell, names)
            if found:
                progress(f"cancelling {len(found)} job(s) of stack {name!r}: {', '.join(job.id for job in found)}")
                cluster.cancel(shell, names)
        except StackError:
            return False
        return bool(found)

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, progress: Progress) -> None:
        """Submit the services job; wait until it runs and reports node and ports."""
        record = self.deployment.slurm
        stack_dir = record.stack_dir
        files = ClusterFiles(stack_dir)
        self.shell.run(f"mkdir -p {quote(files.workers)} && rm -f {quote(files.services)}")
        self.shell.write(files.node_helper, (APPTAINER_DIR / NODE_HELPER).read_bytes())
        job_id = cluster.submit(self.shell, self.script)
        self.deployment = self.deployment.placed(None, job_id=job_id)
        progress(f"services job {job_id} submitted")
        deadline = time.monotonic() + self.timeout
        last = ""
        while True:
            services = cluster.read_services(self.shell, stack_dir)
            if services and services.get("job_id") == job_id:
                break
            rows = [job for job in cluster.jobs(self.shell, self.names[:1]) if job.id == job_id]
            if not rows:
                raise ServiceFailed("services", f"services job {job_id} ended before its services started")
            state = commands.describe(rows[0])
            if state != last:
                progress(f"services job {job_id}: {state}")
                last = state
            if time.monotonic() > deadline:
                raise ServiceFailed("services", f"services job {job_id} still {state} after the timeout",
                                    "the cluster is busy or the job cannot run: check --partition, --time, --cpus, --memory")
            time.sleep(0.5)
        self.deployment = self.deployment.placed(Placement(services["address"], services["ports"]), node=services["node"])
        progress(f"services on {services['node']} ({services['address']}), ports {services['ports']}")

    def converge(self, spec: StackSpec, progress: Progress) -> list[str]:
        """A services job that is gone is submitted again (its node picks new ports)."""
        if any(job.state == "RUNNING" for job in cluster.jobs(self.shell, self.names[:1])):
            return []
        progress(f"services job of stack {self.deployment.name!r} is not running: submitting it again")
        cluster.cancel(self.shell, self.names)
        fresh = self.prepare(spec, progress)
        self.deployment, self.script, self.timeout = fresh.deployment, fresh.script, fresh.timeout  # --timeout too
        self.start(progress)
        return ["services job"]

    def live_settings(self) -> frozenset[str]:
        return frozenset({"slurm.min_jobs", "slurm.max_jobs"} if self.deployment.slurm.mode == "adaptive" else ())

    def change_live(self, changes: dict[str, int], progress: Progress) -> None:
        """The adaptive bounds, live: a file the scheduler in the services job reads every few
        seconds (images/preload/seamless_stack_slurm.py). No job is restarted; worker jobs come
        or go as adapt decides within its next rounds."""
        d = self.deployment
        settings = {**d.settings, **{key: str(value) for key, value in changes.items()}}
        low, high = job_range(int(settings["slurm.min_jobs"]), int(settings["slurm.max_jobs"]))
        bounds = json.dumps({"minimum_jobs": low, "maximum_jobs": high})
        files = ClusterFiles(d.slurm.stack_dir)
        written = f"{files.bounds}.tmp"  # moved into place: the scheduler never reads half a file
        self.shell.run(f"mkdir -p {quote(files.control)} && cat > {quote(written)} && mv {quote(written)} {quote(files.bounds)}",
                       input=bounds.encode(), what="writing the adaptive bounds")
        self.deployment = replace(d, workers=low, settings=settings)
        progress(f"stack {d.name!r}: adaptive worker jobs {low}-{high}; the scheduler takes them up within seconds")

    def restart(self, service: str, progress: Progress) -> None:
        raise StackError("restarting one service is not available for Slurm stacks (they share one services job)",
                         f"run `seamless-stack up slurm --name {self.deployment.name}` with the same options to converge")

    def down(self) -> None:
        job_id = self.deployment.slurm.job_id
        left = cluster.cancel(self.shell, self.names, [job_id] if job_id else [])
        if left:
            raise StackError(f"jobs still in squeue after scancel: {', '.join(job.id for job in left)}", "check `squeue --me`")

    # -- inspection -----------------------------------------------------------------------
    def services(self) -> list[ServiceState]:
        rows = []
        for job in cluster.jobs(self.shell, self.names):
            where = f"job {job.id}" + (f" on {job.node}" if job.node else "")
            state = commands.describe(job)
            roles = ROLES[:3] if job.is_services else ("worker",)
            if job.is_services and self.deployment.slurm.mode == "local":
                roles = ROLES
            rows += [ServiceState(role, where, state) for role in roles]
        return rows

    def find_failure(self) -> tuple[str, str] | None:
        """The services job gone, or a service in it that keeps ending (the job starts it
        again each time: waiting would not help)."""
        rows = cluster.jobs(self.shell, self.names[:1])
        if not any(job.state == "RUNNING" for job in rows):
            return "services", f"services job {self.deployment.slurm.job_id} is {rows[0].state.lower() if rows else 'gone'}"
        for service, times in self._restarts().items():
            lately = commands.ended_lately(times, RESTART_WINDOW)
            if len(lately) >= CRASH_LOOP_RESTARTS:
                return service, f"{service} keeps ending in services job {self.deployment.slurm.job_id} " \
                                f"({len(lately)} times in {RESTART_WINDOW // 60} minutes, last exit {lately[-1]})"
        return None

    def scaling(self) -> tuple[str, str | None]:
        """Adaptive bounds and the relay's record of worker job submissions."""
        record = self.deployment.slurm
        if record.mode == "local":
            return f"{self.deployment.workers} worker(s) inside the services job", None
        bounds = f"adaptive worker jobs ({self.deployment.settings.get('slurm.min_jobs')}-{self.deployment.settings.get('slurm.max_jobs')})"
        report = commands.parse_submissions(self.shell.run(commands.read_submissions_command(record.stack_dir)))
        if not report:
            return f"{bounds}: none submitted yet", None
        line = f"{bounds}: {report['submitted']} submitted, {report['refused']} refused by sbatch"
        if not report["refused_in_a_row"]:
            return line, None
        problem = f"sbatch refused the last {report['refused_in_a_row']} worker job(s): {report['last_error']}"
        return line + f" (last: {report['last_error']})", problem

    def healing(self, services: list[ServiceState]) -> tuple[dict[str, tuple[bool, str]], list[str]]:
        """What the services job started again (it keeps each service running; its log says when)."""
        return {}, commands.restart_notes(self._restarts())

    def _restarts(self) -> dict[str, list[tuple[str, str]]]:
        record = self.deployment.slurm
        if not record.job_id:
            return {}
        return commands.parse_restarts(self.shell.run(commands.restarts_command(record.stack_dir, record.job_id),
                                                      what="reading the services job's log"))

    def storage_problems(self) -> dict[str, str]:
        d = self.deployment
        return storage_problems(self.shell, {"hashserver": d.buffer_dir, "database": d.database_dir})

    def logs(self, service: str | None = None, tail: int | None = None) -> str:
        record = self.deployment.slurm
        cluster_files, files = ClusterFiles(record.stack_dir), []
        if service in (None, "services", *SERVICE_ROLES):
            files.append(quote(cluster_files.services_log(record.job_id)))
        if service in (None, "worker"):
            files.append(quote(cluster_files.workers) + "/*.out")
        if service not in (None, "services", *ROLES):
            raise StackError(f"no service {service!r}", f"choose one of {', '.join(ROLES)}")
        script = " ".join(f"for f in {f}; do [ -f \"$f\" ] && echo \"==> $f <==\" && tail -n {200 if tail is None else tail} \"$f\"; done;" for f in files)
        return self.shell.run(script + " true", what="reading logs")

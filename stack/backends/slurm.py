"""SlurmBackend: a Deployment as one long-running services job plus worker jobs.

The services job runs hashserver, database and scheduler as Apptainer containers on one
node and picks its ports there; workers are Slurm jobs submitted on demand by
dask-jobqueue (adaptive), or containers inside the services job (single-node variant).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

from .. import slurm
from ..errors import StackError
from ..health import ServiceFailed
from ..plan import Deployment
from ..ssh import Destination
from .compose import ServiceState

Progress = Callable[[str], None]


class SlurmBackend:
    def __init__(self, deployment: Deployment):
        self.deployment = deployment
        login = deployment.ssh_destination
        self.shell = slurm.ClusterShell(Destination.parse(login) if login else None)
        self.info = deployment.slurm or {}

    @property
    def job_names(self) -> list[str]:
        return [f"seamless-{self.deployment.name}-services", f"seamless-{self.deployment.name}-worker"]

    def start(self, script: str, timeout: float, progress: Progress) -> Deployment:
        """Submit the services job; wait until it runs and reports node and ports."""
        job_id = slurm.submit(self.shell, script)
        self.deployment = dataclasses.replace(self.deployment, slurm={**self.info, "job_id": job_id})
        self.info = self.deployment.slurm
        progress(f"services job {job_id} submitted")
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            services = slurm.read_services(self.shell, self.info["stack_dir"])
            if services and services.get("job_id") == job_id:
                break
            rows = [row for row in slurm.jobs(self.shell, self.job_names[:1]) if row["id"] == job_id]
            reason = rows[0]["reason"].strip("()") if rows else ""
            state = (rows[0]["state"] + (f" ({reason})" if reason and reason != "None" else "")) if rows else "ended"
            if not rows:
                raise ServiceFailed("services", f"services job {job_id} ended before its services started")
            if state != last:
                progress(f"services job {job_id}: {state}")
                last = state
            if time.monotonic() > deadline:
                raise ServiceFailed("services", f"services job {job_id} still {state} after {timeout:.0f}s",
                                    "the cluster is busy or the job cannot run: check --partition, --time, --cpus, --memory")
            time.sleep(1)
        self.deployment = dataclasses.replace(
            self.deployment, ports=services["ports"], host_name=services["address"],
            slurm={**self.info, "node": services["node"]},
        )
        self.info = self.deployment.slurm
        progress(f"services on {services['node']} ({services['address']}), ports {services['ports']}")
        return self.deployment

    def down(self) -> None:
        slurm.cancel(self.shell, self.job_names, [self.info["job_id"]] if self.info.get("job_id") else [])
        left = slurm.jobs(self.shell, self.job_names)
        if left:
            raise StackError(f"jobs still in squeue after scancel: {', '.join(r['id'] for r in left)}", "check `squeue --me`")

    def services(self) -> list[ServiceState]:
        return [
            ServiceState(service="services" if row["name"].endswith("-services") else "worker",
                         container=f"job {row['id']}" + (f" on {row['node']}" if row["node"] else ""),
                         state=row["state"].lower(), health="", exit_code=0)
            for row in slurm.jobs(self.shell, self.job_names)
        ]

    def is_up(self) -> bool:
        return bool(slurm.jobs(self.shell, self.job_names[:1]))

    def find_failure(self) -> tuple[str, str] | None:
        rows = slurm.jobs(self.shell, self.job_names[:1])
        if not any(row["state"] == "RUNNING" for row in rows):
            return "services", f"services job {self.info.get('job_id')} is {rows[0]['state'] if rows else 'gone'}"
        return None

    def logs(self, service: str | None = None, tail: int | None = None) -> str:
        stack_dir = self.info["stack_dir"]
        files = []
        if service in (None, "services", "hashserver", "database", "scheduler"):
            files.append(f"{stack_dir}/services-{self.info.get('job_id')}.out")
        if service in (None, "worker"):
            files.append(f"{stack_dir}/workers/*.out")
        script = " ".join(f"for f in {f}; do [ -f \"$f\" ] && echo \"==> $f <==\" && tail -n {tail or 200} \"$f\"; done;" for f in files)
        return self.shell.run(script + " true")

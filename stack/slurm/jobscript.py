"""The services job script: #SBATCH lines, variables, then apptainer/services-job.sh."""

from __future__ import annotations

import json
from typing import Iterable

from .. import slurm_time
from ..credentials import CONTAINER_DIR, in_container
from ..layout import ClusterFiles
from ..shell import quote
from ..spec import THROTTLE_VARIABLE
from . import APPTAINER_DIR


# Every container of a stack: a clean environment, neither the home directory nor the job's
# working directory (which may be the home directory); binds are explicit.
CONTAINED = "--cleanenv --no-home --no-mount cwd --pwd /tmp"
# A worker container's Dask TLS, given explicitly: a worker job inherits nothing of the
# services job (--export), so nothing may come from its environment.
WORKER_TLS = {
    "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
    "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": in_container("ca.crt"),
    **{f"DASK_DISTRIBUTED__COMM__TLS__{role}__{part}": in_container(f"server.{ext}")
       for role in ("WORKER", "CLIENT") for part, ext in (("CERT", "crt"), ("KEY", "key"))},
    "SSL_CERT_FILE": in_container("bundle.pem"),  # verifies the services' HTTPS
}


def lifetimes(walltime: str) -> tuple[str, str]:
    """Worker --lifetime and --lifetime-stagger below the walltime, so workers leave gracefully."""
    total = slurm_time.seconds(walltime)
    margin = max(60, total // 10)
    stagger = max(10, min(240, total // 20))
    return f"{max(30, total - margin - stagger)}s", f"{stagger}s"


# What a job takes from the submitting environment: enough to find apptainer and python3,
# nothing else of the user's shell (tokens, proxies, credentials in variables), for the
# services job and, through the relay, every worker job.
JOB_EXPORT = "PATH,HOME,USER,LOGNAME,LANG"


def job_header(directives: dict[str, str | None], extra: Iterable[str] = ()) -> str:
    lines = ["#!/bin/bash"] + [f"#SBATCH --{k}={v}" for k, v in directives.items() if v]
    lines += [f"#SBATCH {e}" for e in extra]
    return "\n".join(lines) + "\n"


def worker_job_options(spec, deployment) -> dict:
    """dask-jobqueue's SLURMCluster options for the worker jobs (+ the adaptive bounds)."""
    options, record = spec.slurm, deployment.slurm
    lifetime, stagger = lifetimes(options.worker_walltime)
    return {
        "cores": spec.threads,  # CPUs per worker job = Seamless workers per Dask worker
        "processes": 1,
        "memory": options.worker_memory,
        "walltime": options.worker_walltime,
        "queue": options.worker_queue or options.partition,
        "account": options.account,
        "job_extra_directives": [f"--export={JOB_EXPORT}", *options.job_extra],
        "job_script_prologue": [f"export TMPDIR={options.worker_tmpdir}"],
        # No home directory in the container (a transformation cannot read ~/.ssh); the
        # credentials read-only; the CA in the bundle that verifies the services' HTTPS.
        "python": f"apptainer exec {CONTAINED} --bind {quote(f'{ClusterFiles(record.stack_dir).tls}:{CONTAINER_DIR}:ro')} "
                  + "".join(f"--env {key}={value} " for key, value in WORKER_TLS.items())
                  + f"--env TMPDIR=$TMPDIR --env {THROTTLE_VARIABLE}={deployment.throttle} {quote(record.sifs['worker'])} python3",
        "local_directory": "$TMPDIR",
        # Seamless' thread layout (a later --nthreads wins over dask-jobqueue's cores/processes)
        # No worker dashboard: it would serve task keys, unauthenticated, to the cluster network;
        # and the worker's HTTP server (health, metrics), which runs even without it, on loopback.
        "worker_extra_args": ["--nthreads", str(deployment.dask_threads), "--no-dashboard", "--dashboard-address", "127.0.0.1:0",
                              "--lifetime", lifetime, "--lifetime-stagger", stagger],
        "log_directory": ClusterFiles(record.stack_dir).workers,
        "adapt": {"minimum_jobs": options.min_jobs, "maximum_jobs": options.max_jobs},
    }


def services_job_script(spec, deployment, job_name: str) -> str:
    """#SBATCH lines + variables + apptainer/services-job.sh, for a planned Slurm deployment."""
    options, record = spec.slurm, deployment.slurm
    sifs, stack_dir = record.sifs, record.stack_dir
    jobqueue = worker_job_options(spec, deployment)
    header = job_header({
        "job-name": job_name,
        "time": options.time,
        "cpus-per-task": str(options.cpus),
        "mem": options.memory,
        "partition": options.partition,
        "account": options.account,
        "output": ClusterFiles(stack_dir).services_log(),
        "export": JOB_EXPORT,
    })
    variables = {
        "SS_NAME": deployment.project,
        "SS_STACK_DIR": stack_dir,
        "SS_TLS_DIR": ClusterFiles(stack_dir).tls,
        "SS_CONTAINED": CONTAINED,
        "SS_SIF_HASHSERVER": sifs["hashserver"],
        "SS_SIF_DATABASE": sifs["database"],
        "SS_SIF_SCHEDULER": sifs["scheduler"],
        "SS_SIF_WORKER": sifs["worker"],
        "SS_BUFFER_DIR": deployment.buffer_dir,
        "SS_DATABASE_DIR": deployment.database_dir,
        "SS_PORT_START": str(spec.port_range[0]),
        "SS_PORT_END": str(spec.port_range[1]),
        "SS_SCHEDULER_PORT": str(spec.scheduler_port or ""),
        "SS_THREADS": str(spec.threads),
        "SS_DASK_THREADS": str(deployment.dask_threads),
        "SS_THROTTLE": str(deployment.throttle),
        "SS_MODE": record.mode,
        "SS_LOCAL_WORKERS": str(options.local_workers),
        "SS_JOBQUEUE": json.dumps(jobqueue),
    }
    exports = "".join(f"export {k}={quote(v)}\n" for k, v in variables.items())
    return header + exports + (APPTAINER_DIR / "services-job.sh").read_text()

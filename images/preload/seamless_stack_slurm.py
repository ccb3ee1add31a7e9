"""The Dask scheduler under Slurm, with workers launched on demand by dask-jobqueue.

Runs inside the scheduler container of the services job. dask-jobqueue needs `sbatch` and
`scancel`, but a site's Slurm client does not travel into a container (its libc, plugins
and munge socket are the host's). So jobs are submitted through a relay: a small stdlib
program on the host side of the services job, listening on a Unix socket that is bound
into this container. This module's RelayedSLURMJob is dask-jobqueue's SLURMJob with only
the two calls to Slurm swapped for the relay.

`python3 seamless_stack_slurm.py --job-script < options.json` prints the worker job script
these options make (dask-jobqueue's own job_script()), for `sbatch --test-only` at `up`.

A refused submission is not retried in a tight loop: the job is dropped after a back-off
(10 s, doubling to 5 min) so that adapt asks again; the relay records every refusal for
`seamless-stack status`.

Environment:
  SEAMLESS_STACK_RELAY       the relay's socket
  SEAMLESS_STACK_JOBQUEUE    a JSON file: SLURMCluster keyword arguments plus
                             {"adapt": {"minimum_jobs": m, "maximum_jobs": n}}
  SEAMLESS_STACK_BOUNDS      optional: a JSON file {"minimum_jobs": m, "maximum_jobs": n} that
                             `seamless-stack scale` writes; read every BOUNDS_POLL seconds, and
                             adapt follows a change at once (no restart: jobs and clients stay)
  SEAMLESS_STACK_NODE_ADDRESS the services node's address, as workers on other nodes reach it
  SERVICE_PORT, DASHBOARD_PORT, and the preload's variables (seamless_stack_preload.py).
  DASK_DISTRIBUTED__COMM__TLS__*  mutual TLS: Security() reads them, and dask-jobqueue
                             hands the worker's certificate paths to each worker job
                             (as --tls-* options; the job binds the same files at /tls).
"""

import asyncio
import json
import os
import signal
import socket
import sys
import time

from dask_jobqueue import SLURMCluster
from dask_jobqueue.slurm import SLURMJob
from distributed import Security

PRELOAD = "/opt/seamless-stack/seamless_stack_preload.py"
BOUNDS_POLL = 2.0  # seconds between looks at SEAMLESS_STACK_BOUNDS


def relay(request: dict) -> dict:
    """One JSON request line to the relay, one JSON answer line back."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(os.environ["SEAMLESS_STACK_RELAY"])
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    answer = json.loads(data)
    if answer["code"] != 0:
        raise RuntimeError(f"{request['command']} failed through the relay: {answer['stderr']}")
    return answer


class RelayedSLURMJob(SLURMJob):
    failures = 0  # refusals in a row, for the back-off
    refused: dict = {}  # job name -> when it may be dropped (and asked for again)

    async def _submit_job(self, script_filename):
        with open(script_filename) as f:
            script = f.read()
        try:
            answer = await asyncio.get_running_loop().run_in_executor(None, relay, {"command": "sbatch", "script": script})
        except RuntimeError:
            RelayedSLURMJob.failures += 1
            RelayedSLURMJob.refused[self.name] = time.monotonic() + min(300, 10 * 2 ** (RelayedSLURMJob.failures - 1))
            raise
        RelayedSLURMJob.failures = 0
        return answer["stdout"]

    @classmethod
    async def _close_job(cls, job_id, cancel_command):
        if job_id:
            await asyncio.get_running_loop().run_in_executor(None, relay, {"command": "scancel", "job_id": job_id})


async def drop_refused(cluster):
    """A job sbatch refused stays in the cluster's plan forever (adapt would never ask again):
    after its back-off, forget it, so the next adapt round submits a new one."""
    while True:
        await asyncio.sleep(2)
        for name, due in list(RelayedSLURMJob.refused.items()):
            if time.monotonic() >= due:
                del RelayedSLURMJob.refused[name]
                cluster.worker_spec.pop(name, None)
                cluster.workers.pop(name, None)


async def follow_bounds(cluster, path: str, bounds: dict):
    """New adaptive bounds from `seamless-stack scale`: adapt again with them (dask-jobqueue
    stops the old Adaptive); an unreadable or half-written file is read again next time."""
    while True:
        await asyncio.sleep(BOUNDS_POLL)
        try:
            with open(path) as f:
                wanted = json.load(f)
            wanted = {key: int(wanted[key]) for key in ("minimum_jobs", "maximum_jobs")}
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if wanted != bounds:
            cluster.adapt(**wanted)
            bounds = wanted
            print(f"adaptive bounds now {wanted['minimum_jobs']}-{wanted['maximum_jobs']} worker jobs "
                  "(seamless-stack scale)", flush=True)


def job_script(options: dict) -> str:
    """The worker job script dask-jobqueue submits for these options (scheduler address aside)."""
    options.pop("adapt", None)
    return SLURMJob(scheduler="tls://services-node:0", name="check", **options).job_script()


async def main():
    with open(os.environ["SEAMLESS_STACK_JOBQUEUE"]) as f:
        options = json.load(f)
    adapt = options.pop("adapt")
    encrypted = os.environ.get("DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION") == "True"
    cluster = await SLURMCluster(
        security=Security() if encrypted else None,  # file paths only: nothing is written into job scripts
        job_cls=RelayedSLURMJob,
        asynchronous=True,
        scheduler_options={
            # Workers are told the scheduler's own address: it must be the node's, not 0.0.0.0.
            "host": os.environ["SEAMLESS_STACK_NODE_ADDRESS"],
            "port": int(os.environ["SERVICE_PORT"]),
            "dashboard_address": f":{os.environ['DASHBOARD_PORT']}",
            "preload": [PRELOAD],
        },
        **options,
    )
    cluster.adapt(**adapt)
    dropping = asyncio.create_task(drop_refused(cluster))
    following = asyncio.create_task(follow_bounds(cluster, os.environ["SEAMLESS_STACK_BOUNDS"], adapt)) \
        if os.environ.get("SEAMLESS_STACK_BOUNDS") else None
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    dropping.cancel()
    if following:
        following.cancel()
    await cluster.close()  # cancels every worker job


if __name__ == "__main__":
    if sys.argv[1:] == ["--job-script"]:
        print(job_script(json.load(sys.stdin)))
    else:
        asyncio.run(main())

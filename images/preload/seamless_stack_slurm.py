"""The Dask scheduler under Slurm, with workers launched on demand by dask-jobqueue.

Runs inside the scheduler container of the services job. dask-jobqueue needs `sbatch` and
`scancel`, but a site's Slurm client does not travel into a container (its libc, plugins
and munge socket are the host's). So jobs are submitted through a relay: a small stdlib
program on the host side of the services job, listening on a Unix socket that is bound
into this container. This module's RelayedSLURMJob is dask-jobqueue's SLURMJob with only
the two calls to Slurm swapped for the relay.

Environment:
  SEAMLESS_STACK_RELAY       the relay's socket
  SEAMLESS_STACK_JOBQUEUE    a JSON file: SLURMCluster keyword arguments plus
                             {"adapt": {"minimum_jobs": m, "maximum_jobs": n}}
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

from dask_jobqueue import SLURMCluster
from dask_jobqueue.slurm import SLURMJob
from distributed import Security

PRELOAD = "/opt/seamless-stack/seamless_stack_preload.py"


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
    async def _submit_job(self, script_filename):
        with open(script_filename) as f:
            script = f.read()
        answer = await asyncio.get_running_loop().run_in_executor(None, relay, {"command": "sbatch", "script": script})
        return answer["stdout"]

    @classmethod
    async def _close_job(cls, job_id, cancel_command):
        if job_id:
            await asyncio.get_running_loop().run_in_executor(None, relay, {"command": "scancel", "job_id": job_id})


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
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await cluster.close()  # cancels every worker job


if __name__ == "__main__":
    asyncio.run(main())

"""The benchmarks' Seamless client for both routes to a stack; it knows nothing of seamless-stack.

    python route_workload.py N PARALLEL          # the configuration route (a project's script)
    python route_workload.py --env N PARALLEL    # the env route (the stack's env file sourced)

Configuration route: copy this script into the project folder, next to seamless.yaml and
seamless.profile.yaml (seamless.config.init() reads them from the folder of the script that
calls it, not from the working directory), and run it there; init() finds the stack through
~/.seamless/clusters/*.yaml and the launcher's client files. Env route (--env): it calls
set_remote_clients_from_env(include_dask=True), as bench/client/workload.py does, and never
seamless.config.init().

Prints one JSON line of seconds, measured as bench/client/workload.py measures them:
`sequential` (N fresh @direct transformations one after another) and `parallel` (N more,
PARALLEL at a time); and `host`, the worker that ran the warm-up transformation (never this
machine: a project without its files would silently compute in this process).
"""
import json
import os
import socket
import sys
import time
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor

warnings.filterwarnings("ignore")  # distributed's python patch-version mismatch warning

ENV_ROUTE = sys.argv[1:2] == ["--env"]
if ENV_ROUTE:
    del sys.argv[1]
    from seamless_config.extern_clients import set_remote_clients_from_env

    if not set_remote_clients_from_env(include_dask=True):
        sys.exit("SEAMLESS_REMOTE_CLIENTS is not set")
else:
    import seamless.config

    if not os.path.isfile(os.path.join(os.path.dirname(os.path.abspath(__file__)), "seamless.yaml")):
        sys.exit("route_workload.py must sit in the project folder, next to seamless.yaml")
    seamless.config.init()

from seamless.transformer import direct


@direct
def tagged(tag, i):
    return f"{tag}-{i}"


@direct
def where(tag):
    import socket

    return socket.gethostname()


def timed(function) -> float:
    start = time.monotonic()
    function()
    return time.monotonic() - start


def main() -> None:
    count, parallel = int(sys.argv[1]), int(sys.argv[2])
    host = where(uuid.uuid4().hex)
    if host == socket.gethostname():
        sys.exit(f"the transformation ran here ({host}), not on the stack")
    tagged(uuid.uuid4().hex, -1)  # connect first: the measurements start warm
    tag = uuid.uuid4().hex  # fresh arguments: computed now, never found in the database
    sequential = timed(lambda: [tagged(tag, i) for i in range(count)])
    with ThreadPoolExecutor(parallel) as pool:
        at_once = timed(lambda: list(pool.map(lambda i: tagged(tag, i), range(count, 2 * count))))
    print(json.dumps({"sequential": sequential, "parallel": at_once, "host": host}))


main()

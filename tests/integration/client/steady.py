"""A Seamless client that knows nothing of seamless-stack: N fresh transformations, one after
another, each taking PAUSE seconds on a worker. Prints one JSON line per result, as it comes (with
the host that computed it). With
RETRIES, a transformation that fails is run again up to that many times, RETRY_WAIT seconds later
(a client-level retry, as a script that expects a service to come back would do); each retry
is a line too.

    python steady.py N PAUSE [RETRIES]
"""
import json
import sys
import time
import uuid
import warnings

warnings.filterwarnings("ignore")  # distributed's python patch-version mismatch warning

from seamless_config.extern_clients import set_remote_clients_from_env

if not set_remote_clients_from_env(include_dask=True):
    sys.exit("SEAMLESS_REMOTE_CLIENTS is not set")

from seamless.transformer import direct


@direct
def step(tag, i, pause):
    import socket
    import time

    time.sleep(pause)
    return [i * i, socket.gethostname()]


count, pause, tag = int(sys.argv[1]), float(sys.argv[2]), uuid.uuid4().hex  # fresh: never found in the database
retries = int(sys.argv[3]) if len(sys.argv) > 3 else 0
RETRY_WAIT = 10.0
start = time.monotonic()
for i in range(count):
    for attempt in range(retries + 1):
        try:
            value, host = step(tag, i, pause)
            break
        except Exception as exc:
            if attempt == retries:
                raise
            print(json.dumps({"i": i, "retry": f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1:]}",
                              "at": round(time.monotonic() - start, 2)}), flush=True)
            time.sleep(RETRY_WAIT)
    print(json.dumps({"i": i, "value": value, "host": host, "at": round(time.monotonic() - start, 2)}), flush=True)

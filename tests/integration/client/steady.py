"""A Seamless client that knows nothing of seamless-stack: N fresh transformations, one after
another, each taking PAUSE seconds on a worker. Prints one JSON line per result, as it comes.

    python steady.py N PAUSE
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
    import time

    time.sleep(pause)
    return i * i


count, pause, tag = int(sys.argv[1]), float(sys.argv[2]), uuid.uuid4().hex  # fresh: never found in the database
start = time.monotonic()
for i in range(count):
    print(json.dumps({"i": i, "value": step(tag, i, pause), "at": round(time.monotonic() - start, 2)}), flush=True)

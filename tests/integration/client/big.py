"""A Seamless client that knows nothing of seamless-stack: N fresh transformations, each
returning SIZE_MB of random bytes (a full disk's workload). Prints one JSON line per
transformation: its size, or the error it ended with; it goes on after an error.

    python big.py N SIZE_MB
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
def big(tag, i, size_mb):
    import os

    return os.urandom(int(size_mb * 1024 * 1024))


count, size, tag = int(sys.argv[1]), float(sys.argv[2]), uuid.uuid4().hex  # fresh: never found in the database
for i in range(count):
    started = time.monotonic()
    try:
        value = big(tag, i, size)  # Seamless hands bytes back as a NumPy scalar
        line = {"i": i, "bytes": int(getattr(value, "nbytes", 0)) or len(value)}
    except Exception as exc:
        line = {"i": i, "error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1:]}"}
    print(json.dumps({**line, "seconds": round(time.monotonic() - started, 2)}), flush=True)

"""A Seamless client that knows nothing of seamless-stack: configured only by the environment.

Prints one JSON line: the value of a @direct transformation computed on a Dask worker,
and the hostname of the machine (container) that computed it.
"""
import json
import sys
import warnings

warnings.filterwarnings("ignore")  # distributed's python patch-version mismatch warning

from seamless_config.extern_clients import set_remote_clients_from_env

if not set_remote_clients_from_env(include_dask=True):
    sys.exit("SEAMLESS_REMOTE_CLIENTS is not set")

from seamless.transformer import direct


@direct
def power_on(base, exponent):
    import socket

    return {"value": base**exponent, "host": socket.gethostname()}


print(json.dumps(power_on(int(sys.argv[1]), int(sys.argv[2]))))

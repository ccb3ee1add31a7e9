"""A Seamless project's script with a pure-Dask stage, knowing nothing of seamless-stack:
seamless.config reads seamless.yaml / seamless.profile.yaml beside it.

usage: python pure_dask_project.py N    the `pure-dask` stage (persistent: false): N dask.delayed
                                        calls through distributed.get_client()
Prints one JSON line: the values, the hosts that computed them, and the seconds taken.
(The nested shape, Seamless' test_nested_transformations_multi, is bench/client/nested_workload.py.)
"""
import json
import sys
import time
import warnings

warnings.filterwarnings("ignore")  # distributed's python patch-version mismatch warning

import dask  # noqa: E402
import distributed  # noqa: E402
import seamless.config  # noqa: E402

seamless.config.set_stage("pure-dask")
start = time.perf_counter()


@dask.delayed
def square(x):
    import socket

    return {"value": x * x, "host": socket.gethostname()}


results = distributed.get_client().compute([square(i) for i in range(int(sys.argv[1]))], sync=True)
print(json.dumps({"values": [r["value"] for r in results], "hosts": sorted({r["host"] for r in results}),
                  "seconds": time.perf_counter() - start}))

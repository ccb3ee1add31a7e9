"""A Seamless project's script in the shapes of Seamless' own Dask tests, knowing nothing of
seamless-stack: seamless.config reads seamless.yaml / seamless.profile.yaml beside it.

usage: python nested_project.py nested N TAG   N outer transformations, each running two inner
                                               ones that each start two leaves and wait for them
                                               (test_nested_transformations_multi's shape)
       python nested_project.py pure N         the `pure-dask` stage (persistent: false):
                                               N dask.delayed calls through distributed.get_client()
Prints one JSON line: the leaves' labels and the hosts that computed them, and the seconds taken.
"""
import json
import sys
import time
import warnings

warnings.filterwarnings("ignore")  # distributed's python patch-version mismatch warning

import seamless.config

mode, count = sys.argv[1], int(sys.argv[2])
if mode == "pure":
    seamless.config.set_stage("pure-dask")
else:
    seamless.config.init()
start = time.perf_counter()

if mode == "pure":
    import dask
    import distributed

    @dask.delayed
    def square(x):
        import socket

        return {"value": x * x, "host": socket.gethostname()}

    results = distributed.get_client().compute([square(i) for i in range(count)], sync=True)
    print(json.dumps({"values": [r["value"] for r in results], "hosts": sorted({r["host"] for r in results}),
                      "seconds": time.perf_counter() - start}))
    sys.exit(0)

from seamless.transformer import delayed


@delayed
def outer(label):
    from seamless.transformer import delayed, direct

    @direct
    def middle(label):
        from seamless.transformer import delayed

        def leaf(label):
            import socket
            import time

            time.sleep(0.2)
            return label + "@" + socket.gethostname()

        leaf = delayed(leaf)
        left = leaf(label + "-a").start()
        right = leaf(label + "-b").start()
        return {"a": left.run(), "b": right.run()}  # held while the children run

    return {"1": middle(label + "-1"), "2": middle(label + "-2")}


tag = sys.argv[3]  # fresh labels: computed, not found in the database
tasks = [outer(f"{tag}-{i}").start() for i in range(count)]
leaves = [leaf for task in tasks for inner in task.run().values() for leaf in inner.values()]
print(json.dumps({"labels": sorted(leaf.split("@")[0] for leaf in leaves),
                  "hosts": sorted({leaf.split("@")[1] for leaf in leaves}),
                  "seconds": time.perf_counter() - start}))

"""The nested benchmark's Seamless client, in the shape of Seamless' test_nested_transformations_multi;
it knows nothing of seamless-stack.

    python nested_workload.py route N TAG   a project's script: seamless.config.init() reads
                                            seamless.yaml / seamless.profile.yaml beside it
    python nested_workload.py own N TAG     Seamless' own daskserver client, as seamless_remote's
                                            daskserver_remote sets it up once remote-http-launcher
                                            has started the services: remote clients from
                                            SEAMLESS_REMOTE_CLIENTS, the scheduler from
                                            SEAMLESS_DASK_SCHEDULER, SEAMLESS_DASK_WORKERS cores

N outer transformations, each running two inner ones that each start two leaves (0.2 s) and
hold their thread while the leaves run. Prints one JSON line: the leaves' labels, the hosts
that computed them, and the seconds from the first submission to the last result.
"""
import json
import os
import sys
import time
import warnings

warnings.filterwarnings("ignore")  # distributed's python patch-version mismatch warning

mode, count, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if mode == "route":
    import seamless.config

    seamless.config.init()
else:
    from distributed import Client
    from seamless_config.extern_clients import set_remote_clients
    from seamless_dask.client import SeamlessDaskClient
    from seamless_dask.transformer_client import set_seamless_dask_client

    clients = json.loads(os.environ["SEAMLESS_REMOTE_CLIENTS"])
    set_remote_clients(clients)
    set_seamless_dask_client(SeamlessDaskClient(
        Client(os.environ["SEAMLESS_DASK_SCHEDULER"], timeout="10s", set_as_default=False),
        worker_plugin_workers=int(os.environ["SEAMLESS_DASK_WORKERS"]), remote_clients=clients,
        is_local_cluster=True))

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


start = time.perf_counter()
tasks = [outer(f"{tag}-{i}").start() for i in range(count)]
leaves = [leaf for task in tasks for inner in task.run().values() for leaf in inner.values()]
print(json.dumps({"labels": sorted(leaf.split("@")[0] for leaf in leaves),
                  "hosts": sorted({leaf.split("@")[1] for leaf in leaves}),
                  "seconds": time.perf_counter() - start}))

"""The benchmarks' Seamless client: it knows nothing of seamless-stack (only the environment).

    python workload.py N SIZE_MB PARALLEL

Prints one JSON line of seconds: `sequential` (N fresh @direct transformations one after
another), `parallel` (N more, PARALLEL at a time), `put` and `get` (SIZE_MB of random bytes
to and from the hashserver at its URL, through aiohttp as Seamless' own client does: the URL's
credentials become Basic auth, SSL_CERT_FILE verifies HTTPS).
"""
import asyncio
import hashlib
import json
import os
import sys
import time
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor

warnings.filterwarnings("ignore")  # distributed's python patch-version mismatch warning

import aiohttp
from seamless_config.extern_clients import set_remote_clients_from_env

if not set_remote_clients_from_env(include_dask=True):
    sys.exit("SEAMLESS_REMOTE_CLIENTS is not set")

from seamless.transformer import direct


@direct
def tagged(tag, i):
    return f"{tag}-{i}"


def timed(function) -> float:
    start = time.monotonic()
    function()
    return time.monotonic() - start


async def transfer(url: str, data: bytes) -> tuple[float, float]:
    checksum = hashlib.sha256(data).hexdigest()
    async with aiohttp.ClientSession() as session:
        start = time.monotonic()
        async with session.put(f"{url}/{checksum}", data=data) as response:
            assert response.status == 200, (response.status, await response.text())
        put = time.monotonic() - start
        start = time.monotonic()
        async with session.get(f"{url}/{checksum}") as response:
            assert response.status == 200 and len(await response.read()) == len(data)
        return put, time.monotonic() - start


def main() -> None:
    count, size_mb, parallel = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    tagged(uuid.uuid4().hex, -1)  # connect first: the measurements start warm
    tag = uuid.uuid4().hex  # fresh arguments: computed now, never found in the database
    sequential = timed(lambda: [tagged(tag, i) for i in range(count)])
    with ThreadPoolExecutor(parallel) as pool:
        at_once = timed(lambda: list(pool.map(lambda i: tagged(tag, i), range(count, 2 * count))))
    url = json.loads(os.environ["SEAMLESS_REMOTE_CLIENTS"])["buffer"][0]["url"]
    put, get = asyncio.run(transfer(url, os.urandom(size_mb * 1024 * 1024)))
    print(json.dumps({"sequential": sequential, "parallel": at_once, "put": put, "get": get}))


main()

"""The workflow's tests, against a real Seamless stack (the `seamless_stack` fixture)."""

import hashlib
import socket
import time
import uuid
from pathlib import Path

from seamless.transformer import direct

from workflow import word_stats


def test_word_stats(seamless_client):
    assert word_stats("the cat saw The dog").run() == {"words": 5, "distinct": 4, "longest": "the"}


def test_computed_on_a_stack_worker(seamless_client):
    @direct
    def where_am_i(tag):
        import socket

        return socket.gethostname()

    host = where_am_i(uuid.uuid4().hex)  # a fresh argument: computed now, not found in the database
    assert host != socket.gethostname(), "computed in a container, not in this process"
    assert host in seamless_client.hostnames("worker"), "computed in one of the stack's worker containers"


def test_result_is_in_the_stack_buffer_dir(seamless_client):
    text = f"a result nobody computed before: {uuid.uuid4().hex}"
    transformation = word_stats(text)
    checksum = transformation.compute()
    assert checksum is not None, transformation.exception
    assert transformation.run()["words"] == len(text.split())
    stored = Path(seamless_client.buffer_dir) / checksum.hex()[:2] / checksum.hex()
    # The worker promises the result to the hashserver and uploads it in the background.
    deadline = time.monotonic() + 60
    while not stored.is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert stored.is_file(), f"the result buffer is stored under its checksum in {seamless_client.buffer_dir}"
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == checksum.hex()

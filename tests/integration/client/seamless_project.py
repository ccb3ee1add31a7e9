"""A Seamless project's script that knows nothing of seamless-stack: seamless.config.init()
(or set_stage(STAGE)) reads seamless.yaml / seamless.profile.yaml next to it and
~/.seamless/clusters/*.yaml, and finds its services through the launcher's client files.

usage: python seamless_project.py X [STAGE]
Prints one JSON line: the values of a @direct and a @delayed transformation, the host names
that computed them, and the @delayed one's result and transformation checksums.
"""
import json
import sys
import warnings

warnings.filterwarnings("ignore")  # distributed's python patch-version mismatch warning

import seamless.config

if len(sys.argv) > 2:
    seamless.config.set_stage(sys.argv[2])
else:
    seamless.config.init()

from seamless.transformer import delayed, direct


@direct
def doubled(x):
    import socket

    return {"value": 2 * x, "host": socket.gethostname()}


@delayed
def plus_one(x):
    import socket

    return {"value": x + 1, "host": socket.gethostname()}


x = int(sys.argv[1])
first = doubled(x)
transformation = plus_one(x)
second = transformation.run()
print(json.dumps({
    "direct": first,
    "delayed": second,
    "result_checksum": transformation.result_checksum.hex(),
    "transformation_checksum": transformation.transformation_checksum.hex(),
}))

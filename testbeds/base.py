"""The test beds' base image: Debian trixie from the host's apt mirror, no registry.

    python -m testbeds.base        # makes seamless-stack-testbed/base:trixie if missing
"""

import sys

from seamless_stack.airgap import make_base
from seamless_stack.docker_tools import docker_client

TAG = "seamless-stack-testbed/base:trixie"


def ensure_base(progress=lambda line: print(line, file=sys.stderr)) -> str:
    docker = docker_client()
    if not docker.image.exists(TAG):
        make_base(docker, progress, tag=TAG, suite="trixie", packages="ca-certificates")
    return TAG


if __name__ == "__main__":
    print(ensure_base())

"""Shared fixtures. Integration tests need a real Docker engine: they skip cleanly without
one on a developer machine, but fail under CI (CI=true), which must run them."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def docker_engine():
    if not docker_available():
        if os.environ.get("CI"):
            pytest.fail("CI needs a running Docker engine: scripts/setup.sh installs and starts one")
        pytest.skip("no Docker engine (scripts/install-docker-debian.sh installs one)")

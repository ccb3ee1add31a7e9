"""Shared fixtures. Integration tests need a real Docker engine with Compose v2: without
one they skip on a developer machine, and fail where the run asks for it with the plugin's
own switch, --seamless-stack-require (scripts/test.sh, which CI runs, always does)."""

from __future__ import annotations

import pytest

from seamless_stack.pytest_plugin import docker_or_skip


@pytest.fixture(scope="session")
def docker_engine(request):
    docker_or_skip(request.config, "the integration tests (scripts/install-docker-debian.sh installs one)")

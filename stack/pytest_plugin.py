"""pytest plugin (entry point `pytest11`): a session-scoped `seamless_stack` fixture.

    def test_my_workflow(seamless_stack):
        seamless_stack.apply()        # SEAMLESS_* variables in os.environ
        ...                           # transformations compute in the stack's workers

The stack starts on first use and is removed at the end of the session. Where no Docker
engine runs, tests that use it are skipped, unless --seamless-stack-require (or
SEAMLESS_STACK_REQUIRE=1) asks for a failure instead, as CI should.

This module imports nothing heavy at load time: pytest loads it in every environment
where seamless-stack is installed, with or without the [testing] extra.
"""

from __future__ import annotations

import os

import pytest

from .layout import TESTING_THREADS

_SUMMARY = pytest.StashKey[list]()
_TRUE = ("1", "true", "yes", "on")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("seamless-stack", "the seamless_stack fixture (a throwaway Seamless stack in Docker)")
    group.addoption("--seamless-stack-workers", type=int, default=1, metavar="N",
                    help="Dask worker containers in the stack (default 1)")
    group.addoption("--seamless-stack-threads", type=int, default=TESTING_THREADS, metavar="N",
                    help=f"threads (= Seamless workers) per Dask worker (default {TESTING_THREADS})")
    group.addoption("--seamless-stack-worker-requirements", default=None, metavar="FILE",
                    help="pip requirements for a worker image with your own libraries")
    group.addoption("--seamless-stack-timeout", type=float, default=300, metavar="SECONDS",
                    help="seconds for the stack to become ready (default 300; image builds not counted)")
    group.addoption("--seamless-stack-keep", action="store_true",
                    help="leave the stack running after the session, for debugging (prints how to remove it)")
    group.addoption("--seamless-stack-require", action="store_true",
                    help="fail instead of skipping when no Docker engine runs (also: SEAMLESS_STACK_REQUIRE=1)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "seamless_stack: uses the seamless_stack fixture (a real Seamless stack in Docker)")
    config.stash[_SUMMARY] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use the fixture carry the marker: `-m "not seamless_stack"` deselects them."""
    for item in items:
        if "seamless_stack" in getattr(item, "fixturenames", ()):
            item.add_marker("seamless_stack")


def required(config: pytest.Config) -> bool:
    """Whether a missing Docker engine fails the tests that need one (--seamless-stack-require
    or SEAMLESS_STACK_REQUIRE=1) instead of skipping them. A test suite's own fixtures that
    need Docker can ask this too: one switch for the whole run."""
    return config.getoption("--seamless-stack-require") or os.environ.get("SEAMLESS_STACK_REQUIRE", "").lower() in _TRUE


def docker_or_skip(config: pytest.Config, what: str) -> None:
    """Skip (or, when required, fail) the asking test when no stack can run here."""
    from seamless_stack.testing import docker_problem

    problem = docker_problem()
    if problem:
        message = f"no usable Docker engine for {what}: {problem}"
        if required(config):
            pytest.fail(message, pytrace=False)
        pytest.skip(f"{message} (--seamless-stack-require or SEAMLESS_STACK_REQUIRE=1 makes this a failure)")


@pytest.fixture(scope="session")
def seamless_stack(request: pytest.FixtureRequest):
    """The running SeamlessStack of this session: .environment(), .apply(), .buffer_dir, ..."""
    config = request.config
    docker_or_skip(config, "the seamless_stack fixture")
    from seamless_stack.testing import SeamlessStack

    summary = config.stash[_SUMMARY]
    stack = SeamlessStack(
        workers=config.getoption("--seamless-stack-workers"),
        threads=config.getoption("--seamless-stack-threads"),
        worker_requirements=config.getoption("--seamless-stack-worker-requirements"),
        timeout=config.getoption("--seamless-stack-timeout"),
        keep=config.getoption("--seamless-stack-keep"),
        progress=_progress(config),
    )
    stack.start()  # a failure raises with the services' log tail, and leaves nothing behind
    summary.append(f"stack {stack.name!r} ({stack.workers} worker(s) x {stack.threads} threads) ready in "
                   f"{stack.ready_in:.1f}s, storage in {stack.folder}")
    folder = stack.folder
    try:
        yield stack
    finally:
        keep = stack.keep_message() if stack.keep else None
        stack.stop()
        summary.append(keep or f"stack {stack.name!r} removed (containers, network, {folder})")


def _progress(config: pytest.Config):
    """Progress goes to the log (shown with a failure); image builds, which take minutes,
    and everything with -v, also to the terminal at once."""
    import logging

    logger = logging.getLogger("seamless_stack.testing")
    capture = config.pluginmanager.getplugin("capturemanager")
    terminal = config.pluginmanager.getplugin("terminalreporter")

    def progress(line: str) -> None:
        logger.info(line)
        if terminal is not None and (config.option.verbose > 0 or line.startswith(("building", "pulling"))):
            if capture is not None:
                with capture.global_and_fixture_disabled():
                    terminal.write_line(f"seamless-stack: {line}")
            else:
                terminal.write_line(f"seamless-stack: {line}")

    return progress


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    lines = config.stash.get(_SUMMARY, [])
    if lines:
        terminalreporter.section("seamless-stack")
        for line in lines:
            terminalreporter.write_line(line if line.startswith("seamless-stack") else f"seamless-stack: {line}")

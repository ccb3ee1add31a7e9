"""`seamless_stack.testing` and its pytest plugin, against the real Docker engine.

- the example project (examples/ci) passes its tests on the `seamless_stack` fixture, run
  as a user runs them: pytest in a venv with the Seamless client and seamless-stack[testing]
  (scripts/example-venv.sh, cached), in a private HOME and TMPDIR; nothing stays behind;
- a stack that cannot become ready raises with the services' log tail, and nothing stays;
- two pytest processes with the fixture at once: two stacks, both pass;
- seamless-stack[testing] from a freshly built wheel into a fresh venv (offline, from a
  cached wheelhouse): a one-file test finds the fixture through the entry point; without
  a Docker engine it skips, or fails when required.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from .conftest import ROOT, project_containers

EXAMPLE = ROOT / "examples" / "ci"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "seamless-stack"
STACK_LINE = re.compile(r"seamless-stack: stack '(tcx-[0-9a-f]+)' .*ready in")


def tcx_projects() -> set[str]:
    """Compose projects of throwaway stacks (seamless-tcx-*) with containers or networks."""
    out = subprocess.run(["docker", "ps", "-a", "--format", '{{.Label "com.docker.compose.project"}}'],
                         capture_output=True, text=True, check=True).stdout.split()
    nets = subprocess.run(["docker", "network", "ls", "--format", "{{.Name}}"], capture_output=True, text=True, check=True).stdout.split()
    return {p for p in out if p.startswith("seamless-tcx-")} | {n[: -len("_default")] for n in nets if n.startswith("seamless-tcx-")}


def network_exists(project: str) -> bool:
    out = subprocess.run(["docker", "network", "ls", "--format", "{{.Name}}"], capture_output=True, text=True, check=True).stdout
    return f"{project}_default" in out.split()


def clean_env(home: Path, tmp: Path, **extra: str) -> dict[str, str]:
    """This machine's environment without our variables or a venv, in a private HOME and TMPDIR."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SEAMLESS_", "RANDOM_PORT_", "HASHSERVER_", "DATABASE_DIR", "ENVIRONMENT_OUTPUT_FILE",
                                "COMPOSE_", "PYTEST_", "VIRTUAL_ENV"))}
    home.mkdir(parents=True, exist_ok=True)
    tmp.mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), TMPDIR=str(tmp), SEAMLESS_STACK_REQUIRE="1")
    env.update(extra)
    return env


class PytestRun:
    """One pytest process of a user's project, with its own HOME, TMPDIR and basetemp."""

    def __init__(self, venv: Path, where: Path, workdir: Path, *args: str, **env: str):
        self.home, self.tmp = workdir / "home", workdir / "tmp"
        command = [str(venv / "bin" / "python"), "-m", "pytest", "-ra", "-p", "no:cacheprovider",
                   "--basetemp", str(workdir / "basetemp"), *args]
        # Output to a file, not a pipe: a pipe nobody reads while we poll would block pytest.
        self.log = workdir / "pytest.out"
        workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "w") as out:
            self.process = subprocess.Popen(command, cwd=where, env=clean_env(self.home, self.tmp, **env),
                                            stdout=out, stderr=subprocess.STDOUT, text=True)
        self.output = ""

    def wait(self, timeout: float = 600) -> int:
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()  # its stack, if any, goes with the `new_tcx_stacks` fixture
            self.process.wait()
            raise
        finally:
            self.output = self.log.read_text()
        return self.process.returncode

    @property
    def stack(self) -> str:
        found = STACK_LINE.findall(self.output)
        assert len(found) == 1, f"one stack per session, named in the summary:\n{self.output}"
        return found[0]

    def assert_nothing_left(self) -> None:
        project = f"seamless-{self.stack}"
        assert project_containers(self.stack) == [], f"containers of {project} left behind"
        assert not network_exists(project), f"network of {project} left behind"
        assert list(self.tmp.iterdir()) == [], f"left in TMPDIR: {list(self.tmp.iterdir())}"
        stacks = self.home / ".seamless" / "stacks"
        assert not stacks.exists() or list(stacks.iterdir()) == [], f"left in ~/.seamless/stacks: {list(stacks.iterdir())}"


# -- venvs, made once and cached like scripts/client-venv.sh ----------------------------
@pytest.fixture(scope="session")
def example_venv(client_venv) -> Path:
    """The client venv copied, plus this checkout with [testing] (scripts/example-venv.sh)."""
    out = subprocess.run(["bash", str(ROOT / "scripts" / "example-venv.sh")], capture_output=True, text=True,
                         env={**os.environ, "SEAMLESS_STACK_CLIENT_VENV": str(client_venv)}, timeout=900)
    assert out.returncode == 0, out.stderr
    return Path(out.stdout.strip().splitlines()[-1])


def _locked_build(final: Path, build) -> Path:
    """Build `final` once (atomically, one builder at a time); later sessions reuse it."""
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{final}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not final.is_dir():
            scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
            try:
                build(scratch)
                scratch.rename(final)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    return final


@pytest.fixture(scope="session")
def wheelhouse(docker_engine) -> Path:
    """Wheels of seamless-stack[testing]'s dependencies and of the build backend, so that a fresh
    venv installs the project offline. Cached by pyproject.toml's digest."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:12]

    def build(folder: Path) -> None:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(folder),
                        f"{ROOT}[testing]", "setuptools>=69", "wheel"], check=True, capture_output=True, timeout=900)
        for own in folder.glob("seamless_stack-*.whl"):
            own.unlink()  # the project's own wheel is built fresh in each session

    return _locked_build(CACHE / f"wheels-{digest}", build)


@pytest.fixture(scope="session")
def fresh_venv(wheelhouse, tmp_path_factory) -> Path:
    """A new venv with nothing but seamless-stack[testing], from a wheel of this checkout."""
    work = tmp_path_factory.mktemp("fresh")
    offline = ["--no-index", "--find-links", str(wheelhouse)]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", *offline, "--wheel-dir", str(work / "dist"),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet", *offline,
                    "--find-links", str(work / "dist"), "seamless-stack[testing]"], check=True, capture_output=True, timeout=300)
    return venv


@pytest.fixture
def new_tcx_stacks(docker_engine):
    """The throwaway stacks that appear during a test: checked by the test, and removed
    afterwards whatever happened (a killed pytest cannot clean up after itself)."""
    before = tcx_projects()
    yield lambda: tcx_projects() - before
    from seamless_stack.backends.compose import remove_project

    for project in tcx_projects() - before:
        remove_project(project[len("seamless-"):], lambda line: None)
        subprocess.run(["docker", "network", "rm", f"{project}_default"], capture_output=True)


# -- the tests --------------------------------------------------------------------------
def test_example_project_passes_and_leaves_nothing(example_venv, new_tcx_stacks, tmp_path):
    run = PytestRun(example_venv, EXAMPLE, tmp_path)
    assert run.wait() == 0, run.output
    assert re.search(r"\b3 passed\b", run.output), run.output
    run.assert_nothing_left()
    assert new_tcx_stacks() == set()


def corrupt_database(holder: dict):
    """A progress callback that breaks the database once its folder exists, right before
    `compose up`: the database service then crashes at start with a known error."""

    def progress(line: str) -> None:
        if line.startswith("starting stack"):
            (holder["stack"].database_dir / "seamless.db").write_bytes(b"this is not an SQLite database\n" * 64)

    return progress


@pytest.mark.parametrize("broken", ["database", "timeout"])
def test_a_stack_that_cannot_become_ready_raises_with_its_logs(docker_engine, new_tcx_stacks, tmp_path, broken):
    from seamless_stack.layout import StackFiles
    from seamless_stack.testing import SeamlessStack, StackStartFailed

    name = f"tcx-fail-{uuid.uuid4().hex[:6]}"
    folder = tmp_path / "temp"
    folder.mkdir()
    before = dict(os.environ)
    holder = {}
    if broken == "database":  # a service that dies: the wait stops at once, its traceback is in the message
        stack = SeamlessStack(timeout=120, name=name, directory=folder, progress=corrupt_database(holder))
    else:  # healthy services, too little time
        stack = SeamlessStack(timeout=1, name=name, directory=folder)
    holder["stack"] = stack
    started = time.monotonic()
    with pytest.raises(StackStartFailed) as caught:
        stack.start()
    message = str(caught.value)
    assert message.startswith(f"Seamless stack {name!r} did not become ready: "), message
    for service in ("hashserver", "database", "scheduler", "worker"):
        assert f"--- {service}: last 40 log lines ---" in message, message
    if broken == "database":
        assert "database failed: container" in message and time.monotonic() - started < 100, message
        assert re.search(r"^    database-1\s+\| .*DatabaseError: file is not a database", message, re.M), \
            f"the database's own log lines, read before its container went:\n{message}"
    else:
        assert "not healthy after 1s" in message or "not ready after" in message, message
    assert project_containers(name) == [] and not network_exists(f"seamless-{name}")
    assert new_tcx_stacks() == set()
    assert list(folder.iterdir()) == [], "the temporary folder is gone"
    assert not any(p.exists() for p in (StackFiles.of(name).compose_env, StackFiles.of(name).record, StackFiles.of(name).env))
    assert dict(os.environ) == before


def test_two_sessions_at_once_do_not_collide(example_venv, new_tcx_stacks, tmp_path):
    runs = [PytestRun(example_venv, EXAMPLE, tmp_path / str(i)) for i in range(2)]
    most_at_once = 0
    deadline = time.monotonic() + 600
    while any(r.process.poll() is None for r in runs) and time.monotonic() < deadline:
        most_at_once = max(most_at_once, len(new_tcx_stacks()))
        time.sleep(0.5)
    for run in runs:
        assert run.wait() == 0, run.output
        assert re.search(r"\b3 passed\b", run.output), run.output
    assert runs[0].stack != runs[1].stack
    assert most_at_once == 2, "both stacks ran at the same time"
    for run in runs:
        run.assert_nothing_left()
    assert new_tcx_stacks() == set()


ONE_FILE_TEST = '''
import base64
import hashlib
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path


def test_the_fixture_alone(seamless_stack):
    env = seamless_stack.environment()
    assert env["SEAMLESS_DASK_SCHEDULER"].startswith("tls://127.0.0.1:")
    data = b"stored through the seamless_stack fixture\\n"
    checksum = hashlib.sha256(data).hexdigest()
    url = urllib.parse.urlsplit(env["SEAMLESS_WRITE_BUFFER_SERVER"])  # https://seamless:SECRET@127.0.0.1:PORT
    assert url.scheme == "https", "the client checks the stack's certificate before the secret leaves it"
    plain = f"{url.scheme}://{url.hostname}:{url.port}/{checksum}"
    context = ssl.create_default_context(cafile=env["SSL_CERT_FILE"])
    try:
        urllib.request.urlopen(urllib.request.Request(plain, data=data, method="PUT"), timeout=30, context=context)
        raise AssertionError("the hashserver took a buffer without the stack's secret")
    except urllib.error.HTTPError as refused:
        assert refused.code == 401
    request = urllib.request.Request(plain, data=data, method="PUT")
    request.add_header("Authorization", "Basic " + base64.b64encode(f"{url.username}:{url.password}".encode()).decode())
    with urllib.request.urlopen(request, timeout=30, context=context) as answer:
        assert answer.status == 200
    assert (Path(seamless_stack.buffer_dir) / checksum[:2] / checksum).read_bytes() == data
'''


def test_fresh_venv_finds_the_fixture_through_the_entry_point(fresh_venv, new_tcx_stacks, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_one.py").write_text(ONE_FILE_TEST)
    run = PytestRun(fresh_venv, project, tmp_path / "run", "--seamless-stack-threads", "1")
    assert run.wait() == 0, run.output
    assert "plugins: seamless-stack-" in run.output and re.search(r"\b1 passed\b", run.output), run.output
    run.assert_nothing_left()
    assert new_tcx_stacks() == set()


def test_without_a_docker_engine_the_fixture_skips_unless_required(fresh_venv, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_one.py").write_text(ONE_FILE_TEST)
    nowhere = f"unix://{tmp_path}/no-docker.sock"
    skipped = PytestRun(fresh_venv, project, tmp_path / "a", SEAMLESS_STACK_REQUIRE="", DOCKER_HOST=nowhere)
    assert skipped.wait() == 0, skipped.output
    assert re.search(r"SKIPPED .*no usable Docker engine for the seamless_stack fixture", skipped.output), skipped.output
    required = PytestRun(fresh_venv, project, tmp_path / "b", "--seamless-stack-require", SEAMLESS_STACK_REQUIRE="", DOCKER_HOST=nowhere)
    assert required.wait() == 1, required.output
    assert re.search(r"1 (failed|error)", required.output) and "no usable Docker engine" in required.output, required.output

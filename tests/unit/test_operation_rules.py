"""Rules of operating a stack: one operation per stack at a time (the second `up`/`down`/
`restart` of a name is refused in one line naming the first; the lock goes with the process,
however it ends); a stack whose containers are gone has failed; an exited container has no health."""

import os
import subprocess
import sys

import pytest

from seamless_stack import oplock
from seamless_stack.errors import StackError
from seamless_stack.layout import StackFiles


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))


def test_a_second_operation_on_a_held_stack_is_refused_naming_the_first():
    with oplock.held("s1", "up"):
        assert StackFiles.of("s1").lock.stat().st_mode & 0o777 == 0o600
        with pytest.raises(StackError, match=rf"another `up` of stack 's1' is running \(pid {os.getpid()}\): wait for it"):
            with oplock.held("s1", "down"):
                pass
        with oplock.held("s2", "down"):  # another stack: its own lock
            pass
    assert not StackFiles.of("s1").lock.exists(), "nothing left once the operation ended"
    with oplock.held("s1", "down"):  # free again
        pass


def test_a_holder_that_dies_releases_the_stack():
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom seamless_stack import oplock\n"
                               "with oplock.held('s1', 'restart'):\n    print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, env=os.environ)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StackError, match=rf"another `restart` of stack 's1' is running \(pid {holder.pid}\)"):
            with oplock.held("s1", "up"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with oplock.held("s1", "up"):  # killed without cleanup: the kernel released its lock
        pass


def test_a_compose_stack_without_any_container_has_failed_at_once(tmp_path, monkeypatch):
    from seamless_stack.backends.compose import ComposeBackend
    from seamless_stack.plan import ComposeRecord, Deployment, Placement

    deployment = Deployment(name="s1", method="local", workers=1, threads=1, bind="127.0.0.1", buffer_dir="/b",
                            database_dir="/d", env_file="/e", settings={},
                            placement=Placement("here", {"hashserver": 1, "database": 2, "scheduler": 3, "dashboard": 4}),
                            compose=ComposeRecord(images={}, uid=1000, gid=1000))
    backend = ComposeBackend(deployment, env_path=tmp_path / "compose.env")
    monkeypatch.setattr(backend, "services", lambda: [])
    service, reason = backend.find_failure()
    assert service == "stack" and "no container of stack 's1' exists any more" in reason


def test_an_exited_container_shows_no_stale_health():
    """Docker keeps an exited container's last health status ("starting"): status must say exited."""
    from seamless_stack.backends.compose import service_state

    record = {"Name": "/seamless-s1-database-1", "Config": {"Labels": {"com.docker.compose.service": "database"}},
              "State": {"Status": "exited", "ExitCode": 137, "Health": {"Status": "starting"}}, "RestartCount": 0}
    exited = service_state(record)
    assert (exited.service, exited.state, exited.health, exited.exit_code) == ("database", "exited", "", 137)
    record["State"] = {"Status": "running", "Health": {"Status": "healthy"}}
    assert service_state(record).health == "healthy"

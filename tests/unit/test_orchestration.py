"""The orchestration paths of `api.up`, `down` and the state records, with a fake backend.

The fake stands in only for the machinery below the interface (Docker, Slurm); what is
tested is the real facade: rollback order and guards, converge, leftovers, records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from seamless_stack import api, state
from seamless_stack.backends.base import Backend, ServiceState
from seamless_stack.errors import StackError
from seamless_stack.layout import StackFiles
from seamless_stack.plan import ComposeRecord, Deployment, Placement
from seamless_stack.spec import build_spec

PORTS = {"hashserver": 61001, "database": 61002, "scheduler": 61003, "dashboard": 61004}


@dataclass
class Script:
    """One test's fake backend: what the facade asked of it, in order, and where it fails.
    Its state lives here, one per test (the fixture's), never in class attributes that one
    test could leave set for the next."""

    calls: list[str] = field(default_factory=list)
    fail_start: bool = False
    fail_down: bool = False
    fail_logs: bool = False
    leftover: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    makes_credentials: bool = False  # as ComposeBackend/SlurmBackend.prepare do

    def __post_init__(self):
        self.backend = fake_backend(self)

    def up(self, s, gate=lambda backend, timeout, progress: 0.1, lines=None):
        return api.up(s, (lines if lines is not None else []).append, backends={"local": self.backend}, gate=gate)


def fake_backend(script: Script) -> type[Backend]:
    """A Backend class that does what `script` says: the facade gets a class, as it gets
    ComposeBackend, and nothing of it outlives the test."""

    class FakeBackend(Backend):
        @classmethod
        def prepare(cls, spec, progress):
            script.calls.append("prepare")
            if script.makes_credentials:
                StackFiles.of(spec.name).tls.mkdir(parents=True, exist_ok=True)
            deployment = Deployment(name=spec.name, method=spec.method, workers=spec.workers, threads=spec.threads,
                                    bind=spec.bind, buffer_dir=spec.buffer_dir, database_dir=spec.database_dir,
                                    env_file=str(spec.env_file or StackFiles.of(spec.name).env), settings=spec.settings(),
                                    placement=Placement("here", PORTS), compose=ComposeRecord(images={}, uid=1000, gid=1000))
            return cls(deployment)

        def leftovers(self):
            return list(script.leftover)

        @classmethod
        def remove_leftovers(cls, name, progress):
            script.calls.append(f"remove leftovers of {name} ({cls.__name__})")
            return bool(script.leftover)

        def start(self, progress):
            script.calls.append("start")
            assert state.exists(self.deployment.name), "the record is written before anything starts"
            if script.fail_start:
                raise StackError("start failed", "fix it")

        def converge(self, spec, progress):
            script.calls.append("converge")
            return list(script.restarted)

        def restart(self, service, progress):
            script.calls.append(f"restart {service}")

        def down(self):
            script.calls.append("down")
            if script.fail_down:
                raise StackError("down failed too")

        def services(self):
            return [ServiceState("hashserver", "c1", "running")]

        def find_failure(self):
            return None

        def storage_problems(self):
            return {}

        def logs(self, service=None, tail=None):
            script.calls.append("logs")
            if script.fail_logs:
                raise StackError("no logs")
            return "a log line"

    return FakeBackend


@pytest.fixture
def fake(tmp_path, monkeypatch) -> Script:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("ENVIRONMENT_OUTPUT_FILE", raising=False)
    return Script()


def spec(tmp_path, **options):
    name = options.pop("name", "s1")
    options.setdefault("database_dir", str(tmp_path / f"d-{name}"))  # one writer per database
    return build_spec(name=name, buffer_dir=str(tmp_path / "b"), environ={"HOME": str(tmp_path)}, **options)


def failing_gate(service="database"):
    from seamless_stack.health import ServiceFailed

    def gate(backend, timeout, progress):
        raise ServiceFailed(service, f"{service} failed: container exited")
    return gate


def test_up_runs_the_sequence_and_writes_record_and_environment(fake, tmp_path):
    d = fake.up(spec(tmp_path))
    assert fake.calls == ["prepare", "start"]
    assert state.load("s1") == d
    assert "SEAMLESS_DASK_SCHEDULER=tcp://here:61003" not in StackFiles.of("s1").env.read_text()
    assert "export DASK_SCHEDULER_ADDRESS=tcp://127.0.0.1:61003" in StackFiles.of("s1").env.read_text()


def test_a_failed_start_rolls_back_and_reports_the_original_error(fake, tmp_path):
    fake.fail_start = True
    with pytest.raises(StackError, match="start failed"):
        fake.up(spec(tmp_path))
    assert fake.calls == ["prepare", "start", "down"]
    assert not state.exists("s1") and not StackFiles.of("s1").env.exists()


def test_a_failed_first_up_leaves_no_credentials_an_existing_stacks_stay(fake, tmp_path, monkeypatch):
    fake.makes_credentials = True
    fake.fail_start = True
    with pytest.raises(StackError):
        fake.up(spec(tmp_path))
    assert not StackFiles.of("s1").tls.exists(), "a first up that fails leaves nothing"
    StackFiles.of("s1").tls.mkdir(parents=True)
    (StackFiles.of("s1").tls / "http.secret").write_text("kept")
    with pytest.raises(StackError):
        fake.up(spec(tmp_path))
    assert (StackFiles.of("s1").tls / "http.secret").read_text() == "kept", "the credentials clients hold stay"


def test_rollback_steps_are_guarded_and_the_original_error_wins(fake, tmp_path):
    fake.fail_down = fake.fail_logs = True
    lines = []
    with pytest.raises(StackError, match="database failed"):
        fake.up(spec(tmp_path), gate=failing_gate(), lines=lines)
    assert fake.calls == ["prepare", "start", "logs", "down"]
    assert not state.exists("s1"), "the record goes even when down fails"
    assert any("down failed too" in line for line in lines) and any("no logs" in line for line in lines)


def test_the_failing_service_log_tail_is_shown(fake, tmp_path):
    lines = []
    with pytest.raises(StackError):
        fake.up(spec(tmp_path), gate=failing_gate(), lines=lines)
    assert any("last log lines of database" in line and "a log line" in line for line in lines)


def test_ctrl_c_rolls_back_too(fake, tmp_path):
    def interrupted(backend, timeout, progress):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        fake.up(spec(tmp_path), gate=interrupted)
    assert fake.calls[-1] == "down" and not state.exists("s1")


def test_up_again_with_the_same_spec_converges(fake, tmp_path):
    fake.up(spec(tmp_path))
    fake.calls.clear()
    fake.restarted = ["database"]
    lines = []
    d = fake.up(spec(tmp_path), lines=lines)
    assert fake.calls == ["converge"] and d.ports == PORTS
    assert any("started again: database" in line for line in lines)


def test_up_again_with_another_spec_says_what_differs(fake, tmp_path):
    fake.up(spec(tmp_path))
    fake.calls.clear()
    with pytest.raises(StackError, match=r"other settings \(threads 3 -> 2; workers 1 -> 2\).*down --name s1"):
        fake.up(spec(tmp_path, workers=2, threads=2))
    assert fake.calls == [] and state.exists("s1")


def test_up_again_with_only_the_worker_count_changed_scales_live(fake, tmp_path):
    fake.up(spec(tmp_path))
    fake.calls.clear()
    with pytest.raises(StackError, match=r"other settings \(workers 1 -> 2\).*down --name s1"):
        fake.up(spec(tmp_path, workers=2))  # a backend with nothing to change live refuses as before
    assert fake.calls == [] and state.load("s1").workers == 1

    def change_live(self, changes, progress):
        fake.calls.append(f"scale {changes}")
        workers = changes["workers"]
        self.deployment = replace(self.deployment, workers=workers, settings={**self.deployment.settings, "workers": str(workers)})

    fake.backend.change_live = change_live
    fake.backend.live_settings = lambda self: frozenset({"workers"})
    lines = []
    d = fake.up(spec(tmp_path, workers=2), lines=lines)
    assert fake.calls == ["scale {'workers': 2}", "converge"] and d.workers == 2 and state.load("s1").workers == 2
    assert any("scaled live (workers 1 -> 2)" in line for line in lines), lines
    fake.calls.clear()
    with pytest.raises(StackError, match=r"other settings \(threads 3 -> 2; workers 2 -> 3\)"):
        fake.up(spec(tmp_path, workers=3, threads=2))  # not only live settings: refused, nothing scaled
    assert fake.calls == []
    fake.calls.clear()
    fake.up(spec(tmp_path, workers=2))
    assert fake.calls == ["converge"], "the record keeps the new count: the same options converge"


def test_a_record_from_before_a_setting_existed_converges_with_its_default(fake, tmp_path):
    """A stack brought up by an older seamless-stack has no memory limits in its settings: the
    same `up` converges (it had the defaults); a new value is a difference, said as such."""
    fake.up(spec(tmp_path))
    record = json.loads(StackFiles.of("s1").record.read_text())
    for key in ("memory_limit", "worker_memory_limit"):
        del record["settings"][key]
    StackFiles.of("s1").record.write_text(json.dumps(record))
    fake.calls.clear()
    fake.up(spec(tmp_path))
    assert fake.calls == ["converge"]
    with pytest.raises(StackError, match=r"other settings \(worker_memory_limit none -> 2G\)"):
        fake.up(spec(tmp_path, worker_memory_limit="2G"))


def test_memory_limits_reach_compose_in_bytes_and_bad_ones_are_refused(tmp_path):
    from seamless_stack.backends.compose import ComposeBackend
    from seamless_stack.plan import compose_plan

    class Host:
        name, uid, gid, docker_host, engine_socket = "here", 1000, 1000, None, ("/run/docker.sock", 999)

        @staticmethod
        def is_free(port, bind):
            return True

    planned = compose_plan(spec(tmp_path, worker_memory_limit="1.5G"), {"hashserver": "h", "database": "d", "scheduler": "s",
                                                                          "worker": "w"}, Host, ("/b", "/d"))
    variables = ComposeBackend(planned, env_path=tmp_path / "compose.env").compose_environment()
    assert variables["SERVICE_MEMORY"] == str(4 << 30) and variables["WORKER_MEMORY"] == str(3 << 29)
    assert variables["ENGINE_SOCKET"] == "/run/docker.sock" and variables["ENGINE_SOCKET_GID"] == "999"  # the supervisor's
    for bad, why in (("lots", "is not a memory size"), ("64M", "too small"), ("4G\n", "line break")):
        with pytest.raises(StackError, match=why):
            spec(tmp_path, memory_limit=bad)


def test_a_failed_converge_leaves_the_running_stack_alone(fake, tmp_path):
    fake.up(spec(tmp_path))
    fake.calls.clear()
    with pytest.raises(StackError):
        fake.up(spec(tmp_path), gate=failing_gate())
    assert "down" not in fake.calls and state.exists("s1")


def test_leftovers_without_a_record_are_refused_not_duplicated(fake, tmp_path):
    fake.leftover = ["seamless-s1-hashserver-1"]
    with pytest.raises(StackError, match="no state record but seamless-s1-hashserver-1 still run.*down --name s1"):
        fake.up(spec(tmp_path))
    assert fake.calls == ["prepare"] and not state.exists("s1")


def test_an_unwritable_output_file_is_refused_before_anything_starts(fake, tmp_path):
    (tmp_path / "afile").write_text("")
    for target in (tmp_path / "afile" / "out.env", tmp_path):
        s = build_spec(name="s1", environ={"HOME": str(tmp_path), "ENVIRONMENT_OUTPUT_FILE": str(target)})
        with pytest.raises(StackError, match="environment output file"):
            fake.up(s)
    assert fake.calls == []


@pytest.mark.parametrize("content, reason", [
    ("{not json", "JSONDecodeError"),
    ("{}", "TypeError"),
    ("[]", "TypeError"),
    ('{"name": "x", "method": "local", "workers": "many", "threads": 1, "bind": "b", "buffer_dir": "b", '
     '"database_dir": "d", "env_file": "e", "settings": {}, "compose": {"images": {}, "uid": 1, "gid": 1}}', "ValueError"),
])
def test_a_corrupt_record_is_one_line_about_that_stack_only(fake, tmp_path, content, reason):
    fake.up(spec(tmp_path, name="good"))
    folder = StackFiles.of("bad").folder
    (folder / "bad.json").write_text(content)
    with pytest.raises(state.CorruptRecord, match=f"stack 'bad'.*{reason}.*down --name bad"):
        state.load("bad")
    assert [d.name for d in state.load_all()] == ["good"]
    fake.up(spec(tmp_path, name="other"))  # another stack still comes up
    assert state.load("other").name == "other"


def test_records_round_trip(fake, tmp_path):
    d = fake.up(spec(tmp_path))
    assert Deployment.from_dict(json.loads(json.dumps(d.to_dict()))) == d


def test_a_second_stack_on_a_held_database_directory_is_refused(fake, tmp_path):
    fake.up(spec(tmp_path, name="first", database_dir=str(tmp_path / "db")))
    with pytest.raises(StackError, match=r"database directory .*/db is held by stack 'first'.*own --database-dir"):
        fake.up(spec(tmp_path, name="second", database_dir=str(tmp_path / "db") + "/"))
    assert not state.exists("second"), "nothing of the refused stack is left"
    fake.up(spec(tmp_path, name="second"))  # its own database: fine, the buffer store is shared
    api.down("first", lambda line: None, backends={"local": fake.backend})
    fake.up(spec(tmp_path, name="third", database_dir=str(tmp_path / "db")))  # free again after `down`


# -- down without a record: each backend removes what it finds ---------------------------------
def test_down_without_a_record_asks_each_backend_once(fake, tmp_path):
    class OtherFake(fake.backend):
        """A second backend class: `down` without a record asks it as well."""

    backends = {"local": fake.backend, "remote": fake.backend, "slurm": OtherFake}
    with pytest.raises(StackError, match="no stack named 's1'"):
        api.down("s1", lambda line: None, backends=backends)
    assert fake.calls == ["remove leftovers of s1 (FakeBackend)", "remove leftovers of s1 (OtherFake)"]
    fake.calls.clear()
    fake.leftover = ["seamless-s1-hashserver-1"]
    api.down("s1", lambda line: None, backends=backends)  # something was removed: not an error
    assert len(fake.calls) == 2, "every backend looks, also after one found something"


def test_down_of_an_unreadable_record_removes_it_and_the_leftovers(fake, tmp_path):
    fake.up(spec(tmp_path))
    StackFiles.of("s1").record.write_text("{not json")
    fake.calls.clear()
    api.down("s1", lambda line: None, backends={"local": fake.backend})
    assert fake.calls == ["remove leftovers of s1 (FakeBackend)"] and not StackFiles.of("s1").record.exists()


def test_compose_leftovers_are_found_by_their_label(monkeypatch):
    from seamless_stack.backends import ComposeBackend, compose

    asked = []
    monkeypatch.setattr(compose, "remove_project", lambda name, progress: asked.append(name) or True)
    assert ComposeBackend.remove_leftovers("s1", lambda line: None) and asked == ["s1"]


def test_slurm_leftovers_are_cancelled_by_job_name_on_a_login_node(monkeypatch):
    from seamless_stack.backends import SlurmBackend, slurm
    from seamless_stack.slurm.commands import Job

    monkeypatch.setattr(slurm.shutil, "which", lambda command: None)
    assert SlurmBackend.remove_leftovers("s1", lambda line: None) is False, "no Slurm here: nothing to find"
    monkeypatch.setattr(slurm.shutil, "which", lambda command: f"/usr/bin/{command}")
    cancelled, lines = [], []
    monkeypatch.setattr(slurm.cluster, "jobs", lambda shell, names: [Job("7", "seamless-s1-services", "RUNNING", "n1", "")])
    monkeypatch.setattr(slurm.cluster, "cancel", lambda shell, names: cancelled.append(list(names)) or [])
    assert SlurmBackend.remove_leftovers("s1", lines.append)
    assert cancelled == [["seamless-s1-services", "seamless-s1-worker"]] and "7" in lines[0]


def test_slurm_leftovers_that_cannot_be_listed_are_none(monkeypatch):
    from seamless_stack.backends import SlurmBackend, slurm

    def broken(shell, names):
        raise StackError("squeue failed")
    monkeypatch.setattr(slurm.shutil, "which", lambda command: f"/usr/bin/{command}")
    monkeypatch.setattr(slurm.cluster, "jobs", broken)
    assert SlurmBackend.remove_leftovers("s1", lambda line: None) is False


# -- status: one row per service, ports by role ------------------------------------------------
def test_status_rows_show_each_roles_ports_and_what_is_wrong(fake, tmp_path, monkeypatch):
    fake.up(spec(tmp_path))
    monkeypatch.setattr(fake.backend, "services", lambda self: [
        ServiceState("scheduler", "c3", "running"), ServiceState("worker", "c4", "exited")])
    report = api.status("s1", backends={"local": fake.backend})
    assert [(row.service, row.port) for row in report.services] == [("scheduler", "61003 (dashboard 61004)"), ("worker", "-")]
    assert not report.healthy and "worker exited" in report.problems
    assert report.projects == []


def test_slurm_bounds_change_live_through_the_bounds_file_and_a_bad_range_is_one_line(tmp_path):
    """`scale --min-jobs/--max-jobs` on an adaptive Slurm stack: one file the scheduler reads,
    written whole (a temporary file moved into place); the record keeps the new bounds."""
    from seamless_stack.backends.slurm import SlurmBackend
    from seamless_stack.layout import ClusterFiles
    from seamless_stack.plan import SlurmRecord

    stack_dir = tmp_path / "s1.slurm"
    d = Deployment(name="s1", method="slurm", workers=0, threads=1, bind="0.0.0.0", buffer_dir="/b", database_dir="/d",
                   env_file=str(tmp_path / "s1.env"), settings={"slurm.min_jobs": "0", "slurm.max_jobs": "4"},
                   placement=Placement("node1", PORTS),
                   slurm=SlurmRecord(stack_dir=str(stack_dir), sifs={}, mode="adaptive", login=None, job_id="7", node="node1"))
    backend, lines = SlurmBackend(d), []
    assert backend.live_settings() == {"slurm.min_jobs", "slurm.max_jobs"}
    backend.scale({"slurm.min_jobs": 2}, lines.append)
    assert json.loads(Path(ClusterFiles(str(stack_dir)).bounds).read_text()) == {"minimum_jobs": 2, "maximum_jobs": 4}
    assert backend.deployment.settings["slurm.min_jobs"] == "2" and backend.deployment.workers == 2
    assert lines == ["stack 's1': adaptive worker jobs 2-4; the scheduler takes them up within seconds"]
    with pytest.raises(StackError, match=r"--min-jobs 2 / --max-jobs 1 make no range"):
        backend.scale({"slurm.max_jobs": 1}, lines.append)
    with pytest.raises(StackError, match=r"cannot change workers while it runs"):
        backend.scale({"workers": 3}, lines.append)
    assert list(Path(ClusterFiles(str(stack_dir)).control).iterdir()) == [Path(ClusterFiles(str(stack_dir)).bounds)]
    single = SlurmBackend(replace(d, slurm=replace(d.slurm, mode="local")))
    assert single.live_settings() == frozenset()

"""Seamless' own configuration route (seamless_config.py) and the version check (doctor.py):
keys, file contents per method and form, modes, the project record, and the CLI's errors.

The keys are checked against the real seamless-config (`seamless-service-resolve`) in
tests/integration/test_seamless_config.py; here against the template as DESIGN.md §6 records it.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time

import pytest

from seamless_stack import cli, doctor, seamless_config as sc, state
from seamless_stack.errors import StackError
from seamless_stack.layout import StackFiles
from seamless_stack.plan import ComposeRecord, Deployment, Placement, SlurmRecord

PORTS = {"hashserver": 61001, "database": 61002, "scheduler": 61003, "dashboard": 61004}
LOCAL = {"hashserver": 5577, "database": 5522, "scheduler": 8786, "dashboard": 8787}


def deployment(name="s1", method="local", access="direct", bind="127.0.0.1", credentials_dir=None, host="vm") -> Deployment:
    common = dict(name=name, method=method, workers=1, threads=3, bind=bind, buffer_dir="/b", database_dir="/d",
                  env_file=f"/tmp/{name}.env", settings={}, access=access, credentials_dir=credentials_dir,
                  ssh_destination="u@login" if access == "ssh" else None, placement=Placement(host, dict(PORTS)))
    if method == "slurm":
        return Deployment(**common, slurm=SlurmRecord(stack_dir="/s", sifs={}, mode="adaptive", login="u@login",
                                                      job_id="7", node="node1"))
    return Deployment(**common, compose=ComposeRecord(images={}, uid=1000, gid=1000))


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("REMOTE_HTTP_LAUNCHER_DIR", raising=False)
    monkeypatch.delenv("SEAMLESS_STACK_NAME", raising=False)
    monkeypatch.setattr(sc, "check_reachable", lambda d, record: [])  # no HTTP to ports others may use
    return tmp_path


# -- keys and names ------------------------------------------------------------------------
def test_keys_follow_the_seamless_config_template():
    demo, gpu = sc.Project("demo"), sc.Project("demo", "gpu")
    assert sc.launcher_key("hashserver", "mystack", demo) == "hashserver-mystack-rw-demo"
    assert sc.launcher_key("database", "mystack", gpu) == "database-mystack-rw-demo--STAGE-gpu"
    assert sc.launcher_key("daskserver", "mystack", gpu) == "daskserver-mystack-rw-demo--STAGE-gpu"
    assert sc.cluster_name("cfg1") == "seamless-stack-cfg1"


@pytest.mark.parametrize("text", ["", "a--b", "a/b", "STAGE-x", "a b", "a:b:c"])
def test_bad_project_names_are_refused(text):
    with pytest.raises(StackError, match="invalid Seamless"):
        sc.Project.parse(text)


def test_project_parse_takes_an_optional_stage():
    assert sc.Project.parse("demo") == sc.Project("demo")
    assert sc.Project.parse("demo:gpu") == sc.Project("demo", "gpu")
    with pytest.raises(StackError, match="'--'"):
        sc.cluster_name("a--b")


def test_ssh_hostnames_never_resolve_and_are_valid_host_names():
    for form in ("ready", "tunnel", "down"):
        for name in ("s1", "a_b", "x-", "0" * 40):
            host = sc.ssh_hostname(name, form)
            assert host.endswith(".invalid") and sc._valid_host(host), host
    assert sc.ssh_hostname("cfg", "down") == "cfg.is-down.run-seamless-stack-up.invalid"


# -- file contents -------------------------------------------------------------------------
def test_cluster_definition_has_every_field_seamless_config_asserts():
    d = deployment()
    definition = sc.cluster_definition("s1", "ready", method="local", threads=3, frontends=sc.worker_frontends(d))
    cluster = definition["seamless-stack-s1"]
    assert cluster["type"] == "local" and cluster["tunnel"] is False and cluster["default_queue"] == "default"
    assert set(cluster["queues"]["default"]) == {"conda", "walltime", "memory", "cores", "unknown_task_duration",
                                                "target_duration", "maximum_jobs"}
    assert cluster["queues"]["default"]["cores"] == 3 and cluster["queues"]["default"]["conda"] == ""
    fronts = {next(k for k in f if k in sc.SERVICES): f for f in cluster["frontends"]}
    # the workers' view: Compose service names and the ports inside the network
    assert fronts["hashserver"]["hostname"] == "hashserver" and fronts["database"]["hostname"] == "database"
    assert fronts["daskserver"]["hostname"] == "scheduler"
    assert fronts["daskserver"]["daskserver"] == {"network_interface": "0.0.0.0", "port_start": 61003, "port_end": 61003}
    assert all(f["ssh_hostname"] == "s1.managed-by-seamless-stack.invalid" for f in cluster["frontends"])
    assert "local_cluster" not in definition  # it would drop the frontend host names (workers get 127.0.0.1)


def test_down_and_tunnel_forms_say_what_to_run():
    down = sc.cluster_definition("s1", "down", method="remote")["seamless-stack-s1"]
    assert "seamless-stack up remote --name s1" in down["default_queue"]
    assert down["default_queue"] not in down["queues"]  # seamless-config: "Cluster ... has no queue '<this>'"
    assert all(f["ssh_hostname"] == "s1.is-down.run-seamless-stack-up.invalid" for f in down["frontends"])
    tunnel = sc.cluster_definition("s1", "tunnel", method="slurm")["seamless-stack-s1"]
    assert "seamless-stack tunnel --name s1" in tunnel["default_queue"] and tunnel["type"] == "slurm"


@pytest.mark.parametrize("form", ["ready", "tunnel", "down"])
def test_yaml_writer_round_trips(form, tmp_path):
    """PyYAML (what seamless-config reads with) is no dependency of ours: the client venv has it."""
    frontends = sc.worker_frontends(deployment()) if form == "ready" else None
    definition = sc.cluster_definition("s1", form, method="local", threads=2, frontends=frontends)
    text = sc.cluster_yaml("s1", form, [sc.Project("demo")], method="local", threads=2, frontends=frontends)
    try:
        import yaml
        parsed = yaml.safe_load(text)
    except ImportError:
        venv = os.environ.get("SEAMLESS_STACK_CLIENT_VENV")
        if not venv:
            pytest.skip("no PyYAML here and no SEAMLESS_STACK_CLIENT_VENV")
        (tmp_path / "c.yaml").write_text(text)
        out = subprocess.run([f"{venv}/bin/python", "-c", "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
                              str(tmp_path / "c.yaml")], capture_output=True, text=True, check=True)
        parsed = json.loads(out.stdout)
    assert parsed == definition


def test_client_files_direct_local():
    files = sc.client_files(deployment(), [sc.Project("demo")])
    assert set(files) == {"hashserver-seamless-stack-s1-rw-demo", "database-seamless-stack-s1-rw-demo",
                          "daskserver-seamless-stack-s1-rw-demo", "pure-daskserver-seamless-stack-s1-default"}
    hs = files["hashserver-seamless-stack-s1-rw-demo"]
    assert (hs["hostname"], hs["port"]) == ("127.0.0.1", 61001) and "tunneled-port" not in hs
    ds = files["daskserver-seamless-stack-s1-rw-demo"]
    assert (ds["port"], ds["dashboard_port"]) == (61003, 61004)
    assert ds["meta"]["managed_by"] == "seamless-stack" and ds["meta"]["stack"] == "s1"
    pure = files["pure-daskserver-seamless-stack-s1-default"]  # pure-Dask stages: seamless-config's own key
    assert (pure["hostname"], pure["port"], pure["dashboard_port"]) == ("127.0.0.1", 61003, 61004)
    assert pure["meta"]["service"] == "pure-daskserver" and pure["meta"]["queue"] == sc.QUEUE


def test_client_files_through_a_tunnel_keep_the_workers_ports():
    d = deployment(method="remote", access="ssh")
    files = sc.client_files(d, [sc.Project("demo", "gpu")], local_ports=LOCAL)
    hs = files["hashserver-seamless-stack-s1-rw-demo--STAGE-gpu"]
    assert (hs["hostname"], hs["port"], hs["tunneled-port"]) == ("127.0.0.1", 5577, 61001)
    ds = files["daskserver-seamless-stack-s1-rw-demo--STAGE-gpu"]
    assert (ds["port"], ds["tunneled-port"], ds["dashboard_port"], ds["tunneled-dashboard_port"]) == (8786, 61003, 8787, 61004)


def test_slurm_frontends_are_the_services_node():
    d = deployment(method="slurm", bind="0.0.0.0", host="10.1.2.3")
    assert sc.worker_frontends(d) == {"hashserver": ("10.1.2.3", 61001), "database": ("10.1.2.3", 61002),
                                      "daskserver": ("10.1.2.3", 61003)}
    files = sc.client_files(d, [sc.Project("demo")])
    assert files["hashserver-seamless-stack-s1-rw-demo"]["hostname"] == "10.1.2.3"  # direct: the node, by address


def test_project_lines():
    text = sc.project_lines("s1", sc.Project("demo", "gpu"))
    assert "- cluster: seamless-stack-s1" in text and "- project: demo" in text
    assert "- execution: remote" in text and "- remote: daskserver" in text and "set_stage('gpu')" in text


# -- the files on disk and the record --------------------------------------------------------
def test_the_reachability_check_names_what_does_not_answer():
    import socket

    with socket.socket() as s:  # a port that was just free: nothing answers there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = deployment()
    d = d.placed(Placement("vm", {k: port for k in PORTS}))
    assert sc.check_reachable(d, sc.Record("s1")) == ["hashserver does not answer", "database does not answer",
                                                     "scheduler does not answer"]


def test_connect_writes_owner_only_files_and_down_leaves_an_explaining_cluster_file(home, monkeypatch):
    monkeypatch.setattr(sc, "check_reachable", lambda d, record: ["hashserver does not answer"])
    state.save(deployment())
    lines = []
    assert sc.connect("s1", [sc.Project("demo"), sc.Project("demo", "gpu")], lines.append) == "ready"
    client_dir = home / ".remote-http-launcher" / "client"
    files = sorted(p.name for p in client_dir.iterdir())
    assert len(files) == 7 and all(stat.S_IMODE((client_dir / f).stat().st_mode) == 0o600 for f in files)
    assert any("WARNING" in line and "not healthy" in line for line in lines), "nothing answers on the fake ports"
    cluster_file = home / ".seamless" / "clusters" / "seamless-stack-s1.yaml"
    assert "ready" in cluster_file.read_text() and not (home / ".seamless" / "clusters.yaml").exists()
    assert state.known_names() == ["s1"], "the project record is no state record"

    state.forget("s1")
    sc.stack_down("s1", "local")
    assert list(client_dir.iterdir()) == [], "no client file points at ports another stack may get"
    assert "is down: start it with `seamless-stack up local --name s1`" in cluster_file.read_text()
    assert sc.connected("s1") == [sc.Project("demo"), sc.Project("demo", "gpu")]

    state.save(deployment())  # up again
    sc.refresh(deployment())
    assert len(list(client_dir.iterdir())) == 7

    sc.disconnect("s1", [sc.Project("demo", "gpu")])
    assert len(list(client_dir.iterdir())) == 4 and cluster_file.exists(), "the pure-Dask file stays with demo"
    sc.disconnect("s1", None)
    assert list(client_dir.iterdir()) == [] and not cluster_file.exists()
    assert not StackFiles.of("s1").projects.exists()


def test_ssh_stacks_get_client_files_only_while_the_tunnel_runs(home):
    d = deployment(method="remote", access="ssh")
    state.save(d)
    assert sc.connect("s1", [sc.Project("demo")]) == "tunnel"
    client_dir = home / ".remote-http-launcher" / "client"
    assert not client_dir.exists() or list(client_dir.iterdir()) == []
    sc.tunnel_opened(d, LOCAL)
    content = json.loads((client_dir / "hashserver-seamless-stack-s1-rw-demo.json").read_text())
    assert (content["port"], content["tunneled-port"]) == (5577, 61001)
    assert sc.status_lines(d) == ["seamless projects: demo (cluster seamless-stack-s1): connected"]
    sc.tunnel_closed(d)
    assert list(client_dir.iterdir()) == []
    assert "waiting for their tunnel" in sc.status_lines(d)[0] and "--name s1" in sc.status_lines(d)[0]


def test_a_killed_tunnel_is_noticed(home):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = sc.Record("s1", "remote", [sc.Project("demo")], {"pid": dead.pid, "ports": LOCAL})
    assert record.tunnel_ports() is None
    assert sc.Record("s1", tunnel={"pid": os.getpid(), "ports": LOCAL}).tunnel_ports() == LOCAL


def test_connect_refuses_what_this_route_cannot_serve(home):
    with pytest.raises(StackError, match="up local --name s1 --project demo"):
        sc.connect("s1", [sc.Project("demo")])
    state.save(deployment())
    with pytest.raises(StackError, match="not connected"):
        sc.disconnect("s1", [sc.Project("other")])


def test_a_corrupt_project_record_is_one_line(home):
    StackFiles.of("s1").projects.parent.mkdir(parents=True)
    StackFiles.of("s1").projects.write_text("{nope")
    with pytest.raises(StackError, match="project record of stack 's1'"):
        sc.load("s1")
    sc.stack_down("s1", "local", lambda line: None)  # a warning, never an exception after the stack went down


# -- the version check ---------------------------------------------------------------------
def test_client_requirements_are_the_lock():
    versions = doctor.stack_versions()
    assert versions["cloudpickle"] and versions["seamless-transformer"] and versions["distributed"] == versions["dask"]


def test_compare_finds_mismatches_and_notes():
    stack = {"dask": "1", "distributed": "1", "cloudpickle": "3.1.2", "msgpack": "1", "tornado": "6", "toolz": "1",
             "seamless-dask": "0.4", "remote-http-launcher": "0.4.5", "numpy": "2"}
    same = {"python": "3.11.2", "packages": dict(stack)}
    assert doctor.compare(same, stack, "3.11.2").mismatches == []
    patch = doctor.compare({**same, "python": "3.11.7"}, stack, "3.11.2")
    assert patch.mismatches == [] and patch.notes[0].package == "python"
    other = doctor.compare({"python": "3.12.1", "packages": {**stack, "cloudpickle": "3.1.3", "seamless-dask": None,
                                                             "pandas": "2"}}, stack, "3.11.2")
    assert {r.package: r.verdict for r in other.mismatches} == {"python": "MISMATCH", "cloudpickle": "MISMATCH",
                                                                "seamless-dask": "MISSING"}
    assert [r.package for r in other.notes] == ["pandas"]
    advice = "\n".join(doctor.advice(other))
    assert "cloudpickle==3.1.2" in advice and "client-requirements" in advice and "Python 3.11" in advice


def test_doctor_runs_a_real_interpreter(tmp_path, capsys):
    fake = tmp_path / "site"  # a different cloudpickle, as importlib.metadata sees it
    (fake / "cloudpickle-0.0.1.dist-info").mkdir(parents=True)
    (fake / "cloudpickle-0.0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: cloudpickle\nVersion: 0.0.1\n")
    os.environ["PYTHONPATH"] = str(fake)
    try:
        report = doctor.compare(doctor.probe(sys.executable))
    finally:
        del os.environ["PYTHONPATH"]
    assert any(r.package == "cloudpickle" and r.client == "0.0.1" for r in report.mismatches)


def test_doctor_without_an_interpreter_is_one_line(capsys):
    assert cli.main(["doctor", "--python", "/nonexistent/python"]) == 2
    assert "no Python interpreter" in capsys.readouterr().err


# -- the CLI ---------------------------------------------------------------------------------
def test_cli_connect_and_status_say_how_to_fix_it(home, capsys, monkeypatch):
    monkeypatch.setattr(doctor, "version_warning", lambda python: None)
    assert cli.main(["connect", "--name", "s1", "--project", "demo"]) == 2
    assert "seamless-stack up local --name s1 --project demo" in capsys.readouterr().err
    assert cli.main(["connect", "--name", "s1", "--project", "a--b"]) == 2
    state.save(deployment())
    assert cli.main(["connect", "--name", "s1", "--project", "demo"]) == 0
    assert "- cluster: seamless-stack-s1" in capsys.readouterr().out
    state.forget("s1")
    sc.stack_down("s1", "local")
    assert cli.main(["status", "--name", "s1"]) == 2
    err = capsys.readouterr().err
    assert "stack 's1' is down" in err and "seamless-stack up local --name s1" in err and "demo" in err


def test_up_checks_projects_before_anything_starts(home, monkeypatch, capsys):
    from seamless_stack import api

    started = []
    monkeypatch.setattr(api, "up", lambda spec, progress: started.append(spec))
    assert cli.main(["up", "local", "--name", "s1", "--project", "bad--name"]) == 2
    assert cli.main(["up", "local", "--name", "a--b", "--project", "demo"]) == 2
    assert started == []


def test_client_requirements_command(capsys):
    assert cli.main(["client-requirements"]) == 0
    assert capsys.readouterr().out == doctor.lock_text()


def test_connect_says_what_the_route_protects():
    assert "every user and process of this machine" in sc.security_note(deployment())
    secured = sc.security_note(deployment(method="slurm", access="ssh", credentials_dir="/tls"))
    assert "admits only your processes" in secured and "seamless-stack tunnel" in secured


def test_a_secured_stack_is_used_through_the_tunnel_only(home):
    """Its files exist while `tunnel` runs (its forwarder's ports), for every access."""
    d = deployment(credentials_dir="/tls")
    state.save(d)
    assert sc.connect("s1", [sc.Project("demo")]) == "tunnel"
    client_dir = home / ".remote-http-launcher" / "client"
    assert not client_dir.exists() or list(client_dir.iterdir()) == []
    assert "waiting for their tunnel" in sc.status_lines(d)[0] and "--name s1" in sc.status_lines(d)[0]
    sc.tunnel_opened(d, LOCAL)
    content = json.loads((client_dir / "hashserver-seamless-stack-s1-rw-demo.json").read_text())
    assert (content["hostname"], content["port"]) == ("127.0.0.1", LOCAL["hashserver"])
    sc.tunnel_closed(d)
    assert list(client_dir.iterdir()) == []


# -- the hooks' one step ---------------------------------------------------------------------
def test_updating_saves_the_change_rewrites_the_files_and_reports(home):
    from seamless_stack.seamless_config.hooks import updating

    d = deployment()
    state.save(d)
    sc.connect("s1", [sc.Project("demo")])
    lines = []
    with updating("s1", None, lines.append, "{projects}: {form} ({method}, {stack})") as record:
        assert record.projects == [sc.Project("demo")]
        record.method = "remote"
    assert sc.load("s1").method == "remote"
    assert lines == ["demo: stack is down: `seamless-stack up ... --name s1` starts it (remote, s1)"]
    assert list((home / ".remote-http-launcher" / "client").iterdir()) == [], "down: no client files"
    assert "seamless-stack up remote --name s1" in (home / ".seamless" / "clusters" / "seamless-stack-s1.yaml").read_text()


def test_updating_without_projects_says_nothing(home):
    from seamless_stack.seamless_config.hooks import updating

    lines = []
    with updating("s1", deployment(), lines.append, "{projects}") as record:
        record.tunnel = {"pid": os.getpid(), "ports": LOCAL}
    assert lines == [] and sc.load("s1").tunnel_ports() == LOCAL


def test_updating_an_unreadable_record_changes_nothing_and_warns(home):
    from seamless_stack.seamless_config.hooks import updating

    path = StackFiles.of("s1").projects
    path.parent.mkdir(parents=True)
    path.write_text("{nope")
    lines = []
    with updating("s1", deployment(), lines.append, "{projects}") as record:
        assert record == sc.Record("s1"), "the change goes to a blank record"
        record.projects = [sc.Project("demo")]
    assert path.read_text() == "{nope" and not (home / ".seamless" / "clusters").exists()
    assert len(lines) == 1 and lines[0].startswith("WARNING") and "project record of stack 's1'" in lines[0]


def test_updating_turns_a_failing_change_into_a_warning(home):
    from seamless_stack.seamless_config.hooks import updating

    lines = []
    with updating("s1", deployment(), lines.append) as record:
        record.method = "slurm"
        raise ValueError("boom")
    assert lines == ["WARNING: could not update the files of connected Seamless projects (boom)"]
    assert not StackFiles.of("s1").projects.exists(), "nothing is saved"


# -- the background tunnel ---------------------------------------------------------------------
def test_a_background_tunnel_that_cannot_start_is_one_line_naming_its_log(home):
    """A secured stack whose credentials folder is gone: the tunnel `connect` starts ends at once;
    the error names the log and its last line, and no process is left."""
    from seamless_stack import background

    state.save(deployment(credentials_dir=str(home / "gone.tls")))
    sc.connect("s1", [sc.Project("demo")])
    assert background.wanted(state.load("s1")) and background.running("s1") is None
    with pytest.raises(StackError, match=r"background tunnel of stack 's1' did not start \(.+\).*s1\.tunnel\.log"):
        background.ensure("s1", lambda line: None)
    log = StackFiles.of("s1").tunnel_log
    assert os.stat(log).st_mode & 0o777 == 0o600 and "gone.tls" in log.read_text()
    assert background.running("s1") is None
    background.stop("s1", lambda line: None)  # nothing to stop: no error


def test_only_a_tunnel_started_in_the_background_is_stopped_by_down(home):
    """A user's foreground tunnel (the terminal's session) is not ours to stop."""
    from seamless_stack import background

    command = [sys.executable, "-c", "import time; time.sleep(30)", "tunnel", "--name", "s1"]
    foreground = subprocess.Popen(command)  # the same session as this test's
    ours = subprocess.Popen(command, start_new_session=True)
    try:
        for process in (foreground, ours):  # until they run the command (exec'd)
            while b"tunnel" not in open(f"/proc/{process.pid}/cmdline", "rb").read():
                time.sleep(0.01)
        assert not background._is_background_tunnel(foreground.pid, "s1")
        assert background._is_background_tunnel(ours.pid, "s1") and not background._is_background_tunnel(ours.pid, "s2")
    finally:
        foreground.kill(), ours.kill(), foreground.wait(), ours.wait()

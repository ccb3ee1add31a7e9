"""The CLI: options map onto the spec (defaults from the spec itself), and every usage or
input error is one line, exit 2, with no traceback."""

import pytest

from seamless_stack import api, cli
from seamless_stack.spec import SlurmOptions, StackSpec


@pytest.fixture
def captured(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("RANDOM_PORT_START", "RANDOM_PORT_END", "HASHSERVER_BUFFER_DIR", "DATABASE_DIR", "ENVIRONMENT_OUTPUT_FILE", "SEAMLESS_STACK_NAME"):
        monkeypatch.delenv(var, raising=False)
    specs = []

    def fake_up(spec, progress):
        specs.append(spec)
        raise SystemExit(0)

    monkeypatch.setattr(api, "up", fake_up)
    return specs


def test_defaults_come_from_the_spec(captured):
    with pytest.raises(SystemExit):
        cli.main(["up", "local"])
    spec = captured[0]
    defaults = StackSpec()
    assert (spec.workers, spec.threads, spec.timeout, spec.bind, spec.name) == \
        (defaults.workers, defaults.threads, defaults.timeout, defaults.bind, defaults.name)


def test_remote_access_and_bind_default_by_method(captured):
    for argv, access, bind in ((["up", "remote", "--host", "a@b"], "ssh", "127.0.0.1"),
                               (["up", "remote", "--host", "a@b", "--direct"], "direct", "0.0.0.0"),
                               (["up", "slurm"], "direct", "0.0.0.0"),
                               (["up", "slurm", "--login", "u@login"], "ssh", "0.0.0.0")):
        with pytest.raises(SystemExit):
            cli.main(argv)
        assert (captured[-1].access, captured[-1].bind) == (access, bind), argv


def test_slurm_options_map_one_to_one(captured):
    with pytest.raises(SystemExit):
        cli.main(["up", "slurm", "--partition", "main", "--max-jobs", "7", "--job-extra=--gres=gpu:1", "--threads", "2"])
    options = captured[0].slurm
    assert options.partition == "main" and options.max_jobs == 7 and options.job_extra == ("--gres=gpu:1",)
    assert options.time == SlurmOptions().time and captured[0].threads == 2


@pytest.mark.parametrize("argv, expected", [
    ([], "the following arguments are required"),
    (["up"], "the following arguments are required"),
    (["up", "nowhere"], "invalid choice"),
    (["up", "local", "--workers", "many"], "invalid int value"),
    (["up", "local", "--workers", "100000"], "--workers must be between 1 and 64"),
    (["up", "local", "--threads", "100000"], "--threads must be between 1 and 64"),
    (["up", "local", "--scheduler-port", "0"], "out of range"),
    (["up", "local", "--bind", "::1"], "IPv6"),
    (["up", "slurm", "--max-jobs", "100000"], "--max-jobs must be between 1 and 256"),
    (["up", "slurm", "--local-workers", "-2"], "--local-workers must be between 0 and 64"),
    (["up", "slurm", "--job-extra", "--x\n#SBATCH --y"], "line break"),
    (["logs", "--tail", "-3"], "--tail -3 is negative"),
    (["restart", "nosuch"], "invalid choice"),
    (["scale"], "scale needs a new size: give --workers (Compose stacks) or --min-jobs/--max-jobs (Slurm stacks)"),
    (["scale", "--workers", "0"], "--workers must be between 1 and 64"),
    (["up", "local", "--nonsense"], "unrecognized arguments"),
])
def test_bad_input_is_one_line(captured, capsys, argv, expected):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("seamless-stack: error: ") and expected in err[0], err
    assert captured == []


def test_images_and_doctor_go_through_the_facade(monkeypatch, capsys):
    """The CLI prints what the facade returns: one tab-separated line per image or SIF."""
    from seamless_stack import images_api

    monkeypatch.setattr(images_api, "listing", lambda: [("hashserver", "seamless-stack/hashserver:abc", "90 MB")])
    monkeypatch.setattr(images_api, "make_base", lambda force, progress: "seamless-stack/base:bookworm")
    monkeypatch.setattr(images_api, "sifs", lambda out, login, requirements, registry, progress: {"worker": f"{out}/worker.sif"})
    assert cli.main(["images", "list"]) == 0 and capsys.readouterr().out == "hashserver\tseamless-stack/hashserver:abc\t90 MB\n"
    assert cli.main(["images", "base"]) == 0 and capsys.readouterr().out == "seamless-stack/base:bookworm\n"
    assert cli.main(["images", "sif", "--out", "/sifs"]) == 0 and capsys.readouterr().out == "worker\t/sifs/worker.sif\n"
    for matches, code in ((True, 0), (False, 1)):
        monkeypatch.setattr(api, "doctor", lambda python, name: (f"the report {name}\n", matches))
        assert cli.main(["doctor"]) == code and capsys.readouterr().out == "the report None\n"
        assert cli.main(["doctor", "--name", "x"]) == code and capsys.readouterr().out == "the report x\n"


def test_doctor_says_local_when_the_test_transformation_computed_on_the_clients_machine():
    from seamless_stack.doctor import where_verdict
    line, ok = where_verdict({"computed": "laptop", "client": "laptop"}, "s")
    assert not ok and line.startswith("LOCAL: the client computed on this machine (laptop), not on stack 's'")
    line, ok = where_verdict({"computed": "1a2b3c4d5e6f", "client": "laptop"}, "s")
    assert ok and line == "ok: a transformation computed on stack 's' (on 1a2b3c4d5e6f)\n"

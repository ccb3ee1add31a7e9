from pathlib import Path

import pytest

from seamless_stack.errors import StackError
from seamless_stack.spec import DEFAULT_PORT_RANGE, build_spec


def spec(environ=None, **options):
    return build_spec(name=options.pop("name", "s1"), environ={"HOME": "/home/u", **(environ or {})}, **options)


def test_defaults():
    s = spec()
    assert s.port_range == DEFAULT_PORT_RANGE and s.bind == "127.0.0.1"
    assert s.buffer_dir == "/home/u/.seamless/buffers"
    assert s.database_dir == "/home/u/.seamless/database-s1", "one database per stack: one SQLite writer"
    assert spec(name="default").database_dir == "/home/u/.seamless/database", "the classic place for the default stack"
    assert s.throttle == 3, "Seamless' own transformation throttle"
    assert s.env_file is None and s.project == "seamless-s1"


def test_environment_then_options_win():
    environ = {"RANDOM_PORT_START": "7000", "RANDOM_PORT_END": "7100", "HASHSERVER_BUFFER_DIR": "/data/buf",
               "DATABASE_DIR": "~/db", "ENVIRONMENT_OUTPUT_FILE": "/tmp/out.env"}
    s = spec(environ)
    assert s.port_range == (7000, 7100)
    assert s.buffer_dir == "/data/buf"
    assert s.database_dir == "/home/u/db"
    assert s.env_file == Path("/tmp/out.env")
    s = spec(environ, port_range="8000-8010", buffer_dir="/x/y")
    assert s.port_range == (8000, 8010) and s.buffer_dir == "/x/y"


def test_relative_directories_are_resolved():
    s = spec(buffer_dir="rel/buffers")
    assert s.buffer_dir == str((Path.cwd() / "rel/buffers").resolve())


def test_remote_paths_stay_for_the_remote_to_resolve():
    s = spec({"HASHSERVER_BUFFER_DIR": "/local/only"}, method="remote", remote="alice@big:2222", access="ssh")
    assert s.remote.user == "alice" and s.remote.host == "big" and s.remote.port == 2222
    assert s.buffer_dir == "~/.seamless/buffers" and s.database_dir == "~/.seamless/database-s1"
    assert s.remote.docker_host == "ssh://alice@big:2222"


@pytest.mark.parametrize("host", ["", "a@b@c", "host:99999", "bad host", "x:"])
def test_invalid_remote_host(host):
    with pytest.raises(StackError, match="invalid remote host"):
        spec(method="remote", remote=host)


def test_ssh_access_refuses_a_public_bind():
    with pytest.raises(StackError, match="--ssh publishes on the remote's 127.0.0.1 only"):
        spec(method="remote", remote="big", access="ssh", bind="0.0.0.0")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"port_range": "1-2-3"}, "invalid port range"),
        ({"port_range": "9000-8000"}, "is empty"),
        ({"port_range": "80-90"}, "out of range"),
        ({"scheduler_port": "x"}, "is not a number"),
        ({"workers": 0}, "--workers must be between 1 and 64"),
        ({"threads": 0}, "--threads must be between 1 and 64"),
        ({"bind": "localhost"}, "is not an IP address"),
        ({"name": "UPPER"}, "invalid stack name"),
        ({"name": "-dash"}, "invalid stack name"),
    ],
)
def test_invalid_input(options, message):
    with pytest.raises(StackError, match=message):
        spec(**options)


def test_invalid_environment_ports():
    with pytest.raises(StackError, match="RANDOM_PORT_START/RANDOM_PORT_END start 'abc' is not a number"):
        spec({"RANDOM_PORT_START": "abc"})


@pytest.mark.parametrize("options", [
    dict(method="local", bind="0.0.0.0"), dict(method="remote", remote="u@h"), dict(method="slurm"),
])
def test_insecure_is_only_for_a_local_stack_on_loopback(options):
    with pytest.raises(StackError, match="--insecure is only for a local stack published on 127.0.0.1"):
        build_spec(insecure=True, environ={"HOME": "/home/u"}, **options)


def test_insecure_stacks_warn_and_have_nothing_to_rotate():
    spec = build_spec(insecure=True, environ={"HOME": "/home/u"})
    assert spec.warnings() and "INSECURE" in spec.warnings()[0]
    assert build_spec(environ={"HOME": "/home/u"}).warnings() == []
    assert build_spec(method="remote", remote="u@h", access="direct", environ={"HOME": "/home/u"}).warnings() == [], \
        "a public bind is secured: no warning"
    with pytest.raises(StackError, match="--rotate"):
        build_spec(insecure=True, rotate=True, environ={"HOME": "/home/u"})
    assert "rotate" not in build_spec(rotate=True, environ={"HOME": "/home/u"}).settings(), "rotating is no other setting"


def test_the_transformation_throttle_is_read_as_seamless_reads_it():
    assert spec({"SEAMLESS_WORKER_TRANSFORMATION_THROTTLE": "5"}).throttle == 5
    for bad in ("x", "0", "99"):
        with pytest.raises(StackError, match="SEAMLESS_WORKER_TRANSFORMATION_THROTTLE"):
            spec({"SEAMLESS_WORKER_TRANSFORMATION_THROTTLE": bad})


def test_timeout_is_a_float_as_given():
    assert spec(timeout=0.5).timeout == 0.5 and spec(timeout=1.9).timeout == 1.9
    for bad in (0, -1, "soon"):
        with pytest.raises(StackError, match="--timeout"):
            spec(timeout=bad)

import json
import subprocess

import pytest

from seamless_stack.connection import Connection, render

CONNECTION = Connection(host="127.0.0.1", hashserver_port=60001, database_port=60002, scheduler_port=60003,
                        dashboard_port=60004, seamless_workers=3, ssh_host="node7")


def test_all_sections_are_present():
    v = CONNECTION.variables()
    assert v["SEAMLESS_DATABASE_IP"] == "127.0.0.1" and v["SEAMLESS_DATABASE_PORT"] == "60002"
    assert v["SEAMLESS_READ_BUFFER_SERVERS"] == v["SEAMLESS_WRITE_BUFFER_SERVER"] == "http://127.0.0.1:60001"
    assert v["DASK_SCHEDULER_ADDRESS"] == v["SEAMLESS_DASK_SCHEDULER"] == "tcp://127.0.0.1:60003"
    assert v["SEAMLESS_DASK_WORKERS"] == "3"
    assert v["SEAMLESS_SSH_DASK_SCHEDULER_HOST"] == "node7" and v["SEAMLESS_SSH_HASHSERVER_PORT"] == "60001"


def test_remote_clients_use_client_addresses_in_both_fields():
    remote = json.loads(CONNECTION.variables()["SEAMLESS_REMOTE_CLIENTS"])
    assert remote["buffer"] == [{"url": "http://127.0.0.1:60001", "remote_url": "http://127.0.0.1:60001", "readonly": False}]
    assert remote["database"][0]["remote_url"] == "http://127.0.0.1:60002"


TRICKY = {"PLAIN": "x", "JSON": '{"a": [1, "b c"]}', "QUOTE": "it's $HOME `x` \\ \"q\"", "EMPTY": ""}


def _bash_values(script: str, keys) -> dict:
    dump = "; ".join(f'printf "%s\\0" "${k}"' for k in keys)
    out = subprocess.run(["bash", "-c", f"set -a; {script}\n{dump}"], capture_output=True, check=True).stdout
    return dict(zip(keys, out.decode().split("\0")[:-1]))


@pytest.mark.parametrize("values", [TRICKY, CONNECTION.variables()])
def test_shell_output_is_safely_quoted_and_sourceable(values):
    text = render(values, "shell", header="test")
    assert text.startswith("# test\n") and text.count("export ") == len(values)
    assert _bash_values(text, list(values)) == values


def test_dotenv_and_json_carry_the_same_values():
    values = CONNECTION.variables()
    assert json.loads(render(values, "json")) == values
    assert _bash_values(render(values, "dotenv"), list(values)) == values
    tricky = render(TRICKY, "dotenv")
    assert "QUOTE=\"it's" in tricky and "PLAIN='x'" in tricky


def test_unknown_format():
    with pytest.raises(ValueError, match="unknown format"):
        render({}, "yaml")

"""Registry names and the user's own registry login (no network here: the v2 API is proven on the Slurm bed)."""

import base64
import json

import pytest

from seamless_stack import images, registry
from seamless_stack.errors import StackError


def test_registry_targets():
    assert registry.parse_target("registry.example.org/group/sub") == ("registry.example.org", "group/sub")
    assert registry.parse_target("10.0.0.5:5000") == ("10.0.0.5:5000", "")
    assert registry.repository("reg.example.org/g", "seamless-stack/scheduler") == "reg.example.org/g/seamless-stack/scheduler"
    for bad in ("group/image", "Reg.example.org", "reg.example.org/g\n", "reg.example.org//g"):
        with pytest.raises(StackError, match="is not REGISTRY"):
            registry.parse_target(bad)


def test_the_definition_tag_is_what_a_machine_without_docker_computes(tmp_path):
    tag = images.definition_tag()
    assert tag.startswith("def-") and tag == images.definition_tag(), "from the package's files only"
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("numpy\n")
    assert images.definition_tag(requirements) != tag, "a derived worker has its own"
    assert images.labels("scheduler") == {images.LABEL_ROLE: "scheduler", images.LABEL_DEFINITION: tag}


def test_stored_login_comes_from_the_users_docker_or_apptainer_config(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    assert registry.stored_login("reg.example.org") is None
    (tmp_path / ".apptainer").mkdir()
    (tmp_path / ".apptainer" / "docker-config.json").write_text(json.dumps({"auths": {"reg.example.org": {"auth": "dTpw"}}}))
    assert registry.stored_login("reg.example.org") == "dTpw"
    (tmp_path / ".docker").mkdir()
    (tmp_path / ".docker" / "config.json").write_text(json.dumps({"auths": {"https://other.org": {"username": "u", "password": "p"}}}))
    assert registry.stored_login("other.org") == base64.b64encode(b"u:p").decode()

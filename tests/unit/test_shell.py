"""The one shell: a failing command, a timeout and SSH failures are one-line StackErrors."""

import pytest

from seamless_stack.errors import StackError
from seamless_stack.shell import CommandFailed, LocalShell, SSHShell, quote
from seamless_stack.ssh import Destination


def test_output_and_quoting():
    assert LocalShell().run(f"printf %s {quote(chr(39) + 'a b;$x' + chr(39))}") == "'a b;$x'"


def test_a_failing_command_keeps_its_stderr_and_reads_as_one_line():
    with pytest.raises(CommandFailed) as caught:
        LocalShell().run("echo first >&2; echo 'the reason' >&2; exit 3", what="squeue")
    assert caught.value.code == 3 and "first" in caught.value.stderr
    assert str(caught.value).startswith("squeue failed on this machine (exit 3: the reason)")
    assert "\n" not in str(caught.value)


def test_a_timeout_is_a_stack_error():
    with pytest.raises(StackError, match=r"apptainer build on this machine did not finish within 0s"):
        LocalShell().run("sleep 5", timeout=0.2, what="apptainer build")


def test_ssh_failures_are_explained(tmp_path):
    fake_ssh = tmp_path / "ssh"
    fake_ssh.write_text("#!/bin/sh\necho 'alice@big: Permission denied (publickey).' >&2\nexit 255\n")
    fake_ssh.chmod(0o755)
    shell = SSHShell(Destination.parse("alice@big"))
    shell.argv = lambda script: [str(fake_ssh), script]
    with pytest.raises(StackError, match="SSH authentication to alice@big failed"):
        shell.run("true")


def test_write_creates_owner_only_files(tmp_path):
    target = tmp_path / "sub" / "secret"
    LocalShell().write(str(target), b"key", mode="600")
    assert target.read_bytes() == b"key" and oct(target.stat().st_mode & 0o777) == "0o600"

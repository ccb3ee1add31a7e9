"""The one shell: a failing command, a timeout and SSH failures are one-line StackErrors."""

from pathlib import Path

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


def test_ssh_commands_of_one_process_share_a_connection():
    first = SSHShell(Destination.parse("alice@big")).argv("true")
    second = SSHShell(Destination.parse("bob@other:2222")).argv("true")
    control = [a for a in first if a.startswith("ControlPath=")]
    assert "ControlMaster=auto" in first and control and control == [a for a in second if a.startswith("ControlPath=")]
    folder = Path(control[0].split("=", 1)[1]).parent
    assert folder.is_dir() and folder.stat().st_mode & 0o077 == 0, "only this user reaches the sockets"
    assert first[-3:] == ["sh", "-c", "true"] and "alice@big" in first

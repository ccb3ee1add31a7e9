"""One way to say what a failed docker/Compose call said: its last lines, without terminal codes."""

import subprocess

from python_on_whales import DockerException

from seamless_stack.errors import error_text


def test_docker_errors_end_with_dockers_own_words():
    exc = DockerException(["docker", "compose", "up"], 1, stdout=b"", stderr=b"\x1b[2K Network created\nError: port is already allocated\n")
    assert error_text(exc) == "Error: port is already allocated"
    assert error_text(exc, lines=3) == "Network created | Error: port is already allocated"


def test_a_failed_subprocess_says_its_last_line_or_that_it_said_nothing():
    said = subprocess.CalledProcessError(1, ["docker", "compose", "up"], stderr="pulling\n\x1b[2Kno such image: x\n")
    assert error_text(said) == "no such image: x"
    silent = subprocess.CalledProcessError(1, ["docker"], stderr=b"")
    assert error_text(silent) == "Command '['docker']' returned non-zero exit status 1."

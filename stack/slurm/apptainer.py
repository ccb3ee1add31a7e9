"""Apptainer where the SIFs are made: spython on this machine (the login node itself), the
apptainer command through the shell on a login node reached over SSH (spython runs local
processes only). Every failure is one StackError: spython's dict results, its sys.exit
calls and a missing `singularity` command included.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess

from ..errors import StackError
from ..progress import Progress
from ..shell import CommandFailed, LocalShell, Shell, quote

BUILD_TIMEOUT = 1800


class Apptainer:
    """apptainer through a Shell: version, build (from docker://, docker-archive://), labels."""

    def __init__(self, shell: Shell):
        self.shell = shell

    def version(self) -> str:
        found = self.shell.run("apptainer --version 2>/dev/null || singularity --version 2>/dev/null || true").strip()
        if not found:
            raise StackError(f"neither apptainer nor singularity found on {self.shell}",
                             "install Apptainer there (it runs our images), or load its module (`module load apptainer`)")
        return found

    def build(self, sif: str, source: str, progress: Progress) -> None:
        """SIF from an image source, written under a temporary name and moved into place."""
        try:
            self.shell.run(f"apptainer build --force {quote(sif + '.tmp')} {quote(source)} && mv {quote(sif + '.tmp')} {quote(sif)}",
                           timeout=BUILD_TIMEOUT, what=f"apptainer build of {sif}")
        except CommandFailed as exc:
            raise build_failed(sif, source, self.shell, exc.stderr) from None

    def labels(self, sif: str) -> dict[str, str]:
        out = self.shell.run(f"apptainer inspect --json --labels {quote(sif)} 2>/dev/null || true")
        return parse_labels(out)


class SpythonApptainer(Apptainer):
    """On this machine, through spython (which runs `singularity`: Apptainer installs that name)."""

    def __init__(self, shell: LocalShell):
        super().__init__(shell)
        from spython.main import Client  # imported here: only the login-node route needs it

        self.client = Client

    def version(self) -> str:
        try:
            found = self.client.version()
        except SystemExit:
            found = None
        if not found:
            raise StackError("spython found no `singularity` command here (Apptainer provides it as a link)",
                             "install Apptainer (Debian: apt install apptainer), or `module load apptainer`; "
                             "an Apptainer without the link needs `ln -s $(command -v apptainer) ~/bin/singularity`")
        return found

    def build(self, sif: str, source: str, progress: Progress) -> None:
        # --quiet: only warnings and errors on stderr, which spython prints (here: captures) on failure.
        errors = io.StringIO()
        try:
            with contextlib.redirect_stderr(errors):
                _, stream = self.client.build(recipe=source, image=sif + ".tmp", sudo=False, force=True, stream=True,
                                              quiet=True, singularity_options=["--quiet"])
                for _ in stream:
                    pass
        except (subprocess.CalledProcessError, SystemExit) as exc:
            raise build_failed(sif, source, self.shell, errors.getvalue() or str(exc)) from None
        self.shell.run(f"mv {quote(sif + '.tmp')} {quote(sif)}")

    def labels(self, sif: str) -> dict[str, str]:
        try:
            result = self.client.inspect(sif, quiet=True)
        except SystemExit:
            return {}
        if not isinstance(result, dict) or "return_code" in result:
            return {}  # unreadable: treated as stale, so it is made anew
        return dict(result.get("attributes", {}).get("labels") or {})


def apptainer_for(shell: Shell) -> Apptainer:
    """spython here; the command line over SSH."""
    return SpythonApptainer(shell) if isinstance(shell, LocalShell) else Apptainer(shell)


def parse_labels(out: str) -> dict[str, str]:
    """`apptainer inspect --json --labels` -> the labels ({} when it is no SIF)."""
    try:
        data = json.loads(out)
    except ValueError:
        return {}
    return dict(data.get("data", {}).get("attributes", {}).get("labels") or {})


def build_failed(sif: str, source: str, shell: Shell, output: str) -> StackError:
    reason = " ".join(line for line in output.splitlines() if "FATAL" in line or "ERROR" in line)[-400:] or output.strip()[-400:]
    return StackError(f"apptainer build of {sif} from {source} failed on {shell} ({reason})",
                      "check disk space, that the image exists, and the registry login (`apptainer registry login`)")

"""One exception type for everything a user can fix, and one way to say what a failed command said."""

import re


class StackError(Exception):
    """A problem the user can fix. str() is one line: what is wrong, then how to fix it."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}: {fix}" if fix else problem)


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # Compose's line-clearing codes, even with --no-color


def error_text(exc: Exception, lines: int = 1) -> str:
    """A failed command (python-on-whales' DockerException, subprocess' CalledProcessError) in
    one line: its last `lines` lines of output (Docker's own error comes last, after whatever
    the CLI printed before it), terminal codes removed."""
    said = getattr(exc, "stderr", None) or getattr(exc, "stdout", None) or str(exc)
    text = ANSI.sub("", said.decode(errors="replace") if isinstance(said, bytes) else str(said))
    kept = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(kept[-lines:]) or "no output"

"""Progress: how long operations tell the user what they are doing, one line at a time.

Every layer takes a `progress` callable instead of printing: the CLI passes `print` to
stderr, the API's callers their own, tests a list's append. `quiet` drops the lines.
"""

from __future__ import annotations

from typing import Callable

Progress = Callable[[str], None]


def quiet(line: str) -> None:
    """The default progress: say nothing."""

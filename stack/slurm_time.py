"""Slurm's time grammar, written once: what `sbatch --time` takes and a partition's MaxTime says.

Forms (sbatch(1)): MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS; UNLIMITED / INFINITE (a
partition without a limit) parse to None. spec validates with it, fit and commands compare
with it, jobscript derives worker lifetimes from it.
"""

from __future__ import annotations

import re

UNLIMITED = ("UNLIMITED", "INFINITE")
_DAYS = re.compile(r"(\d+)-(\d+)(?::(\d+)(?::(\d+))?)?")
_PLAIN = re.compile(r"(\d+)(?::(\d+)(?::(\d+))?)?")


def seconds(text: str) -> int | None:
    """The time in seconds (None: unlimited); ValueError when it is no Slurm time."""
    text = text.strip()
    if text.upper() in UNLIMITED:
        return None
    if match := _DAYS.fullmatch(text):
        days, hours, minutes, secs = (int(part or 0) for part in match.groups())
        return days * 86400 + hours * 3600 + minutes * 60 + secs
    if match := _PLAIN.fullmatch(text):
        first, second, third = match.groups()
        if second is None:  # MM
            return int(first) * 60
        if third is None:  # MM:SS
            return int(first) * 60 + int(second)
        return int(first) * 3600 + int(second) * 60 + int(third)  # HH:MM:SS
    raise ValueError(f"{text!r} is not a Slurm time")


def is_time(text: str) -> bool:
    """A time a job may ask for (not UNLIMITED)."""
    try:
        return seconds(text) is not None
    except ValueError:
        return False


def format(total: int) -> str:
    """HH:MM:SS (hours past 24 as they are): what sbatch takes and users read."""
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"

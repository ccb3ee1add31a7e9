"""Backends make a Deployment real. One per way of running containers."""

from .compose import ComposeBackend
from .slurm import SlurmBackend

__all__ = ["ComposeBackend", "SlurmBackend"]

"""Backends make a Deployment real, one per way of running containers, behind one interface."""

from ..plan import Deployment
from .base import Backend, ServiceState
from .compose import ComposeBackend
from .slurm import SlurmBackend

BACKENDS: dict[str, type[Backend]] = {"local": ComposeBackend, "remote": ComposeBackend, "slurm": SlurmBackend}


def backend_for(deployment: Deployment, backends: dict[str, type[Backend]] = BACKENDS) -> Backend:
    return backends[deployment.method](deployment)


__all__ = ["BACKENDS", "Backend", "ComposeBackend", "ServiceState", "SlurmBackend", "backend_for"]

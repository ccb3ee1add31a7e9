"""The one interface every backend implements, and what it reports about services.

`api.up` reads as one sequence over it: prepare (spec -> Deployment: the plan step) ->
start -> health gate -> environment output; `up` on an existing stack -> converge.
Shaped after dask-gateway's Backend: the facade never asks which backend it holds.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from ..errors import StackError
from ..plan import Deployment
from ..progress import Progress
from ..spec import StackSpec


CRASH_LOOP_RESTARTS = 3  # restarts while the health gate waits that make a service failed, not just restarted


@dataclass
class ServiceState:
    service: str  # hashserver, database, scheduler, worker (supervisor, on Compose)
    where: str  # container name, or "job N on node"
    state: str  # running, exited, restarting, pending (reason), ...
    health: str = ""  # healthy, starting, unhealthy; "" where the backend has no healthcheck
    exit_code: int = 0
    restarts: int = 0  # times the engine restarted it (its restart policy)
    started_again: str = ""  # when it was last started after its first start (UTC, ISO); "" if never

    @property
    def running(self) -> bool:
        return self.state == "running" or self.state.startswith("running ")


class Backend(ABC):
    """Makes one Deployment real, and answers for it afterwards."""

    def __init__(self, deployment: Deployment):
        self.deployment = deployment
        self.warnings: list[str] = []  # about the target, said once the stack is ready (not before an error)

    @classmethod
    @abstractmethod
    def prepare(cls, spec: StackSpec, progress: Progress) -> "Backend":
        """Check the target, build or fetch what is missing, plan: a backend holding the Deployment.
        Starts nothing that `down` would have to stop."""

    @abstractmethod
    def leftovers(self) -> list[str]:
        """What of a stack with this name runs although no state record says so."""

    @classmethod
    @abstractmethod
    def remove_leftovers(cls, name: str, progress: Progress) -> bool:
        """Remove what runs under a stack's name where this backend can find it without a
        record (the record is lost or unreadable, so no Deployment says where). True if any."""

    @abstractmethod
    def start(self, progress: Progress) -> None:
        """Start every service; may complete self.deployment (where it runs)."""

    @abstractmethod
    def converge(self, spec: StackSpec, progress: Progress) -> list[str]:
        """Start again what is not running, keeping ports and storage where the backend can.
        Returns what it restarted."""

    @abstractmethod
    def restart(self, service: str, progress: Progress) -> None:
        """Restart one service."""

    def live_settings(self) -> frozenset[str]:
        """The settings (StackSpec.settings() keys) scale() changes on the running stack."""
        return frozenset()

    def scale(self, changes: dict[str, int], progress: Progress) -> None:
        """Change live_settings() of the running stack, its services untouched (change_live);
        anything else is refused in one line saying how to get there."""
        if changes and set(changes) <= self.live_settings():
            self.change_live(changes, progress)
            return
        d = self.deployment
        raise StackError(f"stack {d.name!r} ({d.method}) cannot change {', '.join(sorted(changes))} while it runs",
                         f"`seamless-stack down --name {d.name}`, then `up` again with the new options")

    def change_live(self, changes: dict[str, int], progress: Progress) -> None:
        """Apply changes (within live_settings()); updates self.deployment, its settings too,
        so that a later `up` with the same options converges."""
        raise NotImplementedError  # only backends with live_settings() are asked

    @abstractmethod
    def down(self) -> None:
        """Stop and remove everything started; data stays. Raises if something is left."""

    @abstractmethod
    def services(self) -> list[ServiceState]:
        """What runs now, one row per container or job."""

    @abstractmethod
    def find_failure(self) -> tuple[str, str] | None:
        """(service, reason) when a service died; the health gate then fails at once."""

    def scaling(self) -> tuple[str, str | None]:
        """How workers come and go (a line for `status`), and what keeps them from coming (or None)."""
        return f"{self.deployment.workers} worker(s), fixed", None

    def healing(self, services: list[ServiceState]) -> tuple[dict[str, tuple[bool, str]], list[str]]:
        """What heals the stack, for `status`: answers of its own services (service -> (ok,
        detail)) and notes on what it did lately. None by default."""
        return {}, []

    @abstractmethod
    def storage_problems(self) -> dict[str, str]:
        """service -> what is wrong with its storage directory now."""

    @abstractmethod
    def logs(self, service: str | None = None, tail: int | None = None) -> str:
        """Service output, last `tail` lines per container or file."""

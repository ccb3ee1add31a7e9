"""The health gate: composable waits, polled together until all pass, a failure, or a timeout.

Only after this gate passes is the environment output written: clients never get the
addresses of services that are not up (one of the old scripts' sins).
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.request
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

from . import credentials
from .errors import StackError


POLL_INTERVAL = 0.1  # seconds between rounds of checks: each round is a few local HTTP GETs


class Wait(Protocol):
    service: str

    def check(self) -> tuple[bool, str]:
        """(ready, one-line detail). Never raises."""


class ServiceFailed(StackError):
    """A service died or never became ready; `service` names whose logs to show."""

    def __init__(self, service: str, problem: str, fix: str | None = None):
        self.service = service
        super().__init__(problem, fix)


def _get(url: str, context: ssl.SSLContext | None = None, timeout: float = 2.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
        return response.read().decode(errors="replace")


def _not_answering(exc: Exception) -> bool:
    """Refused, reset or timed out: a service that is still starting, not a failure. A
    certificate the client refuses is an answer (ssl's errors are OSErrors too): the wrong
    server on the port, which the gate must name, not wait for."""
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, ssl.SSLCertVerificationError) or isinstance(exc, ssl.SSLCertVerificationError):
        return False
    return isinstance(reason, (ConnectionError, TimeoutError, OSError)) or isinstance(exc, (ConnectionError, TimeoutError))


@dataclass
class HttpWait:
    """GET url answers 200 and its body contains `expect`."""

    service: str
    url: str
    expect: str
    context: ssl.SSLContext | None = None  # https: the stack's CA and client certificate

    def check(self) -> tuple[bool, str]:
        try:
            body = _get(self.url, self.context)
        except Exception as exc:  # connection refused, reset, timeout...
            if _not_answering(exc):
                return False, "starting"
            return False, f"answers {getattr(exc, 'reason', exc)}"
        if self.expect in body:
            return True, "ok"
        return False, f"answers {body[:60]!r}"


@dataclass
class SeamlessWorkersWait:
    """The scheduler preload reports `count` workers whose Seamless plugin is set up."""

    service: str
    url: str  # http(s)://host:dashboard/seamless-stack/ready
    count: int
    context: ssl.SSLContext | None = None

    def check(self) -> tuple[bool, str]:
        try:
            report = json.loads(_get(self.url, self.context))
        except Exception as exc:
            return False, "scheduler starting" if _not_answering(exc) else f"scheduler answers {getattr(exc, 'reason', exc)}"
        if not report.get("plugin"):
            return False, "scheduler setting up the Seamless plugin"
        ready = report.get("seamless_workers", 0)
        connected = report.get("workers", 0)
        detail = f"{ready}/{self.count} workers ready" + (f" ({connected} connected)" if connected != ready else "")
        return ready >= self.count, detail


def service_waits(hashserver: str, database: str, dashboard: str,
                  context: ssl.SSLContext | None = None) -> list[Wait]:
    """The three HTTP services answer their health checks, at these base URLs (scheme://host:port)."""
    return [
        HttpWait("hashserver", f"{hashserver}/healthcheck", "OK", context),
        HttpWait("database", f"{database}/healthcheck", "OK", context),
        HttpWait("scheduler", f"{dashboard}/health", "ok", context),
    ]


def stack_waits(c, workers: int) -> list[Wait]:
    """The gate for one stack, as a client with Connection c sees it."""
    context = credentials.client_ssl_context(c.credentials_dir) if c.credentials_dir else None
    dashboard = f"{'https' if context else 'http'}://{c.host}:{c.dashboard_port}"
    return [
        *service_waits(c.http_url(c.hashserver_port, with_secret=False),
                       c.http_url(c.database_port, with_secret=False), dashboard, context),
        SeamlessWorkersWait("worker", f"{dashboard}/seamless-stack/ready", workers, context),
    ]


def wait_until_ready(
    waits: Sequence[Wait],
    *,
    timeout: float,
    progress: Callable[[str], None] = lambda line: None,
    find_failure: Callable[[], tuple[str, str] | None] = lambda: None,
    interval: float = POLL_INTERVAL,
) -> float:
    """Poll every wait until all pass. Returns the seconds it took.

    find_failure() is asked every second for (service, reason) when the backend sees a
    service that died (exited, restarting): the gate then fails at once, not at the timeout.
    """
    start = time.monotonic()
    pending = list(waits)
    details = {w.service: "starting" for w in waits}
    last_failure_check = 0.0
    last_report = ""
    while pending:
        for wait in list(pending):
            ok, details[wait.service] = wait.check()
            if ok:
                pending.remove(wait)
        elapsed = time.monotonic() - start
        report = ", ".join(dict.fromkeys(  # the worker wait may say what the scheduler wait says
            details[w.service] if w.service == "worker" else f"{w.service} {details[w.service]}" for w in pending))
        if report and report != last_report:
            progress(f"[{elapsed:5.1f}s] {report}")
            last_report = report
        if not pending:
            break
        if elapsed - last_failure_check >= 1.0:
            last_failure_check = elapsed
            failure = find_failure()
            if failure:
                service, reason = failure
                raise ServiceFailed(service, f"{service} failed: {reason}")
        if elapsed > timeout:
            first = pending[0]
            raise ServiceFailed(
                first.service,
                f"not ready after {timeout:.0f}s: {report}",
                "see the log above; raise --timeout if the machine is just slow",
            )
        time.sleep(interval)
    return time.monotonic() - start

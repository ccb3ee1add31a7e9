"""Liveness of a Dask worker's Seamless process pool: a worker whose Seamless children stop
answering is replaced, not left to hang every transformation sent to it.

seamless-transformer's pool pings each child every second; when a ping times out (a child
stopped for a moment: a loaded node, a swap storm, a debugger), it starts another child in
the same slot, which may never become ready, and transformations sent to the worker then
hang with no error. Here, every CHECK_INTERVAL, each child of the pool must answer a ping
within PING_TIMEOUT. After FAILURES_ALLOWED checks in a row with a silent or missing child,
the worker process exits with EXIT_CODE: its nanny starts a fresh one (a new pool, set up
again by the scheduler's plugins) and the scheduler gives its tasks to other workers or to
the new one. A wedge is thus repaired within about (FAILURES_ALLOWED + 1) x CHECK_INTERVAL.

A worker whose scheduler is gone closes (distributed's choice), and waited up to 30 s for
the tasks it runs. A Seamless task waits on that scheduler (its cancel checks), so it never
ended early: with a transformation running when the scheduler was killed, the worker, its
container and the stack's health took 30 s longer to come back (39 s instead of 8, measured).
Those tasks' results have nowhere to go, so such a worker waits SCHEDULER_LOST_WAIT.

Registered on every worker by the scheduler preload, in every method (Compose, Slurm).
It reads two attributes of seamless-transformer's pool (`_worker_manager`, its `_manager`
and handles) at the version pinned in images/lock/dask.txt.
"""

import asyncio
import logging
import os

from distributed.diagnostics.plugin import WorkerPlugin

CHECK_INTERVAL = 5.0  # seconds between checks
PING_TIMEOUT = 5.0  # a child that does not answer within this is silent
FAILURES_ALLOWED = 2  # checks in a row with a silent or missing child before the worker exits
EXIT_CODE = 75  # EX_TEMPFAIL: the nanny restarts the worker
PLUGIN_NAME = "seamless-stack-liveness"
SCHEDULER_LOST = "worker-handle-scheduler-connection-broken"  # distributed's reason for that close
SCHEDULER_LOST_WAIT = 3.0  # seconds a worker whose scheduler is gone waits for its running tasks
logger = logging.getLogger("seamless_stack.liveness")


async def _silent_children(manager, names: list, timeout: float) -> list:
    """Runs on the pool's own event loop: the children that are gone or do not answer."""
    silent = []
    for name in names:
        handle = manager._handles.get(name)
        if handle is None or not handle.is_alive():
            silent.append(f"{name} gone")
            continue
        try:
            await asyncio.wait_for(handle.request("ping", None), timeout)
        except Exception:
            silent.append(f"{name} silent")
    return silent


async def pool_problems(timeout: float = PING_TIMEOUT) -> list:
    """What is wrong with this process' Seamless pool ([] when every child answers)."""
    from seamless_transformer import worker as seamless_worker

    pool = seamless_worker._worker_manager
    if pool is None:
        return ["no Seamless process pool"]
    names = [handle.name for handle in pool._handles]
    future = asyncio.run_coroutine_threadsafe(_silent_children(pool._manager, names, timeout), pool.loop)
    try:
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout * (len(names) + 1))
    except asyncio.TimeoutError:
        return ["the pool's event loop does not answer"]


class SeamlessLiveness(WorkerPlugin):
    """Checks the pool every CHECK_INTERVAL; exits the worker process when it stays broken."""

    name = PLUGIN_NAME

    def setup(self, worker) -> None:
        from tornado.ioloop import PeriodicCallback

        self.failures = 0
        self.callback = PeriodicCallback(self.check, CHECK_INTERVAL * 1000)
        worker.periodic_callbacks[PLUGIN_NAME] = self.callback
        self.callback.start()
        close = worker.close

        async def close_sooner_without_scheduler(*args, **kwargs):
            if kwargs.get("reason") == SCHEDULER_LOST:
                kwargs["timeout"] = min(kwargs.get("timeout", SCHEDULER_LOST_WAIT), SCHEDULER_LOST_WAIT)
            return await close(*args, **kwargs)

        worker.close = close_sooner_without_scheduler

    async def check(self) -> None:
        problems = await pool_problems()
        self.failures = self.failures + 1 if problems else 0
        if self.failures > FAILURES_ALLOWED:
            logger.error("Seamless worker pool broken for %d checks (%s): restarting this worker",
                         self.failures, ", ".join(problems))
            for handler in logging.getLogger().handlers:
                handler.flush()
            os._exit(EXIT_CODE)
        elif problems:
            logger.warning("Seamless worker pool: %s (check %d of %d)", ", ".join(problems), self.failures,
                           FAILURES_ALLOWED + 1)

    def teardown(self, worker) -> None:
        self.callback.stop()

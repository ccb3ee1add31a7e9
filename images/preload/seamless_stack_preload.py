"""Scheduler preload: make every Dask worker Seamless-aware before any client connects.

Why: a client configured only by environment variables (`seamless-run`) registers the
Seamless worker plugin *without* service addresses, and its workers then fail with
CacheMissError. Registering the plugin here first, with the worker-facing URLs, wins:
clients see it is already registered and leave it alone.

A second plugin keeps each worker's Seamless pool alive (images/site/seamless_stack_liveness.py):
a worker whose Seamless children stop answering exits, and its nanny starts a fresh one.

It also serves GET /seamless-stack/ready on the dashboard port: a JSON readiness report
(plugin registered, workers connected, workers whose plugin finished setting up) that
seamless-stack's health gate polls, whatever the backend.

Environment:
  SEAMLESS_STACK_WORKER_BUFFER_URL     hashserver URL as the workers reach it
  SEAMLESS_STACK_WORKER_DATABASE_URL   database URL as the workers reach it
  SEAMLESS_STACK_SEAMLESS_WORKERS      Seamless workers per Dask worker (<= worker threads)
  SEAMLESS_STACK_SECRET_FILE           optional: the stack's HTTP secret, put into the workers'
                                       URLs (seamless_remote sends it as Basic auth); it reaches
                                       the workers only through the plugin, over Dask's TLS

With the dashboard on HTTPS (distributed.scheduler.dashboard.tls.*), it also demands a client
certificate signed by the stack's CA: distributed itself only encrypts it.
"""

import json
import logging
import os
import ssl

from distributed.protocol.pickle import dumps
from seamless_stack_liveness import PLUGIN_NAME as LIVENESS, SeamlessLiveness  # images/site: on every image's path
from sitecustomize import DASHBOARD_CONNECTIONS, StreamCap
from seamless_dask.worker_setup import SeamlessWorkerPlugin
from tornado.web import Application, RequestHandler

PLUGIN_NAME = "seamless-worker-setup"
READY_PATH = "/seamless-stack/ready"
HEADER_TIMEOUT = 30.0  # a dashboard connection without a request head (or TLS handshake) by then is closed
logger = logging.getLogger("seamless_stack.preload")


def with_secret(url: str) -> str:
    path = os.environ.get("SEAMLESS_STACK_SECRET_FILE")
    if not path:
        return url
    with open(path) as f:
        secret = f.read().strip()
    scheme, rest = url.split("://", 1)
    return f"{scheme}://seamless:{secret}@{rest}"


def worker_remote_clients() -> dict:
    def entry(url: str) -> dict:
        url = with_secret(url)
        return {"url": url, "remote_url": url, "readonly": False}

    return {
        "buffer": [entry(os.environ["SEAMLESS_STACK_WORKER_BUFFER_URL"])],
        "database": [entry(os.environ["SEAMLESS_STACK_WORKER_DATABASE_URL"])],
    }


def readiness(scheduler) -> dict:
    """Workers are Seamless-ready once the plugin has published their `S` resource."""
    workers = list(scheduler.workers.values())
    ready = [ws for ws in workers if "S" in (ws.resources or {})]
    return {
        "plugin": PLUGIN_NAME in scheduler.worker_plugins,
        "workers": len(workers),
        "seamless_workers": len(ready),
    }


class ReadyHandler(RequestHandler):
    def initialize(self, scheduler):
        self.scheduler = scheduler

    def get(self):
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps(readiness(self.scheduler)))


def dask_setup(scheduler):
    plugin = SeamlessWorkerPlugin(
        num_workers=int(os.environ.get("SEAMLESS_STACK_SEAMLESS_WORKERS", "1")),
        remote_clients=worker_remote_clients(),
    )
    scheduler.worker_plugins[PLUGIN_NAME] = dumps(plugin)
    scheduler.worker_plugins[LIVENESS] = dumps(SeamlessLiveness())  # after the pool exists: dicts keep order
    scheduler.http_application.add_application(
        Application([(READY_PATH, ReadyHandler, {"scheduler": scheduler})])
    )
    http_server = getattr(scheduler, "http_server", None)
    if http_server is not None and getattr(http_server, "conn_params", None) is not None:
        http_server.conn_params.header_timeout = HEADER_TIMEOUT  # tornado's default: an hour
        handle, cap = http_server.handle_stream, StreamCap(DASHBOARD_CONNECTIONS)
        http_server.handle_stream = lambda stream, address: handle(stream, address) if cap.admit(stream) else None
    ssl_options = getattr(http_server, "ssl_options", None)
    if isinstance(ssl_options, ssl.SSLContext):
        ssl_options.verify_mode = ssl.CERT_REQUIRED  # the context every new connection is wrapped with
    logger.info("Seamless worker plugin registered for %s, %s (dashboard %s)",
                os.environ["SEAMLESS_STACK_WORKER_BUFFER_URL"], os.environ["SEAMLESS_STACK_WORKER_DATABASE_URL"],
                "HTTPS, client certificate required" if isinstance(ssl_options, ssl.SSLContext) else "plain HTTP")

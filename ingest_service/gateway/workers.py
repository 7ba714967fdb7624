"""The gateway's worker processes: one parent holds the listening sockets, N workers serve.

``python -m ingest_service gateway`` runs :func:`supervise`, which:

1. binds the HTTP, legacy and MQTT ports once (and MQTT over TLS's, when a certificate
   is set and loads; refused when anyone already listens on them) and hands the
   listening sockets to every worker
   (``WORKBENCH_GATEWAY_LISTEN_FDS``): the workers accept from one shared queue
   per port, so a worker that stops accepting leaves new connections to its
   siblings instead of dropping the ones queued for it (what per-worker
   ``SO_REUSEPORT`` sockets would do);
2. empties the metrics folder ``$WORKBENCH_HOME/run/gateway-metrics`` and runs
   ``WORKBENCH_GATEWAY_WORKERS`` workers
   (``python -m ingest_service.gateway.workers --worker I``) with
   ``PROMETHEUS_MULTIPROC_DIR`` pointing at it, under a
   :class:`~workbench.stack.pool.WorkerPool`: a worker that dies is replaced,
   SIGHUP (``workbench restart gateway --rolling``) replaces them one at a time —
   each new worker serves before an old one drains;
3. on SIGTERM/SIGINT closes its copies of the sockets, has every worker drain
   (:mod:`ingest_service.gateway.server`), kills what is left after
   ``WORKBENCH_GATEWAY_ACK_TIMEOUT`` + 5 s, and exits 0.

A worker whose parent disappears drains and exits by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from ingest_service.gateway.sockets import LISTEN_FDS_ENV, listen
from ingest_service.gateway.tls import server_context
from workbench.config import Config

__all__ = ["metrics_dir", "supervise", "worker_main"]

logger = logging.getLogger(__name__)

_PARENT_CHECK_S = 1.0


def metrics_dir(config: Config) -> Path:
    """The folder the workers share their Prometheus values through."""
    return config.run_dir / "gateway-metrics"


def supervise(config: Config) -> int:
    """Run ``config.gateway_workers`` workers until SIGTERM/SIGINT; see the module doc."""
    from prometheus_client.multiprocess import mark_process_dead

    from ingest_service.translators import load_translators
    from workbench.stack.pool import WorkerPool

    # every worker loads the translator plug-ins; one that cannot be loaded stops the
    # gateway here, once, with its name, rather than every worker in turn
    load_translators()
    ports = [
        (config.gateway_port, "WORKBENCH_GATEWAY_PORT"),
        (config.legacy_port, "WORKBENCH_LEGACY_PORT"),
        (config.mqtt_port, "WORKBENCH_MQTT_PORT"),
    ]
    # a certificate that cannot be loaded stops the gateway here, in one line, not each worker
    if server_context(config) is not None:
        ports.append((config.mqtt_tls_port, "WORKBENCH_MQTT_TLS_PORT"))
    sockets: list[socket.socket] = []
    try:
        for port, env_name in ports:
            sockets.append(listen(config.host, port, env_name))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    fds = tuple(sock.fileno() for sock in sockets)
    folder = metrics_dir(config)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    env = {
        **os.environ,
        **config.env(),
        "PROMETHEUS_MULTIPROC_DIR": str(folder),
        LISTEN_FDS_ENV: ",".join(str(fd) for fd in fds),
    }

    def argv(slot: int) -> list[str]:
        return [sys.executable, "-m", "ingest_service.gateway.workers", "--worker", str(slot)]

    def close_sockets() -> None:  # workers still hold theirs until they have drained
        for sock in sockets:
            sock.close()

    pool = WorkerPool(
        "gateway",
        count=config.gateway_workers,
        argv=argv,
        env=env,
        run_dir=config.run_dir,
        drain_timeout_s=config.gateway_ack_timeout + 5,
        ready_timeout_s=config.startup_timeout,
        pass_fds=fds,
        on_exit=lambda pid: mark_process_dead(pid, str(folder)),  # type: ignore[no-untyped-call]
        before_stop=close_sockets,
    )
    try:
        return pool.run()
    finally:
        close_sockets()


async def _serve_worker(config: Config, index: int) -> None:
    from ingest_service.gateway.server import serve

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    parent = os.getppid()

    async def orphaned() -> None:
        while os.getppid() == parent:
            await asyncio.sleep(_PARENT_CHECK_S)
        logger.warning("gateway worker %d: parent %d is gone; draining", index, parent)
        stop.set()

    watcher = asyncio.create_task(orphaned())
    try:
        await serve(config, stop=stop, worker=index, metrics_dir=metrics_dir(config))
    finally:
        watcher.cancel()


def worker_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of one worker (started by :func:`supervise`)."""
    from workbench.logs import configure_logging

    parser = argparse.ArgumentParser(prog="python -m ingest_service.gateway.workers")
    parser.add_argument("--worker", type=int, required=True, help="index of this worker")
    args = parser.parse_args(argv)
    config = Config.from_env()
    configure_logging(config.log_level)
    from ingest_service.gateway.server import run_loop

    run_loop(_serve_worker(config, args.worker))
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())

"""The gateway's worker processes: one parent holds the listening sockets, N workers serve.

``python -m ingest_service gateway`` runs :func:`supervise`, which:

1. binds the HTTP and legacy ports once (refused when anyone already listens on
   them) and hands both listening sockets to every worker
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
import errno
import logging
import os
import shutil
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from workbench.config import Config
from workbench.exceptions import PortInUse

__all__ = ["LISTEN_FDS_ENV", "inherited_sockets", "metrics_dir", "supervise", "worker_main"]

logger = logging.getLogger(__name__)

LISTEN_FDS_ENV = "WORKBENCH_GATEWAY_LISTEN_FDS"
_PARENT_CHECK_S = 1.0
_BACKLOG = 1024


def metrics_dir(config: Config) -> Path:
    """The folder the workers share their Prometheus values through."""
    return config.run_dir / "gateway-metrics"


def _listen(host: str, port: int, env: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # SO_REUSEADDR: a port in TIME_WAIT is free; a listener still makes bind fail
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(
                f"port {host}:{port} is already in use",
                hint=f"stop the other gateway or set {env} to a free port",
            ) from None
        raise
    sock.listen(_BACKLOG)
    sock.set_inheritable(True)
    return sock


def inherited_sockets() -> tuple[socket.socket, socket.socket] | None:
    """The (HTTP, legacy) listening sockets handed down by the parent, if any."""
    fds = os.environ.get(LISTEN_FDS_ENV)
    if not fds:
        return None
    http_fd, legacy_fd = (int(fd) for fd in fds.split(","))
    return socket.socket(fileno=http_fd), socket.socket(fileno=legacy_fd)


def supervise(config: Config) -> int:
    """Run ``config.gateway_workers`` workers until SIGTERM/SIGINT; see the module doc."""
    from prometheus_client.multiprocess import mark_process_dead

    from workbench.stack.pool import WorkerPool

    http = _listen(config.host, config.gateway_port, "WORKBENCH_GATEWAY_PORT")
    try:
        legacy = _listen(config.host, config.legacy_port, "WORKBENCH_LEGACY_PORT")
    except BaseException:
        http.close()
        raise
    folder = metrics_dir(config)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    env = {
        **os.environ,
        **config.env(),
        "PROMETHEUS_MULTIPROC_DIR": str(folder),
        LISTEN_FDS_ENV: f"{http.fileno()},{legacy.fileno()}",
    }

    def argv(slot: int) -> list[str]:
        return [sys.executable, "-m", "ingest_service.gateway.workers", "--worker", str(slot)]

    def close_sockets() -> None:  # workers still hold theirs until they have drained
        http.close()
        legacy.close()

    pool = WorkerPool(
        "gateway",
        count=config.gateway_workers,
        argv=argv,
        env=env,
        run_dir=config.run_dir,
        drain_timeout_s=config.gateway_ack_timeout + 5,
        ready_timeout_s=config.startup_timeout,
        pass_fds=(http.fileno(), legacy.fileno()),
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

"""Several gateway worker processes on one pair of ports (``SO_REUSEPORT``) under one parent.

``python -m ingest_service gateway`` with ``WORKBENCH_GATEWAY_WORKERS`` = N > 1
runs :func:`supervise`, which:

1. refuses to start when anyone already listens on the HTTP or legacy port
   (``SO_REUSEPORT`` would otherwise silently share it with a stale gateway);
2. empties the metrics folder ``$WORKBENCH_HOME/run/gateway-metrics`` and starts N
   workers (``python -m ingest_service.gateway.workers --worker I``) with
   ``PROMETHEUS_MULTIPROC_DIR`` pointing at it, each binding both ports with
   ``SO_REUSEPORT``: the kernel spreads new connections over them;
3. replaces a worker that exits while the gateway is not stopping (a crash or a
   SIGKILL): only the connections that worker held fail; a worker that dies
   within :data:`_FAST_EXIT_S` of its start :data:`_MAX_FAST_EXITS` times in a row
   stops the whole gateway (exit 1) instead of looping;
4. on SIGTERM/SIGINT forwards SIGTERM to every worker, waits for their drain
   (:mod:`ingest_service.gateway.server`), kills what is left after
   ``WORKBENCH_GATEWAY_ACK_TIMEOUT`` + 5 s, and exits 0.

A worker whose parent disappears drains and exits by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from workbench.config import Config
from workbench.exceptions import PortInUse

__all__ = ["metrics_dir", "supervise", "worker_main"]

logger = logging.getLogger(__name__)

_FAST_EXIT_S = 3.0
_MAX_FAST_EXITS = 5
_PARENT_CHECK_S = 1.0


def metrics_dir(config: Config) -> Path:
    """The folder the workers share their Prometheus values through."""
    return config.run_dir / "gateway-metrics"


def _check_free(host: str, port: int, env: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(
                    f"port {host}:{port} is already in use",
                    hint=f"stop the other gateway or set {env} to a free port",
                ) from None
            raise


class _Worker:
    def __init__(self, index: int, argv: list[str], env: dict[str, str]) -> None:
        self.index = index
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
        self.started = time.monotonic()


def supervise(config: Config) -> int:
    """Run ``config.gateway_workers`` workers until SIGTERM/SIGINT; see the module doc."""
    _check_free(config.host, config.gateway_port, "WORKBENCH_GATEWAY_PORT")
    _check_free(config.host, config.legacy_port, "WORKBENCH_LEGACY_PORT")
    folder = metrics_dir(config)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    env = {**os.environ, **config.env(), "PROMETHEUS_MULTIPROC_DIR": str(folder)}

    def argv(index: int) -> list[str]:
        return [sys.executable, "-m", "ingest_service.gateway.workers", "--worker", str(index)]

    stopping: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)

    from prometheus_client.multiprocess import mark_process_dead

    workers = [_Worker(i, argv(i), env) for i in range(config.gateway_workers)]
    logger.info(
        "gateway parent (pid %d): %d workers %s",
        os.getpid(),
        len(workers),
        [w.proc.pid for w in workers],
    )
    fast_exits = 0
    failed = False
    while not stopping and not failed:
        time.sleep(0.1)
        for slot, worker in enumerate(workers):
            code = worker.proc.poll()
            if code is None or stopping:
                continue
            mark_process_dead(worker.proc.pid, str(folder))  # type: ignore[no-untyped-call]
            lived = time.monotonic() - worker.started
            fast_exits = fast_exits + 1 if lived < _FAST_EXIT_S else 0
            if fast_exits >= _MAX_FAST_EXITS:
                logger.error(
                    "gateway worker %d exited %d times within %.0fs of its start (last code %s);"
                    " stopping the gateway",
                    worker.index,
                    fast_exits,
                    _FAST_EXIT_S,
                    code,
                )
                failed = True
                break
            workers[slot] = _Worker(worker.index, argv(worker.index), env)
            logger.warning(
                "gateway worker %d (pid %d) exited with %s after %.1fs; replaced by pid %d",
                worker.index,
                worker.proc.pid,
                code,
                lived,
                workers[slot].proc.pid,
            )
    _stop_all(workers, grace_s=config.gateway_ack_timeout + 5)
    for worker in workers:
        mark_process_dead(worker.proc.pid, str(folder))  # type: ignore[no-untyped-call]
    logger.info("gateway parent stopped")
    return 1 if failed else 0


def _stop_all(workers: Sequence[_Worker], *, grace_s: float) -> None:
    for worker in workers:
        if worker.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                worker.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for worker in workers:
        try:
            worker.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.warning("gateway worker %d did not drain in time; killing", worker.index)
            worker.proc.kill()
            worker.proc.wait()


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

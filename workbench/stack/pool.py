"""A parent process that keeps N worker processes running and replaces them one at a time.

The gateway (workers sharing the listening sockets the parent opened) and the
processor (members of one consumer group) run under a :class:`WorkerPool`. The
parent:

1. starts N workers, ``argv(slot)`` each; a worker tells the parent it is ready
   (serving, or polling its partitions) with :func:`signal_ready`;
2. replaces a worker that exits while the pool is not stopping (a crash, a
   SIGKILL) and counts it (``crashes`` and ``last_crash`` in the state file); a
   slot whose workers die within :data:`FAST_EXIT_S` of their start
   :data:`MAX_FAST_EXITS` times in a row stops the whole pool (exit 1) instead
   of looping;
3. on SIGHUP replaces the workers one at a time — the *rolling restart*: start
   the new worker, wait until it is ready, then SIGTERM the old one and wait for
   its graceful drain. Capacity never drops below N. When a new worker does not
   get ready, it is stopped, the old one keeps serving and the roll is reported
   failed;
4. on SIGTERM/SIGINT stops every worker (SIGTERM, then SIGKILL after the drain
   timeout) and exits 0.

The state — members, crashes, and the outcome of the last roll — is in
``$WORKBENCH_HOME/run/<name>.pool.json``, which ``workbench status`` and
``workbench restart --rolling`` (:func:`request_roll`) read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

from workbench.config import Config
from workbench.exceptions import ComponentFailed
from workbench.filemodes import write_json

__all__ = [
    "FAST_EXIT_S",
    "MAX_FAST_EXITS",
    "READY_ENV",
    "WorkerPool",
    "die_with_parent",
    "pool_state",
    "request_roll",
    "signal_ready",
]

logger = logging.getLogger(__name__)

FAST_EXIT_S = 3.0
MAX_FAST_EXITS = 5
READY_ENV = "WORKBENCH_READY_FILE"
PARENT_ENV = "WORKBENCH_POOL_PARENT"
_TICK_S = 0.1


def signal_ready() -> None:
    """Tell the pool's parent that this worker is ready (a no-op outside a pool)."""
    path = os.environ.get(READY_ENV)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(str(os.getpid()))


def die_with_parent() -> None:
    """Have the kernel SIGKILL this worker when its pool parent dies (Linux), so that a
    killed parent is a crash of the whole component, never a half-alive one."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0) != 0:
        logger.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    if os.getppid() != int(parent):  # the parent died before the prctl
        os.kill(os.getpid(), signal.SIGKILL)


def _state_path(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.pool.json"


def pool_state(config: Config, name: str) -> dict[str, Any] | None:
    """The pool state file of component ``name`` (None when it has none)."""
    try:
        data: dict[str, Any] = json.loads(_state_path(config.run_dir, name).read_text())
        return data
    except (OSError, ValueError):
        return None


class _Worker:
    def __init__(
        self, slot: int, argv: list[str], env: dict[str, str], ready_dir: Path, fds: Sequence[int]
    ) -> None:
        self.slot = slot
        self.ready_file = ready_dir / f"{slot}-{uuid.uuid4().hex[:12]}.ready"
        self.proc = subprocess.Popen(
            argv,
            env={**env, READY_ENV: str(self.ready_file), PARENT_ENV: str(os.getpid())},
            stdin=subprocess.DEVNULL,
            pass_fds=tuple(fds),
        )
        self.started = time.monotonic()
        self.started_at = time.time()

    @property
    def ready(self) -> bool:
        return self.ready_file.exists()

    def describe(self) -> dict[str, Any]:
        return {
            "slot": self.slot,
            "pid": self.proc.pid,
            "started_at": self.started_at,
            "ready": self.ready,
        }


@dataclasses.dataclass
class _Roll:
    requested_at: float
    state: str = "rolling"  # rolling | done | failed
    replaced: int = 0
    of: int = 0
    message: str = ""
    finished_at: float | None = None


class WorkerPool:
    """``count`` workers of component ``name``; see the module documentation.

    ``on_exit(pid)`` runs after a worker exited (for its leftovers, e.g. metrics
    files); ``tick()`` runs every loop (e.g. to aggregate heartbeats);
    ``before_stop()`` runs first on SIGTERM (e.g. to close listening sockets);
    ``settle_s`` is how long a roll waits between a new worker's readiness and the old
    worker's SIGTERM.
    """

    def __init__(
        self,
        name: str,
        *,
        count: int,
        argv: Callable[[int], list[str]],
        env: dict[str, str],
        run_dir: Path,
        drain_timeout_s: float,
        ready_timeout_s: float,
        pass_fds: Sequence[int] = (),
        settle_s: float = 0.0,
        on_exit: Callable[[int], None] | None = None,
        tick: Callable[[], None] | None = None,
        before_stop: Callable[[], None] | None = None,
    ) -> None:
        if count < 1:
            raise ValueError("a pool needs at least one worker")
        self.name = name
        self.count = count
        self._argv = argv
        self._env = env
        self._run_dir = run_dir
        self._ready_dir = run_dir / f"{name}.ready"
        self.drain_timeout_s = drain_timeout_s
        self.ready_timeout_s = ready_timeout_s
        self._fds = pass_fds
        self.settle_s = settle_s
        self._on_exit = on_exit
        self._tick = tick
        self._before_stop = before_stop
        self.workers: list[_Worker] = []
        self._stopping: list[int] = []
        self._roll_requested: float | None = None
        self._roll: _Roll | None = None
        self._fast_exits = [0] * count
        self._crashes = 0  # workers that exited while nobody asked them to (crash, kill)
        self._last_crash: dict[str, Any] | None = None
        self._state_unwritable = False

    # --- the loop --------------------------------------------------------------------------

    def run(self) -> int:
        """Run until SIGTERM/SIGINT (exit code 0) or a worker crash loop (1)."""
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        with contextlib.suppress(FileNotFoundError):
            for stale in self._ready_dir.iterdir():
                stale.unlink()
        self.workers = [self._start(slot) for slot in range(self.count)]
        logger.info(
            "%s parent (pid %d): %d workers %s",
            self.name,
            os.getpid(),
            self.count,
            [w.proc.pid for w in self.workers],
        )
        failed = False
        try:
            while not self._stopping and not failed:
                failed = not self._check_workers()
                if self._roll_requested is not None and not failed:
                    self._rolling_restart()
                if self._tick is not None:
                    self._tick()
                self._write_state()
                time.sleep(_TICK_S)
        finally:
            if self._before_stop is not None:
                self._before_stop()
            self._stop_all()
            self._write_state(stopped=True)
        logger.info("%s parent stopped", self.name)
        return 1 if failed else 0

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping.append(signum)

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self._roll_requested = time.time()

    def _start(self, slot: int) -> _Worker:
        return _Worker(slot, self._argv(slot), self._env, self._ready_dir, self._fds)

    def _exited(self, worker: _Worker) -> None:
        worker.ready_file.unlink(missing_ok=True)
        if self._on_exit is not None:
            self._on_exit(worker.proc.pid)

    def _check_workers(self) -> bool:
        """Replace the workers that exited; False when a slot is crash-looping."""
        for index, worker in enumerate(self.workers):
            code = worker.proc.poll()
            if code is None or self._stopping:
                continue
            self._exited(worker)
            lived = time.monotonic() - worker.started
            slot = worker.slot
            self._fast_exits[slot] = self._fast_exits[slot] + 1 if lived < FAST_EXIT_S else 0
            self._crashes += 1
            self._last_crash = {
                "slot": slot,
                "pid": worker.proc.pid,
                "code": code,
                "lived_s": round(lived, 1),
                "at": time.time(),
            }
            if self._fast_exits[slot] >= MAX_FAST_EXITS:
                logger.error(
                    "%s worker %d exited %d times within %.0fs of its start (last code %s);"
                    " stopping",
                    self.name,
                    slot,
                    MAX_FAST_EXITS,
                    FAST_EXIT_S,
                    code,
                )
                return False
            self.workers[index] = self._start(slot)
            logger.warning(
                "%s worker %d (pid %d) exited with %s after %.1fs; replaced by pid %d",
                self.name,
                slot,
                worker.proc.pid,
                code,
                lived,
                self.workers[index].proc.pid,
            )
        return True

    # --- rolling restart -------------------------------------------------------------------

    def _rolling_restart(self) -> None:
        requested, self._roll_requested = self._roll_requested, None
        assert requested is not None
        roll = self._roll = _Roll(requested_at=requested, of=len(self.workers))
        logger.info("%s: rolling restart of %d workers", self.name, roll.of)
        self._write_state()
        for index in range(len(self.workers)):
            if self._stopping:
                roll.state, roll.message = "failed", "the pool was stopped during the roll"
                break
            old = self.workers[index]
            new = self._start(old.slot)
            error = self._wait_ready(new)
            if error is not None:
                self._terminate([new])
                self._exited(new)
                roll.state = "failed"
                roll.message = f"worker {old.slot}: {error}; the old worker keeps serving"
                logger.error("%s rolling restart failed: %s", self.name, roll.message)
                break
            self.workers[index] = new
            time.sleep(self.settle_s)
            self._terminate([old])
            self._exited(old)
            roll.replaced += 1
            logger.info(
                "%s worker %d: pid %d replaced by pid %d (%d/%d)",
                self.name,
                old.slot,
                old.proc.pid,
                new.proc.pid,
                roll.replaced,
                roll.of,
            )
            self._write_state()
        else:
            roll.state = "done"
            roll.message = f"replaced {roll.replaced} of {roll.of} workers"
        roll.finished_at = time.time()

    def _wait_ready(self, worker: _Worker) -> str | None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if worker.ready:
                return None
            code = worker.proc.poll()
            if code is not None:
                return f"the new worker exited with {code} before it was ready"
            if self._stopping:
                return "stopping"
            if self._tick is not None:
                self._tick()
            time.sleep(_TICK_S)
        return f"the new worker was not ready within {self.ready_timeout_s:.0f}s"

    # --- stopping --------------------------------------------------------------------------

    def _terminate(self, workers: Sequence[_Worker]) -> None:
        for worker in workers:
            if worker.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.drain_timeout_s
        for worker in workers:
            try:
                worker.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning(
                    "%s worker %d (pid %d) did not drain within %.0fs; killing",
                    self.name,
                    worker.slot,
                    worker.proc.pid,
                    self.drain_timeout_s,
                )
                worker.proc.kill()
                worker.proc.wait()

    def _stop_all(self) -> None:
        self._terminate(self.workers)
        for worker in self.workers:
            self._exited(worker)

    def _write_state(self, *, stopped: bool = False) -> None:
        state = {
            "parent": os.getpid(),
            "at": time.time(),
            "stopped": stopped,
            "workers": [w.describe() for w in self.workers],
            "crashes": self._crashes,
            "last_crash": self._last_crash,
            "roll": dataclasses.asdict(self._roll) if self._roll else None,
        }
        path = _state_path(self._run_dir, self.name)
        try:
            write_json(path, state)
        except OSError as exc:  # e.g. a full disk: keep the workers running all the same
            if not self._state_unwritable:
                logger.warning("%s: cannot write %s (%s); retrying", self.name, path, exc)
            self._state_unwritable = True
        else:
            self._state_unwritable = False


def request_roll(
    config: Config,
    name: str,
    parent: psutil.Process,
    *,
    report: Callable[[str], None],
    timeout_s: float,
) -> dict[str, Any]:
    """Ask the pool parent ``parent`` of component ``name`` for a rolling restart and wait
    for its outcome (raises ComponentFailed when it fails or does not finish in time)."""
    asked = time.time()
    parent.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + timeout_s
    shown = -1
    while time.monotonic() < deadline:
        state = pool_state(config, name) or {}
        roll = state.get("roll") or {}
        if roll.get("requested_at", 0) >= asked:  # this roll, not an earlier one
            if roll.get("replaced", 0) != shown and roll.get("state") == "rolling":
                shown = roll.get("replaced", 0)
                report(f"{name}: replaced {shown} of {roll.get('of')} workers…")
            if roll.get("state") == "done":
                return roll
            if roll.get("state") == "failed":
                raise ComponentFailed(
                    f"{name}: rolling restart failed: {roll.get('message')}",
                    hint=f"see 'workbench logs {name}'",
                )
        if not parent.is_running():
            raise ComponentFailed(f"{name} exited during its rolling restart")
        time.sleep(0.2)
    raise ComponentFailed(
        f"{name}: rolling restart did not finish within {timeout_s:.0f}s",
        hint=f"see 'workbench logs {name}'",
    )

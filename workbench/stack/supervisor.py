"""Start, stop and health-check the stack's background processes.

State lives under ``$WORKBENCH_HOME``: ``run/<name>.json`` records each started
process (pid and its start time, so a recycled pid is never mistaken for ours),
``run/stack.json`` which components the last ``up`` started, and
``logs/<name>.log`` their output. ``down`` stops only processes it can prove it
started; ``up`` is idempotent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import errno
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

from workbench.config import Config
from workbench.exceptions import ComponentFailed, PortInUse, WorkbenchError
from workbench.stack.base import Component, Detail, Port, UpOptions
from workbench.stack.components import registered

__all__ = ["ComponentStatus", "down", "log_path", "restart", "rolling_restart", "status", "up"]

logger = logging.getLogger(__name__)

# run/<component>.state.json: pid and start time of a process the supervisor started
# (components keep their own files, e.g. heartbeats, in run/ too)
_STATE_SUFFIX = ".state.json"


@dataclasses.dataclass(frozen=True)
class ComponentStatus:
    """One line of ``workbench status``."""

    name: str
    healthy: bool
    pid: int | None
    address: str
    detail: str
    metrics: dict[str, Any] | None = None  # numbers behind ``detail`` (e.g. the processor's lag)

    def to_json(self) -> dict[str, Any]:
        """The contract's JSON shape: name, healthy, pid, address, detail; plus ``metrics``
        for the components that report numbers."""
        out = dataclasses.asdict(self)
        if self.metrics is None:
            del out["metrics"]
        return out


def log_path(config: Config, name: str) -> Path:
    """Where component ``name`` writes its output."""
    return config.log_dir / f"{name}.log"


def _state_path(config: Config, name: str) -> Path:
    return config.run_dir / f"{name}{_STATE_SUFFIX}"


def _stack_path(config: Config) -> Path:
    return config.run_dir / "stack.json"


@contextlib.contextmanager
def _locked(config: Config) -> Iterator[None]:
    """Serialise ``up``/``down`` of one WORKBENCH_HOME across processes."""
    config.run_dir.mkdir(parents=True, exist_ok=True)
    with (config.run_dir / "supervisor.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    except (OSError, ValueError):
        return None


def _process(config: Config, name: str) -> psutil.Process | None:
    """The live process recorded for ``name``, or None (stale records are not trusted)."""
    state = _read_json(_state_path(config, name))
    if state is None:
        return None
    try:
        proc = psutil.Process(int(state["pid"]))
        if abs(proc.create_time() - float(state["create_time"])) > 0.5:
            return None  # the pid was recycled by an unrelated process
        if proc.status() == psutil.STATUS_ZOMBIE:
            _reap(proc.pid)
            return None
        return proc
    except (psutil.Error, KeyError, ValueError):
        return None


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _last_log_line(config: Config, name: str) -> str:
    try:
        with log_path(config, name).open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln and not ln.startswith("=== ")]
    return lines[-1][:300] if lines else ""


def _port_owner(port: int) -> str:
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="inet"):
            listening = conn.status == psutil.CONN_LISTEN and conn.laddr
            if listening and conn.laddr.port == port and conn.pid:
                return f" by pid {conn.pid} ({psutil.Process(conn.pid).name()})"
    return ""


def _check_port_free(port: Port) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # like the servers themselves: only a listener (not TIME_WAIT) makes the port busy
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((port.host, port.port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(
                    f"port {port.host}:{port.port} is already in use{_port_owner(port.port)}",
                    hint=f"stop that process or set {port.env} to a free port",
                ) from None
            raise PortInUse(
                f"cannot bind {port.host}:{port.port}: {exc.strerror}",
                hint=f"set WORKBENCH_HOST or {port.env}",
            ) from None


def _spawn(config: Config, component: Component, options: UpOptions) -> psutil.Process:
    assert component.command is not None
    argv = component.command(config, options)
    config.log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **config.env(), **(component.env(config) if component.env else {})}
    with log_path(config, component.name).open("ab") as log:
        stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        log.write(f"=== {stamp} starting: {' '.join(argv)}\n".encode())
        log.flush()
        try:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # own process group: survives the shell, killed as one
            )
        except OSError as exc:
            raise ComponentFailed(
                f"{component.name}: cannot start {argv[0]}: {exc.strerror or exc}"
            ) from None
    proc = psutil.Process(popen.pid)
    _state_path(config, component.name).write_text(
        json.dumps(
            {
                "pid": popen.pid,
                "create_time": proc.create_time(),
                "argv": argv,
                "address": component.address(config),
                "started_at": stamp,
            }
        )
    )
    return proc


def _wait_ready(
    config: Config, component: Component, proc: psutil.Process | None, check: Callable[..., Any]
) -> None:
    deadline = time.monotonic() + config.startup_timeout
    reason: str | None = "not checked"
    while time.monotonic() < deadline:
        if proc is not None and (not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE):
            _reap(proc.pid)
            last = _last_log_line(config, component.name)
            raise ComponentFailed(
                f"{component.name} exited during start-up" + (f": {last}" if last else ""),
                hint=f"see 'workbench logs {component.name}'",
            )
        reason = check(config)
        if reason is None:
            return
        time.sleep(0.2)
    raise ComponentFailed(
        f"{component.name} not healthy after {config.startup_timeout:.0f}s: {reason}",
        hint=f"see 'workbench logs {component.name}' (WORKBENCH_STARTUP_TIMEOUT sets the wait)",
    )


def _enabled(config: Config) -> list[Component]:
    return [c for c in registered() if c.enabled(config)]


def up(
    config: Config,
    options: UpOptions | None = None,
    *,
    only: list[str] | None = None,
    report: Callable[[str], None] = logger.info,
) -> list[ComponentStatus]:
    """Start every enabled component that is not already running; wait until all are healthy.

    Idempotent: running components are left alone. When one fails to start,
    the components this call started are stopped again and the error raised.
    """
    options = options or UpOptions()
    components = [
        c
        for c in _enabled(config)
        if (only is None or c.name in only) and c.name not in options.skip
    ]
    started: list[Component] = []
    with _locked(config):
        try:
            for component in components:
                _start_one(config, component, options, started, report)
        except BaseException:
            for component in reversed(started):
                _stop_one(config, component.name, component.stop_timeout_s, report)
            raise
        stack = _read_json(_stack_path(config)) or {"components": []}
        names = list(dict.fromkeys([*stack["components"], *(c.name for c in components)]))
        _stack_path(config).write_text(json.dumps({"components": names}))
    return status(config)


def _start_one(
    config: Config,
    component: Component,
    options: UpOptions,
    started: list[Component],
    report: Callable[[str], None],
) -> None:
    proc = None
    if component.command is not None:
        proc = _process(config, component.name)
        if proc is not None:
            report(f"{component.name}: already running (pid {proc.pid})")
            return
        for port in component.ports(config):
            _check_port_free(port)
        proc = _spawn(config, component, options)
        started.append(component)
        report(f"{component.name}: started (pid {proc.pid}), waiting until healthy…")
    _wait_ready(config, component, proc, component.ready or component.health)
    if component.after_healthy is not None:
        component.after_healthy(config)
    _wait_ready(config, component, proc, component.health)
    report(f"{component.name}: healthy at {component.address(config)}")


def _stop_one(config: Config, name: str, timeout_s: float, report: Callable[[str], None]) -> bool:
    """Stop ``name`` if we started it; True when a process was stopped."""
    proc = _process(config, name)
    stopped = False
    if proc is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except psutil.TimeoutExpired:
            report(f"{name}: did not stop within {timeout_s:.0f}s, killing")
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(psutil.Error):
                proc.wait(timeout=5)
        _reap(proc.pid)
        stopped = True
        report(f"{name}: stopped (pid {proc.pid})")
    _state_path(config, name).unlink(missing_ok=True)
    return stopped


def down(config: Config, *, report: Callable[[str], None] = logger.info) -> list[str]:
    """Stop every component this WORKBENCH_HOME started, in reverse start order.

    Returns the names of the components that were running. Processes not
    started by the workbench are never touched.
    """
    if not config.run_dir.is_dir():
        return []
    with _locked(config):
        known = {c.name: c for c in registered()}
        recorded = [
            p.name.removesuffix(_STATE_SUFFIX) for p in config.run_dir.glob(f"*{_STATE_SUFFIX}")
        ]
        stack = (_read_json(_stack_path(config)) or {}).get("components", [])
        order = list(dict.fromkeys([*stack, *recorded]))
        stopped = []
        for name in reversed(order):
            component = known.get(name)
            if component is not None and component.before_down and _process(config, name):
                try:
                    component.before_down(config)
                except Exception as exc:  # stopping the component itself matters more
                    report(f"{name}: could not stop what it started ({exc})")
            timeout = component.stop_timeout_s if component is not None else 15.0
            if _stop_one(config, name, timeout, report):
                stopped.append(name)
        _stack_path(config).unlink(missing_ok=True)
    return stopped


def restart(
    config: Config,
    names: list[str],
    options: UpOptions | None = None,
    *,
    report: Callable[[str], None] = logger.info,
) -> list[ComponentStatus]:
    """Stop the named components (in reverse start order) and start them again.

    A plain restart: each component is down while it restarts (devices retry on
    the gateway's refusals; the processor resumes from the lake's offsets).
    """
    known = {c.name: c for c in registered()}
    with _locked(config):
        for name in reversed([c.name for c in registered() if c.name in names]):
            _stop_one(config, name, known[name].stop_timeout_s, report)
    return up(config, options, only=names, report=report)


def rolling_restart(
    config: Config,
    names: list[str] | None = None,
    *,
    report: Callable[[str], None] = logger.info,
) -> list[ComponentStatus]:
    """Restart the named components (default: every running one that can roll) without
    downtime for devices: pooled components replace their workers one at a time (see
    :mod:`workbench.stack.pool`), the others off the devices' path restart in place.
    Raises WorkbenchError, before touching anything, for a component that cannot."""
    from workbench.stack.pool import request_roll

    running = [c for c in _enabled(config) if c.command is not None and _process(config, c.name)]
    if names is None:
        chosen = [c for c in running if c.rolling in ("pool", "in-place")]
        for component in running:
            if component not in chosen:
                report(f"{component.name}: left alone: {component.rolling}")
    else:
        chosen = [c for c in _enabled(config) if c.name in names]
        for component in chosen:
            if component not in running:
                raise ComponentFailed(
                    f"{component.name} is not running", hint="start it with 'workbench up'"
                )
            if component.rolling not in ("pool", "in-place"):
                raise ComponentFailed(
                    f"{component.name} cannot be restarted without downtime: {component.rolling}"
                )
    if not chosen:
        raise ComponentFailed("nothing to restart: no component is running", hint="workbench up")
    for component in chosen:
        if component.rolling == "pool":
            proc = _process(config, component.name)
            assert proc is not None
            report(f"{component.name}: rolling restart (pid {proc.pid} replaces its workers)")
            roll = request_roll(
                config,
                component.name,
                proc,
                report=report,
                timeout_s=component.stop_timeout_s * 4 + config.startup_timeout * 4,
            )
            report(f"{component.name}: {roll['message']}")
            # fresh members join the consumer group and write their first heartbeat a
            # moment after the roll: return once the component is healthy again, so the
            # status printed next is the settled one, not that moment.
            _wait_ready(config, component, proc, component.health)
            report(f"{component.name}: healthy at {component.address(config)}")
        else:
            report(f"{component.name}: not on the devices' path; restarting it in place")
            with _locked(config):
                _stop_one(config, component.name, component.stop_timeout_s, report)
            up(config, only=[component.name], report=report)
    return status(config)


def status(config: Config) -> list[ComponentStatus]:
    """Health of every component of the running stack (empty when nothing was started)."""
    stack = _read_json(_stack_path(config))
    if stack is None:
        return []
    by_name = {c.name: c for c in registered()}
    out = []
    for name in stack.get("components", []):
        component = by_name.get(name)
        if component is None:
            out.append(ComponentStatus(name, False, None, "", "unknown component (upgrade?)"))
            continue
        out.append(_status_one(config, component))
    return out


def _status_one(config: Config, component: Component) -> ComponentStatus:
    address = component.address(config)
    pid = None
    if component.command is not None:
        proc = _process(config, component.name)
        if proc is None:
            last = _last_log_line(config, component.name)
            detail = "not running" + (f" (last log line: {last})" if last else "")
            return ComponentStatus(component.name, False, None, address, detail)
        pid = proc.pid
    try:
        reason = component.health(config)
    except WorkbenchError as exc:
        reason = str(exc)
    if reason is None:
        detail, metrics = "ok", None
        if component.describe is not None:
            try:
                described = component.describe(config)
            except Exception as exc:  # a detail must never make a healthy component fail
                detail = f"ok (detail unavailable: {type(exc).__name__})"
            else:
                if isinstance(described, Detail):
                    detail, metrics = described.text or "ok", described.metrics
                else:
                    detail = described or "ok"
        return ComponentStatus(component.name, True, pid, address, detail, metrics)
    return ComponentStatus(component.name, False, pid, address, reason)

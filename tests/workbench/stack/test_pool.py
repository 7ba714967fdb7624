"""The worker pool's crash record and the processor health built on it (real processes)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from workbench.config import Config
from workbench.stack.base import Component
from workbench.stack.components import registered

_POOL = textwrap.dedent(
    """
    import logging, sys
    from pathlib import Path
    from workbench.stack.pool import WorkerPool
    logging.basicConfig(level=logging.INFO)
    run_dir, worker = Path(sys.argv[1]), sys.argv[2]
    pool = WorkerPool(
        "demo", count=1, argv=lambda slot: [sys.executable, "-c", worker], env={},
        run_dir=run_dir, drain_timeout_s=5, ready_timeout_s=5,
    )
    sys.exit(pool.run())
    """
)


def _pool(run_dir: Path, worker: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _POOL, str(run_dir), worker],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_crashed_workers_are_counted_in_the_state_file(tmp_path: Path) -> None:
    pool = _pool(tmp_path, "import sys, time; time.sleep(0.2); sys.exit(3)")
    assert pool.wait(timeout=60) == 1  # five fast exits in a row stop the pool
    state = json.loads((tmp_path / "demo.pool.json").read_text())
    assert state["crashes"] == 5
    crash = state["last_crash"]
    assert (crash["slot"], crash["code"]) == (0, 3)
    assert 0.1 < crash["lived_s"] < 3
    assert time.time() - 60 < crash["at"] <= time.time()


def test_a_state_file_that_cannot_be_written_does_not_stop_the_pool(tmp_path: Path) -> None:
    # a folder where the state file goes: renaming the written state over it fails (with
    # IsADirectoryError) like a write on a full disk
    (tmp_path / "demo.pool.json").mkdir()
    pool = _pool(tmp_path, "import time; time.sleep(60)")
    assert pool.stdout is not None
    said = []
    for line in pool.stdout:  # until the pool runs (however long its start takes here)
        said.append(line)
        if "cannot write" in line:
            break
    time.sleep(2)  # more state writes fail meanwhile
    assert pool.poll() is None
    pool.send_signal(signal.SIGTERM)
    out, _ = pool.communicate(timeout=30)
    out = "".join(said) + out
    assert pool.returncode == 0, out
    assert out.count("cannot write") == 1, out  # said once, not every tick


def _processor() -> Component:
    return next(c for c in registered() if c.name == "processor")


@pytest.mark.parametrize(
    ("crashed_s_ago", "processed_s_ago", "healthy"),
    [
        (None, 1.0, True),  # no crash
        (5.0, None, False),  # crashed, nothing committed since: crash-looping
        (5.0, 8.0, False),  # the last commit was before the crash
        (5.0, 1.0, True),  # a member committed a batch since: recovered
        (45.0, None, True),  # long ago
    ],
)
def test_processor_health_flags_a_recent_crash_without_a_commit_since(
    tmp_path: Path, crashed_s_ago: float | None, processed_s_ago: float | None, healthy: bool
) -> None:
    config = Config.from_env({"WORKBENCH_HOME": str(tmp_path)})
    config.run_dir.mkdir(parents=True)
    now = time.time()
    beat = {"at": now, "processed_at": None if processed_s_ago is None else now - processed_s_ago}
    (config.run_dir / "processor.heartbeat.json").write_text(json.dumps(beat))
    crash = None if crashed_s_ago is None else {"pid": 4242, "code": 1, "lived_s": 7.5}
    if crash is not None and crashed_s_ago is not None:
        crash["at"] = now - crashed_s_ago
    state = {"workers": [], "crashes": 0 if crash is None else 3, "last_crash": crash}
    (config.run_dir / "processor.pool.json").write_text(json.dumps(state))

    health = _processor().health(config)  # type: ignore[misc]
    if healthy:
        assert health is None
    else:
        assert health is not None
        assert health.startswith("member pid 4242 exited with 1 after 7.5s, 5s ago")
        assert "no batch committed since (3 crashes since start)" in health


# a worker that signals ready unless the file named in argv... exists, then sleeps
_WORKER = textwrap.dedent(
    """
    import os, time
    from pathlib import Path
    from workbench.stack.pool import signal_ready
    if not Path(os.environ["BROKEN_FLAG"]).exists():
        signal_ready()
    time.sleep(600)
    """
)


def _roll(run_dir: Path, parent: int) -> tuple[str, dict]:
    """``request_roll`` against the pool parent; ('done'|error text, the roll state)."""
    import psutil

    from workbench.exceptions import ComponentFailed
    from workbench.stack.pool import pool_state, request_roll

    config = Config.from_env({"WORKBENCH_HOME": str(run_dir.parent)})
    try:
        request_roll(config, "demo", psutil.Process(parent), report=print, timeout_s=60)
        outcome = "done"
    except ComponentFailed as exc:
        outcome = str(exc)
    return outcome, (pool_state(config, "demo") or {})


def test_a_rolling_restart_replaces_workers_and_a_new_one_that_never_gets_ready_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    flag = tmp_path / "broken"
    monkeypatch.setenv("BROKEN_FLAG", str(flag))
    pool = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _POOL.replace("env={}", "env=dict(__import__('os').environ)"),
            str(run_dir),
            _WORKER,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        state_file = run_dir / "demo.pool.json"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if state_file.exists() and all(
                w["ready"] for w in json.loads(state_file.read_text())["workers"]
            ):
                break
            time.sleep(0.1)
        first = json.loads(state_file.read_text())["workers"][0]["pid"]

        outcome, state = _roll(run_dir, pool.pid)  # a healthy roll
        assert outcome == "done"
        second = state["workers"][0]["pid"]
        assert second != first and state["roll"]["replaced"] == 1

        flag.touch()  # the next new worker never gets ready (ready_timeout_s=5)
        outcome, state = _roll(run_dir, pool.pid)
        assert "rolling restart failed" in outcome and "not ready within 5s" in outcome
        assert state["roll"]["state"] == "failed"
        assert state["workers"][0]["pid"] == second  # the old worker keeps serving
        assert pool.poll() is None
    finally:
        pool.send_signal(signal.SIGTERM)
        pool.wait(timeout=30)

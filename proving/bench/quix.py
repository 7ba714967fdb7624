"""Quix Streams as the peer of ``workbench bench ingest``: its own virtualenv, and a run of
:mod:`proving.bench.quix_app` over the bench's topic.

Quix Streams pins a confluent-kafka older than the one the workbench uses, so it is no
dependency of the project: the bench builds a virtualenv of its own with
``pip install quixstreams==QUIX_VERSION`` once (pip's progress on stderr) and reuses it
while its stamp file names that version. When the virtualenv cannot be built (offline)
or the app fails (e.g. a broker without the topic configs or transactions Quix asks
for), :class:`QuixUnavailable` carries one line saying why, and the bench reports the
rest without the Quix row's figure.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from workbench.config import Config
from workbench.kafka import rdkafka_client_settings

__all__ = ["APP", "QUIX_VERSION", "QuixRun", "QuixUnavailable", "quix_python", "run_quix"]

QUIX_VERSION = "3.28.1"
APP = Path(__file__).with_name("quix_app.py")
_STAMP = "workbench-quix.json"


class QuixUnavailable(Exception):
    """Quix Streams could not run; the message is one line saying why."""


def _tail(lines: collections.deque[str]) -> str:
    meaningful = [line.strip() for line in lines if line.strip()]
    return meaningful[-1][:300] if meaningful else "no output"


def quix_python(venv: Path, report: Callable[[str], None]) -> Path:
    """The python of ``venv`` with ``quixstreams==QUIX_VERSION`` installed, building the
    virtualenv when it has no stamp naming that version (a half-built one is rebuilt)."""
    python = venv / "bin" / "python"
    stamp = venv / _STAMP
    try:
        if json.loads(stamp.read_text()).get("quixstreams") == QUIX_VERSION and python.exists():
            return python
    except (OSError, ValueError):
        pass
    report(f"building a virtualenv for Quix Streams {QUIX_VERSION} in {venv} (once)…")
    shutil.rmtree(venv, ignore_errors=True)
    try:
        venv.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise QuixUnavailable(f"cannot create a virtualenv in {venv}: {exc}") from None
    made = subprocess.run(
        [sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True, check=False
    )
    if made.returncode != 0:
        why = _tail(collections.deque(made.stderr.splitlines(), maxlen=5))
        raise QuixUnavailable(f"cannot create a virtualenv in {venv}: {why}")
    argv = [
        str(python),
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--progress-bar",
        "on",
        f"quixstreams=={QUIX_VERSION}",
    ]
    last: collections.deque[str] = collections.deque(maxlen=20)
    pip = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert pip.stdout is not None
    for line in pip.stdout:  # pip's own progress, as it comes
        sys.stderr.write(line)
        last.append(line)
    if pip.wait() != 0:
        errors = [line for line in last if "ERROR" in line] or list(last)
        raise QuixUnavailable(
            f"pip install quixstreams=={QUIX_VERSION} failed (offline?): "
            f"{_tail(collections.deque(errors))}"
        )
    stamp.write_text(json.dumps({"quixstreams": QUIX_VERSION}))
    return python


class QuixRun:
    """What one run of the Quix app measured: ``events`` processed, at ``rate`` events/s
    (first record polled -> the app stopped with its last checkpoint committed)."""

    def __init__(self, events: int, rate: float, windows: int) -> None:
        self.events = events
        self.rate = rate
        self.windows = windows


def run_quix(
    config: Config,
    python: Path,
    *,
    events: int,
    processes: int,
    home: Path,
    window: str = "hopping",
    timeout_s: float = 3600,
) -> QuixRun:
    """``processes`` Quix apps in one new consumer group over ``config.topic``, until they
    have processed ``events`` (one app stops at that count; several stop when idle 3 s)."""
    group = f"bench-quix-{uuid.uuid4().hex[:8]}"
    procs = []
    results = []
    for i in range(processes):
        out = home / f"{group}-{i}"
        out.mkdir(parents=True)
        spec = {
            # librdkafka settings: where the broker is and how to authenticate
            "client": rdkafka_client_settings(config),
            "topic": config.topic,
            "group": group,
            "state_dir": str(out / "state"),
            "out_dir": str(out),
            "events": events,
            "stop_at_count": processes == 1,
            "commit_interval": config.commit_interval,
            "grace_s": config.late_grace,
            "window": window,
            "result": str(out / "result.json"),
        }
        (out / "spec.json").write_text(json.dumps(spec))
        results.append(out / "result.json")
        log = (out / "quix.log").open("wb")
        procs.append(
            (
                subprocess.Popen(
                    [str(python), str(APP), str(out / "spec.json")],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONWARNINGS": "ignore"},
                ),
                out / "quix.log",
            )
        )
    deadline = time.monotonic() + timeout_s
    try:
        for proc, log_path in procs:
            code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            if code != 0:
                lines = log_path.read_text(errors="replace").splitlines()
                raise QuixUnavailable(
                    f"the Quix Streams app exited with {code}: "
                    f"{_tail(collections.deque(lines, maxlen=5))} (log: {log_path})"
                )
    except subprocess.TimeoutExpired:
        raise QuixUnavailable(f"the Quix Streams app did not finish in {timeout_s:.0f} s") from None
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    done = [json.loads(path.read_text()) for path in results]
    total = sum(int(r["count"]) for r in done)
    first = min(float(r["first"]) for r in done if r["first"])
    # one app stops at the count, after its final checkpoint commit ("closed"); apps
    # stopped by idleness waited 3 s after their last record, so that is their end
    end = max(
        float(r["closed"] if r["stopped_by"] == "count" else r["last"]) for r in done if r["count"]
    )
    windows = 0
    for i in range(processes):
        csv = home / f"{group}-{i}" / "building_windows.csv"
        if csv.exists():
            with csv.open() as f:
                windows += max(0, sum(1 for _ in f) - 1)
    return QuixRun(total, total / (end - first), windows)

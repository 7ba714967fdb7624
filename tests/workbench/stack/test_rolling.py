"""A rolling upgrade under load: `workbench restart --rolling` while simulated devices send.

Real processes end to end: the embedded broker, a gateway parent with two workers,
a processor parent with two consumer-group members, the simulator sending over HTTP
and FBK1 with a ground-truth log. Devices must see no failed request and the lake
must hold every accepted event exactly once.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import psutil
import pytest

from tests.conftest import isolated_env, run_cli
from workbench.config import Config
from workbench.lake.tables import table_uri

pytestmark = [pytest.mark.integration, pytest.mark.slow]


# After the roll, devices send this long through the new workers before the test stops them.
_AFTER_ROLL_S = 10.0
_MIN_EVENTS = 10_000  # the run carries at least this many events


def _lines(path: Path) -> int:
    """Lines of the truth log so far (one per answered attempt)."""
    with path.open("rb") as f:
        return sum(1 for _ in f)


def _worker_pids(home: Path, name: str) -> set[int]:
    state = json.loads((home / "run" / f"{name}.pool.json").read_text())
    return {w["pid"] for w in state["workers"]}


def _stored(config: Config) -> pl.DataFrame:
    try:
        return pl.read_delta(table_uri(config, "telemetry"), columns=["device_id", "seq"])
    except Exception:  # no table yet
        return pl.DataFrame(schema={"device_id": pl.String, "seq": pl.Int64})


def _difference(missing: set[tuple[str, int]], extra: set[tuple[str, int]], home: Path) -> str:
    """What a failed comparison needs: counts, examples and the processors' warnings."""
    log = home / "logs" / "processor.log"
    warnings = [
        line
        for line in (log.read_text().splitlines() if log.exists() else [])
        if " WARNING " in line or " ERROR " in line
    ]
    return "\n".join(
        [
            f"{len(missing)} accepted events not stored, e.g. {sorted(missing)[:5]}",
            f"{len(extra)} stored events never accepted, e.g. {sorted(extra)[:5]}",
            "processor warnings and errors:",
            *warnings[-40:],
        ]
    )


def test_rolling_restart_under_load_fails_no_request_and_loses_nothing(tmp_path: Path):
    home = tmp_path / "home"
    env = isolated_env(
        home,
        WORKBENCH_GATEWAY_WORKERS="2",
        WORKBENCH_PROCESSORS="2",
        WORKBENCH_COMMIT_INTERVAL="0.5",
        WORKBENCH_STARTUP_TIMEOUT="120",
    )
    config = Config.from_env(env)
    truth = tmp_path / "truth.jsonl"
    try:
        up = run_cli(env, "up", "broker", "gateway", "processor", timeout=300)
        assert up.returncode == 0, up.stderr[-3000:]
        gateway_before = _worker_pids(home, "gateway")
        processor_before = _worker_pids(home, "processor")
        assert len(gateway_before) == 2 and len(processor_before) == 2
        # each member's polars leaves a core to every member's Kafka child: the cores
        # less two, halved, and at least one thread
        threads = max(1, (len(psutil.Process().cpu_affinity() or []) - 2) // 2)
        for pid in processor_before:
            environ = psutil.Process(pid).environ()
            assert environ.get("POLARS_MAX_THREADS") == str(threads), environ

        sim = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "simulator",
                "run",
                "--devices",
                "300",
                "--interval",
                "1",
                "--duration",
                # a bound, ample for both rolls, each waiting for health, to end while
                # devices still send (on Apache Kafka every member change is a group
                # rebalance): the test stops the devices once the roll is done
                "300",
                "--truth",
                str(truth),
                "--json",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # wait until events flow into the lake, then roll everything that can roll
        deadline = time.monotonic() + 120
        while _stored(config).height < 2_000:
            assert sim.poll() is None, sim.stderr.read() if sim.stderr else ""
            assert time.monotonic() < deadline, "no events reached the lake"
            time.sleep(0.5)
        roll = run_cli(env, "restart", "--rolling", timeout=300)
        assert roll.returncode == 0, roll.stdout[-3000:] + roll.stderr[-3000:]
        assert "broker: left alone: the embedded broker is a single node" in roll.stderr
        assert "gateway: replaced 2 of 2 workers" in roll.stderr
        assert "processor: replaced 2 of 2 workers" in roll.stderr
        # every worker is new, and the roll happened while devices were still sending
        assert _worker_pids(home, "gateway").isdisjoint(gateway_before)
        assert _worker_pids(home, "processor").isdisjoint(processor_before)
        assert sim.poll() is None, "the simulator finished before the roll did"
        # devices keep sending through the new workers for a while, until over 10,000
        # events in all, then stop (SIGTERM: they finish the tick in hand and summarize)
        after_roll = time.monotonic() + _AFTER_ROLL_S
        while sim.poll() is None and (
            time.monotonic() < after_roll or _lines(truth) < _MIN_EVENTS + 1_000
        ):
            time.sleep(0.5)
        assert sim.poll() is None, "the simulator finished before the devices were stopped"
        sim.send_signal(signal.SIGTERM)

        out, err = sim.communicate(timeout=300)
        assert sim.returncode == 0, err[-3000:]
        summary = json.loads(out)
        assert summary["failed"] == 0, summary  # no device request failed for good
        assert summary["rejected"] == {}, summary  # and none was refused (503/429)
        assert summary["accepted"] == summary["sent"] > _MIN_EVENTS

        accepted = set()
        for line in truth.read_text().splitlines():
            event = json.loads(line)
            if event["outcome"] == "accepted":
                accepted.add((event["device_id"], event["seq"]))
        assert len(accepted) == summary["accepted"]
        deadline = time.monotonic() + 180
        stored = _stored(config)
        while stored.height < len(accepted) and time.monotonic() < deadline:
            time.sleep(1)
            stored = _stored(config)
        assert stored.height == stored.unique().height, "duplicates in telemetry"
        kept = set(stored.iter_rows())
        # nothing lost, nothing extra
        assert kept == accepted, _difference(accepted - kept, kept - accepted, home)
        status = run_cli(env, "status", "--json")
        assert status.returncode == 0, status.stdout
        details = {c["name"]: c["detail"] for c in json.loads(status.stdout)["components"]}
        assert "2 workers; last rolling restart done" in details["gateway"]
        assert "2 members; last rolling restart done" in details["processor"]
        assert "(replaced 2 of 2)" in details["processor"]
    finally:
        down = run_cli(env, "down", timeout=300)
    assert down.returncode == 0, down.stderr
    leftovers = [
        p.pid
        for p in psutil.process_iter(["environ"])
        if (p.info.get("environ") or {}).get("WORKBENCH_HOME") == str(home)
    ]
    assert leftovers == []

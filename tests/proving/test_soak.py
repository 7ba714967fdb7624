"""The soak run, scaled down: a real scratch stack, real devices, a rolling restart midway."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import psutil
import pytest

from proving.scratch import Ledger
from proving.soak import SoakOptions, SoakReport, run_soak
from tests.conftest import isolated_env, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_scaled_down_soak_with_a_rolling_restart_loses_nothing(tmp_path):
    lines: list[str] = []
    report = run_soak(
        # half a minute: the soak tool's own figures and its roll are what this checks (a
        # roll under load, by the event, is tests/workbench/stack/test_rolling.py's)
        SoakOptions(devices=1_000, interval_s=2.0, minutes=0.5, roll_at=0.3),
        say=lines.append,
    )
    figures = report.figures()
    assert report.ok, "\n".join(report.lines())
    assert figures["accepted"] == figures["sent"] == figures["stored"] > 12_000  # of 15,000
    assert figures["duplicated"] == figures["lost"] == figures["failed_requests"] == 0
    assert figures["roll"].startswith("done")
    assert any("gateway: replaced 2 of 2 workers" in line for line in lines)
    assert any("processor: replaced 1 of 1 workers" in line for line in lines)
    assert set(figures["usage"]) == {
        "broker",
        "gateway",
        "processor",
        "hiveserver2",
        "voila",
        "simulator",
    }
    assert all(u["rss_max_mb"] > 0 for u in figures["usage"].values())
    assert figures["freshness_samples"] > 5 and figures["freshness_p99_s"] is not None
    assert figures["simulated_s"] == 30.0 and figures["kept_real_time"] is not None


def _report(*, wall_s: float = 601.0, **ledger: int) -> SoakReport:
    base = dict(
        sent=10, accepted=10, refused=0, failed=0, stored=10, duplicates=0, lost=0, unexpected=0
    )
    base.update(ledger)
    summary = {
        "failed": 0,
        "rejected": {},
        "retries": 0,
        "cpu_share": 0.05,
        "wall_s": wall_s,
        "simulated_s": 600.0,
    }
    return SoakReport(
        SoakOptions(), 60.0, summary, Ledger(**base), [0.5, 1.0, 2.0], {}, "done", 3.0
    )


def test_a_soak_fails_on_any_loss_or_duplicate():
    assert _report().ok
    assert not _report(lost=1, stored=9).ok
    assert not _report(duplicates=1, stored=11).ok
    assert not _report(unexpected=1, stored=11).ok


def test_the_report_says_whether_the_devices_kept_real_time():
    on_time = _report(wall_s=605.0)
    assert on_time.kept_real_time and on_time.behind_s == 5.0
    assert "sending took 605s for 600s simulated: kept real time" in "\n".join(on_time.lines())
    late = _report(wall_s=1404.0)
    assert late.kept_real_time is False and late.behind_s == 804.0
    assert "fell 804s behind real time" in "\n".join(late.lines())
    assert late.ok  # pace is a figure: correctness alone decides the result
    assert late.figures()["kept_real_time"] is False


def test_freshness_percentiles():
    report = _report()
    assert report.percentile(50) == 1.0
    assert report.percentile(99) == 2.0
    assert report.percentile(0) == 0.5


def test_soak_cli_refuses_a_bad_roll_point(tmp_path):
    env = isolated_env(tmp_path / "home")
    done = run_cli(env, "soak", "--roll-at", "1.5")
    assert done.returncode != 0
    assert "--roll-at must be between 0 and 1" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_terminated_soak_stops_its_scratch_stack(tmp_path):
    """SIGTERM (a CI timeout, `kill`) runs the same clean-up as Ctrl-C: no component of
    the scratch stack outlives the command."""
    home = tmp_path / "scratch"
    env = isolated_env(tmp_path / "home")
    command = ["soak", "--devices", "50", "--minutes", "5", "--home", str(home), "--keep"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "workbench", *command],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    for line in proc.stdout:  # until the devices send
        seen.append(line)
        if "devices sending" in line:
            break
    else:
        pytest.fail("".join(seen))
    pids = [json.loads(p.read_text())["pid"] for p in (home / "run").glob("*.state.json")]
    assert len(pids) >= 4, pids
    simulators = [
        kid.pid
        for kid in psutil.Process(proc.pid).children(recursive=True)
        if "simulator" in kid.cmdline()
    ]
    if len(simulators) != 1:  # the devices ended at once: show why
        proc.terminate()
        rest, _ = proc.communicate(timeout=120)
        pytest.fail("the devices run as a child of the soak:\n" + "".join(seen) + rest)
    pids += simulators
    assert all(psutil.pid_exists(pid) for pid in pids)
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, "".join(seen) + rest
    assert "workbench: terminated" in rest
    alive = [
        pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"
    ]
    assert alive == [], "".join(seen) + rest

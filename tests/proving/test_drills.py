"""Failure drills: every registered drill against a real scratch stack (slow), the drills'
own judging logic (fast), and the ``workbench drill`` command line."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections import Counter

import httpx
import pytest

from proving.drills import DrillReport, drills, probes, run_drill
from proving.drills.bad_input_cases import FrameCase, HttpCase
from proving.drills.disk_full import _LakeFs
from proving.scratch import Ledger
from tests.conftest import isolated_env, run_cli

_ROOT = os.geteuid() == 0


# cluster-broker-kill and maintenance-under-load (on local disk and on S3) have tests of
# their own below, with their figures checked
_OWN_TESTS = ("cluster-broker-kill", "maintenance-under-load")


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", [name for name in drills() if name not in _OWN_TESTS])
def test_drill_passes(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if name == "disk-full" and not (_ROOT and shutil.which("mount")):
        pytest.skip("disk-full mounts a tmpfs for the lake: it needs root (CI runs as root)")
    monkeypatch.setenv("WORKBENCH_BROKER", "kafka")  # the product's durable default
    lines: list[str] = []
    report = run_drill(name, say=lines.append)
    text = "\n".join(lines)
    assert report.checks, text
    assert report.ok, text
    assert lines[-1] == f"drill {name}: PASSED"
    if name in ("broker-restart", "broker-kill"):
        assert "(kafka; pid" in text  # it ran on Apache Kafka, not the light broker
        assert "no accepted event lost: the broker keeps what it acknowledged (0 of" in text


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(900)
def test_killing_a_cluster_partition_leader_loses_nothing() -> None:
    lines: list[str] = []
    report = run_drill("cluster-broker-kill", say=lines.append)
    text = "\n".join(lines)
    assert report.ok, text
    figures = report.figures
    assert figures["brokers"] == 3 and figures["replication_factor"] == 3, figures
    assert figures["min_insync_replicas"] == 2
    assert 0 in figures["killed_led_partitions"]  # it killed partition 0's leader
    assert figures["partition0_new_leader"] != figures["killed_broker"]
    assert figures["accepted"] == figures["stored"] > 0, figures
    assert figures["lost"] == 0 and figures["duplicates"] == 0, figures
    assert figures["failed_requests"] == 0 and figures["other_refusals"] == 0, figures
    checks = dict(report.checks)
    assert checks["the killed broker rejoined and caught up (0 partitions still lagging)"]
    assert checks["every partition of every topic fully in sync at the end (0 not)"]
    assert json.loads(json.dumps(report.to_json()))["figures"] == figures


def test_every_drill_the_issue_asks_for_is_registered() -> None:
    assert set(drills()) >= {
        "processor-kill",
        "gateway-kill",
        "broker-restart",
        "broker-kill",
        "bad-input-storm",
        "clock-skew",
        "disk-full",
        "cluster-broker-kill",
    }


# --- DrillReport and Ledger ---------------------------------------------------------------


def _ledger(**changes: int) -> Ledger:
    base = dict(
        sent=10, accepted=9, refused=1, failed=0, stored=9, duplicates=0, lost=0, unexpected=0
    )
    base.update(changes)
    return Ledger(**base)


def test_a_report_passes_only_with_checks_all_passed() -> None:
    said: list[str] = []
    report = DrillReport("demo", said.append)
    assert not report.ok  # nothing verified is not a pass
    report.step("broke something")
    assert report.check("it held", True)
    assert report.ok
    assert not report.check("it held again", False)
    assert not report.ok
    assert said == [
        "  did:      broke something",
        "  verified: it held",
        "  FAILED  : it held again",
    ]
    assert report.to_json() == {
        "drill": "demo",
        "ok": False,
        "did": ["broke something"],
        "checks": [{"check": "it held", "ok": True}, {"check": "it held again", "ok": False}],
    }


@pytest.mark.parametrize(
    ("changes", "ok"),
    [
        ({}, True),
        ({"duplicates": 1, "stored": 10}, False),
        ({"lost": 1, "stored": 8}, False),
        ({"unexpected": 1, "stored": 10}, False),
    ],
)
def test_exactly_once_checks_follow_the_ledger(changes: dict[str, int], ok: bool) -> None:
    ledger = _ledger(**changes)
    assert ledger.exactly_once is ok
    report = DrillReport("demo", lambda line: None)
    report.exactly_once(ledger)
    assert len(report.checks) == 3
    assert report.ok is ok
    assert report.did == [f"compared the devices' truth log with telemetry: {ledger.line()}"]


# --- the drills' own judging ---------------------------------------------------------------


def _problem(status: int, reason: str, **extra: object) -> httpx.Response:
    body = {"type": "t", "title": "x", "status": status, "reason": reason, "detail": "d", **extra}
    return httpx.Response(
        status, content=json.dumps(body), headers={"Content-Type": "application/problem+json"}
    )


def test_an_http_case_accepts_only_its_precise_problem() -> None:
    case = HttpCase("seq a string", 422, "invalid", b"{}", {}, field="seq")
    assert case.mismatch(_problem(422, "invalid", errors=[{"field": "seq"}])) is None
    wrong_field = case.mismatch(_problem(422, "invalid", errors=[{"field": "ts"}]))
    assert wrong_field == "seq a string: expected an error on 'seq', got ['ts']"
    wrong_reason = case.mismatch(_problem(400, "malformed"))
    assert wrong_reason == "seq a string: expected 422 invalid, got 400 malformed"
    plain = httpx.Response(422, json={"status": 422, "reason": "invalid", "detail": "d"})
    assert "is not application/problem+json" in (case.mismatch(plain) or "")
    accepted = case.mismatch(httpx.Response(202, json={"accepted": 1}))
    assert accepted == "seq a string: expected 422 invalid, got 202 -"


def test_a_frame_case_expects_its_errors_and_the_sync_probe_counted() -> None:
    keep = FrameCase("x", b"", "bin1", ("ERR 401 bad_signature",))
    assert keep.expected() == Counter(
        {("bin1", "401", "bad_signature"): 1, ("fbk1", "400", "malformed_frame"): 1}
    )
    closes = FrameCase("y", b"", "unknown", ("ERR 400 unknown_protocol",), True)
    assert closes.expected() == Counter({("unknown", "400", "unknown_protocol"): 1})


def test_counters_that_grew() -> None:
    before = Counter({("http", "401", "expired"): 2, ("http", "400", "malformed"): 5})
    after = Counter({("http", "401", "expired"): 2, ("http", "400", "malformed"): 9})
    after[("fbk1", "400", "not_ascii")] = 1
    assert probes.grew(before, after) == Counter(
        {("http", "400", "malformed"): 4, ("fbk1", "400", "not_ascii"): 1}
    )


def test_the_truth_log_is_what_the_ledger_reads(tmp_path) -> None:
    truth = probes.Truth(tmp_path / "t.jsonl")
    truth.add("d-1", 1, "accepted")
    truth.add("d-1", 1, "accepted")  # a replay of the same event
    truth.add("d-2", 7, "rejected-422 invalid")
    assert truth.accepted == {("d-1", 1)}
    lines = [json.loads(line) for line in truth.write().read_text().splitlines()]
    assert lines[2] == {"device_id": "d-2", "seq": 7, "outcome": "rejected-422 invalid"}


def test_events_are_stamped_in_the_devices_format() -> None:
    ts = dt.datetime(2026, 11, 27, 6, 30, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert probes.event(3, ts=ts, humidity=40.0) == {
        "ts": "2026-11-27T05:30:00.123Z",
        "seq": 3,
        "readings": {"humidity": 40.0},
    }


@pytest.mark.integration
@pytest.mark.skipif(not _ROOT, reason="mounting a tmpfs needs root")
def test_a_lake_file_system_fills_up_and_frees() -> None:
    fs, why = _LakeFs.mount(4)
    assert fs is not None, why
    try:
        written = fs.fill()
        assert fs.free == 0
        assert 3 << 20 < written <= 4 << 20
        with pytest.raises(OSError, match="No space left"):
            (fs.path / "more").write_bytes(b"x" * 8192)
        fs.release()
        assert fs.free > 3 << 20
    finally:
        fs.close()
    assert not fs.path.exists()


# --- the command line ----------------------------------------------------------------------


def test_drill_list_names_every_drill(tmp_path) -> None:
    done = run_cli(isolated_env(tmp_path / "home"), "drill", "--list")
    assert done.returncode == 0, done.stderr
    listed = [line.split()[0] for line in done.stdout.splitlines()]
    assert listed == list(drills())


def test_an_unknown_drill_is_one_clear_line(tmp_path) -> None:
    done = run_cli(isolated_env(tmp_path / "home"), "drill", "nope")
    assert done.returncode in (1, 2)
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("workbench: error: unknown drill 'nope'")
    assert "disk-full" in lines[0] and "clock-skew" in lines[0]


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(900)
@pytest.mark.parametrize("store", ["local", "s3"])
def test_maintenance_under_load_loses_and_repeats_nothing(
    store: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import store_lake

    root = None
    if store == "s3":
        moto_s3 = request.getfixturevalue("moto_s3")
        for key, value in moto_s3.env().items():
            monkeypatch.setenv(key, value)
        root = store_lake(moto_s3)
        monkeypatch.setenv("WORKBENCH_DRILL_LAKE", root)
    monkeypatch.setenv("WORKBENCH_DRILL_MAINTAIN_S", "15")
    monkeypatch.setenv("WORKBENCH_BROKER", "kafka")
    lines: list[str] = []
    report = run_drill("maintenance-under-load", say=lines.append)
    text = "\n".join(lines)
    assert report.ok, text
    assert "in a scratch home" in text
    figures = report.figures
    assert figures["member_crashes"] == 0 and figures["maintenance_failures"] == 0, figures
    assert figures["maintenance_runs"] >= 1 and figures["files_compacted"] > 0, figures
    if root is not None:
        # the lake was on the store: its telemetry table is there, compacted many times over
        from deltalake import DeltaTable

        home = text.split("in a scratch home (")[1].split(",")[0]
        table = DeltaTable(f"{root}/{os.path.basename(home)}/telemetry")
        assert table.version() > figures["maintenance_runs"]

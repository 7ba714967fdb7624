"""``clock-skew``: devices whose clocks are hours or days behind, or hours ahead, beside
devices whose clocks are right: where each event lands (refused, stored late, stored on
time) and that the rolling building view still follows the devices whose clocks are right.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import socket
import time
from collections import Counter
from typing import Any

import httpx
import polars as pl

from proving.drills import DrillReport, drill, probes, steps
from proving.scratch import ScratchStack
from workbench.config import Config

__all__: list[str] = []  # the drills register themselves with @drill

# --- clock-skew ---------------------------------------------------------------------------

_ON_TIME_C, _LATE_C, _AHEAD_C = 20.0, 35.0, 25.0  # each clock's temperature, told apart


@dataclasses.dataclass
class _Skewed:
    """One drill device with a clock off by ``skew``, and what it was told."""

    device: probes.Device
    skew: dt.timedelta
    temperature: float
    answers: Counter[str] = dataclasses.field(default_factory=Counter)
    sent: list[int] = dataclasses.field(default_factory=list)

    @property
    def device_id(self) -> str:
        return self.device.device_id


def _send_skewed(
    config: Config, devices: list[_Skewed], truth: probes.Truth, *, seconds: float
) -> list[str]:
    """Every device sends one event a second for ``seconds``, stamped by its own clock
    (HTTP devices over HTTP, FBK1 devices over the legacy port); what did not answer."""
    from ingest_service.translators import fbk1

    errors: list[str] = []
    legacy = {
        d.device_id: socket.create_connection((config.host, config.legacy_port), timeout=10)
        for d in devices
        if d.device.protocol == "fbk1"
    }
    answers = {device_id: sock.makefile("rb") for device_id, sock in legacy.items()}
    try:
        with httpx.Client(base_url=probes.base_url(config), timeout=30) as client:
            end = time.monotonic() + seconds
            seq = 0
            while time.monotonic() < end:
                tick = time.monotonic()
                seq += 1
                for d in devices:
                    ts = dt.datetime.now(dt.UTC) + d.skew
                    if d.device.protocol == "http":
                        response = client.post(
                            "/v1/telemetry",
                            headers={"Authorization": d.device.token()},
                            json=probes.event(seq, ts=ts, temperature=d.temperature),
                        )
                        outcome = probes.outcome(response)
                        if response.status_code == 422:
                            fields = [e.get("field") for e in response.json().get("errors", [])]
                            outcome += f" {'/'.join(fields)}"
                    else:
                        sock = legacy[d.device_id]
                        sock.sendall(
                            fbk1.encode_frame(
                                d.device_id,
                                d.device.key_bytes,
                                int(ts.timestamp() * 1000),
                                seq,
                                temperature=d.temperature,
                            )
                        )
                        line = answers[d.device_id].readline().decode().strip()
                        # as the simulator logs legacy answers: ERR 422 invalid -> rejected-422 …
                        outcome = (
                            "accepted"
                            if line == f"OK {seq}"
                            else "rejected-" + " ".join(line.split(" ")[1:3])
                        )
                    d.answers[outcome] += 1
                    d.sent.append(seq)
                    truth.add(d.device_id, seq, outcome)
                time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    except (httpx.HTTPError, OSError) as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        for reader in answers.values():
            reader.close()
        for sock in legacy.values():
            sock.close()
    return errors


def _heartbeat(config: Config) -> dict[str, Any]:
    from ingest_service.processor.main import heartbeat_path

    try:
        beat: dict[str, Any] = json.loads(heartbeat_path(config).read_text())
        return beat
    except (OSError, ValueError):
        return {}


@drill(
    "clock-skew",
    "devices whose clocks run hours or days behind, or hours ahead, beside devices whose "
    "clocks are right",
)
def _clock_skew(stack: ScratchStack, report: DrillReport) -> None:
    config = stack.config
    ahead_limit = dt.timedelta(seconds=config.gateway_max_future_s)
    specs = {  # device -> (protocol, skew, temperature)
        "skew-ontime": ("http", dt.timedelta(0), _ON_TIME_C),
        "skew-behind-2h": ("http", -dt.timedelta(hours=2), _LATE_C),
        "skew-behind-3d": ("http", -dt.timedelta(days=3), _LATE_C),
        "skew-fbk1-behind-6h": ("fbk1", -dt.timedelta(hours=6), _LATE_C),
        "skew-ahead-2h": ("http", ahead_limit + dt.timedelta(hours=1), _AHEAD_C),
        "skew-fbk1-ahead-2h": ("fbk1", ahead_limit + dt.timedelta(hours=1), _AHEAD_C),
    }
    provisioned = probes.provision(stack, "b-drill-skew", {k: v[0] for k, v in specs.items()})
    fast = probes.provision(stack, "b-drill-fast", {"skew-ahead-5m": "http"})["skew-ahead-5m"]
    devices = [_Skewed(provisioned[k], skew, c) for k, (_, skew, c) in specs.items()]
    devices.append(_Skewed(fast, dt.timedelta(minutes=5), _AHEAD_C))
    report.step(
        "provisioned drill devices in b-drill-skew whose clocks are right, 2 h, 6 h (FBK1) and "
        f"3 days behind, and {ahead_limit + dt.timedelta(hours=1)} ahead (HTTP and FBK1; "
        f"WORKBENCH_GATEWAY_MAX_FUTURE is {config.gateway_max_future_s:.0f} s), and one in "
        "b-drill-fast 5 min ahead"
    )
    truth = probes.Truth(stack.home / "drill.truth.jsonl")
    run = steps.start_load(stack, report)
    before_rejected = probes.rejected_counts(config)
    late_before = int(_heartbeat(config).get("late", 0))
    started = dt.datetime.now(dt.UTC)
    errors = _send_skewed(config, devices, truth, seconds=25)
    by_id = {d.device_id: d for d in devices}
    report.step(
        "each drill device sent one event a second for 25 s, stamped by its own clock: "
        + "; ".join(f"{d.device_id} {dict(d.answers)}" for d in devices)
    )
    report.check(f"every request was answered ({'; '.join(errors) or 'yes'})", not errors)
    ahead = [by_id["skew-ahead-2h"], by_id["skew-fbk1-ahead-2h"]]
    report.check(
        "events beyond WORKBENCH_GATEWAY_MAX_FUTURE are refused: 422 invalid on ts over "
        "HTTP, ERR 422 invalid over FBK1",
        set(ahead[0].answers) == {"rejected-422 invalid ts"}
        and set(ahead[1].answers) == {"rejected-422 invalid"},
    )
    grew = probes.grew(before_rejected, probes.rejected_counts(config))
    refused = {
        ("http", "422", "invalid"): ahead[0].answers.total(),
        ("fbk1", "422", "invalid"): ahead[1].answers.total(),
    }
    report.check(
        f"gateway_rejected_total counted exactly those refusals ({dict(grew)})", grew == refused
    )
    accepted = [d for d in devices if d not in ahead]
    report.check(
        "every event of the clocks behind, right, or 5 min ahead was accepted",
        all(set(d.answers) == {"accepted"} for d in accepted),
    )
    steps.finish(stack, report, run, own_truth=truth.write(), own_accepted=len(truth.accepted))
    _check_where_skewed_land(stack, report, by_id, late_before, started)


def _check_where_skewed_land(
    stack: ScratchStack,
    report: DrillReport,
    by_id: dict[str, _Skewed],
    late_before: int,
    started: dt.datetime,
) -> None:
    config = stack.config
    behind = [d for d in by_id.values() if d.skew < -dt.timedelta(hours=1)]
    rows = probes.table(stack, "telemetry", ["device_id", "seq", "ts", "late", "event_date"])
    late = rows.filter(pl.col("late"))
    mine = late.filter(pl.col("device_id").is_in([d.device_id for d in behind]))
    expected_late = sum(len(d.sent) for d in behind)
    report.check(
        f"events hours or days late are stored, flagged late, never dropped ({mine.height} of "
        f"{expected_late}; by device {dict(Counter(mine['device_id'].to_list()))})",
        mine.height == expected_late,
    )
    three_days = by_id["skew-behind-3d"]
    dates = rows.filter(pl.col("device_id") == three_days.device_id)["event_date"].unique()
    want = (dt.datetime.now(dt.UTC) + three_days.skew).date()
    report.check(
        f"the 3-days-late events are in their own event_date partition "
        f"({', '.join(str(d) for d in dates.to_list())})",
        set(dates.to_list()) <= {want, want - dt.timedelta(days=1)},
    )
    others = late.filter(~pl.col("device_id").is_in([d.device_id for d in behind]))
    report.check(
        f"no event of a device with a right (or slightly fast) clock was counted late "
        f"({others.height}: {dict(Counter(others['device_id'].to_list()).most_common(3))})",
        others.height == 0,
    )
    beat = int(_heartbeat(config).get("late", 0)) - late_before
    report.check(
        f"the processor heartbeat's late counter grew by the late rows in telemetry "
        f"({beat} vs {late.height})",
        beat == late.height,
    )
    _check_state(stack, report, by_id, started)


def _check_state(
    stack: ScratchStack, report: DrillReport, by_id: dict[str, _Skewed], started: dt.datetime
) -> None:
    metrics = probes.table(
        stack, "building_metrics_1m", ["building_id", "window_start", "readings", "temperature_max"]
    ).filter(pl.col("building_id") == "b-drill-skew")
    old = metrics.filter(pl.col("window_start") < pl.lit(started - dt.timedelta(minutes=2)))
    hottest = metrics.select(pl.col("temperature_max").max()).item()
    report.check(
        f"late events updated no closed minute of b-drill-skew in building_metrics_1m "
        f"({old.height} old windows; temperature max {hottest} °C, the late clocks sent "
        f"{_LATE_C} °C)",
        old.height == 0 and hottest == _ON_TIME_C,
    )
    state = probes.table(
        stack,
        "building_state",
        ["building_id", "temperature_avg_5m", "readings_5m", "last_event_ts"],
    )
    skew = state.filter(pl.col("building_id") == "b-drill-skew").to_dicts()
    on_time = len(by_id["skew-ontime"].sent)
    row = skew[0] if skew else {}
    age = (dt.datetime.now(dt.UTC) - row["last_event_ts"]).total_seconds() if row else None
    report.check(
        f"b-drill-skew's rolling 5-minute view follows the device whose clock is right: "
        f"{row.get('readings_5m')} readings (it sent {on_time}), average "
        f"{row.get('temperature_avg_5m')} °C (its {_ON_TIME_C}), last event "
        f"{age if age is None else round(age)} s ago",
        bool(row)
        and row["readings_5m"] == on_time
        and row["temperature_avg_5m"] == _ON_TIME_C
        and age is not None
        and age < 120,
    )
    fast = state.filter(pl.col("building_id") == "b-drill-fast").to_dicts()
    if fast:
        ahead_s = (fast[0]["last_event_ts"] - dt.datetime.now(dt.UTC)).total_seconds()
        report.step(
            f"b-drill-fast (one device 5 min fast): its rolling view ends at that device's "
            f"clock, {ahead_s:.0f} s ahead of now (the view follows event time)"
        )
    fleet = state.filter(~pl.col("building_id").str.starts_with("b-drill"))
    stale = fleet.filter(
        pl.col("last_event_ts") < pl.lit(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2))
    )
    report.check(
        f"every simulated building's view is current ({fleet.height - stale.height} of "
        f"{fleet.height} buildings with an event in the last 2 minutes)",
        fleet.height > 0 and stale.height == 0,
    )

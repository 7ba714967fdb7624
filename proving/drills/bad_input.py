"""``bad-input-storm``: while simulated devices send, the drill itself fires malformed,
mistyped, oversized and forged requests at the gateway and garbage frames at the legacy
TCP port (:mod:`proving.drills.bad_input_cases`), and checks each precise refusal, the
``/metrics`` counters and that the devices' events are stored exactly once.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import socket
import time
from collections import Counter

import httpx
import polars as pl

from proving.drills import DrillReport, drill, probes, steps
from proving.drills.bad_input_cases import (
    FrameCase,
    HttpCase,
    all_or_nothing,
    bad_frames,
    bad_requests,
)
from proving.scratch import ScratchStack
from workbench.config import Config

__all__: list[str] = []  # the drills register themselves with @drill


def _http_storm(config: Config, cases: list[HttpCase], *, rounds: int, threads: int) -> list[str]:
    """Send every case ``rounds`` times from ``threads`` clients at once; the mismatches."""

    def one_round(_: int) -> list[str]:
        out = []
        with httpx.Client(base_url=probes.base_url(config), timeout=30) as client:
            for case in cases:
                try:
                    problem = case.mismatch(case.send(client))
                except httpx.HTTPError as exc:
                    problem = f"{case.name}: {type(exc).__name__}: {exc}"
                if problem:
                    out.append(problem)
        return out

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return [m for found in pool.map(one_round, range(rounds)) for m in found]


def _frame_storm(config: Config, cases: list[FrameCase], *, rounds: int) -> list[str]:
    out = []
    for _ in range(rounds):
        for case in cases:
            try:
                problem = case.send(config)
            except OSError as exc:
                problem = f"{case.name}: {type(exc).__name__}: {exc}"
            if problem:
                out.append(problem)
    return out


def _not_http(config: Config) -> bytes:
    """What the HTTP port answers to bytes that are not HTTP at all (its status line)."""
    with socket.create_connection((config.host, config.gateway_port), timeout=10) as sock:
        sock.sendall(b"HELLO GARBAGE\r\n\r\n")
        return sock.makefile("rb").readline().strip()


def _passes_gateway(
    config: Config, dev: dict[str, probes.Device], truth: probes.Truth
) -> tuple[dict[tuple[str, int], str], list[str]]:
    """Events the gateway accepts but the processor must not store: readings out of the
    plausible range (HTTP and FBK1), and an event sent three times with the same ``seq``.
    Returns ``{(device_id, seq): expected telemetry_rejected reason}`` and what went wrong."""
    from ingest_service.translators import fbk1

    http, legacy = dev["storm-http"], dev["storm-fbk1"]
    expected = {
        (http.device_id, 101): "out_of_range: readings.temperature outside [-60, 120]",
        (http.device_id, 102): "out_of_range: readings.humidity outside [0, 100]",
        (http.device_id, 103): "out_of_range: readings.light outside [0, 200000]",
        (legacy.device_id, 101): "out_of_range: readings.temperature outside [-60, 120]",
    }
    bodies = [
        probes.event(101, temperature=500.0),
        probes.event(102, humidity=150.0),
        probes.event(103, light=-5.0),
        *[probes.event(200, temperature=21.0)] * 3,  # a replay: stored once, then duplicates
    ]
    problems = []
    headers = {"Content-Type": "application/json", "Authorization": http.token()}
    with httpx.Client(base_url=probes.base_url(config), timeout=30) as client:
        for body in bodies:
            response = client.post("/v1/telemetry", headers=headers, json=body)
            if response.status_code != 202:
                problems.append(
                    f"seq {body['seq']}: {response.status_code} {probes.reason(response)}"
                )
    truth.add(http.device_id, 200, "accepted")
    frame = fbk1.encode_frame(
        legacy.device_id, legacy.key_bytes, int(time.time() * 1000), 101, temperature=500.0
    )
    with socket.create_connection((config.host, config.legacy_port), timeout=10) as sock:
        sock.sendall(frame)
        answer = sock.makefile("rb").readline().strip()
    if answer != b"OK 101":
        problems.append(f"FBK1 seq 101: {answer!r}")
    return expected, problems


_BUILDING = "b-drill-storm"  # of tenant t-drill, as probes.provision makes it


@drill(
    "bad-input-storm",
    "a storm of malformed, mistyped, oversized and forged requests and garbage legacy frames "
    "while devices send",
)
def _bad_input_storm(stack: ScratchStack, report: DrillReport) -> None:
    config = stack.config
    dev = probes.provision(
        stack,
        _BUILDING,
        {"storm-http": "http", "storm-fbk1": "fbk1", "storm-off": "http", "storm-gone": "http"},
        disable=("storm-off",),
        deprovision=("storm-gone",),
    )
    report.step(
        "provisioned drill devices storm-http, storm-fbk1, storm-off (disabled), "
        "storm-gone (de-provisioned)"
    )
    truth = probes.Truth(stack.home / "drill.truth.jsonl")
    run = steps.start_load(stack, report)
    workers = sorted(stack.workers("gateway"))
    before = probes.rejected_counts(config)
    notes_before = probes.notes_sent(config)
    http_cases = [
        *bad_requests(config, dev),
        dataclasses.replace(
            all_or_nothing(range(1_000, 1_005)),
            headers={
                "Content-Type": "application/json",
                "Authorization": dev["storm-http"].token(),
            },
        ),
    ]
    frame_cases = bad_frames(dev)
    rounds, frame_rounds, threads = 20, 10, 4
    started = time.monotonic()
    mismatches = _http_storm(config, http_cases, rounds=rounds, threads=threads)
    http_s = time.monotonic() - started
    mismatches += _frame_storm(config, frame_cases, rounds=frame_rounds)
    n_http, n_frames = rounds * len(http_cases), frame_rounds * len(frame_cases)
    report.step(
        f"sent {n_http:,} bad HTTP requests ({len(http_cases)} kinds x {rounds}, {threads} "
        f"clients at once, {n_http / http_s:,.0f}/s) and {n_frames:,} bad legacy frames "
        f"({len(frame_cases)} kinds x {frame_rounds}, FBK1, BIN1 and an unknown protocol)"
    )
    report.check(
        "every bad request and frame got its precise problem+json / ERR answer "
        f"({len(mismatches)} wrong"
        + (f": {'; '.join(sorted(set(mismatches))[:5])})" if mismatches else ")"),
        not mismatches,
    )
    status_line = _not_http(config)
    report.check(
        f"bytes that are not HTTP at all get {status_line.decode(errors='replace')!r} from the "
        "HTTP parser (plain text, before the application: not counted in /metrics)",
        status_line.startswith(b"HTTP/1.") and b" 400 " in status_line,
    )
    expected: Counter[probes.RejectKey] = Counter()
    for case in http_cases:
        expected[("http", str(case.status), case.reason)] += rounds
    for frame_case in frame_cases:
        for key, count in frame_case.expected().items():
            expected[key] += count * frame_rounds
    grew = probes.grew(before, probes.rejected_counts(config))
    wrong = {k: (grew[k], expected[k]) for k in set(grew) | set(expected) if grew[k] != expected[k]}
    report.check(
        f"gateway_rejected_total grew by exactly what was sent, in {len(expected)} "
        f"(channel, status, reason) series, {sum(expected.values()):,} in all"
        + (f"; differ (got, sent): {dict(sorted(wrong.items())[:6])}" if wrong else ""),
        not wrong,
    )
    out_of_range, problems = _passes_gateway(config, dev, truth)
    report.step(
        "sent 4 events with impossible readings (3 HTTP, 1 FBK1) and one event 3 times with "
        "the same seq: the gateway accepts them, the processor must not store them"
    )
    report.check(
        f"the gateway accepted those ({'; '.join(problems) or 'all 202 / OK'})", not problems
    )
    health = httpx.get(f"{probes.base_url(config)}/healthz", timeout=10)
    report.check(
        f"the gateway stayed healthy: /healthz {health.status_code}, workers "
        f"{sorted(stack.workers('gateway'))} (before the storm {workers})",
        health.status_code == 200 and sorted(stack.workers("gateway")) == workers,
    )
    steps.finish(stack, report, run, own_truth=truth.write(), own_accepted=len(truth.accepted))
    notes = probes.notes_sent(config) - notes_before
    _check_dead_letters(stack, report, dev, out_of_range, notes)


def _check_dead_letters(
    stack: ScratchStack,
    report: DrillReport,
    dev: dict[str, probes.Device],
    out_of_range: dict[tuple[str, int], str],
    notes: int,
) -> None:
    ids = [d.device_id for d in dev.values()]
    keys = ["device_id", "seq"]
    deadline = time.monotonic() + 60
    while True:  # the rejected rows are committed before their batch's telemetry rows
        found = probes.table(
            stack, "telemetry_rejected", [*keys, "reason", "tenant_id", "building_id"]
        ).filter(pl.col("device_id").is_in(ids))
        # the gateway's notes of the refusals of authenticated devices, apart from the
        # processor's own dead letters
        noted = found.filter(pl.col("reason").str.starts_with("gateway: "))
        rejected = found.filter(~pl.col("reason").str.starts_with("gateway: "))
        if (
            len(rejected) >= len(out_of_range) + 2 and len(noted) >= notes
        ) or time.monotonic() > deadline:
            break
        time.sleep(1)
    homes = {(d.device_id, "t-drill", _BUILDING) for d in dev.values()}
    report.check(
        f"every refusal of an authenticated drill device the gateway noted is in "
        f"telemetry_rejected once, stamped with its tenant and building ({len(noted)} rows, "
        f"{notes} noted)",
        notes > 0
        and len(noted) == notes
        and set(noted.select("device_id", "tenant_id", "building_id").rows()) <= homes,
    )
    stored = probes.table(stack, "telemetry", keys).filter(pl.col("device_id").is_in(ids))
    got = {
        (r["device_id"], r["seq"]): r["reason"]
        for r in rejected.filter(pl.col("reason") != "duplicate").iter_rows(named=True)
    }
    report.check(
        f"impossible readings are in telemetry_rejected with their reason ({len(got)} of "
        f"{len(out_of_range)}: {sorted(set(got.values()))})",
        got == out_of_range,
    )
    dups = rejected.filter(pl.col("reason") == "duplicate")
    report.check(
        f"the event sent 3 times is stored once and dead-lettered twice as duplicate "
        f"(telemetry {stored.filter(pl.col('seq') == 200).height}, duplicate {dups.height})",
        stored.filter(pl.col("seq") == 200).height == 1
        and dups.select(keys).rows() == [("storm-http", 200)] * 2,
    )
    report.check(
        f"nothing else of the drill's devices reached telemetry (rows {stored.rows()}), "
        "not even the good events of the refused batch",
        stored.rows() == [("storm-http", 200)],
    )

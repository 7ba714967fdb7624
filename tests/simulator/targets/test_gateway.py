"""Sending through the real gateway: provisioning, HTTP + FBK1, refusals, same-seq retries."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from aiohttp import web

from simulator.fleet import Fleet
from simulator.provision import registry
from simulator.run import RunOptions, run
from simulator.scenarios.builtin import DeprovisionDuringRun, FaultySensors, Unprovisioned
from simulator.targets.gateway import GatewayTarget, RetryPolicy
from tests.conftest import free_port
from tests.simulator.test_run import read_topic
from workbench.config import Config
from workbench.exceptions import SimulatorError

pytestmark = pytest.mark.integration

START = dt.datetime(2026, 11, 27, 9, 0, tzinfo=dt.UTC)


def truth_of(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_provisioned_fleet_is_accepted_and_refusals_are_precise(
    gateway_config: Config, tmp_path: Path
):
    truth = tmp_path / "truth.jsonl"
    options = RunOptions(
        devices=600,
        interval_s=5,
        duration_s=10,
        speedup=10,
        seed=2,
        scenario="unprovisioned,faulty-sensors",
        truth=truth,
    )
    summary = run(gateway_config, options)
    fleet = Fleet.generate(600, seed=2)
    sent = truth_of(truth)
    assert len(sent) == 1200 == summary.stats.sent
    outcomes = Counter(str(s["outcome"]) for s in sent)
    assert summary.stats.failed == 0 and outcomes["failed"] == 0
    assert summary.stats.accepted == outcomes["accepted"] > 1000

    # Every simulated device (but the unprovisioned ones) is in the registry with real keys.
    registered = registry(gateway_config).devices()
    rogue = {fleet.device_ids[i] for i in Unprovisioned().devices(fleet).tolist()}
    assert set(registered["device_id"].to_list()) == set(fleet.device_ids) - rogue
    for s in sent:
        if s["device_id"] in rogue:
            assert s["outcome"] == "rejected-403 unknown_device"
    # Faulty HTTP sensors: NaN goes out as null and is refused with 422; out-of-range values
    # are well-formed numbers the gateway passes on (range checks are the processor's).
    faulty = FaultySensors().faulty(fleet).tolist()
    nan = {
        fleet.device_ids[i] for n, i in enumerate(faulty) if n % 3 == 2 and fleet.protocol[i] == 0
    }
    wild = {fleet.device_ids[i] for n, i in enumerate(faulty) if n % 3 == 1}
    assert nan and wild
    assert all(s["outcome"] == "rejected-422 invalid" for s in sent if s["device_id"] in nan)
    assert all(s["outcome"] == "accepted" for s in sent if s["device_id"] in wild)

    # Kafka holds exactly the accepted events, FBK1 ones translated and stamped as such,
    # and a note of each refusal of an authenticated device (the NaN 422s; not the 403s
    # of unprovisioned ones) for its building's rejected-event rate.
    accepted = [s for s in sent if s["outcome"] == "accepted"]
    refused = [s for s in sent if s["outcome"] == "rejected-422 invalid"]
    read = read_topic(gateway_config, len(accepted) + len(refused))
    everything = [json.loads(v) for _, v in read]
    records = [r for r in everything if "rejected" not in r]
    notes = [r for r in everything if "rejected" in r]
    assert sorted((r["device_id"], r["seq"]) for r in records) == sorted(
        (s["device_id"], s["seq"]) for s in accepted
    )
    assert sorted((n["device_id"], n["rejected"], n["status"]) for n in notes) == sorted(
        (s["device_id"], "invalid", 422) for s in refused
    )
    legacy = {d.device_id for d in fleet.devices if d.protocol == "fbk1"}
    assert legacy
    by_id = {(r["device_id"], r["seq"]): r for r in records}
    fbk1_seen = [r for r in records if r["device_id"] in legacy]
    assert fbk1_seen and all(r["protocol"] == "fbk1" for r in fbk1_seen)
    for s in accepted:
        r = by_id[(s["device_id"], s["seq"])]
        assert r["ts"] == s["ts"]
        assert {k: v for k, v in r["readings"].items()} == s["readings"]


def test_deprovision_during_run_turns_into_403(gateway_config: Config, tmp_path: Path):
    truth = tmp_path / "truth.jsonl"
    options = RunOptions(
        devices=200,
        interval_s=2,
        duration_s=14,
        speedup=1,
        seed=5,
        scenario="deprovision-during-run",
        truth=truth,
    )
    run(gateway_config, options)
    fleet = Fleet.generate(200, seed=5)
    gone = {fleet.device_ids[i] for i in DeprovisionDuringRun().devices(fleet).tolist()}
    sent = [s for s in truth_of(truth) if s["device_id"] in gone]
    by_seq: dict[object, set[str]] = {}
    for s in sent:
        by_seq.setdefault(s["seq"], set()).add(str(s["outcome"]))
    seqs = sorted(by_seq)  # type: ignore[type-var]
    assert by_seq[seqs[0]] == {"accepted"}
    assert by_seq[seqs[-1]] == {"rejected-403 deprovisioned"}
    statuses = registry(gateway_config).devices().filter(pl.col("device_id").is_in(list(gone)))
    assert set(statuses["status"].to_list()) == {"deprovisioned"}


def test_gateway_down_is_one_clear_error(kafka_config: Config):
    import dataclasses

    config = dataclasses.replace(kafka_config, gateway_port=free_port())
    with pytest.raises(SimulatorError, match="does not answer"):
        run(config, RunOptions(devices=5, duration_s=1, speedup=10))


# --- retries, against a gateway stand-in that refuses first -------------------------------


class FlakyGateway:
    """Answers 503 (then 429) to the first tries of every event, then 202; records bodies."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.lose_oks = 0  # legacy frames accepted whose OK is lost (the connection drops)
        self.bodies: list[bytes] = []
        self.seen: Counter[bytes] = Counter()
        self.lines: list[bytes] = []
        self.health: list[int] = []  # statuses /healthz answers first, then 200
        self.health_asked = 0

    async def telemetry(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.bodies.append(body)
        self.seen[body] += 1
        if self.seen[body] <= self.refusals:
            status = 503 if self.seen[body] == 1 else 429
            return web.json_response(
                {"status": status, "reason": "unavailable"},
                status=status,
                headers={"Retry-After": "0"},
            )
        return web.json_response({"accepted": 1}, status=202)

    async def healthz(self, request: web.Request) -> web.Response:
        self.health_asked += 1
        status = self.health.pop(0) if self.health else 200
        return web.json_response({"status": "ok" if status == 200 else "starting"}, status=status)

    async def legacy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            self.lines.append(line)
            self.seen[line] += 1
            seq = line.split(b"|")[3].decode()
            if self.seen[line] <= self.refusals:
                writer.write(b"ERR 503 broker_unavailable\n")
            elif self.seen[line] > self.refusals + 1:  # the gateway's answer to a copy
                writer.write(b"ERR 409 replay\n")
            elif self.lose_oks:
                self.lose_oks -= 1
                break
            else:
                writer.write(f"OK {seq}\n".encode())
            await writer.drain()
        writer.close()


@pytest.fixture
def flaky(kafka_config: Config) -> Iterator[tuple[FlakyGateway, Config]]:
    import dataclasses

    stub = FlakyGateway(refusals=2)
    config = dataclasses.replace(kafka_config, gateway_port=free_port(), legacy_port=free_port())
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/telemetry", stub.telemetry)
        app.router.add_get("/healthz", stub.healthz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, config.host, config.gateway_port).start()
        server = await asyncio.start_server(stub.legacy, config.host, config.legacy_port)
        ready.set()
        await stop.wait()
        server.close()
        await runner.cleanup()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    yield stub, config
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)


def test_a_gateway_still_starting_is_waited_for_and_a_broken_one_named(
    flaky: tuple[FlakyGateway, Config],
):
    """503 on /healthz is a gateway worker still loading its registry: the run waits for
    it. Any other refusal is an error that names the status, at once."""
    stub, config = flaky
    target = GatewayTarget(Fleet.generate(3, seed=8), config, provision=False)
    stub.health = [503, 503, 503]
    target.check()
    assert stub.health_asked == 4
    stub.health, stub.health_asked = [500, 200], 0
    with pytest.raises(SimulatorError, match="answers 500"):
        target.check()
    assert stub.health_asked == 1
    stub.health, stub.health_asked = [503] * 1000, 0
    with pytest.raises(SimulatorError, match="answers 503"):
        target.check(patience_s=1.0)
    assert 2 <= stub.health_asked <= 4


def test_retries_on_503_429_reuse_the_same_seq(flaky: tuple[FlakyGateway, Config]):
    stub, config = flaky
    fleet = Fleet.generate(300, seed=8)
    target = GatewayTarget(  # small waves: 4 connections x 5 queued requests
        fleet,
        config,
        provision=False,
        retry=RetryPolicy(attempts=4, base_s=0.01),
        connections=4,
        depth=5,
    )
    target.prepare()
    try:
        frame = next(fleet.ticks(START, interval_s=60))
        outcomes = target.send(frame)
    finally:
        target.close()
    assert outcomes.to_list() == ["accepted"] * 300
    stats = target.stats
    assert (stats.sent, stats.accepted, stats.failed) == (300, 300, 0)
    assert stats.retries == 2 * 300
    n_http = int((frame["protocol"] == 0).sum())
    assert len(stub.bodies) == 3 * n_http and len(set(stub.bodies)) == n_http
    assert len(stub.lines) == 3 * (300 - n_http) > 0
    seqs = {json.loads(b)["seq"] for b in stub.bodies}
    assert seqs == {1}  # every try of an event carries its one seq


def test_a_legacy_frame_whose_ok_was_lost_is_accepted_by_the_replay_answer(
    flaky: tuple[FlakyGateway, Config],
):
    """The legacy door answers a copy of an accepted frame ``ERR 409 replay``: to a device
    retrying after a lost ``OK``, already stored. Only a retry reads it so."""
    stub, config = flaky
    stub.refusals, stub.lose_oks = 0, 1
    fleet = Fleet.generate(300, seed=8)
    target = GatewayTarget(
        fleet, config, provision=False, retry=RetryPolicy(attempts=3, base_s=0.01)
    )
    target.prepare()
    try:
        frame = next(fleet.ticks(START, interval_s=60))
        outcomes = target.send(frame)
        # a frame sent once more, as a first try: a replay is a refusal then
        legacy = frame.filter(frame["protocol"] == 1).head(1)
        again = target.send(legacy)
    finally:
        target.close()
    assert outcomes.to_list() == ["accepted"] * 300
    assert target.stats.accepted == 300 and target.stats.retries >= 1
    assert target.stats.replayed == 1  # acknowledged without a second record
    assert max(stub.seen.values()) >= 2  # the frame whose OK was lost, sent again
    assert again.to_list() == ["rejected-409 replay"]
    assert target.stats.rejected == {"409 replay": 1}


def test_gives_up_after_the_last_attempt(flaky: tuple[FlakyGateway, Config]):
    stub, config = flaky
    stub.refusals = 10
    fleet = Fleet.generate(20, seed=8)
    target = GatewayTarget(
        fleet, config, provision=False, retry=RetryPolicy(attempts=3, base_s=0.01)
    )
    target.prepare()
    try:
        outcomes = target.send(next(fleet.ticks(START, interval_s=60)))
    finally:
        target.close()
    assert set(outcomes.to_list()) == {"failed"}
    assert target.stats.failed == 20 and target.stats.retries == 40

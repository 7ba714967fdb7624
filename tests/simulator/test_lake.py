"""Every scenario's observable effect in the lake: simulator → gateway → Kafka → processor →
Delta tables, all real (one run with every scenario at once, then one test per effect)."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import polars as pl
import pytest

from ingest_service.processor.main import run as run_processor
from simulator.fleet import Fleet
from simulator.run import RunOptions, RunSummary, run
from simulator.scenarios.builtin import (
    DeprovisionDuringRun,
    FaultySensors,
    Fire,
    Heatwave,
    Intrusion,
    Unprovisioned,
)
from tests.simulator.conftest import gateway_env, gateway_process
from workbench.config import Config
from workbench.kafka import ensure_topic
from workbench.lake.tables import table_uri

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ALL = (
    "heatwave,fire,intrusion,faulty-sensors,late-and-duplicate,unprovisioned,"
    "deprovision-during-run,burst"
)
DEVICES, BUILDINGS, SEED = 500, 8, 3


@dataclasses.dataclass
class LakeRun:
    config: Config
    fleet: Fleet
    summary: RunSummary
    truth: list[dict[str, object]]
    records: list[bytes]  # the topic's, every one

    def table(self, name: str) -> pl.DataFrame:
        return pl.read_delta(table_uri(self.config, name))

    def ids(self, devices: object) -> set[str]:
        return {self.fleet.device_ids[i] for i in devices}  # type: ignore[attr-defined]


def _rejection_notes(config: Config) -> dict[str, int]:
    """The gateway's count of refusals noted on the topic, by result (over all workers)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://{config.host}:{config.gateway_port}/metrics"
    with urllib.request.urlopen(url, timeout=30) as response:
        text = response.read().decode()
    counts = {"sent": 0, "lost": 0, "dropped": 0}
    for family in text_string_to_metric_families(text):
        if family.name == "gateway_rejection_notes":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counts[sample.labels["result"]] += int(sample.value)
    return counts


def _topic_records(config: Config) -> list[bytes]:
    """Every record value on ``config``'s topic (the run's own, so all of it is the run's)."""
    from kafka import KafkaConsumer, TopicPartition

    from workbench.kafka import client_settings

    consumer = KafkaConsumer(**client_settings(config), auto_offset_reset="earliest")
    try:
        parts = [
            TopicPartition(config.topic, p) for p in consumer.partitions_for_topic(config.topic)
        ]
        consumer.assign(parts)
        consumer.seek_to_beginning()
        end = consumer.end_offsets(parts)
        got: list[bytes] = []
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < end[tp] for tp in parts):
            assert time.monotonic() < deadline, "the topic could not be read back"
            for records in consumer.poll(timeout_ms=500).values():
                got += [r.value for r in records]
        return got
    finally:
        consumer.close()


@pytest.fixture(scope="module")
def lake_run(broker_config: Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LakeRun]:
    tmp = tmp_path_factory.mktemp("sim-lake")
    kafka = dataclasses.replace(broker_config, topic=f"telemetry-{uuid.uuid4().hex[:8]}")
    ensure_topic(kafka)
    env = gateway_env(tmp / "home", kafka, WORKBENCH_COMMIT_INTERVAL="0.5")
    with gateway_process(env, tmp / "gateway.log") as config:
        stop = threading.Event()
        beat = tmp / "processor.json"
        processor = threading.Thread(
            target=run_processor,
            args=(config,),
            kwargs={"stop": stop, "heartbeat": beat, "maintain": False},
            daemon=True,
        )
        processor.start()
        try:
            options = RunOptions(
                devices=DEVICES,
                interval_s=10,
                duration_s=300,
                speedup=30,
                seed=SEED,
                buildings=BUILDINGS,
                scenario=ALL,
                truth=tmp / "truth.jsonl",
            )
            summary = run(config, options)
            # besides the events, the gateway notes each refusal of an authenticated
            # device's data on the topic (for its building's rejected-event rate)
            noted = sum(
                n
                for why, n in summary.stats.rejected.items()
                if why.split()[0] in {"400", "408", "413", "415", "422"}
            )
            # a note is best effort (docs/gateway.md): one the gateway could not hand to
            # its producer (the buffer full, the broker's circuit open, as on a loaded
            # machine) is counted as dropped, one handed over and not delivered as lost;
            # every refusal ends as one of the three once its delivery is settled
            deadline = time.monotonic() + 30
            while sum((notes := _rejection_notes(config)).values()) < noted:
                assert time.monotonic() < deadline, (notes, noted)
                time.sleep(0.2)
            assert noted > 0 and sum(notes.values()) == noted, (notes, noted)
            # every record on the run's own topic: the simulator's counts cannot say it
            # exactly (a legacy resend answered "409 replay" is accepted without a second
            # record, unless its own earlier try was the one stored)
            records = _topic_records(config)
            assert len(records) >= summary.stats.accepted - summary.stats.replayed
            expected = len(records)
            deadline = time.monotonic() + 120
            consumed = -1
            while time.monotonic() < deadline:
                try:
                    consumed = json.loads(beat.read_text())["records"]
                except (OSError, ValueError, KeyError):
                    consumed = -1
                if consumed >= expected:
                    break
                time.sleep(0.5)
            assert consumed == expected, "the processor did not catch up"
        finally:
            stop.set()
            processor.join(60)
        truth = [json.loads(line) for line in (tmp / "truth.jsonl").read_text().splitlines()]
        yield LakeRun(
            config, Fleet.generate(DEVICES, seed=SEED, buildings=BUILDINGS), summary, truth, records
        )


def test_every_accepted_event_is_stored_exactly_once(lake_run: LakeRun):
    accepted = {(s["device_id"], s["seq"]) for s in lake_run.truth if s["outcome"] == "accepted"}
    resent = sum(1 for s in lake_run.truth if s["outcome"] == "accepted") - len(accepted)
    assert resent > 0  # late-and-duplicate resends made it through the gateway
    telemetry = lake_run.table("telemetry")
    stored = set(zip(telemetry["device_id"], telemetry["seq"], strict=True))
    assert len(stored) == telemetry.height  # no duplicates
    rejected = lake_run.table("telemetry_rejected").filter(pl.col("device_id").is_not_null())
    invalid = rejected.filter(pl.col("reason") != "duplicate")
    refused = set(zip(invalid["device_id"], invalid["seq"], strict=True))
    # Resends of stored events are dead-lettered as duplicates, never stored twice.
    resends = rejected.filter(pl.col("reason") == "duplicate")
    # each copy of a valid event on the topic beyond its first (counted on the topic: a
    # resend the gateway refused as a replay wrote none)
    copies = Counter(
        (e["device_id"], e["seq"])
        for e in map(json.loads, lake_run.records)
        if "rejected" not in e and (e["device_id"], e["seq"]) not in refused
    )
    assert resends.height == sum(n - 1 for n in copies.values())
    assert stored | (refused & accepted) == accepted
    assert stored.isdisjoint(refused)


def test_heatwave_building_is_the_hottest(lake_run: LakeRun):
    target = lake_run.fleet.buildings[Heatwave().target(lake_run.fleet)].building_id
    state = lake_run.table("building_state").sort("temperature_avg_5m", descending=True)
    assert state["building_id"][0] == target
    median = state["temperature_avg_5m"].median()
    assert state["temperature_avg_5m"][0] > median + 3  # type: ignore[operator]


def test_fire_alarms_on_one_floor(lake_run: LakeRun):
    b, floor, _detectors = Fire().target(lake_run.fleet)
    building = lake_run.fleet.buildings[b].building_id
    alarms = lake_run.table("telemetry").filter(pl.col("smoke"))
    assert alarms["device_id"].n_unique() >= 2  # it spread
    assert set(alarms["building_id"]) == {building} and set(alarms["floor"]) == {floor}
    state = lake_run.table("building_state").filter(pl.col("active_smoke_alarms") > 0)
    assert state["building_id"].to_list() == [building]


def test_intrusion_in_one_building(lake_run: LakeRun):
    b, _ = Intrusion().target(lake_run.fleet)
    building = lake_run.fleet.buildings[b].building_id
    tripped = lake_run.table("telemetry").filter(pl.col("intrusion"))
    assert tripped.height > 0 and set(tripped["building_id"]) == {building}
    metrics = lake_run.table("building_metrics_1m").filter(pl.col("intrusion_alarms") > 0)
    assert set(metrics["building_id"]) == {building}


def test_faulty_sensors_are_refused_or_dead_lettered(lake_run: LakeRun):
    faulty = FaultySensors().faulty(lake_run.fleet).tolist()
    wild = lake_run.ids(i for n, i in enumerate(faulty) if n % 3 == 1)
    nan_http = lake_run.ids(
        i for n, i in enumerate(faulty) if n % 3 == 2 and lake_run.fleet.protocol[i] == 0
    )
    for s in lake_run.truth:
        if s["device_id"] in nan_http:
            assert s["outcome"] == "rejected-422 invalid"
    rejected = lake_run.table("telemetry_rejected")
    out_of_range = rejected.filter(pl.col("reason").str.starts_with("out_of_range: readings"))
    assert set(out_of_range["device_id"]) == wild
    telemetry = lake_run.table("telemetry")
    assert telemetry.filter(pl.col("device_id").is_in(list(wild))).height == 0
    assert telemetry.filter(pl.col("temperature").is_nan()).height == 0


def test_late_and_duplicate_events_are_stored_once(lake_run: LakeRun):
    telemetry = lake_run.table("telemetry")
    assert telemetry.select(pl.struct("device_id", "seq").is_duplicated().any()).item() is False
    # Skewed clocks: some stored event times lag the gateway's received_at by minutes.
    lag = (telemetry["received_at"] - telemetry["ts"]).dt.total_seconds()
    assert (lag > 60 / 30).sum() > 0


def test_unprovisioned_devices_get_403_and_store_nothing(lake_run: LakeRun):
    rogue = lake_run.ids(Unprovisioned().devices(lake_run.fleet).tolist())
    outcomes = {s["outcome"] for s in lake_run.truth if s["device_id"] in rogue}
    assert outcomes == {"rejected-403 unknown_device"}
    telemetry = lake_run.table("telemetry")
    assert telemetry.filter(pl.col("device_id").is_in(list(rogue))).height == 0


def test_deprovisioned_devices_stop_appearing(lake_run: LakeRun):
    gone = lake_run.ids(DeprovisionDuringRun().devices(lake_run.fleet).tolist())
    mine = [s for s in lake_run.truth if s["device_id"] in gone]
    last_seq = max(int(s["seq"]) for s in mine)  # type: ignore[call-overload]
    assert {s["outcome"] for s in mine if s["seq"] == last_seq} == {"rejected-403 deprovisioned"}
    stored = lake_run.table("telemetry").filter(pl.col("device_id").is_in(list(gone)))
    assert stored.height > 0 and stored["seq"].max() < last_seq  # type: ignore[operator]


def test_burst_events_are_all_stored(lake_run: LakeRun):
    # Tick 1 is a burst: every device's second event was sent at the same instant.
    seqs = sorted({int(s["seq"]) for s in lake_run.truth})  # type: ignore[call-overload]
    second = [s for s in lake_run.truth if s["seq"] == seqs[1] and s["outcome"] == "accepted"]
    telemetry = lake_run.table("telemetry").filter(pl.col("seq") == seqs[1])
    wild = lake_run.ids(
        i for n, i in enumerate(FaultySensors().faulty(lake_run.fleet).tolist()) if n % 3 == 1
    )
    expected = {s["device_id"] for s in second} - wild  # out of range: dead-lettered
    assert set(telemetry["device_id"]) == expected and len(expected) > DEVICES * 0.9

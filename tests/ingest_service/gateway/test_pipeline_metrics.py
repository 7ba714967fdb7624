"""Consumer lag and freshness on a live gateway's /metrics (real broker, real lake, real
worker processes)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import socket
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ingest_service.gateway.metrics import GatewayMetrics
from ingest_service.gateway.pipeline import KAFKA_TIMEOUT_S, SCRAPE_WAIT_S, PipelineMetrics
from tests.conftest import free_port
from tests.ingest_service.gateway.conftest import LiveGateway, live_gateway, wait_until
from tests.workbench.lake.test_freshness import state_row, write_state
from tests.workbench.test_kafka import commit, produce
from workbench.config import Config
from workbench.lake.tables import BUILDING_STATE, table_uri

pytestmark = pytest.mark.integration


def scrape(gw: LiveGateway) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics: (name, sorted labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(gw.metrics())
        for s in family.samples
    }


def by_partition(samples: dict, name: str) -> dict[int, float]:
    return {
        int(dict(labels)["partition"]): value for (n, labels), value in samples.items() if n == name
    }


def test_lag_per_partition_and_freshness_are_exported(kafka_config: Config):
    group = f"g-{uuid.uuid4().hex[:8]}"
    config = dataclasses.replace(kafka_config, processor_group=group)
    produce(config, {0: 12, 2: 30, 5: 4})
    commit(config, {0: 12, 2: 5})
    newest = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=40)
    write_state(config, [state_row("t-1", "b-1", newest)])

    with live_gateway(config, WORKBENCH_PROCESSOR_GROUP=group, WORKBENCH_METRICS_CACHE="0.2") as gw:
        samples = scrape(gw)
        scraped = dt.datetime.now(dt.UTC)
        lag = by_partition(samples, "workbench_consumer_lag")
        assert lag == {0: 0, 1: 0, 2: 25, 3: 0, 4: 0, 5: 4, 6: 0, 7: 0}
        assert samples[("workbench_consumer_lag_total", ())] == 29
        assert by_partition(samples, "workbench_consumer_end_offset") == {
            0: 12,
            1: 0,
            2: 30,
            3: 0,
            4: 0,
            5: 4,
            6: 0,
            7: 0,
        }
        # only the partitions the group committed
        assert by_partition(samples, "workbench_consumer_committed_offset") == {0: 12, 2: 5}
        age = samples[("workbench_freshness_seconds", ())]
        assert 40 <= age <= (scraped - newest).total_seconds()
        for source in ("kafka", "lake"):
            assert samples[("workbench_metrics_failures_total", (("source", source),))] == 0

        # after the cache expires, a scrape (whichever worker answers) sees new figures
        produce(config, {5: 6})
        commit(config, {2: 30})
        time.sleep(0.3)
        wait_until(lambda: by_partition(scrape(gw), "workbench_consumer_lag")[5] == 10, timeout=10)
        samples = scrape(gw)
        assert samples[("workbench_consumer_lag_total", ())] == 10
        assert by_partition(samples, "workbench_consumer_committed_offset") == {0: 12, 2: 30}


def damage_building_state(config: Config) -> None:
    """A building_state whose first commit is not JSON: every read of it fails."""
    write_state(config, [state_row("t-1", "b-1", dt.datetime.now(dt.UTC))])
    log = Path(table_uri(config, BUILDING_STATE)) / "_delta_log" / "00000000000000000000.json"
    log.write_text("not json{")


@pytest.fixture
def silent_broker() -> Iterator[str]:
    """host:port of a listener that accepts connections and never answers (a hung broker)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def test_a_hung_broker_and_a_damaged_lake_never_hold_up_or_break_a_scrape(
    tmp_path: Path, silent_broker: str, caplog: pytest.LogCaptureFixture
):
    config = Config.from_env(
        {
            "WORKBENCH_HOME": str(tmp_path / "home"),
            "KAFKA_BOOTSTRAP_SERVERS": silent_broker,
            "WORKBENCH_METRICS_CACHE": "0.1",
        }
    )
    damage_building_state(config)
    metrics = GatewayMetrics()
    pipeline = PipelineMetrics(config, metrics)

    def failures(source: str) -> float | None:
        return metrics.registry.get_sample_value(
            "workbench_metrics_failures_total", {"source": source}
        )

    async def scenario() -> None:
        first = await pipeline.render()
        # the refresh waits out Kafka's timeout (longer than SCRAPE_WAIT_S); the scrape
        # returned without it
        assert KAFKA_TIMEOUT_S > SCRAPE_WAIT_S
        assert pipeline.refreshing
        assert first == b""
        assert failures("kafka") == 0
        deadline = time.monotonic() + 10 * KAFKA_TIMEOUT_S
        while failures("lake") != 1 and time.monotonic() < deadline:  # lake: read second
            await asyncio.sleep(0.1)
            assert await pipeline.render() == b""  # no series while unavailable
        assert failures("kafka") == 1 and failures("lake") == 1
        while failures("lake") != 2 and time.monotonic() < deadline:  # the next refresh
            await asyncio.sleep(0.1)
            assert await pipeline.render() == b""
        assert failures("kafka") == 2 and failures("lake") == 2
        await pipeline.aclose()

    with caplog.at_level(logging.WARNING, logger="ingest_service.gateway.pipeline"):
        asyncio.run(scenario())
    warnings = [r.getMessage() for r in caplog.records if r.name.endswith("pipeline")]
    # one warning per outage and source, not one per refresh
    assert len(warnings) == 2, warnings
    assert "consumer lag unavailable, series left out" in warnings[0]
    assert f"Kafka at {silent_broker} did not answer" in warnings[0]
    assert "freshness unavailable, series left out (DeltaError" in warnings[1]
    assert "\n" not in warnings[1]
    # failed attempts leave no Kafka network thread behind
    assert [t.name for t in threading.enumerate() if t.name == "kafka-io-workbench-lag"] == []


@pytest.mark.slow  # a gateway without its broker takes ~5 s to start and ~7 s to stop
def test_a_live_gateway_answers_metrics_with_kafka_down_and_a_damaged_lake(kafka_config: Config):
    """A dead broker and a damaged building_state: /metrics still answers, the lag and
    freshness series are left out and the failures counted."""
    config = dataclasses.replace(kafka_config, kafka_bootstrap_servers=f"127.0.0.1:{free_port()}")
    damage_building_state(config)

    with live_gateway(
        config,
        WORKBENCH_METRICS_CACHE="0.2",
        WORKBENCH_GATEWAY_WORKERS="1",
        WORKBENCH_GATEWAY_ACK_TIMEOUT="2",
    ) as gw:

        def failures(source: str) -> float:
            return scrape(gw).get(("workbench_metrics_failures_total", (("source", source),)), 0)

        wait_until(lambda: failures("kafka") >= 1 and failures("lake") >= 1, timeout=20)
        with urllib.request.urlopen(f"{gw.url}/metrics", timeout=10) as r:
            assert r.status == 200
            text = r.read().decode()
        assert "gateway_events_accepted_total" in text
        for name in (
            "workbench_consumer_lag",
            "workbench_consumer_lag_total",
            "workbench_freshness_seconds",
        ):
            assert f"\n{name}" not in text and f"\n{name}{{" not in text
        assert gw.proc.poll() is None
        log_text = (config.home / "gateway.log").read_text()
        assert "consumer lag unavailable, series left out" in log_text
        assert "freshness unavailable, series left out" in log_text

"""`workbench bench ingest` end to end on a small topic (real broker, real processors, and
Quix Streams in the virtualenv the bench builds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import isolated_env, run_cli
from workbench.config import Config
from workbench.kafka import external_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ENGINES = ("confluent-kafka", "kafka-python", "processor")
ROWS = ("bare confluent-kafka", "bare kafka-python", "processor (librdkafka)", "Quix Streams")


def _small(env: dict[str, str], *extra: str):
    return run_cli(
        env,
        "bench",
        "ingest",
        *("--events", "3000", "--devices", "100", "--runs", "1"),
        *extra,
        timeout=900,
    )


def _figures(home: Path) -> dict:
    lines = (home / "bench" / "results.jsonl").read_text().splitlines()
    return json.loads(lines[-1])["figures"]


@pytest.fixture(scope="session")
def quix_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the bench builds the Quix Streams virtualenv: one per session (the first
    test to need it builds it, from PyPI; the others reuse it)."""
    return tmp_path_factory.getbasetemp() / "quix-venv"


@pytest.mark.timeout(1200)  # an Apache Kafka broker, and the virtualenv on the first run
def test_bench_ingest_on_apache_kafka_every_engine_sees_every_event(
    tmp_path: Path, quix_venv: Path
):
    # Quix Streams needs Apache Kafka (topic configs, transactions): a broker of its own
    env = isolated_env(
        tmp_path / "home",
        WORKBENCH_BROKER="kafka",
        WORKBENCH_COMMIT_MAX_EVENTS="500",  # several polls and batches even for 3,000 events
    )
    try:
        up = run_cli(env, "up", "broker", timeout=180)
        assert up.returncode == 0, up.stdout + up.stderr
        done = _small(env, "--quix-venv", str(quix_venv))
    finally:
        run_cli(env, "down", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    for row in ROWS:
        assert row in done.stdout
    assert "Quix Streams missing" not in done.stdout
    figures = _figures(tmp_path / "home")
    assert figures["broker"] == "kafka" and figures["events"] == 3000
    # every engine read every preloaded event, once
    assert figures["counts"] == {engine: [3000] for engine in (*ENGINES, "quix")}
    for key in (
        "bare_librdkafka_events_per_s",
        "bare_consumer_events_per_s",
        "processor_events_per_s",
        "quix_events_per_s",
    ):
        assert figures[key] > 0, figures
    assert figures["quix_missing"] is None and figures["quix_windows_written"] > 0
    assert figures["ratio_librdkafka"] == pytest.approx(
        figures["processor_events_per_s"] / figures["bare_librdkafka_events_per_s"], abs=0.01
    )
    assert 0 < figures["bytes_per_event_compacted"] <= figures["bytes_per_event_ingested"] * 2
    # the virtualenv is kept for the next run
    assert (quix_venv / "workbench-quix.json").exists()


def test_bench_ingest_says_why_quix_is_missing_and_reports_the_rest(
    broker_config: Config, tmp_path: Path
):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")  # no virtualenv can be made below a file
    env = isolated_env(
        tmp_path / "home",
        **external_env(broker_config),
        WORKBENCH_COMMIT_MAX_EVENTS="500",
    )
    done = _small(env, "--quix-venv", str(blocker / "venv"))
    assert done.returncode == 0, done.stdout + done.stderr
    missing = [ln for ln in done.stdout.splitlines() if ln.startswith("Quix Streams missing:")]
    assert len(missing) == 1 and "virtualenv" in missing[0], done.stdout
    figures = _figures(tmp_path / "home")
    assert figures["counts"] == {engine: [3000] for engine in ENGINES}
    assert figures["quix_events_per_s"] is None and "virtualenv" in figures["quix_missing"]
    assert figures["processor_events_per_s"] > 0 and figures["bare_librdkafka_events_per_s"] > 0

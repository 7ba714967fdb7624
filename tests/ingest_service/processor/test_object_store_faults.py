"""The lake's object store misconfigured or down: the processor says why in one line, in
its log and in `workbench status`, waits with back-off, and loses or repeats nothing."""

from __future__ import annotations

import dataclasses
import time
import uuid
from pathlib import Path

import pytest

from proving.objstore import Azurite, MotoS3, StoreProxy
from proving.scratch import ScratchStack
from tests.conftest import store_lake
from tests.ingest_service.processor.conftest import produce, stored_offsets, wait_drained
from tests.ingest_service.processor.test_exactly_once import _check_exactly_once, _records
from workbench.config import Config
from workbench.exceptions import WorkbenchError
from workbench.kafka import external_env
from workbench.stack.components import registered

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# How long the store-down test keeps the store away (the "down for a minute")
_STORE_DOWN_S = 60.0
WRONG_KEY = "d3Jvbmcta2V5LW5vdC10aGUtYWNjb3VudHM="  # base64, but not the account's key


@pytest.mark.parametrize(
    ("object_store", "lake", "extra", "reason"),
    [
        ("s3", "s3://no-such-bucket/lake", {}, "bucket no-such-bucket does not exist"),
        ("azure", "az://no-such-container/lake", {}, "container no-such-container does not exist"),
        ("azure", "", {"AZURE_STORAGE_ACCOUNT_KEY": WRONG_KEY}, "denied (403); check AZURE_"),
        (
            "s3-checking-keys",
            "",
            {},
            "denied (403); check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY",
        ),
    ],
    indirect=["object_store"],
    ids=["s3-missing-bucket", "azure-missing-container", "azure-wrong-key", "s3-wrong-key"],
)
def test_a_misconfigured_store_is_named_in_the_log_and_in_status(
    broker_config: Config,
    object_store: MotoS3 | Azurite,
    tmp_path,
    lake: str,
    extra: dict[str, str],
    reason: str,
) -> None:
    settings = {
        **external_env(broker_config),
        "WORKBENCH_TOPIC": f"telemetry-{uuid.uuid4().hex[:8]}",
        "WORKBENCH_LAKE": lake or store_lake(object_store),
        "WORKBENCH_STARTUP_TIMEOUT": "20",
        **extra,
    }
    stack = ScratchStack(home=tmp_path / "home", settings=settings)
    try:
        # `workbench up` gives up with the reason (and stops the processor)
        with pytest.raises(WorkbenchError) as failed:
            stack.up(["kafka", "processor"])
        assert "processor not healthy after 20s: lake unavailable: " in str(failed.value)
        assert reason in str(failed.value)
        log = (stack.config.log_dir / "processor.log").read_text()
        waits = [line for line in log.splitlines() if "lake unavailable: " in line]
        assert len(waits) >= 2, log[-3000:]  # the member retried, with back-off
        assert all(reason in line and "next attempt in" in line for line in waits)
        assert "Traceback" not in log  # one line per attempt, nothing else
    finally:
        stack.close()


def _processor_health(config: Config, home: Path) -> str | None:
    """What `workbench status` says of a processor running under ``home``."""
    component = next(c for c in registered() if c.name == "processor")
    return component.health(dataclasses.replace(config, home=home))


@pytest.mark.parametrize("object_store", ["azure"], indirect=True)
def test_the_store_down_mid_run_then_back_loses_and_repeats_nothing(
    kafka_config: Config, start_processor: object, object_store: Azurite
) -> None:
    # Azurite keeps its blobs on disk, so it can be stopped and started again on its port
    # with the lake intact (moto's server keeps them in memory)
    config = dataclasses.replace(kafka_config, lake=store_lake(object_store))
    records = _records(12_000, seed=5)
    half = len(records) // 2
    produce(config, records[:half])
    proc = start_processor(config, WORKBENCH_COMMIT_MAX_EVENTS="1500")  # type: ignore[operator]
    partitions = list(range(config.topic_partitions))
    deadline = time.monotonic() + 60
    while max(stored_offsets(config, partitions).values()) < 0:
        assert proc.popen.poll() is None, proc.log_tail()
        assert time.monotonic() < deadline, "nothing stored before the store went down"
        time.sleep(0.1)
    object_store.stop()
    down_at = time.monotonic()
    unreachable = f"lake unavailable: store endpoint {object_store.url} unreachable ({config.lake})"
    try:
        produce(config, records[half:])
        deadline = time.monotonic() + 90
        health: str | None = None
        while not (health or "").startswith("lake unavailable: store endpoint"):
            assert proc.popen.poll() is None, proc.log_tail()
            assert time.monotonic() < deadline, f"{health}: {proc.log_tail()}"
            time.sleep(0.2)
            health = _processor_health(config, proc.home)
        assert health == unreachable
        # the store stays down a whole minute: status names the reason throughout (the
        # member's back-off, capped at 15 s, keeps its heartbeat fresher than stale)
        while time.monotonic() - down_at < _STORE_DOWN_S:
            time.sleep(1)
            assert proc.popen.poll() is None, proc.log_tail()
            assert _processor_health(config, proc.home) == unreachable
    finally:
        object_store.start()
    wait_drained(config, timeout=180, alive=[proc], expected=len(records))
    assert proc.terminate() == 0
    log = proc.log.read_text()
    # the member whose commit failed ended; its successor waited for the store
    assert "lake commit failed: store endpoint" in log
    assert "next attempt in" in log
    _check_exactly_once(config, len(records))


@pytest.mark.parametrize("object_store", ["s3"], indirect=True)
def test_a_throttling_store_is_named_and_loses_and_repeats_nothing(
    kafka_config: Config, start_processor: object, object_store: MotoS3
) -> None:
    # the processor reaches moto through a proxy that answers 503 SlowDown while asked to;
    # the test's own reads go to moto directly (os.environ)
    proxy = StoreProxy(object_store.url)
    proxy.thread.start()
    config = dataclasses.replace(kafka_config, lake=store_lake(object_store))
    records = _records(4_000, seed=7)
    half = len(records) // 2
    produce(config, records[:half])
    proc = start_processor(  # type: ignore[operator]
        config,
        AWS_ENDPOINT_URL=proxy.url,
        WORKBENCH_COMMIT_MAX_EVENTS="1000",
        WORKBENCH_LAKE_RETRY_TIMEOUT="2",
    )
    try:
        partitions = list(range(config.topic_partitions))
        deadline = time.monotonic() + 60
        while max(stored_offsets(config, partitions).values()) < 0:
            assert proc.popen.poll() is None, proc.log_tail()
            assert time.monotonic() < deadline, "nothing stored before the store throttled"
            time.sleep(0.1)
        proxy.throttling.set()
        produce(config, records[half:])
        deadline = time.monotonic() + 90
        health: str | None = None
        while not (health or "").startswith("lake unavailable: store throttling"):
            assert proc.popen.poll() is None, proc.log_tail()
            assert time.monotonic() < deadline, f"{health}: {proc.log_tail()}"
            time.sleep(0.2)
            health = _processor_health(config, proc.home)
        assert (
            health == f"lake unavailable: store throttling requests (503 SlowDown) on {config.lake}"
        )
        assert proxy.throttled > 0
    finally:
        proxy.throttling.clear()
    wait_drained(config, timeout=180, alive=[proc], expected=len(records))
    assert proc.terminate() == 0
    proxy.shutdown()
    log = proc.log.read_text()
    # the member whose request was throttled past the retry time ended with one line; its
    # successor said why it waited, with back-off
    assert "store throttling requests (503 SlowDown)" in log
    assert "next attempt in" in log
    assert "Traceback" not in log
    _check_exactly_once(config, len(records))

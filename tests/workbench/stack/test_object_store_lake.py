"""The whole data path with the lake on a real object store (moto's S3, Azurite):
devices -> gateway -> Kafka -> processor -> every lake table and the registry on the
store -> HiveQL through pyhive -> the dashboards' data layer."""

from __future__ import annotations

import uuid
from pathlib import Path

import polars as pl
import pytest
from pyhive import hive

from proving.objstore import Azurite, MotoS3
from proving.scratch import DATA_PATH, ScratchStack
from tests.conftest import OBJECT_STORES, add_users, store_lake
from workbench.config import Config
from workbench.dashboards import DataStore
from workbench.kafka import external_env
from workbench.lake.tables import (
    BUILDING_METRICS_1M,
    BUILDING_STATE,
    TELEMETRY,
    TELEMETRY_REJECTED,
    table_uri,
)
from workbench.registry import Registry
from workbench.tenancy import Principal

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ANALYST_PASSWORD = "objstore-analyst-1"


@OBJECT_STORES
def test_devices_to_dashboards_with_the_lake_on_an_object_store(
    broker_config: Config, object_store: MotoS3 | Azurite, tmp_path: Path
) -> None:
    lake = store_lake(object_store)
    settings = {
        **external_env(broker_config),
        "WORKBENCH_TOPIC": f"telemetry-{uuid.uuid4().hex[:8]}",
        "WORKBENCH_LAKE": lake,
        "WORKBENCH_STARTUP_TIMEOUT": "120",
    }
    with ScratchStack(home=tmp_path / "home", settings=settings) as stack:
        stack.up([*DATA_PATH, "hiveserver2"])
        assert all(why is None for why in stack.healthy().values()), stack.healthy()
        # resends with the same seq: telemetry_rejected gets its "duplicate" rows
        run = stack.simulate(
            devices=40, interval_s=0.5, duration_s=10, scenario="late-and-duplicate"
        )
        summary = run.wait(timeout=120)
        ledger = stack.ledger(run.truth)
        assert ledger.accepted > 500, summary
        assert stack.wait_stored(ledger.accepted, timeout_s=120) == ledger.accepted
        ledger = stack.ledger(run.truth)
        assert ledger.exactly_once, ledger.line()

        config = stack.config
        assert config.lake == lake
        telemetry = pl.read_delta(table_uri(config, TELEMETRY))
        rejected = pl.read_delta(table_uri(config, TELEMETRY_REJECTED))
        assert set(rejected["reason"]) == {"duplicate"}
        metrics = pl.read_delta(table_uri(config, BUILDING_METRICS_1M))
        assert metrics["readings"].sum() == telemetry.filter(~pl.col("late")).height
        state = pl.read_delta(table_uri(config, BUILDING_STATE))
        assert set(state["building_id"]) == set(telemetry["building_id"])
        devices = Registry(config, principal=Principal.system()).devices()
        assert set(telemetry["device_id"]) <= set(devices["device_id"])

        # HiveQL through pyhive, as an analyst of the fleet's tenant
        tenant = telemetry["tenant_id"][0]
        building = telemetry.filter(pl.col("tenant_id") == tenant)["building_id"][0]
        add_users(config, {"ana": ("analyst", tenant, ANALYST_PASSWORD, ())})
        conn = hive.connect(
            host="127.0.0.1",
            port=config.hive_port,
            username="ana",
            password=ANALYST_PASSWORD,
            auth="CUSTOM",
        )
        try:
            cursor = conn.cursor()
            cursor.execute(
                "SELECT count(*) FROM telemetry WHERE building_id = %(b)s", {"b": building}
            )
            assert cursor.fetchall() == [
                (telemetry.filter(pl.col("building_id") == building).height,)
            ]
            cursor.execute("SELECT sum(readings) FROM building_metrics_1m")
            tenant_rows = telemetry.filter((pl.col("tenant_id") == tenant) & ~pl.col("late"))
            assert cursor.fetchall() == [(tenant_rows.height,)]
        finally:
            conn.close()

        # the dashboards' data layer, reading the same store
        snapshot = DataStore(config, Principal.system()).snapshot(building)
        assert snapshot.state is not None
        assert (
            snapshot.devices.height
            == telemetry.filter(pl.col("building_id") == building)["device_id"].n_unique()
        )
        assert all(why is None for why in stack.healthy().values()), stack.healthy()

"""The fire scenario end to end: the simulator's fleet on the real broker, a processor
subprocess, the alarms table, the webhook notifier against a real local receiver, and
the real ``workbench alarms`` command acknowledging and showing by whom."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import polars as pl
import pytest

from simulator.fleet import Fleet
from simulator.provision import provision_fleet
from simulator.run import RunOptions, run
from tests.conftest import add_users
from tests.ingest_service.processor.conftest import wait_drained
from tests.workbench.alarms.support import workbench
from tests.workbench.alarms.test_notify import Receiver
from workbench.alarms import alarms, rulebook, store
from workbench.alarms.notify import Notifier
from workbench.config import Config
from workbench.registry import Registry
from workbench.tenancy import Principal

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ADMIN = Principal.system()


def test_fire_to_one_alarm_per_detector_one_webhook_each_and_an_acknowledgement(
    kafka_config: Config, start_processor: object, tmp_path, monkeypatch, capsys
) -> None:
    config = dataclasses.replace(kafka_config, webhook_allow="127.0.0.1")
    options = RunOptions(
        devices=150,
        interval_s=60,
        duration_s=300,
        speedup=600,
        seed=4,
        scenario="fire",
        target="kafka",
        truth=tmp_path / "truth.jsonl",
        start=dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=10),
    )
    fleet = Fleet.generate(options.devices, seed=options.seed, tenants=options.tenants)
    provision_fleet(config, fleet)
    where = Registry(config, principal=ADMIN).devices().select("device_id", "building_id")
    tenants = sorted(Registry(config, principal=ADMIN).buildings()["tenant_id"].unique())
    receiver = Receiver()
    hook = f'[[webhook]]\nurl = "{receiver.url}"\nseverities = ["critical"]\n'
    for tenant in tenants:
        rulebook.set_rules(
            config, tenant, store.DEFAULT_RULES + hook, source=f"{tenant}.toml", principal=ADMIN
        )

    summary = run(config, options)
    proc = start_processor(config)  # type: ignore[operator]
    wait_drained(config, expected=summary.stats.sent, alive=[proc])
    assert proc.terminate() == 0

    # the ground truth: every detector that sent smoke, in its registry building
    sent = [json.loads(line) for line in (tmp_path / "truth.jsonl").read_text().splitlines()]
    smoking = {s["device_id"] for s in sent if s["readings"].get("smoke")}
    assert len(smoking) >= 3 and sum(bool(s["readings"].get("smoke")) for s in sent) > len(smoking)
    want = where.filter(pl.col("device_id").is_in(sorted(smoking))).sort("device_id")
    assert want["building_id"].n_unique() == 1
    got = alarms(config, principal=ADMIN).filter(pl.col("rule") == "smoke")
    assert got.select("device_id", "building_id").sort("device_id").equals(want)
    assert got.filter(pl.col("cleared_at").is_not_null()).height == 0  # the fire goes on

    # one webhook per alarm, even when the notifier runs again
    notifier = Notifier(config)
    assert notifier.run_once() == got.height
    assert notifier.run_once() == 0
    delivered = sorted(d["alarm_id"] for d in receiver.accepted())
    assert delivered == sorted(got["alarm_id"])
    receiver.server.shutdown()

    # acknowledged with the CLI, by an operator of that tenant; show says by whom
    tenant = got["tenant_id"][0]
    add_users(config, {"olga": ("operator", tenant, "olga-password-1", ())})
    env = config.env() | {"WORKBENCH_PASSWORD": "olga-password-1"}
    first = got["alarm_id"][0]
    acked = workbench(monkeypatch, capsys, env, "alarms", "ack", first, "--as", "olga")
    assert acked.returncode == 0, acked.stderr
    shown = workbench(monkeypatch, capsys, env, "alarms", "show", first, "--json", "--as", "olga")
    doc = json.loads(shown.stdout)
    assert doc["acknowledged_by"] == "olga" and doc["acknowledged_at"]
    assert [h["action"] for h in doc["history"]] == ["raised", "acknowledged"]

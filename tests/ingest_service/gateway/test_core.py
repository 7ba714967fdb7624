"""The gateway's hot-path caches and record encoding (pure logic over a real registry lake)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from ingest_service.gateway import core
from ingest_service.gateway.core import Gateway
from ingest_service.gateway.validation import Problem
from tests.conftest import isolated_env
from workbench.config import Config
from workbench.events import encode_event
from workbench.registry import Registry, sas_token
from workbench.tenancy.principal import Principal


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Gateway, Registry, str]:
    config = Config.from_env(isolated_env(tmp_path / "home"))
    registry = Registry(config, principal=Principal.system("test"))
    registry.add_tenant("t-1")
    registry.add_building("b-1", tenant="t-1")
    key = registry.provision("dev-1", building="b-1", device_type="environment", room="R 1").key
    gateway = Gateway(config)
    gateway.devices.refresh()
    return gateway, registry, key


def _counting_verify(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = core.verify_sas_token

    def verify(*args: object, **kwargs: object) -> str | None:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(core, "verify_sas_token", verify)
    return calls


def test_a_verified_token_is_not_verified_again(setup, monkeypatch):
    gateway, _registry, key = setup
    calls = _counting_verify(monkeypatch)
    token = sas_token("dev-1", key, expiry=2_000_000_000)
    now = 1_900_000_000.0
    for _ in range(3):
        assert gateway.authenticate(token, now=now).device_id == "dev-1"
    assert len(calls) == 1
    other = sas_token("dev-1", key, expiry=2_000_000_001)  # another token string: verified
    gateway.authenticate(other, now=now)
    assert len(calls) == 2


def test_a_cached_token_still_expires(setup):
    gateway, _registry, key = setup
    token = sas_token("dev-1", key, expiry=2_000_000_000)
    gateway.authenticate(token, now=1_999_999_990.0)
    with pytest.raises(Problem) as refused:
        gateway.authenticate(token, now=2_000_000_000.0)
    assert (refused.value.status, refused.value.reason) == (401, "expired")


def test_a_cached_token_is_trusted_for_a_short_time_only(setup, monkeypatch):
    gateway, _registry, key = setup
    calls = _counting_verify(monkeypatch)
    token = sas_token("dev-1", key, expiry=2_000_000_000)
    gateway.authenticate(token, now=1_900_000_000.0)
    gateway.authenticate(token, now=1_900_000_000.0 + core.TOKEN_CACHE_TTL_S + 1)
    assert len(calls) == 2


def test_registry_changes_empty_the_cache(setup, monkeypatch):
    gateway, registry, key = setup
    calls = _counting_verify(monkeypatch)
    token = sas_token("dev-1", key, expiry=2_000_000_000)
    now = 1_900_000_000.0
    gateway.authenticate(token, now=now)

    registry.disable("dev-1")
    assert gateway.devices.refresh()
    with pytest.raises(Problem) as refused:
        gateway.authenticate(token, now=now)
    assert (refused.value.status, refused.value.reason) == (403, "disabled")

    registry.enable("dev-1")
    new_key = registry.rotate_key("dev-1").key
    assert gateway.devices.refresh()
    with pytest.raises(Problem) as refused:  # the old key's token, verified earlier, is dead
        gateway.authenticate(token, now=now)
    assert (refused.value.status, refused.value.reason) == (401, "bad_signature")
    fresh = sas_token("dev-1", new_key, expiry=2_000_000_000)
    assert gateway.authenticate(fresh, now=now).device_id == "dev-1"
    assert len(calls) == 4  # every answer after a registry change came from a fresh check


def test_records_are_the_contract_json(setup):
    gateway, _registry, _key = setup
    entry = gateway.devices.get("dev-1")
    assert entry is not None
    received = dt.datetime(2026, 11, 27, 5, 30, 1, 250000, tzinfo=dt.UTC)
    readings = {"temperature": 21.5, "smoke": False, "co2": 410, "note_é": 1}
    (key, value), (_, second) = gateway.records(
        entry,
        [("2026-11-27T05:30:00.123Z", 7, readings), ("2026-11-27T05:30:01.000Z", 8, {})],
        received,
    )
    expected = {
        "device_id": "dev-1",
        "seq": 7,
        "ts": "2026-11-27T05:30:00.123Z",
        "received_at": "2026-11-27T05:30:01.250Z",
        "tenant_id": "t-1",
        "building_id": "b-1",
        "floor": None,
        "room": "R 1",
        "device_type": "environment",
        "protocol": "http",
        "readings": readings,
    }
    assert key == b"dev-1"
    decoded = json.loads(value)
    assert decoded == expected
    assert list(decoded) == list(expected)  # the key order of workbench.events too
    assert json.loads(encode_event(expected)) == decoded
    assert json.loads(second)["seq"] == 8

"""The gateway's hot-path caches and record encoding (pure logic over a real registry lake)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import time
from pathlib import Path

import pytest

from ingest_service.gateway import core
from ingest_service.gateway.core import Gateway
from ingest_service.gateway.validation import Problem
from tests.conftest import isolated_env
from workbench.config import Config
from workbench.events import encode_event
from workbench.exceptions import RegistryUnreadable
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


def _auth(gateway: Gateway, token: str, now: float) -> str:
    return asyncio.run(gateway.authenticate(token, now=now)).device_id


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
    now = 1_999_000_000.0
    for _ in range(3):
        assert _auth(gateway, token, now) == "dev-1"
    assert len(calls) == 1
    other = sas_token("dev-1", key, expiry=2_000_000_001)  # another token string: verified
    _auth(gateway, other, now)
    assert len(calls) == 2


def test_a_cached_token_still_expires(setup):
    gateway, _registry, key = setup
    token = sas_token("dev-1", key, expiry=2_000_000_000)
    _auth(gateway, token, 1_999_999_990.0)
    with pytest.raises(Problem) as refused:
        _auth(gateway, token, 2_000_000_000.0)
    assert (refused.value.status, refused.value.reason) == (401, "expired")


def test_a_cached_token_is_trusted_for_a_short_time_only(setup, monkeypatch):
    gateway, _registry, key = setup
    calls = _counting_verify(monkeypatch)
    token = sas_token("dev-1", key, expiry=2_000_000_000)
    _auth(gateway, token, 1_999_000_000.0)
    _auth(gateway, token, 1_999_000_000.0 + core.TOKEN_CACHE_TTL_S + 1)
    assert len(calls) == 2


def test_a_registry_change_reaches_a_cached_token(setup, monkeypatch):
    gateway, registry, key = setup
    calls = _counting_verify(monkeypatch)
    token = sas_token("dev-1", key, expiry=2_000_000_000)
    now = 1_999_000_000.0
    _auth(gateway, token, now)

    registry.disable("dev-1")
    assert gateway.devices.refresh()
    with pytest.raises(Problem) as refused:
        _auth(gateway, token, now)
    assert (refused.value.status, refused.value.reason) == (403, "disabled")

    registry.enable("dev-1")
    new_key = registry.rotate_key("dev-1").key
    assert gateway.devices.refresh()
    calls.clear()
    with pytest.raises(Problem) as refused:  # the old key's token, verified earlier, is dead
        _auth(gateway, token, now)
    assert (refused.value.status, refused.value.reason) == (401, "bad_signature")
    # checked against the current key and the versions after it, never trusted from the cache
    assert len(calls) == 1 + core.KEY_VERSIONS_AHEAD
    fresh = sas_token("dev-1", new_key, expiry=2_000_000_000)
    assert _auth(gateway, fresh, now) == "dev-1"


# --- read-your-writes: the door re-reads the registry before refusing a verified token ----


def test_a_device_provisioned_after_the_load_is_accepted_at_once(setup):
    gateway, registry, _key = setup
    loaded = gateway.devices.version
    key = registry.provision("dev-new", building="b-1", device_type="smoke").key
    assert gateway.devices.version == loaded  # no poll, no wake: the door must ask itself
    assert _auth(gateway, sas_token("dev-new", key), time.time()) == "dev-new"
    assert gateway.confirmations == 1 and gateway.devices.version == loaded + 1
    # the next request is answered from the view, without a registry read
    assert _auth(gateway, sas_token("dev-new", key, ttl_s=60), time.time()) == "dev-new"
    assert gateway.confirmations == 1


def test_enable_and_rotation_are_confirmed_by_a_registry_read(setup):
    gateway, registry, key = setup
    registry.disable("dev-1")
    gateway.devices.refresh()
    registry.enable("dev-1")  # the view still says disabled
    assert _auth(gateway, sas_token("dev-1", key), time.time()) == "dev-1"
    new_key = registry.rotate_key("dev-1").key  # the view still has key version 1
    assert _auth(gateway, sas_token("dev-1", new_key), time.time()) == "dev-1"
    assert gateway.confirmations == 2
    assert gateway.devices.get("dev-1").key_version == 2  # type: ignore[union-attr]


def test_a_bad_signature_is_refused_without_reading_the_registry(setup):
    gateway, registry, key = setup
    registry.provision("dev-2", building="b-1", device_type="smoke")  # not in the view
    stranger = sas_token("dev-2", key)  # signed with dev-1's key
    with pytest.raises(Problem) as refused:
        _auth(gateway, stranger, time.time())
    assert (refused.value.status, refused.value.reason) == (403, "unknown_device")
    with pytest.raises(Problem) as refused:
        _auth(gateway, sas_token("dev-1", base64.b64encode(b"x" * 32).decode()), time.time())
    assert (refused.value.status, refused.value.reason) == (401, "bad_signature")
    assert gateway.confirmations == 0


def test_a_device_the_registry_cannot_confirm_gets_a_retryable_503(setup):
    gateway, registry, _key = setup
    key = registry.provision("dev-3", building="b-1", device_type="smoke").key
    version = registry.version("devices")
    log = Path(registry.table_uri("devices")) / "_delta_log" / f"{version:020d}.json"
    good = log.read_bytes()
    log.write_bytes(b"{ not a delta log entry\n")  # the registry cannot be read for now
    try:
        with pytest.raises(Problem) as unsure:
            _auth(gateway, sas_token("dev-3", key), time.time())
        assert (unsure.value.status, unsure.value.reason) == (503, "registry_unavailable")
        assert unsure.value.retry_after == 1
    finally:
        log.write_bytes(good)
    assert _auth(gateway, sas_token("dev-3", key), time.time()) == "dev-3"


def test_one_change_is_applied_by_feed_not_by_reload(setup):
    gateway, registry, _key = setup
    for n in range(5):
        registry.provision(f"dev-f{n}", building="b-1", device_type="smoke")
    gateway.devices.refresh()
    registry.disable("dev-f3")
    view = gateway.devices
    index = view._devices
    before = dict(index)
    assert view.refresh() and view.resyncs == 0
    assert view._devices is index  # changed in place: a reload builds a new index
    assert {d for d, e in index.items() if before.get(d) != e} == {"dev-f3"}
    assert view.get("dev-f3").status == "disabled"  # type: ignore[union-attr]


def test_a_gap_in_the_feed_is_a_counted_full_resync(setup):
    gateway, registry, _key = setup
    view = gateway.devices
    registry.disable("dev-1")
    registry.provision("dev-9", building="b-1", device_type="smoke")
    # what a log clean-up does after a checkpoint: the versions the view has not read yet
    # are gone, so the feed cannot say what they changed
    from deltalake import DeltaTable

    uri = registry.table_uri("devices")
    DeltaTable(uri).create_checkpoint()
    latest = registry.version("devices")
    for entry in (Path(uri) / "_delta_log").glob("*.json"):
        if int(entry.stem) < latest:
            entry.unlink()
    assert view.refresh()
    assert view.resyncs == 1
    assert view.get("dev-9") is not None
    assert view.get("dev-1").status == "disabled"  # type: ignore[union-attr]


def test_a_vanished_registry_keeps_the_last_view_and_catches_up_by_feed(setup):
    gateway, registry, _key = setup
    view = gateway.devices
    folder = Path(registry.table_uri("devices"))
    moved = folder.with_name("devices-away")
    folder.rename(moved)  # a local store lists a vanished folder as empty, not as an error
    try:
        for _ in range(2):
            with pytest.raises(RegistryUnreadable, match="_delta_log folder is gone"):
                view.refresh()
        assert view.get("dev-1") is not None  # the last view still answers
        assert view.read_errors == 2 and view.unreadable_since is not None
        assert view.stale_seconds(now=time.time() + 60) >= 60
        assert "gateway_registry_read_errors_total 2.0" in gateway.metrics.render().decode()
    finally:
        moved.rename(folder)
    registry.disable("dev-1")  # committed after the outage: read by feed, not reload
    assert view.refresh() and view.resyncs == 0
    assert view.get("dev-1").status == "disabled"  # type: ignore[union-attr]
    assert view.unreadable_since is None and view.stale_seconds() == 0


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
        protocol="mqtt",  # the door's name, not the registry's (this device is http's)
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
        "protocol": "mqtt",
        "readings": readings,
    }
    assert key == b"dev-1"
    decoded = json.loads(value)
    assert decoded == expected
    assert list(decoded) == list(expected)  # the key order of workbench.events too
    assert json.loads(encode_event(expected)) == decoded
    assert json.loads(second)["seq"] == 8

"""Roles by doors: every principal sees exactly its scope, through every door.

Doors covered here: the Python API (Registry reads and writes, the lake reading
API) and the CLI (`--as USER`). The dashboards (tests/workbench/dashboards) and
the HiveServer2 endpoint (tests/workbench/query/hiveserver2) have theirs next to them.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli
from tests.workbench.tenancy.conftest import PASSWORD, USERS
from workbench.exceptions import AccessDenied, NotFound

ALL = {"dev-a1-1", "dev-a1-2", "dev-a2-1", "dev-b1-1", "dev-b1-2"}
SCOPE = {
    "ada": ALL,
    "olga": {"dev-a1-1", "dev-a1-2", "dev-a2-1"},
    "anna": {"dev-a1-1", "dev-a1-2", "dev-a2-1"},
    "vic": {"dev-a1-1", "dev-a1-2"},
    "otto": {"dev-b1-1", "dev-b1-2"},
    "bert": {"dev-b1-1", "dev-b1-2"},
}
BUILDINGS_IN_SCOPE = {
    "ada": {"b-a1", "b-a2", "b-b1"},
    "olga": {"b-a1", "b-a2"},
    "anna": {"b-a1", "b-a2"},
    "vic": {"b-a1"},
    "otto": {"b-b1"},
    "bert": {"b-b1"},
}
HOSTILE_FILTERS = ["t-b", "*", "%", "t-a' OR '1'='1", "b-b1", "' OR 1=1 --", ".*"]


@pytest.mark.parametrize("user", sorted(USERS))
def test_each_principal_lists_exactly_its_devices(tenancy, user):
    registry = tenancy.registry(user)
    assert set(registry.devices()["device_id"]) == SCOPE[user]
    visible_tenants = set(registry.tenants()["tenant_id"])
    assert visible_tenants == ({"t-a", "t-b"} if user == "ada" else {USERS[user][1]})


@pytest.mark.parametrize("user", ["olga", "anna", "vic"])
@pytest.mark.parametrize("value", HOSTILE_FILTERS)
def test_foreign_ids_wildcards_and_injection_in_filters_return_nothing_foreign(
    tenancy, user, value
):
    registry = tenancy.registry(user)
    for frame in (
        registry.devices(tenant=value),
        registry.devices(building=value),
        registry.buildings(tenant=value),
    ):
        foreign = set(frame["tenant_id"]) - {"t-a"}
        assert foreign == set()
    assert set(registry.devices(building=value)["device_id"]) <= SCOPE[user]


@pytest.mark.parametrize("user", ["olga", "anna", "vic"])
def test_a_foreign_device_looks_absent(tenancy, user):
    with pytest.raises(NotFound):
        tenancy.registry(user).device("dev-b1-1")


def test_operators_provision_only_into_their_tenants_buildings(tenancy):
    olga = tenancy.registry("olga")
    made = olga.provision("dev-olga-1", building="b-a2", device_type="smoke")
    assert made.device.tenant_id == "t-a" and made.device.updated_by == "olga"
    with pytest.raises(NotFound):  # another tenant's building is not even visible
        olga.provision("dev-olga-2", building="b-b1", device_type="smoke")
    with pytest.raises(NotFound):
        olga.disable("dev-b1-1")
    with pytest.raises(AccessDenied):
        olga.add_tenant("t-olga")
    assert "dev-olga-2" not in set(tenancy.registry("ada").devices()["device_id"])


@pytest.mark.parametrize("user", ["anna", "vic"])
def test_readers_cannot_write(tenancy, user):
    registry = tenancy.registry(user)
    with pytest.raises(AccessDenied, match="not authorized"):
        registry.provision("dev-x", building="b-a1", device_type="smoke")
    with pytest.raises(AccessDenied):
        registry.disable("dev-a1-1")
    with pytest.raises(AccessDenied):
        registry.device_key("dev-a1-1")
    with pytest.raises(AccessDenied):
        registry.frame("devices")


def _cli_env(tenancy, tmp_path, password=PASSWORD):
    from tests.conftest import isolated_env

    env = isolated_env(tmp_path, WORKBENCH_HOME=str(tenancy.config.home))
    env["WORKBENCH_PASSWORD"] = password
    return env


@pytest.mark.parametrize("user", ["ada", "olga", "vic", "bert"])
def test_cli_as_user_lists_exactly_its_devices(tenancy, tmp_path, user):
    result = run_cli(_cli_env(tenancy, tmp_path), "devices", "list", "--json", "--as", user)
    assert result.returncode == 0, result.stderr
    listed = {d["device_id"] for d in json.loads(result.stdout)}
    assert listed - {"dev-olga-1"} == SCOPE[user] - {"dev-olga-1"}


def test_cli_as_user_with_wrong_password_is_refused(tenancy, tmp_path):
    env = _cli_env(tenancy, tmp_path, password="wrong-password")
    result = run_cli(env, "devices", "list", "--as", "olga")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "workbench: error: invalid user name or password; check both, or ask an admin to reset it"
    )


def test_cli_refuses_foreign_writes_and_user_management(tenancy, tmp_path):
    env = _cli_env(tenancy, tmp_path)
    foreign = run_cli(env, "devices", "disable", "dev-b1-1", "--as", "olga")
    assert foreign.returncode != 0 and "is not in the registry" in foreign.stderr
    users = run_cli(env, "users", "list", "--as", "anna")
    assert users.returncode == 1 and "not authorized" in users.stderr
    viewer = run_cli(
        env, "devices", "provision", "dev-v", "--building", "b-a1", "--type", "smoke", "--as", "vic"
    )
    assert viewer.returncode == 1 and "not authorized" in viewer.stderr


@pytest.fixture(scope="module")
def lake_with_two_tenants(tenancy):
    """Telemetry and aggregates of every device, written by the processor's own path."""
    import datetime as dt

    from ingest_service.processor.decode import RecordBatch
    from ingest_service.processor.processor import Processor
    from ingest_service.processor.windows import FixedClock
    from tests.ingest_service.processor.conftest import T0, encode, event
    from tests.workbench.tenancy.conftest import LAYOUT

    values = [
        encode(event(device, 1, T0, building=building, tenant_id=tenant))
        for tenant, buildings in LAYOUT.items()
        for building, devices in buildings.items()
        for device in devices
    ]
    processor = Processor(tenancy.config, clock=FixedClock(T0 + dt.timedelta(seconds=30)))
    processor.assign([0])
    processor.process(
        RecordBatch(values, [None] * len(values), [0] * len(values), list(range(len(values))))
    )
    return T0


@pytest.mark.parametrize("user", sorted(USERS))
def test_reading_api_returns_exactly_the_principals_scope(tenancy, lake_with_two_tenants, user):
    from workbench.lake import building_metrics, building_state, telemetry
    from workbench.tenancy import Principal

    role, tenant, buildings = USERS[user]
    me = Principal(user, role, tenant, frozenset(buildings))
    assert set(telemetry(tenancy.config, principal=me)["device_id"]) == SCOPE[user] - {"dev-olga-1"}
    expected_buildings = BUILDINGS_IN_SCOPE[user]
    assert set(building_state(tenancy.config, principal=me)["building_id"]) == expected_buildings
    for value in [*HOSTILE_FILTERS, "b-b1", "b-a2"]:
        rows = telemetry(tenancy.config, building_id=value, principal=me)
        assert set(rows["device_id"]) <= SCOPE[user]
        metrics = building_metrics(tenancy.config, building_id=value, principal=me)
        assert set(metrics["building_id"]) <= expected_buildings

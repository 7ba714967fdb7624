"""Provisioning actions as operators, viewers and admins against the real registry."""

from __future__ import annotations

import pytest

from workbench.dashboards import ProvisioningActions
from workbench.dashboards.data import registry_for
from workbench.exceptions import AccessDenied, AlreadyExists, ImportRejected, NotFound
from workbench.tenancy import Principal

pytestmark = pytest.mark.integration

OPS = Principal("ops", "operator", "t-0001")


def _devices(lake):
    return registry_for(lake.config, Principal.system()).devices().sort("device_id")


def test_operator_provisions_rotates_disables_and_deprovisions_in_their_tenant(lake):
    actions = ProvisioningActions(lake.config, OPS)
    new = actions.provision("new-1", building="b-0003", device_type="smoke", floor=2, room="2.01")
    assert new.device.tenant_id == "t-0001" and len(new.key) == 44
    rotated = actions.rotate_key("new-1")
    assert rotated.key != new.key
    assert actions.disable("new-1").status == "disabled"
    assert actions.enable("new-1").status == "provisioned"
    assert actions.deprovision("new-1").status == "deprovisioned"
    assert actions.search("new-")["device_id"].to_list() == ["new-1"]


def test_bad_input_is_refused_and_changes_nothing(lake):
    actions = ProvisioningActions(lake.config, OPS)
    before = _devices(lake)
    with pytest.raises(AlreadyExists, match="already provisioned"):
        actions.provision("dev-000001", building="b-0001", device_type="environment")
    with pytest.raises(NotFound, match="unknown building 'b-9999'"):
        actions.provision("new-2", building="b-9999", device_type="environment")
    with pytest.raises(NotFound, match="unknown building 'b-0002'"):  # another tenant's
        actions.provision("new-2", building="b-0002", device_type="environment")
    with pytest.raises(NotFound, match="unknown device"):  # another tenant's device
        actions.disable("dev-000011")
    assert _devices(lake).equals(before)


def test_viewers_and_analysts_cannot_provision(lake):
    for who in (
        Principal("rita", "viewer", "t-0001", frozenset({"b-0001"})),
        Principal("ann", "analyst", "t-0001"),
    ):
        with pytest.raises(AccessDenied):
            ProvisioningActions(lake.config, who).provision(
                "new-3", building="b-0001", device_type="smoke"
            )
        with pytest.raises(AccessDenied):
            ProvisioningActions(lake.config, who).search()


def test_import_reports_every_bad_row_and_applies_nothing(lake, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "device_id,building_id,device_type,floor\n"
        "imp-1,b-0001,environment,1\n"
        "imp-2,b-9999,environment,1\n"  # unknown building
        "imp-3,b-0002,smoke,1\n"  # another tenant's building
        "imp-4,b-0003,toaster,x\n"  # bad type and floor
    )
    before = _devices(lake)
    with pytest.raises(ImportRejected) as err:
        ProvisioningActions(lake.config, OPS).import_csv(bad)
    # every invalid row at once, the other tenant's building among them
    assert err.value.errors == [
        (3, "unknown building_id"),
        (4, "unknown building_id"),
        (5, "device_type must be one of environment|smoke|intrusion"),
        (5, "floor must be a whole number"),
    ]
    assert _devices(lake).equals(before)


def test_malformed_csv_is_refused(lake, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("this is,not\na device file\n\x00\x01")
    before = _devices(lake)
    with pytest.raises(ImportRejected, match="wrong columns"):
        ProvisioningActions(lake.config, OPS).import_csv(bad)
    assert _devices(lake).equals(before)


def test_import_of_a_good_file_with_progress(lake, tmp_path):
    good = tmp_path / "good.csv"
    good.write_text(
        "device_id,building_id,device_type,floor,room\n"
        + "".join(f"imp-{i},b-0003,environment,{i % 3},{i % 3}.0{i}\n" for i in range(1, 8))
    )
    stages = []
    result = ProvisioningActions(lake.config, OPS).import_csv(
        good, progress=lambda stage, done, total: stages.append((stage, done, total))
    )
    assert result["rows"] == 7 and result["inserted"] == 7
    assert ("writing", 7, 7) in stages
    assert _devices(lake).filter(_devices(lake)["device_id"].str.starts_with("imp-")).height == 7

"""Length and range limits of every registry field, enforced by the library (so the CLI and
the provisioning form say the same), and an import that lists every invalid row at once."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from workbench.config import Config
from workbench.exceptions import ImportRejected, InvalidInput, NotFound
from workbench.registry import Registry
from workbench.registry.records import parse_floor, valid_floor, valid_id, valid_name, valid_room
from workbench.tenancy import Principal, UserStore

OPS = Principal("ops", "operator", "t-1")
OTHER_OPS = Principal("oz", "operator", "t-2")


# --- pure rules ---------------------------------------------------------------------------


def test_a_5000_character_name_is_refused_saying_how_long_and_the_limit():
    with pytest.raises(InvalidInput) as err:
        valid_name("x" * 5000, "building name")
    assert str(err.value).startswith("building name is 5,000 characters long, at most 100")
    assert len(str(err.value)) < 200  # the name itself is not echoed back
    assert valid_name("x" * 100, "building name") == "x" * 100
    assert valid_name("   ", "building name") is None


def test_names_and_rooms_with_control_characters_are_refused():
    with pytest.raises(InvalidInput, match="control character"):
        valid_name("Harbour\nHouse", "building name")
    assert valid_room(" 2.01\t") == "2.01"  # outer white space is stripped, not refused
    with pytest.raises(InvalidInput, match="control character"):
        valid_room("2\t01")
    with pytest.raises(InvalidInput, match="room is 65 characters long, at most 64"):
        valid_room("r" * 65)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", None), (" 3 ", 3), ("-20", -20), ("300", 300), ("+7", 7)],
)
def test_floors_in_range_are_accepted(text: str, expected: int | None):
    assert parse_floor(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("99999999999999999999", "floor 99999999999999999999 is out of range: a floor is from"),
        ("301", "floor 301 is out of range"),
        ("-21", "floor -21 is out of range"),
        ("2.5", "floor '2.5' is not a whole number"),
        ("two", "floor 'two' is not a whole number"),
    ],
)
def test_floors_out_of_range_or_not_whole_are_refused_precisely(text: str, message: str):
    with pytest.raises(InvalidInput) as err:
        parse_floor(text)
    assert str(err.value).startswith(message)


def test_a_huge_floor_number_is_cut_in_the_message():
    with pytest.raises(InvalidInput) as err:
        valid_floor(10**400)
    assert "(401 digits)" in str(err.value) and len(str(err.value)) < 200


def test_ids_say_what_is_wrong():
    with pytest.raises(InvalidInput, match="device id is 129 characters long, at most 128"):
        valid_id("d" * 129, "device id")
    with pytest.raises(InvalidInput, match="device id is empty"):
        valid_id("", "device id")
    with pytest.raises(InvalidInput, match="invalid device id 'dev 1'"):
        valid_id("dev 1", "device id")


# --- the registry applies them ----------------------------------------------------------


@pytest.fixture
def config(tmp_path: Path) -> Config:
    config = Config.from_env({"WORKBENCH_HOME": str(tmp_path / "home")})
    admin = Registry(config, principal=Principal.system())
    for tenant in ("t-1", "t-2"):
        admin.add_tenant(tenant)
    admin.add_building("b-1", tenant="t-1")
    admin.add_building("b-2", tenant="t-2")
    admin.provision("theirs-1", building="b-2", device_type="smoke")
    return config


def test_the_registry_refuses_out_of_range_values_and_writes_nothing(config: Config):
    ops = Registry(config, principal=OPS)
    before = ops.devices().height, ops.buildings().height
    with pytest.raises(InvalidInput, match="floor 99999999999999999999 is out of range"):
        ops.provision("d-1", building="b-1", device_type="smoke", floor=99999999999999999999)
    with pytest.raises(InvalidInput, match="room is 65 characters long"):
        ops.provision("d-1", building="b-1", device_type="smoke", room="r" * 65)
    with pytest.raises(InvalidInput, match="building name is 5,000 characters long"):
        ops.add_building("b-3", name="n" * 5000)
    with pytest.raises(InvalidInput, match="tenant name is 101 characters long"):
        Registry(config, principal=Principal.system()).add_tenant("t-3", name="n" * 101)
    assert (ops.devices().height, ops.buildings().height) == before


def test_an_operator_adds_to_their_own_tenant_and_renames_only_their_buildings(config: Config):
    ops = Registry(config, principal=OPS)
    assert ops.add_building("b-3", name="Harbour House") == "t-1"
    ops.rename_building("b-3", "  Harbour House East ")
    row = ops.buildings().filter(pl.col("building_id") == "b-3").row(0, named=True)
    assert (row["tenant_id"], row["name"], row["updated_by"]) == (
        "t-1",
        "Harbour House East",
        "ops",
    )
    with pytest.raises(NotFound):  # another tenant's building reads as absent
        ops.rename_building("b-2", "Mine now")
    with pytest.raises(InvalidInput, match="building name is 101 characters long"):
        ops.rename_building("b-3", "n" * 101)
    with pytest.raises(InvalidInput, match="--tenant"):  # the admin has no tenant of its own
        Registry(config, principal=Principal.system()).add_building("b-4")
    admin_view = Registry(config, principal=Principal.system()).buildings()
    assert admin_view.filter(pl.col("building_id") == "b-2")["name"].to_list() == ["b-2"]


def test_an_import_lists_every_invalid_row_at_once(config: Config, tmp_path: Path):
    csv = tmp_path / "fleet.csv"
    csv.write_text(
        "device_id,building_id,device_type,floor,room\n"
        "ok-1,b-1,smoke,1,1.01\n"
        "ok-2,b-1,smoke,99999999999999999999,1.02\n"  # line 3: floor out of range
        f"ok-3,b-1,smoke,1,{'r' * 65}\n"  # line 4: room too long
        "theirs-1,b-1,smoke,1,1.04\n"  # line 5: another tenant's device
        "ok-5,b-2,toaster,2.5,1.05\n"  # line 6: another tenant's building, type, floor
        f"{'d' * 129},b-1,smoke,,\n"  # line 7: id too long
    )
    ops = Registry(config, principal=OPS)
    with pytest.raises(ImportRejected) as err:
        ops.import_csv(csv)
    assert err.value.errors == [
        (3, "floor is out of range: a floor is from -20 to 300"),
        (4, "room is longer than 64 characters"),
        (5, "device_id is taken by another tenant"),
        (6, "device_type must be one of environment|smoke|intrusion"),
        (6, "floor must be a whole number"),
        (6, "unknown building_id"),
        (7, "device_id is longer than 128 characters"),
    ]
    assert ops.devices().height == 0
    # the platform admin may move a device between tenants: the same id is no error
    admin = Registry(config, principal=Principal.system())
    csv.write_text("device_id,building_id,device_type,floor\ntheirs-1,b-1,smoke,-20\n")
    assert admin.import_csv(csv)["updated"] == 1


def test_user_names_and_passwords_have_limits_too(config: Config):
    store, admin = UserStore(config), Principal.system()
    with pytest.raises(InvalidInput, match="user name is 129 characters long, at most 128"):
        store.add("u" * 129, role="analyst", tenant="t-1", password="long-enough-1", by=admin)
    with pytest.raises(InvalidInput, match="password is 5,000 characters long, at most 1024"):
        store.add("ann", role="analyst", tenant="t-1", password="p" * 5000, by=admin)
    assert store.list() == []

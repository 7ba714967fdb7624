"""The registry on real Delta tables: life cycle, audit trail, import, concurrent writers."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

from workbench.config import Config
from workbench.exceptions import AlreadyExists, ImportRejected, InvalidInput, InvalidState, NotFound
from workbench.registry import Registry
from workbench.registry.keys import master_key_path
from workbench.tenancy import Principal


def as_(config: Config, who: str) -> Registry:
    """The registry as the platform admin named ``who`` (the actor in the audit trail)."""
    return Registry(config, principal=Principal.system(who))


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config.from_env({"WORKBENCH_HOME": str(tmp_path / "home")})


@pytest.fixture
def registry(config: Config) -> Registry:
    reg = as_(config, "alice")
    as_(reg.config, "alice").add_tenant("t-1", name="Acme")
    as_(reg.config, "alice").add_building("b-1", tenant="t-1")
    return reg


def test_device_life_cycle_and_audit_trail(registry: Registry, config: Config):
    new = as_(registry.config, "bob").provision(
        "dev-1", building="b-1", device_type="smoke", floor=2
    )
    assert len(base64.b64decode(new.key)) == 32
    assert new.device.tenant_id == "t-1" and new.device.floor == 2
    assert registry.device_key("dev-1") == new.key  # derivable by the admin only
    with pytest.raises(AlreadyExists):
        as_(registry.config, "bob").provision("dev-1", building="b-1", device_type="smoke")
    assert as_(registry.config, "carol").disable("dev-1").status == "disabled"
    assert as_(registry.config, "carol").disable("dev-1").status == "disabled"  # idempotent
    assert as_(registry.config, "carol").enable("dev-1").status == "provisioned"
    rotated = as_(registry.config, "dave").rotate_key("dev-1")
    assert rotated.device.key_version == 2 and rotated.key != new.key
    gone = as_(registry.config, "erin").deprovision("dev-1")
    assert gone.status == "deprovisioned" and gone.updated_by == "erin"
    with pytest.raises(InvalidState, match="deprovisioned"):
        as_(registry.config, "erin").enable("dev-1")
    again = as_(registry.config, "bob").provision(
        "dev-1", building="b-1", device_type="environment"
    )
    assert again.device.key_version == 3 and again.key not in (new.key, rotated.key)

    history = DeltaTable(registry.table_uri("devices")).history()
    trail = [(h.get("actor"), h.get("workbench.operation")) for h in reversed(history)]
    # one commit per change, naming who made it; refused and no-op changes commit nothing
    assert trail == [
        (None, None),  # CREATE TABLE
        ("bob", "provision"),
        ("carol", "disable"),
        ("carol", "enable"),
        ("dave", "rotate_key"),
        ("erin", "deprovision"),
        ("bob", "provision"),
    ]
    # the lake never holds a key
    for path in Path(registry.table_uri("devices")).rglob("*"):
        if path.is_file():
            assert again.key.encode() not in path.read_bytes()
    mode = stat.S_IMODE(os.stat(master_key_path(config)).st_mode)
    assert mode == 0o600


def test_errors_name_what_is_missing(registry: Registry):
    with pytest.raises(NotFound, match="building 'b-9'"):
        as_(registry.config, "a").provision("dev-1", building="b-9", device_type="smoke")
    with pytest.raises(InvalidInput, match="device type"):
        as_(registry.config, "a").provision("dev-1", building="b-1", device_type="toaster")
    with pytest.raises(InvalidInput, match="device id"):
        as_(registry.config, "a").provision("dev|1", building="b-1", device_type="smoke")
    with pytest.raises(NotFound):
        as_(registry.config, "a").disable("nope")
    with pytest.raises(NotFound, match="tenant"):
        as_(registry.config, "a").add_building("b-2", tenant="t-9")


def _csv(path: Path, rows: list[str]) -> Path:
    path.write_text("device_id,building_id,device_type,floor,room,protocol\n" + "\n".join(rows))
    return path


def test_import_is_all_or_nothing_with_line_numbers(registry: Registry, tmp_path: Path):
    bad = _csv(
        tmp_path / "bad.csv",
        [
            "d-1,b-1,environment,1,r1,http",
            "d-2,b-404,environment,1,r1,http",
            "d-3,b-1,toaster,x,r1,http",
            "d-1,b-1,smoke,,,fbk1",
        ],
    )
    with pytest.raises(ImportRejected) as err:
        as_(registry.config, "a").import_csv(bad)
    lines = {(line, msg.split(" ")[0]) for line, msg in err.value.errors}
    assert (3, "unknown") in lines
    assert (4, "device_type") in lines and (4, "floor") in lines
    assert {2, 5} <= {line for line, _ in err.value.errors}  # the duplicate id
    assert registry.devices().height == 0  # nothing applied


def test_import_100k_is_one_commit_and_idempotent(registry: Registry, tmp_path: Path):
    n = 100_000
    path = tmp_path / "fleet.csv"
    pl.DataFrame(
        {
            "device_id": [f"dev-{i:06d}" for i in range(n)],
            "building_id": ["b-1"] * n,
            "device_type": ["environment"] * n,
            "floor": [str(i % 10) for i in range(n)],
        }
    ).write_csv(path)
    seen: list[tuple[str, int, int]] = []
    result = as_(registry.config, "a").import_csv(
        path, progress=lambda s, d, t: seen.append((s, d, t))
    )
    assert result == {"rows": n, "inserted": n, "updated": 0}
    assert ("writing", n, n) in seen and ("validating", n, n) in seen
    before = registry.version("devices")
    again = as_(registry.config, "a").import_csv(path)
    assert again == {"rows": n, "inserted": 0, "updated": n}
    assert registry.version("devices") == (before or 0) + 1
    devices = registry.devices()
    assert devices.height == n and devices["key_version"].max() == 1


_WRITER = textwrap.dedent(
    """
    import sys
    from workbench.config import Config
    from workbench.registry import Registry
    home, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    from workbench.tenancy import Principal
    reg = Registry(Config.from_env({"WORKBENCH_HOME": home}), principal=Principal.system(who))
    for i in range(n):
        reg.provision(f"{who}-{i}", building="b-1", device_type="smoke")
        reg.rotate_key("shared")
    print(f"writer {who}: all {n} updates done", file=sys.stderr, flush=True)
    """
)


def test_two_processes_writing_at_once_lose_no_update(registry: Registry, config: Config):
    as_(registry.config, "a").provision("shared", building="b-1", device_type="smoke")
    n = 8
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(config.home), who, str(n)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for who in ("p1", "p2")
    ]
    errors = [p.communicate(timeout=240)[1] for p in procs]
    # (a writer once died of SIGABRT in a full run: its stderr tells whether after its work)
    assert [p.returncode for p in procs] == [0, 0], errors
    devices = registry.devices()
    assert devices.height == 2 * n + 1
    assert registry.device("shared").key_version == 1 + 2 * n  # every rotation counted

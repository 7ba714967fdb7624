"""Provision the simulated fleet through the device registry, so every device holds real
credentials (a derived key and SAS tokens: docs/gateway.md, "Key storage").

Tenants and buildings are added when missing; devices go in with one bulk
``Registry.import_csv`` commit (idempotent: a re-run changes nothing). Devices a
scenario wants without credentials are left out (and de-provisioned if an
earlier run provisioned them); devices an earlier run de-provisioned or disabled
are brought back. Keys are derived from the registry's master secret, which
the simulator reads as the platform administrator on the same host.
"""

from __future__ import annotations

import base64
import csv
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from simulator.fleet import Fleet
from workbench.config import Config

if TYPE_CHECKING:
    from workbench.registry import Registry

__all__ = ["ACTOR", "provision_fleet", "registry"]

logger = logging.getLogger(__name__)

ACTOR = "simulator"


def registry(config: Config) -> Registry:
    """The registry, as the platform administrator named :data:`ACTOR` (every change the
    simulator makes is a Delta commit naming it)."""
    from workbench.registry import Registry
    from workbench.tenancy.principal import Principal

    return Registry(config, principal=Principal.system(ACTOR))


def provision_fleet(
    config: Config,
    fleet: Fleet,
    *,
    without_credentials: frozenset[int] = frozenset(),
    report: Callable[[str], None] | None = None,
) -> dict[int, bytes]:
    """Make the registry match ``fleet``; return each provisioned device's key bytes by index."""
    from workbench.registry.keys import derive_device_key, load_master_key

    say = report or (lambda message: None)
    reg = registry(config)
    tenants = set(reg.tenants()["tenant_id"].to_list())
    for tenant in fleet.tenant_ids:
        if tenant not in tenants:
            reg.add_tenant(tenant, name=f"Simulated tenant {tenant}")
    have = set(reg.buildings()["building_id"].to_list())
    missing = [b for b in fleet.buildings if b.building_id not in have]
    for i, b in enumerate(missing, 1):
        reg.add_building(b.building_id, tenant=b.tenant_id, name=b.name)
        if i % 25 == 0:
            say(f"provisioning: {i}/{len(missing)} buildings added")
    wanted = [i for i in range(len(fleet)) if i not in without_credentials]
    with tempfile.TemporaryDirectory(prefix="simulator-") as tmp:
        path = Path(tmp) / "fleet.csv"
        with path.open("w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["device_id", "building_id", "device_type", "floor", "room", "protocol"])
            for d in (fleet.devices[i] for i in wanted):
                out.writerow(
                    [d.device_id, d.building_id, d.device_type, d.floor, d.room, d.protocol]
                )
        result = reg.import_csv(path)
    say(
        f"provisioning: {len(wanted)} devices imported "
        f"({result['inserted']} new, {result['updated']} updated)"
    )
    rows = reg.devices().filter(pl.col("device_id").is_in(list(fleet.device_ids)))
    state = {r["device_id"]: (r["status"], r["key_version"]) for r in rows.iter_rows(named=True)}
    for i in wanted:
        device_id = fleet.device_ids[i]
        status, _ = state[device_id]
        if status == "deprovisioned":
            reg.provision(
                device_id,
                building=fleet.devices[i].building_id,
                device_type=fleet.devices[i].device_type,
                floor=fleet.devices[i].floor,
                room=fleet.devices[i].room,
                protocol=fleet.devices[i].protocol,
            )
        elif status == "disabled":
            reg.enable(device_id)
        else:
            continue
        state[device_id] = (
            "provisioned",
            reg.device(device_id).key_version,
        )
    for i in sorted(without_credentials):
        device_id = fleet.device_ids[i]
        if state.get(device_id, ("deprovisioned", 0))[0] != "deprovisioned":
            reg.deprovision(device_id)
    master = load_master_key(config)
    return {
        i: base64.b64decode(
            derive_device_key(master, fleet.device_ids[i], state[fleet.device_ids[i]][1])
        )
        for i in wanted
    }

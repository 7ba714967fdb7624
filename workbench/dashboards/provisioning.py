"""Provisioning actions for the operators' notebook, UI-free: every action is the
registry's, called as the logged-in principal, after checking the principal may act
on that tenant.

Operators and admins act; everyone else is refused by :meth:`Principal.require`.
An operator never learns whether another tenant's building or device exists: both
read as "not one of your tenant's". Every action is all-or-nothing (one Delta
commit), so a refused or failed action leaves the registry as it was.

>>> import tempfile
>>> from workbench.tenancy import Principal
>>> cfg = Config.from_env({"WORKBENCH_HOME": tempfile.mkdtemp()})
>>> ProvisioningActions(cfg, Principal("vic", "viewer", "t-1")).search()  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
workbench.exceptions.AccessDenied: not authorized: vic (viewer) may not provision ...
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import polars as pl

from workbench.config import Config
from workbench.dashboards.data import registry_for
from workbench.exceptions import AlreadyExists, ImportRejected, InvalidInput, NotFound
from workbench.registry.store import DEVICE_LISTING
from workbench.tenancy import Principal

__all__ = ["ProvisioningActions"]

logger = logging.getLogger(__name__)

ProgressFn = Any  # (stage, done, total) -> None, see workbench.registry.store.ProgressFn


class ProvisioningActions:
    """Provision, disable, enable, de-provision, rotate keys, import and search, as one
    principal."""

    def __init__(self, config: Config, principal: Principal) -> None:
        self.config = config
        self.principal = principal
        self.registry = registry_for(config, principal)

    # --- scope ---------------------------------------------------------------------------

    def _require(self, tenant_id: str | None = None) -> None:
        self.principal.require("provision", tenant_id=tenant_id or self.principal.tenant_id)

    def _yours(self) -> str:
        return "any tenant's" if self.principal.is_admin else f"tenant {self.principal.tenant_id}'s"

    def buildings(self) -> pl.DataFrame:
        """The buildings this principal may provision into: ``building_id, tenant_id, name``."""
        self._require()
        frame: pl.DataFrame = self.registry.buildings()
        frame = frame.select("building_id", "tenant_id", "name")
        if not self.principal.is_admin:
            frame = frame.filter(pl.col("tenant_id") == self.principal.tenant_id)
        return frame.sort("building_id")

    def _building_tenant(self, building_id: str) -> str:
        rows = self.buildings().filter(pl.col("building_id") == building_id)
        if rows.height == 0:
            raise NotFound(
                f"unknown building {building_id!r}: not one of {self._yours()} buildings",
                hint="pick one of the buildings listed",
            )
        return str(rows["tenant_id"][0])

    def _device_tenant(self, device_id: str) -> str | None:
        rows = self.registry.devices().filter(pl.col("device_id") == device_id)
        return None if rows.height == 0 else str(rows["tenant_id"][0])

    def _own_device(self, device_id: str) -> str:
        self._require()
        tenant = self._device_tenant(device_id)
        if tenant is None or not self.principal.can_write(tenant):
            raise NotFound(
                f"unknown device {device_id!r}: not one of {self._yours()} devices",
                hint="search the fleet for the device id",
            )
        self._require(tenant)
        return tenant

    # --- actions ---------------------------------------------------------------------------

    def provision(
        self,
        device_id: str,
        *,
        building: str,
        device_type: str,
        floor: int | None = None,
        room: str | None = None,
        protocol: str = "http",
    ) -> Any:
        """Provision a device; returns the registry's ``ProvisionedDevice`` (its key is shown
        this once)."""
        device_id = device_id.strip()
        tenant = self._building_tenant(building.strip())
        self._require(tenant)
        owner = self._device_tenant(device_id)
        if owner is not None and owner != tenant:
            # re-provisioning would move another tenant's (de-provisioned) device id
            raise AlreadyExists(
                f"device id {device_id!r} is taken", hint="choose another device id"
            )
        logger.info("%s provisions %s in %s", self.principal.user, device_id, building)
        return self.registry.provision(
            device_id,
            building=building.strip(),
            device_type=device_type,
            floor=floor,
            room=room or None,
            protocol=protocol,
        )

    def disable(self, device_id: str) -> Any:
        """Stop accepting a device's events (until enabled)."""
        self._own_device(device_id)
        return self.registry.disable(device_id)

    def enable(self, device_id: str) -> Any:
        """Accept a disabled device's events again."""
        self._own_device(device_id)
        return self.registry.enable(device_id)

    def deprovision(self, device_id: str) -> Any:
        """De-provision a device for good (its key stops working)."""
        self._own_device(device_id)
        return self.registry.deprovision(device_id)

    def rotate_key(self, device_id: str) -> Any:
        """Issue a new key (shown this once); the old one stops working."""
        self._own_device(device_id)
        return self.registry.rotate_key(device_id)

    def import_csv(self, path: str | Path, *, progress: ProgressFn | None = None) -> dict[str, int]:
        """Bulk-import a device CSV (``device_id,building_id,device_type[,floor,room,protocol]``)
        in one commit; every bad row is reported (``ImportRejected.errors``) and then nothing
        is applied."""
        self._require()
        self._check_import_scope(Path(path))
        return dict(self.registry.import_csv(path, progress=progress))

    def _check_import_scope(self, path: Path) -> None:
        """Rows naming buildings or device ids outside the principal's tenant are errors too."""
        try:
            raw = pl.read_csv(path, infer_schema=False, empty_string_is_null=False)
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise InvalidInput(
                f"cannot read the CSV file: {exc}",
                hint="columns: device_id,building_id,device_type[,floor,room,protocol]",
            ) from None
        if self.principal.is_admin or not {"device_id", "building_id"} <= set(raw.columns):
            return  # the registry's own validation reports wrong columns
        mine = set(self.buildings()["building_id"].to_list())
        others = self.registry.devices().filter(pl.col("tenant_id") != self.principal.tenant_id)
        taken = set(others["device_id"].to_list())
        errors: list[tuple[int, str]] = []
        for line, row in enumerate(raw.iter_rows(named=True), start=2):
            building = (row["building_id"] or "").strip()
            device = (row["device_id"] or "").strip()
            if building and building not in mine:
                errors.append((line, f"unknown building_id {building!r}"))
            if device in taken:
                errors.append((line, f"device_id {device!r} is taken"))
        if errors:
            raise ImportRejected(
                f"{len(errors)} invalid row(s); nothing was imported "
                f"(first: line {errors[0][0]}: {errors[0][1]})",
                errors=errors,
                hint="fix the listed lines and import again",
            )

    def search(
        self,
        text: str = "",
        *,
        building: str | None = None,
        status: str | None = None,
        limit: int = 200,
    ) -> pl.DataFrame:
        """Devices in scope whose id, building or room contains ``text`` (case-insensitive)."""
        self._require()
        frame: pl.DataFrame = self.registry.devices()
        if not self.principal.is_admin:
            frame = frame.filter(pl.col("tenant_id") == self.principal.tenant_id)
        if building:
            frame = frame.filter(pl.col("building_id") == building)
        if status:
            frame = frame.filter(pl.col("status") == status)
        if text.strip():
            needle = text.strip().lower()
            frame = frame.filter(
                pl.any_horizontal(
                    pl.col(c).fill_null("").str.to_lowercase().str.contains(needle, literal=True)
                    for c in ("device_id", "building_id", "room")
                )
            )
        return frame.select(DEVICE_LISTING).head(limit)

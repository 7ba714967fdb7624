"""The device registry: tenants, buildings and devices in Delta tables under ``lake/registry``.

:class:`Registry` is the one way to read and change them: every read is scoped to what
its principal may see, every change is checked against what the principal may do and
written as one MERGE commit naming the actor (:mod:`workbench.registry.commits`), so the
tables' history is the provisioning audit trail.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Unpack

import polars as pl
import pyarrow as pa

from workbench.events import DEVICE_TYPES
from workbench.exceptions import AlreadyExists, InvalidInput, InvalidState, NotFound
from workbench.registry import commits, views
from workbench.registry.importer import ProgressFn, read_devices_csv, validate_devices
from workbench.registry.keys import derive_device_key, load_master_key
from workbench.registry.reads import (
    BUILDINGS,
    DEVICE_LISTING,
    DEVICES,
    KEYS,
    SCHEMAS,
    TENANTS,
    TIMESTAMP,
    DevicePage,
    RegistryReads,
)
from workbench.registry.records import (
    Device,
    DeviceType,
    ProvisionedDevice,
    check_choice,
    protocols,
    shown,
    valid_floor,
    valid_id,
    valid_name,
    valid_room,
)

__all__ = ["BUILDINGS", "DEVICES", "DEVICE_LISTING", "TENANTS", "DevicePage", "Registry"]


class Registry(RegistryReads):
    """The registry of one lake.

    >>> import tempfile
    >>> from workbench.config import Config
    >>> from workbench.tenancy.principal import Principal
    >>> cfg = Config.from_env({"WORKBENCH_HOME": tempfile.mkdtemp()})
    >>> reg = Registry(cfg, principal=Principal.system("admin"))
    >>> reg.add_tenant("t-acme", name="Acme")
    >>> reg.add_building("b-1", tenant="t-acme")  # returns the tenant
    't-acme'
    >>> new = reg.provision("dev-1", building="b-1", device_type="environment")
    >>> new.device.status, new.device.tenant_id, len(new.key) == 44
    ('provisioned', 't-acme', True)
    >>> viewer = Principal("rita", "viewer", "t-other", frozenset({"b-9"}))
    >>> Registry(cfg, principal=viewer).devices().height  # another tenant's devices: none
    0

    Every read is filtered to what ``principal`` may see (docs/gateway.md), and every
    write checks that ``principal`` may make it; the principal's name is the actor
    recorded in the rows and in the Delta commit.
    """

    # --- tenants and buildings -----------------------------------------------------------

    def add_tenant(self, tenant_id: str, *, name: str | None = None) -> None:
        """Add a tenant (admins only); AlreadyExists when it is there."""
        self.principal.require("manage_tenants")
        valid_id(tenant_id, "tenant id")
        name = valid_name(name, "tenant name")
        self._add("tenants", {"tenant_id": tenant_id, "name": name or tenant_id}, "add_tenant")

    def add_building(
        self, building_id: str, *, tenant: str | None = None, name: str | None = None
    ) -> str:
        """Add a building of an existing tenant (its operators and admins); returns the
        tenant. Without ``tenant``, an operator's own tenant (an admin must name one)."""
        valid_id(building_id, "building id")
        name = valid_name(name, "building name")
        tenant = tenant or self.principal.tenant_id
        if tenant is None:
            raise InvalidInput(
                f"building {shown(building_id)} needs a tenant (an admin has none of its own)",
                hint="name it: --tenant TENANT_ID",
            )
        valid_id(tenant, "tenant id")
        self.principal.require("provision", tenant_id=tenant)
        if self.tenants().filter(pl.col("tenant_id") == tenant).height == 0:
            raise NotFound(
                f"tenant {shown(tenant)} does not exist",
                hint=f"add it: workbench tenants add {tenant}",
            )
        self._add(
            "buildings",
            {"building_id": building_id, "tenant_id": tenant, "name": name or building_id},
            "add_building",
        )
        return tenant

    def rename_building(self, building_id: str, name: str) -> None:
        """Give a building a new display name (its tenant's operators and admins)."""
        new_name = valid_name(name, "building name")
        if new_name is None:
            raise InvalidInput("the new building name is empty", hint="give a name")
        tenant = self._building_tenant(building_id)
        self.principal.require("provision", tenant_id=tenant)
        actor = self.principal.user
        source = pa.table(
            {
                "building_id": [building_id],
                "name": [new_name],
                "updated_at": [_now()],
                "updated_by": [actor],
            },
            schema=pa.schema(
                [
                    BUILDINGS.field("building_id"),
                    BUILDINGS.field("name"),
                    pa.field("updated_at", TIMESTAMP),
                    BUILDINGS.field("updated_by"),
                ]
            ),
        )
        self.merge(
            "buildings",
            source,
            "t.building_id = s.building_id",
            actor=actor,
            operation="rename_building",
            update={"name": "s.name", "updated_at": "s.updated_at", "updated_by": "s.updated_by"},
        )

    def _add(self, table: str, values: Mapping[str, object], operation: str) -> None:
        """Insert ``values`` as a new row of ``table`` (tenants or buildings), stamped with
        who and when; AlreadyExists when a row with its key is there."""
        key = KEYS[table]
        actor = self.principal.user
        row = {**{column: [value] for column, value in values.items()}, **_audit(actor, 1)}
        inserted = self.merge(
            table,
            pa.table(row, schema=SCHEMAS[table]),
            f"t.{key} = s.{key}",
            actor=actor,
            operation=operation,
            insert=True,
        )
        if not inserted:
            what = key.removesuffix("_id")
            raise AlreadyExists(f"{what} {values[key]!r} already exists", hint="choose another id")

    def _building_tenant(self, building: str) -> str:
        rows = self.buildings().filter(pl.col("building_id") == building)
        if rows.height == 0:
            raise NotFound(
                f"building {shown(building)} does not exist",
                hint=f"add it: workbench buildings add {building} --tenant TENANT",
            )
        return str(rows["tenant_id"][0])

    # --- devices ---------------------------------------------------------------------------

    def provision(
        self,
        device_id: str,
        *,
        building: str,
        device_type: DeviceType | str,
        floor: int | None = None,
        room: str | None = None,
        protocol: str = "http",
    ) -> ProvisionedDevice:
        """Add a device (or re-provision a de-provisioned one with a new key version).

        Returns the device and its key, which is shown this once.
        """
        valid_id(device_id, "device id")
        valid_id(building, "building id")
        check_choice(device_type, DEVICE_TYPES, "device type")
        check_choice(protocol, protocols(), "protocol")
        floor = valid_floor(floor)
        room = valid_room(room)
        tenant = self._building_tenant(building)
        self.principal.require("provision", tenant_id=tenant)
        actor = self.principal.user
        row = {
            "device_id": [device_id],
            "tenant_id": [tenant],
            "building_id": [building],
            "floor": [floor],
            "room": [room],
            "device_type": [device_type],
            "protocol": [protocol],
            "status": ["provisioned"],
            "key_version": [1],
            **_audit(actor, 1),
        }
        commit: dict[str, int] = {}
        changed = self.merge(
            "devices",
            pa.table(row, schema=DEVICES),
            "t.device_id = s.device_id",
            actor=actor,
            operation="provision",
            insert=True,
            commit_out=commit,
            update_when="t.status = 'deprovisioned'",
            update={
                **{c: f"s.{c}" for c in ("tenant_id", "building_id", "floor", "room")},
                **{c: f"s.{c}" for c in ("device_type", "protocol", "status")},
                "key_version": "t.key_version + 1",
                "updated_at": "s.updated_at",
                "updated_by": "s.updated_by",
            },
        )
        if not changed:
            raise AlreadyExists(
                f"device {device_id!r} is already provisioned",
                hint="de-provision it first, or use 'devices rotate-key' for a new key",
            )
        self._propagate(commit.get("version"), revokes=False, what=f"provisioning {device_id}")
        return self._with_key(self.device(device_id))

    def _with_key(self, device: Device) -> ProvisionedDevice:
        master = load_master_key(self.config)
        return ProvisionedDevice(
            device, derive_device_key(master, device.device_id, device.key_version)
        )

    def deprovision(self, device_id: str) -> Device:
        """De-provision a device for good (its key stops working; re-provisioning issues a new
        one); returns once every running gateway worker on this host refuses it."""
        return self._set_status(device_id, "deprovisioned", ("provisioned", "disabled"))

    def disable(self, device_id: str) -> Device:
        """Stop accepting a device's events until it is enabled again; returns once every
        running gateway worker on this host refuses it."""
        return self._set_status(device_id, "disabled", ("provisioned",))

    def enable(self, device_id: str) -> Device:
        """Accept a disabled device's events again."""
        return self._set_status(device_id, "provisioned", ("disabled",))

    def rotate_key(self, device_id: str) -> ProvisionedDevice:
        """Issue a new key; returns once every running gateway worker on this host refuses
        the old one (:meth:`_propagate`)."""
        version = self._update(
            device_id,
            "t.status != 'deprovisioned'",
            {"key_version": "t.key_version + 1"},
            operation="rotate_key",
        )
        if version is None:
            self._explain(device_id, "rotate the key of", ("provisioned", "disabled"))
        self._propagate(version, revokes=True, what=f"the key rotation of {device_id}")
        return self._with_key(self.device(device_id))

    def _set_status(self, device_id: str, status: str, allowed: tuple[str, ...]) -> Device:
        verb = {"deprovisioned": "deprovision", "disabled": "disable"}.get(status, "enable")
        condition = " OR ".join(f"t.status = '{s}'" for s in allowed)
        version = self._update(
            device_id,
            f"({condition})",
            {"status": f"'{status}'"},
            operation=verb,
        )
        device = self.device(device_id) if version is not None else None
        if device is None:
            device = self._explain(device_id, verb, allowed, already=status)
            # already so: a retry after a failed wait must still wait for the doors
            version = self.version("devices")
        self._propagate(version, revokes=status != "provisioned", what=f"the {verb} of {device_id}")
        return device

    def _explain(
        self, device_id: str, verb: str, allowed: tuple[str, ...], *, already: str | None = None
    ) -> Device:
        """Why an update matched nothing: NotFound, or InvalidState (idempotent when the
        device already has the ``already`` status)."""
        device = self.device(device_id)
        if device.status == already:
            return device
        raise InvalidState(
            f"cannot {verb} device {device_id!r}: it is {device.status}",
            hint=f"only a {' or '.join(allowed)} device can be changed this way"
            + ("; provision it again for a new key" if device.status == "deprovisioned" else ""),
        )

    def _update(
        self, device_id: str, condition: str, values: dict[str, str], *, operation: str
    ) -> int | None:
        """Update one device in scope; the commit's version, None when ``condition`` matched
        nothing. Raises NotFound/AccessDenied before writing."""
        device = self.device(device_id)
        self.principal.require("provision", tenant_id=device.tenant_id)
        actor = self.principal.user
        source = pa.table(
            {"device_id": [device_id], "updated_by": [actor], "updated_at": [_now()]},
            schema=pa.schema(
                [
                    DEVICES.field("device_id"),
                    DEVICES.field("updated_by"),
                    pa.field("updated_at", TIMESTAMP),
                ]
            ),
        )
        return self._merge_devices(
            source,
            actor=actor,
            operation=operation,
            update_when=condition,
            update={**values, "updated_at": "s.updated_at", "updated_by": "s.updated_by"},
        )

    def _merge_devices(
        self, source: pa.Table, *, actor: str, operation: str, **how: Unpack[commits.MergeOptions]
    ) -> int | None:
        """MERGE ``source`` into ``devices`` by device id; the commit's version, None when
        nothing changed (what the doors wait for: :meth:`_propagate`)."""
        commit: dict[str, int] = {}
        how["commit_out"] = commit
        self.merge(
            "devices", source, "t.device_id = s.device_id", actor=actor, operation=operation, **how
        )
        return commit.get("version")

    def _propagate(self, version: int | None, *, revokes: bool, what: str) -> None:
        """Bring the running gateway workers of this host to ``version`` at once.

        A change that takes a credential away (``revokes``) returns only once every live
        worker has applied it, or raises :class:`RegistryNotApplied` naming those that had
        not within ``WORKBENCH_REGISTRY_APPLY_TIMEOUT``. A grant only wakes the workers:
        a worker re-reads the registry itself before it refuses a device whose token
        verifies, so the new device is accepted from the first request either way.
        """
        if version is None:
            return
        if revokes:
            views.wait_applied(
                self.config, version, timeout_s=self.config.registry_apply_timeout, what=what
            )
        else:
            views.wake(views.live_views(self.config), version)

    # --- bulk import -----------------------------------------------------------------------

    def import_csv(self, path: str | Path, *, progress: ProgressFn | None = None) -> dict[str, int]:
        """Add or update devices from a CSV file in one commit.

        Columns: ``device_id, building_id, device_type`` and optionally ``floor, room,
        protocol``. New devices are provisioned with key version 1; existing ones get the
        file's building, floor, room, type and protocol (status and key are kept), so a
        re-import is idempotent. Every bad row is reported with its line number and then
        nothing is applied (:mod:`workbench.registry.importer`). Returns ``{"rows",
        "inserted", "updated"}``.
        """
        self.principal.require("provision", tenant_id=self.principal.tenant_id)
        actor = self.principal.user
        report = progress or (lambda stage, done, total: None)
        raw = read_devices_csv(path)
        total = raw.height
        report("validating", 0, total)
        buildings = self.buildings().select("building_id", "tenant_id")
        taken: list[str] = []
        if (
            not self.principal.is_admin
            and "device_id" in raw.columns
            and self.version("devices") is not None
        ):
            # an operator may not move another tenant's device (even a de-provisioned one);
            # a scan of two columns, not the whole table in memory
            wanted = raw["device_id"].str.strip_chars().unique()
            taken = (
                pl.scan_delta(self.table_uri("devices"))
                .select("device_id", "tenant_id")
                .filter(
                    (pl.col("tenant_id") != self.principal.tenant_id)
                    & pl.col("device_id").is_in(wanted.to_list())
                )
                .collect()["device_id"]
                .to_list()
            )
        frame = validate_devices(raw, buildings, report, taken=taken)
        report("writing", 0, total)
        source = pa.table(
            {
                **{c: frame[c].to_arrow() for c in ("device_id", "tenant_id", "building_id")},
                "floor": frame["floor"].cast(pl.Int32).to_arrow(),
                "room": frame["room"].to_arrow(),
                "device_type": frame["device_type"].to_arrow(),
                "protocol": frame["protocol"].to_arrow(),
                "status": pa.array(["provisioned"] * total, pa.string()),
                "key_version": pa.array([1] * total, pa.int32()),
                **_audit(actor, total),
            },
            schema=DEVICES,
        )
        metrics: dict[str, int] = {}
        version = self._merge_devices(
            source.sort_by("device_id"),  # new files then hold narrow ranges of ids
            actor=actor,
            operation="import",
            insert=True,
            update={
                **{c: f"s.{c}" for c in ("tenant_id", "building_id", "floor", "room")},
                "device_type": "s.device_type",
                "protocol": "s.protocol",
                "updated_at": "s.updated_at",
                "updated_by": "s.updated_by",
            },
            metrics_out=metrics,
        )
        report("writing", total, total)
        # an import may move devices to another building or protocol: a revocation of
        # the old stamp, so it waits for the doors like one
        self._propagate(version, revokes=True, what=f"the import of {path}")
        return {
            "rows": total,
            "inserted": metrics.get("num_target_rows_inserted", 0),
            "updated": metrics.get("num_target_rows_updated", 0),
        }

    # --- the one write path ----------------------------------------------------------------

    def merge(
        self,
        name: str,
        source: pa.Table,
        predicate: str,
        *,
        actor: str,
        operation: str,
        **how: Unpack[commits.MergeOptions],
    ) -> bool:
        """MERGE ``source`` into a registry table; True when a row was inserted or updated.

        The one write path of every ``lake/registry/*`` table (other parts, e.g. users,
        use it too: a table that does not exist yet is created with ``source``'s schema);
        how concurrent writers are kept apart: :func:`workbench.registry.commits.merge`.
        """
        return commits.merge(
            self.table_uri(name),
            name,
            SCHEMAS.get(name, source.schema),
            source,
            predicate,
            actor=actor,
            operation=operation,
            **how,
        )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _audit(actor: str, n: int) -> dict[str, pa.Array]:
    now = _now()
    stamp = pa.array([now] * n, TIMESTAMP)
    who = pa.array([actor] * n, pa.string())
    return {"created_at": stamp, "created_by": who, "updated_at": stamp, "updated_by": who}

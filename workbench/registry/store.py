"""The device registry: tenants, buildings and devices in Delta tables under ``lake/registry``.

Every change is one Delta commit whose ``custom_metadata`` names the actor and
the operation, so the table history is the provisioning audit trail. Writers
use optimistic concurrency: each change is a ``MERGE`` whose condition encodes
the check (e.g. "only a provisioned device can be disabled"), committed with
``max_commit_retries=0`` so that *any* concurrent commit makes it fail; it is
then re-read and retried. No update is ever lost and no check is ever made
against stale data.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import polars as pl
import pyarrow as pa

from workbench.config import Config
from workbench.events import DEVICE_TYPES
from workbench.exceptions import (
    AccessDenied,
    AlreadyExists,
    ImportRejected,
    InvalidInput,
    InvalidState,
    NotFound,
    RegistryBusy,
)
from workbench.registry.keys import derive_device_key, load_master_key
from workbench.tenancy.principal import Principal

__all__ = [
    "DEVICE_LISTING",
    "DEVICE_STATUSES",
    "PROTOCOLS",
    "Device",
    "ProgressFn",
    "ProvisionedDevice",
    "Registry",
    "valid_id",
]

logger = logging.getLogger(__name__)

DEVICE_STATUSES = ("provisioned", "disabled", "deprovisioned")
PROTOCOLS = ("http", "fbk1", "bin1")
DeviceType = Literal["environment", "smoke", "intrusion"]

ProgressFn = Callable[[str, int, int], None]
"""``progress(stage, done, total)``, called while importing."""

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_MAX_ATTEMPTS = 50

_TS = pa.timestamp("us", tz="UTC")
_AUDIT = [
    pa.field("created_at", _TS, nullable=False),
    pa.field("created_by", pa.string(), nullable=False),
    pa.field("updated_at", _TS, nullable=False),
    pa.field("updated_by", pa.string(), nullable=False),
]
TENANTS = pa.schema(
    [pa.field("tenant_id", pa.string(), nullable=False), pa.field("name", pa.string()), *_AUDIT]
)
BUILDINGS = pa.schema(
    [
        pa.field("building_id", pa.string(), nullable=False),
        pa.field("tenant_id", pa.string(), nullable=False),
        pa.field("name", pa.string()),
        *_AUDIT,
    ]
)
DEVICES = pa.schema(
    [
        pa.field("device_id", pa.string(), nullable=False),
        pa.field("tenant_id", pa.string(), nullable=False),
        pa.field("building_id", pa.string(), nullable=False),
        pa.field("floor", pa.int32()),
        pa.field("room", pa.string()),
        pa.field("device_type", pa.string(), nullable=False),
        pa.field("protocol", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("key_version", pa.int32(), nullable=False),
        *_AUDIT,
    ]
)
# what device listings show (CLI, provisioning notebook): every column but `created_*`
DEVICE_LISTING = tuple(n for n in DEVICES.names if not n.startswith("created_"))
_SCHEMAS = {"tenants": TENANTS, "buildings": BUILDINGS, "devices": DEVICES}
_KEYS = {"tenants": "tenant_id", "buildings": "building_id", "devices": "device_id"}


def valid_id(value: str, what: str) -> str:
    """``value`` when it is a usable id (letters, digits, ``._:-``; at most 128), else raise."""
    if not isinstance(value, str) or not _ID.match(value):
        raise InvalidInput(
            f"invalid {what} {value!r}",
            hint="use 1-128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit",
        )
    return value


@dataclasses.dataclass(frozen=True)
class Device:
    """One row of ``registry/devices``."""

    device_id: str
    tenant_id: str
    building_id: str
    floor: int | None
    room: str | None
    device_type: str
    protocol: str
    status: str
    key_version: int
    created_at: dt.datetime
    created_by: str
    updated_at: dt.datetime
    updated_by: str

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (timestamps as RFC 3339)."""
        out = dataclasses.asdict(self)
        for k in ("created_at", "updated_at"):
            out[k] = out[k].isoformat()
        return out


@dataclasses.dataclass(frozen=True)
class ProvisionedDevice:
    """The result of provisioning or key rotation: the key is shown here once and never stored."""

    device: Device
    key: str

    def to_json(self) -> dict[str, Any]:
        """``{"device_id": ..., "key": ..., ...}`` (DESIGN.md §5)."""
        return {"device_id": self.device.device_id, "key": self.key, **self.device.to_json()}


class Registry:
    """The registry of one lake.

    >>> import tempfile
    >>> cfg = Config.from_env({"WORKBENCH_HOME": tempfile.mkdtemp()})
    >>> reg = Registry(cfg, principal=Principal.system("admin"))
    >>> reg.add_tenant("t-acme", name="Acme")
    >>> reg.add_building("b-1", tenant="t-acme")
    >>> new = reg.provision("dev-1", building="b-1", device_type="environment")
    >>> new.device.status, new.device.tenant_id, len(new.key) == 44
    ('provisioned', 't-acme', True)
    >>> viewer = Principal("rita", "viewer", "t-other", frozenset({"b-9"}))
    >>> Registry(cfg, principal=viewer).devices().height  # another tenant's devices: none
    0

    Every read is filtered to what ``principal`` may see (DESIGN.md §8), and every
    write checks that ``principal`` may make it; the principal's name is the actor
    recorded in the rows and in the Delta commit.
    """

    def __init__(self, config: Config, *, principal: Principal) -> None:
        self.config = config
        self.principal = principal
        self.root = _join(config.lake, "registry")

    # --- paths and reads -----------------------------------------------------------------

    def table_uri(self, name: str) -> str:
        """``lake/registry/<name>`` (tenants, buildings or devices)."""
        return _join(self.root, name)

    def _table(self, name: str, schema: pa.Schema) -> Any:
        from deltalake import DeltaTable
        from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

        uri = self.table_uri(name)
        try:
            return DeltaTable(uri)
        except TableNotFoundError:
            pass
        if "://" not in uri:
            Path(uri).mkdir(parents=True, exist_ok=True)
        try:
            return DeltaTable.create(uri, schema, mode="ignore", name=f"registry_{name}")
        except (CommitFailedError, DeltaError):  # a concurrent creator won
            return DeltaTable(uri)

    def version(self, name: str = "devices") -> int | None:
        """The Delta version of a registry table, None when it does not exist yet."""
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            return int(DeltaTable(self.table_uri(name)).version())
        except TableNotFoundError:
            return None

    def frame(self, name: str, schema: pa.Schema | None = None) -> pl.DataFrame:
        """A whole registry table, unscoped (empty, with ``schema``, when it does not exist).

        For services and admin tooling: only an admin principal may call it.
        """
        if not self.principal.is_admin:
            raise AccessDenied(
                f"not authorized: {self.principal.user} ({self.principal.role}) may not read "
                f"the whole {name} table",
                hint="use tenants(), buildings() or devices(), which are scoped",
            )
        return self._frame(name, schema)

    def _frame(self, name: str, schema: pa.Schema | None = None) -> pl.DataFrame:
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            table = DeltaTable(self.table_uri(name)).to_pyarrow_table()
        except TableNotFoundError:
            table = (schema or _SCHEMAS.get(name) or pa.schema([])).empty_table()
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        return frame.sort(_KEYS[name]) if name in _KEYS else frame

    def tenants(self) -> pl.DataFrame:
        """The tenants in scope (all for admins, their own for everyone else)."""
        frame = self._frame("tenants")
        if self.principal.is_admin:
            return frame
        return frame.filter(pl.col("tenant_id") == self.principal.tenant_id)

    def buildings(self, *, tenant: str | None = None) -> pl.DataFrame:
        """The buildings in scope, or those of one tenant."""
        frame = self._frame("buildings").filter(self.principal.scope_filter())
        return frame if tenant is None else frame.filter(pl.col("tenant_id") == tenant)

    def devices(
        self,
        *,
        tenant: str | None = None,
        building: str | None = None,
        status: str | None = None,
    ) -> pl.DataFrame:
        """Devices in scope, optionally filtered by tenant, building and status."""
        frame = self._frame("devices").filter(self.principal.scope_filter())
        for column, value in (("tenant_id", tenant), ("building_id", building), ("status", status)):
            if value is not None:
                frame = frame.filter(pl.col(column) == value)
        return frame

    def device(self, device_id: str) -> Device:
        """One device, or raise NotFound."""
        rows = self.devices().filter(pl.col("device_id") == device_id)
        if rows.height == 0:  # out of scope looks the same as absent: ids are not probed
            raise NotFound(
                f"device {device_id!r} is not in the registry",
                hint="see 'workbench devices list'",
            )
        return Device(**rows.row(0, named=True))

    def device_key(self, device_id: str) -> str:
        """The current key of ``device_id`` (re-derived from the master secret; the tenant's
        operators and admins only)."""
        device = self.device(device_id)
        self.principal.require("provision", tenant_id=device.tenant_id)
        return derive_device_key(load_master_key(self.config), device_id, device.key_version)

    # --- tenants and buildings -----------------------------------------------------------

    def add_tenant(self, tenant_id: str, *, name: str | None = None) -> None:
        """Add a tenant (admins only); AlreadyExists when it is there."""
        self.principal.require("manage_tenants")
        actor = self.principal.user
        valid_id(tenant_id, "tenant id")
        row = {"tenant_id": [tenant_id], "name": [name or tenant_id], **_audit(actor, 1)}
        inserted = self.merge(
            "tenants",
            pa.table(row, schema=TENANTS),
            "t.tenant_id = s.tenant_id",
            actor=actor,
            operation="add_tenant",
            insert=True,
        )
        if not inserted:
            raise AlreadyExists(f"tenant {tenant_id!r} already exists", hint="choose another id")

    def add_building(self, building_id: str, *, tenant: str, name: str | None = None) -> None:
        """Add a building of an existing tenant (its operators and admins)."""
        valid_id(building_id, "building id")
        self.principal.require("provision", tenant_id=tenant)
        actor = self.principal.user
        if self.tenants().filter(pl.col("tenant_id") == tenant).height == 0:
            raise NotFound(
                f"tenant {tenant!r} does not exist", hint=f"add it: workbench tenants add {tenant}"
            )
        row = {
            "building_id": [building_id],
            "tenant_id": [tenant],
            "name": [name or building_id],
            **_audit(actor, 1),
        }
        inserted = self.merge(
            "buildings",
            pa.table(row, schema=BUILDINGS),
            "t.building_id = s.building_id",
            actor=actor,
            operation="add_building",
            insert=True,
        )
        if not inserted:
            raise AlreadyExists(
                f"building {building_id!r} already exists", hint="choose another id"
            )

    def _building_tenant(self, building: str) -> str:
        rows = self.buildings().filter(pl.col("building_id") == building)
        if rows.height == 0:
            raise NotFound(
                f"building {building!r} does not exist",
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
        _check_choice(device_type, DEVICE_TYPES, "device type")
        _check_choice(protocol, PROTOCOLS, "protocol")
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
        changed = self.merge(
            "devices",
            pa.table(row, schema=DEVICES),
            "t.device_id = s.device_id",
            actor=actor,
            operation="provision",
            insert=True,
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
        return self._with_key(self.device(device_id))

    def _with_key(self, device: Device) -> ProvisionedDevice:
        master = load_master_key(self.config)
        return ProvisionedDevice(
            device, derive_device_key(master, device.device_id, device.key_version)
        )

    def deprovision(self, device_id: str) -> Device:
        """De-provision a device for good (its key stops working; re-provisioning issues a new
        one)."""
        return self._set_status(device_id, "deprovisioned", ("provisioned", "disabled"))

    def disable(self, device_id: str) -> Device:
        """Stop accepting a device's events until it is enabled again."""
        return self._set_status(device_id, "disabled", ("provisioned",))

    def enable(self, device_id: str) -> Device:
        """Accept a disabled device's events again."""
        return self._set_status(device_id, "provisioned", ("disabled",))

    def rotate_key(self, device_id: str) -> ProvisionedDevice:
        """Issue a new key (the old one stops working at the gateway within seconds)."""
        changed = self._update(
            device_id,
            "t.status != 'deprovisioned'",
            {"key_version": "t.key_version + 1"},
            operation="rotate_key",
        )
        if not changed:
            self._explain(device_id, "rotate the key of", ("provisioned", "disabled"))
        return self._with_key(self.device(device_id))

    def _set_status(self, device_id: str, status: str, allowed: tuple[str, ...]) -> Device:
        verb = {"deprovisioned": "deprovision", "disabled": "disable"}.get(status, "enable")
        condition = " OR ".join(f"t.status = '{s}'" for s in allowed)
        changed = self._update(
            device_id,
            f"({condition})",
            {"status": f"'{status}'"},
            operation=verb,
        )
        if not changed:
            return self._explain(device_id, verb, allowed, already=status)
        return self.device(device_id)

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
    ) -> bool:
        """Update one device in scope; raises NotFound/AccessDenied before writing."""
        device = self.device(device_id)
        self.principal.require("provision", tenant_id=device.tenant_id)
        actor = self.principal.user
        source = pa.table(
            {"device_id": [device_id], "updated_by": [actor], "updated_at": [_now()]},
            schema=pa.schema(
                [
                    DEVICES.field("device_id"),
                    DEVICES.field("updated_by"),
                    pa.field("updated_at", _TS),
                ]
            ),
        )
        return self.merge(
            "devices",
            source,
            "t.device_id = s.device_id",
            actor=actor,
            operation=operation,
            update_when=condition,
            update={**values, "updated_at": "s.updated_at", "updated_by": "s.updated_by"},
        )

    # --- bulk import -----------------------------------------------------------------------

    def import_csv(self, path: str | Path, *, progress: ProgressFn | None = None) -> dict[str, int]:
        """Add or update devices from a CSV file in one commit.

        Columns: ``device_id, building_id, device_type`` and optionally ``floor, room,
        protocol``. New devices are provisioned with key version 1; existing ones get the
        file's building, floor, room, type and protocol (status and key are kept), so a
        re-import is idempotent. Every bad row is reported with its line number and then
        nothing is applied. Returns ``{"rows", "inserted", "updated"}``.
        """
        self.principal.require("provision", tenant_id=self.principal.tenant_id)
        actor = self.principal.user
        report = progress or (lambda stage, done, total: None)
        try:
            raw = pl.read_csv(path, infer_schema=False, empty_string_is_null=False)
            raw = raw.with_columns(pl.all().fill_null(""))
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise InvalidInput(
                f"cannot read {path}: {exc}", hint="pass a readable CSV file"
            ) from None
        total = raw.height
        report("validating", 0, total)
        frame = self._validate_import(raw, report)
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
        self.merge(
            "devices",
            source,
            "t.device_id = s.device_id",
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
        return {
            "rows": total,
            "inserted": metrics.get("num_target_rows_inserted", 0),
            "updated": metrics.get("num_target_rows_updated", 0),
        }

    def _validate_import(self, raw: pl.DataFrame, report: ProgressFn) -> pl.DataFrame:
        required = ("device_id", "building_id", "device_type")
        missing = [c for c in required if c not in raw.columns]
        unknown = [c for c in raw.columns if c not in (*required, "floor", "room", "protocol")]
        if missing or unknown:
            raise ImportRejected(
                "import file has the wrong columns"
                + (f": missing {', '.join(missing)}" if missing else "")
                + (f": unknown {', '.join(unknown)}" if unknown else ""),
                errors=[(1, "header")],
                hint="columns: device_id,building_id,device_type[,floor,room,protocol]",
            )
        for optional in ("floor", "room", "protocol"):
            if optional not in raw.columns:
                raw = raw.with_columns(pl.lit("", dtype=pl.String).alias(optional))
        frame = raw.with_row_index("line", offset=2).with_columns(
            pl.col(c).str.strip_chars() for c in ("device_id", "building_id", "device_type")
        )
        buildings = self.buildings().select("building_id", "tenant_id")
        frame = (
            frame.with_columns(
                pl.when(pl.col("protocol").str.strip_chars() == "")
                .then(pl.lit("http"))
                .otherwise(pl.col("protocol").str.strip_chars())
                .alias("protocol"),
                pl.when(pl.col("room") == "").then(None).otherwise(pl.col("room")).alias("room"),
                pl.col("floor").str.strip_chars().cast(pl.Int32, strict=False).alias("floor_int"),
            )
            .join(buildings, on="building_id", how="left")
            .sort("line")
        )
        checks: list[tuple[pl.Expr, str]] = [
            (~pl.col("device_id").str.contains(_ID.pattern), "invalid device_id"),
            (pl.col("device_id").is_duplicated(), "device_id appears more than once in the file"),
            (pl.col("tenant_id").is_null(), "unknown building_id"),
            (
                ~pl.col("device_type").is_in(DEVICE_TYPES),
                "device_type must be one of " + "|".join(DEVICE_TYPES),
            ),
            (
                ~pl.col("protocol").is_in(PROTOCOLS),
                "protocol must be one of " + "|".join(PROTOCOLS),
            ),
            (
                (pl.col("floor").str.strip_chars() != "") & pl.col("floor_int").is_null(),
                "floor must be a whole number",
            ),
            (pl.col("room").str.len_chars() > 64, "room is longer than 64 characters"),
        ]
        errors: list[tuple[int, str]] = []
        chunk = 10_000
        for start in range(0, frame.height, chunk):
            part = frame.slice(start, chunk)
            bad = part.select(
                "line",
                *(
                    pl.when(cond).then(pl.lit(msg)).alias(f"e{i}")
                    for i, (cond, msg) in enumerate(checks)
                ),
            )
            for row in bad.iter_rows():
                errors.extend((int(row[0]), msg) for msg in row[1:] if msg is not None)
            report("validating", min(start + chunk, frame.height), frame.height)
        if frame.height == 0:
            errors.append((1, "no rows"))
        if errors:
            errors.sort()
            raise ImportRejected(
                f"{len(errors)} invalid row(s); nothing was imported "
                f"(first: line {errors[0][0]}: {errors[0][1]})",
                errors=errors,
                hint="fix the listed lines and import again",
            )
        return frame.with_columns(pl.col("floor_int").alias("floor")).drop("floor_int", "line")

    # --- the one write path ----------------------------------------------------------------

    def merge(
        self,
        name: str,
        source: pa.Table,
        predicate: str,
        *,
        actor: str,
        operation: str,
        insert: bool = False,
        update: dict[str, str] | None = None,
        update_when: str | None = None,
        metrics_out: dict[str, int] | None = None,
    ) -> bool:
        """MERGE ``source`` into a registry table; True when a row was inserted or updated.

        The one write path of every ``lake/registry/*`` table (other parts, e.g. users,
        use it too: a table that does not exist yet is created with ``source``'s schema).

        1. read the table's latest version;
        2. merge with the check in the MERGE's conditions (never against stale reads);
        3. commit with no automatic rebase: a concurrent commit fails this one;
        4. on that conflict, back off and start again at 1.
        """
        from deltalake import CommitProperties
        from deltalake.exceptions import CommitFailedError

        props = CommitProperties(
            custom_metadata={"actor": actor, "workbench.operation": operation}, max_commit_retries=0
        )
        for attempt in range(_MAX_ATTEMPTS):
            table = self._table(name, _SCHEMAS.get(name, source.schema))  # 1.
            merger = table.merge(  # 2.
                source,
                predicate,
                source_alias="s",
                target_alias="t",
                commit_properties=props,
            )
            if update is not None:
                merger = merger.when_matched_update(update, predicate=update_when)
            if insert:
                merger = merger.when_not_matched_insert_all()
            try:
                metrics: dict[str, Any] = merger.execute()  # 3.
            except CommitFailedError as exc:  # 4.
                logger.debug("registry %s: %s conflicted (%s), retrying", name, operation, exc)
                time.sleep(random.uniform(0.005, 0.05) * min(attempt + 1, 10))
                continue
            if metrics_out is not None:
                metrics_out.update({k: int(v) for k, v in metrics.items() if isinstance(v, int)})
            changed = int(metrics.get("num_target_rows_inserted", 0)) + int(
                metrics.get("num_target_rows_updated", 0)
            )
            return changed > 0
        raise RegistryBusy(
            f"registry {name}: {operation} conflicted with concurrent writers "
            f"{_MAX_ATTEMPTS} times",
            hint="try again; if it persists, look for a runaway writer",
        )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _audit(actor: str, n: int) -> dict[str, pa.Array]:
    now = _now()
    stamp = pa.array([now] * n, _TS)
    who = pa.array([actor] * n, pa.string())
    return {"created_at": stamp, "created_by": who, "updated_at": stamp, "updated_by": who}


def _check_choice(value: str, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise InvalidInput(f"invalid {what} {value!r}", hint=f"choose one of {', '.join(choices)}")


def _join(root: str, name: str) -> str:
    return f"{root.rstrip('/')}/{name}"

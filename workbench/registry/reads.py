"""Reading the device registry: the tables' schemas, and :class:`RegistryReads`, the
scoped reads :class:`~workbench.registry.store.Registry` builds its changes on. Every read
is filtered to what the principal may see; a foreign tenant's rows look absent."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import polars as pl
import pyarrow as pa

from workbench.config import Config
from workbench.exceptions import AccessDenied, InvalidInput, NotFound
from workbench.registry import commits
from workbench.registry.keys import derive_device_key, load_master_key
from workbench.registry.records import Device, shown
from workbench.tenancy.principal import Principal

__all__ = [
    "BUILDINGS",
    "DEVICES",
    "DEVICE_LISTING",
    "KEYS",
    "SCHEMAS",
    "TENANTS",
    "TIMESTAMP",
    "DevicePage",
    "RegistryReads",
    "join",
]

TIMESTAMP = pa.timestamp("us", tz="UTC")
_AUDIT = [
    pa.field("created_at", TIMESTAMP, nullable=False),
    pa.field("created_by", pa.string(), nullable=False),
    pa.field("updated_at", TIMESTAMP, nullable=False),
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
SCHEMAS = {"tenants": TENANTS, "buildings": BUILDINGS, "devices": DEVICES}
KEYS = {"tenants": "tenant_id", "buildings": "building_id", "devices": "device_id"}


@dataclasses.dataclass(frozen=True)
class DevicePage:
    """A page of a device listing (:meth:`Registry.device_page`)."""

    devices: pl.DataFrame  # the DEVICE_LISTING columns, by device_id
    total: int  # devices matching the filters, over all pages
    next_after: str | None  # pass as ``after`` for the next page; None: this is the last


class RegistryReads:
    """The scoped reads of one lake's registry (see :class:`~workbench.registry.store.Registry`,
    which adds the changes)."""

    def __init__(self, config: Config, *, principal: Principal) -> None:
        self.config = config
        self.principal = principal
        self.root = join(config.lake, "registry")

    # --- paths and reads -----------------------------------------------------------------

    def table_uri(self, name: str) -> str:
        """``lake/registry/<name>`` (tenants, buildings or devices)."""
        return join(self.root, name)

    def version(self, name: str = "devices") -> int | None:
        """The Delta version of a registry table, None when it does not exist yet."""
        return commits.table_version(self.table_uri(name))

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
        empty = schema or SCHEMAS.get(name) or pa.schema([])
        frame = commits.read_frame(self.table_uri(name), empty)
        return frame.sort(KEYS[name]) if name in KEYS else frame

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

    def _scan(
        self,
        columns: Sequence[str],
        *,
        tenant: str | None = None,
        building: str | None = None,
        status: str | None = None,
        buildings: Sequence[str] | None = None,
    ) -> pl.LazyFrame:
        """A lazy scan of ``columns`` of the devices in scope, filtered like
        :meth:`devices` and to ``buildings`` when given (empty, with the columns, when
        the table does not exist yet): it
        reads only those columns (and the filters'), so a million devices are never held
        in memory as a whole frame."""
        table = commits.existing_table(self.table_uri("devices"))
        if table is None:
            empty = pl.from_arrow(DEVICES.empty_table())
            assert isinstance(empty, pl.DataFrame)
            return empty.lazy().select(columns)
        scan = pl.scan_delta(table).filter(self.principal.scope_filter())
        for column, value in (("tenant_id", tenant), ("building_id", building), ("status", status)):
            if value is not None:
                scan = scan.filter(pl.col(column) == value)
        if buildings is not None:
            scan = scan.filter(pl.col("building_id").is_in(list(buildings)))
        return scan.select(columns)

    def device_page(
        self,
        *,
        tenant: str | None = None,
        building: str | None = None,
        status: str | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> DevicePage:
        """One page of the devices in scope, by id: at most ``limit`` (0: all) of those
        whose id sorts after ``after``, filtered like :meth:`devices`.

        Keyset pagination (the next page starts after the last id shown), so a device
        added or removed meanwhile shifts no other page. The filters and the page are
        applied by a lazy scan that reads only the listing's columns (:meth:`_scan`).
        """
        if limit < 0:
            raise InvalidInput(f"limit {limit}: must be 0 (all) or more", hint="pass --limit N")
        scan = self._scan(DEVICE_LISTING, tenant=tenant, building=building, status=status)
        total = int(scan.select(pl.len()).collect().item())
        if after is not None:
            scan = scan.filter(pl.col("device_id") > after)
        ordered = scan.sort("device_id")
        if not limit:
            return DevicePage(ordered.collect(), total, None)
        # one more than asked: whether a next page exists, without counting what is left
        rows = ordered.head(limit + 1).collect()
        more = rows.height > limit
        rows = rows.head(limit)
        return DevicePage(rows, total, str(rows["device_id"][-1]) if more else None)

    def device_columns(
        self, columns: Sequence[str], *, buildings: Sequence[str] | None = None
    ) -> pl.DataFrame:
        """``columns`` of the devices in scope (of ``buildings`` only, when given), for
        pages that summarise a fleet of a million devices (:meth:`_scan`)."""
        return self._scan(columns, buildings=buildings).collect()

    def search_devices(
        self,
        text: str = "",
        *,
        tenant: str | None = None,
        building: str | None = None,
        status: str | None = None,
        limit: int = 200,
    ) -> pl.DataFrame:
        """At most ``limit`` devices in scope, by id, whose id, building or room contains
        ``text`` (case-insensitive), filtered like :meth:`devices` (:meth:`_scan`)."""
        scan = self._scan(DEVICE_LISTING, tenant=tenant, building=building, status=status)
        if text.strip():
            needle = text.strip().lower()
            scan = scan.filter(
                pl.any_horizontal(
                    pl.col(c).fill_null("").str.to_lowercase().str.contains(needle, literal=True)
                    for c in ("device_id", "building_id", "room")
                )
            )
        return scan.sort("device_id").head(limit).collect()

    def device(self, device_id: str) -> Device:
        """One device, or raise NotFound. A keyed read: the files whose statistics cannot
        hold ``device_id`` are skipped, so it costs one small file at any fleet size."""
        table = commits.existing_table(self.table_uri("devices"))  # the log, read once
        rows = (
            pl.scan_delta(table)
            .filter(pl.col("device_id") == device_id)
            .filter(self.principal.scope_filter())
            .collect()
            if table is not None
            else pl.DataFrame()
        )
        if rows.height == 0:  # out of scope looks the same as absent: ids are not probed
            raise NotFound(
                f"device {shown(device_id)} is not in the registry",
                hint="see 'workbench devices list'",
            )
        return Device(**rows.row(0, named=True))

    def device_key(self, device_id: str) -> str:
        """The current key of ``device_id`` (re-derived from the master secret; the tenant's
        operators and admins only)."""
        device = self.device(device_id)
        self.principal.require("provision", tenant_id=device.tenant_id)
        return derive_device_key(load_master_key(self.config), device_id, device.key_version)


def join(root: str, name: str) -> str:
    return f"{root.rstrip('/')}/{name}"

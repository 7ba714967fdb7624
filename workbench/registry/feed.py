"""Following ``registry/devices`` by its changes: what a service keeping the devices in
memory (the gateway) reads after a commit.

:class:`DeviceFeed` loads the whole table once (:meth:`DeviceFeed.load`), then, per
new Delta version, reads only the rows that version changed from the table's change
data feed (``DeltaTable.load_cdf``, switched on for every registry table by
:mod:`workbench.registry.commits`). What one change costs is the changed rows, not the
fleet: a MERGE rewrites every file holding a matched row, so reading the new files
(the commit's add actions) would cost a whole file — all devices, for a table written
by one import.

A read that fails (the store does not answer, the table's folder is gone) raises
:class:`~workbench.exceptions.RegistryUnreadable` with the store's reason on one line;
the reader keeps its version, so the next successful read brings every version
committed meanwhile, by feed.

When the feed cannot say what changed — the versions in between were vacuumed or
their log cleaned up, the table was created before the feed existed, or rows were
deleted by hand — the answer is a full reload (:class:`Changes` with ``resync=True``);
the caller counts and logs it.

>>> import tempfile
>>> from workbench.config import Config
>>> from workbench.registry.store import Registry
>>> from workbench.tenancy.principal import Principal
>>> cfg = Config.from_env({"WORKBENCH_HOME": tempfile.mkdtemp()})
>>> reg = Registry(cfg, principal=Principal.system("admin"))
>>> reg.add_tenant("t-1"); _ = reg.add_building("b-1", tenant="t-1")
>>> _ = reg.provision("dev-1", building="b-1", device_type="smoke")
>>> feed = DeviceFeed(reg.table_uri("devices"))
>>> first = feed.load()
>>> sorted(first.devices), first.resync
(['dev-1'], True)
>>> _ = reg.disable("dev-1")
>>> later = feed.changes()
>>> [(e.device_id, e.status) for e in later.devices.values()], later.resync
([('dev-1', 'disabled')], False)
>>> len(feed.changes().devices)  # nothing new
0
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from workbench.exceptions import RegistryUnreadable
from workbench.registry.commits import CHANGE_FEED
from workbench.registry.compact import DeviceIndex
from workbench.registry.records import DeviceEntry

__all__ = ["ENTRY_COLUMNS", "Changes", "DeviceFeed"]

logger = logging.getLogger(__name__)

ENTRY_COLUMNS = tuple(f.name for f in dataclasses.fields(DeviceEntry))
_UPSERTS = ("insert", "update_postimage")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Changes:
    """What moved between two versions of the table.

    ``resync``: ``devices`` is the whole table (replace the view), a
    :class:`~workbench.registry.compact.DeviceIndex`; otherwise it holds the devices
    changed since the previous call (apply over the view) and ``deleted`` the ids whose
    rows were deleted.
    """

    version: int | None  # the table's version now (None: no table yet)
    devices: DeviceIndex
    deleted: frozenset[str] = frozenset()
    resync: bool = False
    reason: str = ""  # why a resync (empty for the first load)


class DeviceFeed:
    """The devices table at ``uri``, read by change. Blocking: run it off the event loop.

    One reader, not thread-safe: a caller runs one :meth:`load` or :meth:`changes` at a
    time.
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.version: int | None = None
        self._table: Any = None  # deltalake.DeltaTable, kept: a new version is read by tail
        self._feed_from: int | None = None  # first version whose changes the feed records

    def _open(self) -> Any:
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        if self._table is None:
            try:
                self._table = DeltaTable(self.uri)
            except TableNotFoundError:
                if self.version is not None:
                    # a table that was there and is not now is a store that went away, not
                    # a registry without devices: an empty view would refuse the whole fleet
                    raise RegistryUnreadable(
                        f"cannot read the registry table {self.uri}: it was at version "
                        f"{self.version} and is not found now",
                        hint="make the lake reachable again; the gateway serves its last view",
                    ) from None
                return None
        else:
            if "://" not in self.uri and not Path(self.uri, "_delta_log").is_dir():
                # a local store lists a vanished folder as empty: without this check a
                # lake on an unmounted volume would look like a registry that never changes
                raise RegistryUnreadable(
                    f"cannot read the registry table {self.uri}: its _delta_log folder is "
                    "gone (the lake's volume unmounted or moved?)",
                    hint="make the lake reachable again; the gateway serves its last view",
                )
            # reads only the log entries written since (not the whole log, not the data)
            self._table.update_incremental()
        return self._table

    def _reading(self, read: Callable[[], T]) -> T:
        """``read()``, any failure of the store raised as :class:`RegistryUnreadable`."""
        try:
            return read()
        except RegistryUnreadable:
            raise
        except Exception as exc:  # deltalake and the object stores raise many kinds
            reason = " ".join(_ANSI.sub("", str(exc)).replace("↳", " ").split())[:300]
            raise RegistryUnreadable(
                f"cannot read the registry table {self.uri}: {reason or type(exc).__name__}",
                hint="make the lake reachable again; the gateway serves its last view",
            ) from exc

    def load(self, reason: str = "") -> Changes:
        """The whole table (first load, or a resync); :class:`RegistryUnreadable` when the
        store cannot be read."""
        return self._reading(lambda: self._load(reason))

    def changes(self) -> Changes:
        """The devices changed since the last :meth:`load` or :meth:`changes`; a resync
        when the feed cannot tell; :class:`RegistryUnreadable` when the store cannot be
        read (nothing is applied, the next call reads from the same version)."""
        return self._reading(self._changes)

    def _load(self, reason: str) -> Changes:
        self._table = None
        table = self._open()
        if table is None:
            return Changes(None, DeviceIndex(), resync=True, reason=reason)
        version = int(table.version())
        devices = DeviceIndex.from_arrow(
            pa.table(table.to_pyarrow_table(columns=list(ENTRY_COLUMNS)))
        )
        # the read's Arrow buffers are freed now; hand their pages back, or a worker keeps
        # ~150 bytes per device of a load it no longer holds
        pa.default_memory_pool().release_unused()
        feed_on = table.metadata().configuration.get(next(iter(CHANGE_FEED))) == "true"
        # changes after this version can be read by feed only when it records them already
        self._feed_from = version + 1 if feed_on else None
        self.version = version
        return Changes(version, devices, resync=True, reason=reason)

    def _changes(self) -> Changes:
        if self.version is None:
            return self._load("first load" if self._table is None else "the table appeared")
        table = self._open()
        version = int(table.version())
        if version == self.version:
            return Changes(version, DeviceIndex())
        if version < self.version:
            return self._load(f"the table went back from version {self.version} to {version}")
        start = self.version + 1
        if self._feed_from is None or start < self._feed_from:
            if table.metadata().configuration.get(next(iter(CHANGE_FEED))) != "true":
                return self._load("the table records no change data feed")
            return self._load(f"versions {start}..{version} predate the change data feed")
        try:
            batch = pa.table(
                table.load_cdf(
                    starting_version=start,
                    ending_version=version,
                    columns=[*ENTRY_COLUMNS, "_change_type", "_commit_version"],
                ).read_all()
            )
        except Exception as exc:  # deltalake raises its own errors for missing versions/files
            return self._load(f"versions {start}..{version} cannot be read by feed ({exc})")
        if batch.num_rows == 0:
            # versions that changed no row: maintenance rearranging files, a vacuum
            # (the empty feed's columns may come back typed null, which take refuses)
            self.version = version
            return Changes(version, DeviceIndex())
        # the last change of each device wins (the feed is per file, not per version)
        # (an update's pre-image says nothing of the device now)
        batch = _without_views(batch)
        batch = batch.filter(pc.not_equal(batch.column("_change_type"), "update_preimage"))
        batch = batch.take(pc.sort_indices(batch, [("_commit_version", "ascending")]))
        ids = batch.column("device_id").to_pylist()
        last = dict(zip(ids, range(len(ids)), strict=True))
        kinds = batch.column("_change_type").to_pylist()
        upserts = [i for i in last.values() if kinds[i] in _UPSERTS]
        deleted = {d for d, i in last.items() if kinds[i] == "delete"}
        changed = DeviceIndex.from_arrow(batch.select(list(ENTRY_COLUMNS)).take(upserts))
        self.version = version
        return Changes(version, changed, frozenset(deleted))


def _without_views(table: pa.Table) -> pa.Table:
    """``table`` with its ``string_view`` columns (the change feed's) as plain strings, which
    every compute kernel takes."""
    schema = pa.schema(
        [f.with_type(pa.string()) if f.type == pa.string_view() else f for f in table.schema]
    )
    return table.cast(schema) if schema != table.schema else table

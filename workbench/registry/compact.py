"""The devices a gateway worker holds in memory, in columns rather than one object each.

A million :class:`~workbench.registry.records.DeviceEntry` objects cost about 900 bytes
of a worker's memory per device (the object, its strings, the dict slot) and seconds to
build. :class:`DeviceIndex` keeps what repeats across devices — tenant, building, room,
type, protocol, status — as small integer codes into a pool of the distinct values, in
typed arrays; only the device id is a string of its own. An entry is built when a door
asks for it, which costs about a microsecond, against the HMAC it is about to check.

Loading reads the registry's Arrow columns straight into the arrays
(:meth:`DeviceIndex.from_arrow`), without a Python object per row; a change applies its
few rows in place (:meth:`DeviceIndex.__setitem__`, ``del``). Rows freed by deleted
devices are reused by the next new ones.

>>> index = DeviceIndex()
>>> index["d-1"] = DeviceEntry("d-1", "t-1", "b-1", 3, None, "smoke", "http", "provisioned", 1)
>>> index["d-1"].floor, index["d-1"].room, len(index)
(3, None, 1)
>>> del index["d-1"]; index.get("d-1") is None
True
"""

from __future__ import annotations

import array
from collections.abc import Iterator, MutableMapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from workbench.registry.records import DeviceEntry

__all__ = ["DeviceIndex"]

# the columns that repeat across devices, stored as codes into a pool of their values
_POOLED = ("tenant_id", "building_id", "room", "device_type", "protocol", "status")
_SLICE = 65_536
_BULK = 64  # from this many changed devices on, :meth:`DeviceIndex.absorb` goes by arrays
_NO_FLOOR = -(2**63)  # the floor column's null (a floor is a small whole number)


class _Pool:
    """The distinct values of one column; a row holds the code of its value."""

    __slots__ = ("codes", "values")

    def __init__(self, values: list[str | None] | None = None) -> None:
        self.values: list[str | None] = values if values is not None else []
        self.codes: dict[str | None, int] = {v: i for i, v in enumerate(self.values)}

    def code(self, value: str | None) -> int:
        found = self.codes.get(value)
        if found is None:
            found = self.codes[value] = len(self.values)
            self.values.append(value)
        return found


class DeviceIndex(MutableMapping[str, DeviceEntry]):
    """Device id → :class:`DeviceEntry`, held in columns (see the module's text).

    The devices of the last full load (the *base*) are found by the hash of their id in a
    sorted array, their ids kept as one byte string to confirm a match: no Python object
    per device. Devices a change adds later live in a small dict beside it; a base device
    deleted is marked gone (and comes back in place if added again).
    """

    def __init__(self) -> None:
        self._pools = {name: _Pool() for name in _POOLED}
        self._codes = {name: array.array("I") for name in _POOLED}
        self._floor = array.array("q")
        self._key_version = array.array("q")
        # the base: rows 0..n-1 as loaded, their ids' hashes sorted, each beside its row
        self._hashes: np.ndarray[Any, np.dtype[np.int64]] = np.empty(0, np.int64)
        self._rows: np.ndarray[Any, np.dtype[np.uint32]] = np.empty(0, np.uint32)
        self._id_offsets = array.array("q", [0])
        self._id_bytes = b""
        self._gone: set[str] = set()  # base devices deleted since the load
        self._extra: dict[str, int] = {}  # devices added since the load, and their rows
        self._free: list[int] = []  # rows of deleted added devices, reused by new ones

    @classmethod
    def from_arrow(cls, table: pa.Table) -> DeviceIndex:
        """The devices of ``table`` (the registry's entry columns), read column by column.
        An id that appears twice keeps its last row."""
        index = cls()
        ids = table.column("device_id").combine_chunks()
        hashes = _hashes(ids)
        order = np.argsort(hashes, kind="stable")
        ordered = hashes[order]
        # the same hash twice: two ids that collide, or one id twice (not from a registry
        # MERGE; rare): then keep each id's last row and hash again
        twice = len(ordered) > 1 and bool((ordered[1:] == ordered[:-1]).any())
        if twice and pc.count_distinct(ids).as_py() != len(ids):
            last = dict(zip(ids.to_pylist(), range(len(ids)), strict=True))
            table = table.take(pa.array(sorted(last.values())))
            ids = table.column("device_id").combine_chunks()
            hashes = _hashes(ids)
            order = np.argsort(hashes, kind="stable")
            ordered = hashes[order]
        # the rows stay in the table's order; only the hashes are sorted, each beside its
        # row: one small array instead of every column taken in a new order
        index._hashes = ordered
        index._rows = order.astype(np.uint32)
        ids = ids.cast(pa.large_string())
        index._id_offsets = array.array(
            "q",
            np.frombuffer(ids.buffers()[1], np.int64)[
                ids.offset : ids.offset + len(ids) + 1
            ].tobytes(),
        )
        data = ids.buffers()[2]
        index._id_bytes = data.to_pybytes() if data is not None else b""
        for name in _POOLED:
            column = table.column(name).combine_chunks()
            encoded = pc.dictionary_encode(column, null_encoding="encode")
            index._pools[name] = _Pool(encoded.dictionary.to_pylist())
            codes = encoded.indices.cast(pa.uint32()).to_numpy(zero_copy_only=False)
            index._codes[name] = array.array("I", codes.tobytes())
        for target, name in ((index._floor, "floor"), (index._key_version, "key_version")):
            column = table.column(name).combine_chunks()
            column = column.cast(pa.int64()).fill_null(_NO_FLOOR)
            target.frombytes(column.to_numpy(zero_copy_only=False).tobytes())
        return index

    def _base_id(self, row: int) -> bytes:
        return self._id_bytes[self._id_offsets[row] : self._id_offsets[row + 1]]

    def _base_ids(self) -> list[str]:
        """The base's ids, in row order."""
        count = len(self._hashes)
        ids: list[str] = pa.LargeStringArray.from_buffers(
            count, pa.py_buffer(self._id_offsets), pa.py_buffer(self._id_bytes)
        ).to_pylist()
        return ids

    def _base_row(self, device_id: str) -> int | None:
        """The base row of ``device_id`` (gone or not), None when it is not in the base."""
        hashes = self._hashes
        wanted = hash(device_id)
        i = int(hashes.searchsorted(wanted))
        encoded = device_id.encode()
        while i < len(hashes) and int(hashes[i]) == wanted:
            row = int(self._rows[i])
            if self._base_id(row) == encoded:
                return row
            i += 1
        return None

    def _row(self, device_id: str) -> int | None:
        row = self._extra.get(device_id)
        if row is not None:
            return row
        if device_id in self._gone:
            return None
        return self._base_row(device_id)

    def __len__(self) -> int:
        return len(self._hashes) - len(self._gone) + len(self._extra)

    def __iter__(self) -> Iterator[str]:
        for row in range(len(self._hashes)):
            device_id = self._base_id(row).decode()
            if device_id not in self._gone:
                yield device_id
        yield from self._extra

    def __contains__(self, device_id: object) -> bool:
        return isinstance(device_id, str) and self._row(device_id) is not None

    def __getitem__(self, device_id: str) -> DeviceEntry:
        row = self._row(device_id)
        if row is None:
            raise KeyError(device_id)
        codes, pools = self._codes, self._pools
        floor = self._floor[row]
        return DeviceEntry(
            device_id,
            pools["tenant_id"].values[codes["tenant_id"][row]],  # type: ignore[arg-type]
            pools["building_id"].values[codes["building_id"][row]],  # type: ignore[arg-type]
            None if floor == _NO_FLOOR else floor,
            pools["room"].values[codes["room"][row]],
            pools["device_type"].values[codes["device_type"][row]],  # type: ignore[arg-type]
            pools["protocol"].values[codes["protocol"][row]],  # type: ignore[arg-type]
            pools["status"].values[codes["status"][row]],  # type: ignore[arg-type]
            self._key_version[row],
        )

    def __setitem__(self, device_id: str, entry: DeviceEntry) -> None:
        if entry.device_id != device_id:
            raise ValueError(f"entry of {entry.device_id!r} stored as {device_id!r}")
        row = self._extra.get(device_id)
        if row is None:
            row = self._base_row(device_id)
            if row is not None:
                self._gone.discard(device_id)
        if row is None:
            row = self._free.pop() if self._free else len(self._floor)
            self._extra[device_id] = row
        floor = _NO_FLOOR if entry.floor is None else entry.floor
        if row == len(self._floor):  # a new row at the end
            for name in _POOLED:
                self._codes[name].append(self._pools[name].code(getattr(entry, name)))
            self._floor.append(floor)
            self._key_version.append(entry.key_version)
            return
        for name in _POOLED:
            self._codes[name][row] = self._pools[name].code(getattr(entry, name))
        self._floor[row] = floor
        self._key_version[row] = entry.key_version

    def absorb(self, changed: DeviceIndex) -> None:
        """Apply ``changed`` (a freshly loaded index of the devices one change set added or
        updated) over this one, array by array: a bulk import of 100,000 devices is a few
        vector operations, not 100,000 assignments."""
        if changed._extra or changed._gone:
            raise ValueError("absorb takes an index as loaded, without later changes")
        count = len(changed._hashes)
        if count < _BULK:  # a few devices: one at a time is cheaper than the set-up
            self.update(changed)
            return
        ids = changed._base_ids()
        their_hashes = np.empty(count, np.int64)  # the changed ids', in their row order
        their_hashes[changed._rows] = changed._hashes
        # one vector search finds them all among ours
        rows = np.full(count, -1, np.int64)
        if len(self._hashes):
            at = np.minimum(self._hashes.searchsorted(their_hashes), len(self._hashes) - 1)
            for i in np.flatnonzero(self._hashes[at] == their_hashes).tolist():
                found = self._base_row(ids[i])  # confirms the id, and finds a colliding one
                if found is not None:
                    rows[i] = found
                    self._gone.discard(ids[i])
        if self._extra or self._free:
            for i in np.flatnonzero(rows < 0).tolist():
                row = self._extra.get(ids[i])
                if row is None and self._free:
                    row = self._extra[ids[i]] = self._free.pop()
                if row is not None:
                    rows[i] = row
        new = rows < 0
        end = len(self._floor)
        rows[new] = np.arange(end, end + int(new.sum()))
        added = [ids[i] for i in np.flatnonzero(new).tolist()]
        self._extra.update(zip(added, rows[new].tolist(), strict=True))
        old = ~new
        for name in _POOLED:
            pool = self._pools[name]
            recode = np.array([pool.code(v) for v in changed._pools[name].values], np.uint32)
            codes = recode[np.frombuffer(changed._codes[name], np.uint32)]
            view = np.frombuffer(self._codes[name], np.uint32)
            view[rows[old]] = codes[old]
            del view  # an array cannot grow while a view of it exists
            self._codes[name].frombytes(codes[new].tobytes())
        for mine, theirs in (
            (self._floor, changed._floor),
            (self._key_version, changed._key_version),
        ):
            values = np.frombuffer(theirs, np.int64)
            view = np.frombuffer(mine, np.int64)
            view[rows[old]] = values[old]
            del view
            mine.frombytes(values[new].tobytes())

    def __delitem__(self, device_id: str) -> None:
        row = self._extra.pop(device_id, None)
        if row is not None:
            self._free.append(row)
        elif device_id not in self._gone and self._base_row(device_id) is not None:
            self._gone.add(device_id)
        else:
            raise KeyError(device_id)


def _hashes(ids: pa.Array) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Python's own hash of each id (what a lookup computes for one), a slice at a time:
    a million id strings at once would stay as the worker's slack."""
    return np.fromiter(
        (
            hash(device_id)
            for start in range(0, len(ids), _SLICE)
            for device_id in ids.slice(start, _SLICE).to_pylist()
        ),
        np.int64,
        count=len(ids),
    )

"""Which polled records should not wait for the processor's next batch: a smoke or
intrusion detector turning on.

The processor stores what its member polled once per ``WORKBENCH_COMMIT_INTERVAL``,
and an alarm is raised in the batch that stores its reading, so waiting for the batch
is most of an alarm's delay. For the life-safety readings — the flags of the shipped
``smoke`` and ``intrusion`` rules — the member tells the parent when a chunk holds a
device's flag turning on, and the parent takes its batch early
(:meth:`~ingest_service.processor.consumer.Poller.take`). A detector that stays on
(it reports ``true`` again and again during a fire) cuts no further batch short: only
the turn from off, or from unknown, does. So a fire costs an early batch per detector
that trips, not one per reading.

What a device's flag stood at is kept only for the devices that are on, so the
watch's memory follows the alarms in progress, not the fleet.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["FLAGS", "FlagWatch"]

FLAGS = ("smoke", "intrusion")
"""The readings whose turn to ``true`` cuts a batch short."""


class FlagWatch:
    """Follows the flags of the records a member hands over, in their order.

    >>> watch = FlagWatch()
    >>> def rows(*r):
    ...     readings = [{"smoke": s} for _, s in r]
    ...     return pa.table({"device_id": [d for d, _ in r], "readings": readings})
    >>> watch.turned_on(rows(("d1", False), ("d2", None)))
    False
    >>> watch.turned_on(rows(("d1", True)))   # d1 turns on
    True
    >>> watch.turned_on(rows(("d1", True)))   # still on: nothing new
    False
    >>> watch.turned_on(rows(("d1", False), ("d1", True)))  # off, then on again
    True
    """

    def __init__(self) -> None:
        self._on: set[tuple[str, str]] = set()  # (flag, device) whose last reading was true

    def turned_on(self, table: pa.Table | None) -> bool:
        """Whether a device's flag turned on in ``table`` (a chunk's parse, with the
        readings as a struct column; None, or a table without device ids or readings,
        or with a flag that is not a boolean, counts as no: the decode rejects those)."""
        if table is None or not {"device_id", "readings"} <= set(table.column_names):
            return False
        devices = table.column("device_id")
        readings = table.column("readings")
        if not pa.types.is_string(devices.type) or not pa.types.is_struct(readings.type):
            return False
        turned = False
        for flag in FLAGS:
            index = readings.type.get_field_index(flag)
            if index < 0 or not pa.types.is_boolean(readings.type.field(index).type):
                continue
            values = pc.struct_field(readings, [index])
            # only the readings of devices that are on, or turn on in this chunk, are
            # walked in Python: a chunk of devices staying off costs two filters
            on = pc.fill_null(values, False)
            watched = {device for f, device in self._on if f == flag}
            if not watched and not pc.any(on).as_py():
                continue
            watched.update(pc.unique(devices.filter(on)).to_pylist())
            relevant = pc.and_(
                pc.is_valid(values), pc.is_in(devices, value_set=pa.array(sorted(watched)))
            )
            picked = table.filter(relevant)
            for device, value in zip(
                picked.column("device_id").to_pylist(),
                pc.struct_field(picked.column("readings"), [index]).to_pylist(),
                strict=True,
            ):
                key = (flag, device)
                if value is True and key not in self._on:
                    self._on.add(key)
                    turned = True
                elif value is False:
                    self._on.discard(key)
        return turned

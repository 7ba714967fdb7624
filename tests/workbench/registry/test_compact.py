"""The gateway's columnar device index answers exactly as a plain dict of entries would,
whatever mix of full loads, changes and deletions it has seen."""

from __future__ import annotations

from unittest import mock

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.registry import compact
from workbench.registry.compact import DeviceIndex
from workbench.registry.feed import ENTRY_COLUMNS
from workbench.registry.records import DeviceEntry

_ids = st.sampled_from([f"dev-{i}" for i in range(12)] + ["é-unicode", "x"])
_entries = st.builds(
    DeviceEntry,
    device_id=_ids,
    tenant_id=st.sampled_from(["t-1", "t-2"]),
    building_id=st.sampled_from(["b-1", "b-2", "b-3"]),
    floor=st.none() | st.integers(-5, 300),
    room=st.none() | st.sampled_from(["lobby", "r-101", ""]),
    device_type=st.sampled_from(["environment", "smoke", "intrusion"]),
    protocol=st.sampled_from(["http", "bin1"]),
    status=st.sampled_from(["provisioned", "disabled"]),
    key_version=st.integers(1, 2**40),
)


def _table(entries: list[DeviceEntry]) -> pa.Table:
    return pa.table(
        {c: [getattr(e, c) for e in entries] for c in ENTRY_COLUMNS},
        schema=pa.schema(
            [
                (c, pa.int64() if c in ("floor", "key_version") else pa.string())
                for c in ENTRY_COLUMNS
            ]
        ),
    )


@settings(max_examples=100, deadline=None)
@given(
    loaded=st.lists(_entries, max_size=10),
    ops=st.lists(st.tuples(st.booleans(), _entries), max_size=30),
)
def test_the_index_answers_as_a_dict_would(loaded: list[DeviceEntry], ops) -> None:
    index = DeviceIndex.from_arrow(_table(loaded))
    model = {e.device_id: e for e in loaded}  # an id twice in the table: the last row
    for upsert, entry in ops:
        if upsert:
            index[entry.device_id] = entry
            model[entry.device_id] = entry
        elif entry.device_id in model:
            del index[entry.device_id]
            del model[entry.device_id]
        else:
            assert entry.device_id not in index
        assert len(index) == len(model)
    assert dict(index) == model
    assert sorted(index) == sorted(model)
    for device_id in ["dev-0", "x", "never-seen", "é-unicode"]:
        assert index.get(device_id) == model.get(device_id)


def test_an_empty_load_then_changes() -> None:
    index = DeviceIndex.from_arrow(_table([]))
    entry = DeviceEntry("d-1", "t-1", "b-1", None, None, "smoke", "http", "provisioned", 1)
    assert len(index) == 0 and index.get("d-1") is None
    index["d-1"] = entry
    assert index["d-1"] == entry and len(index) == 1
    del index["d-1"]
    assert "d-1" not in index and len(index) == 0


@settings(max_examples=100, deadline=None)
@given(
    loaded=st.lists(_entries, max_size=10),
    deletions=st.lists(_ids, max_size=6),
    added=st.lists(_entries, max_size=6),
    batch=st.lists(_entries, max_size=12),
)
def test_a_change_set_absorbed_by_arrays_lands_as_one_by_one(
    loaded, deletions, added, batch
) -> None:
    index = DeviceIndex.from_arrow(_table(loaded))
    model = {e.device_id: e for e in loaded}
    for entry in added:  # rows beside the base, and rows freed for reuse
        index[entry.device_id] = model[entry.device_id] = entry
    for device_id in deletions:
        if device_id in model:
            del index[device_id], model[device_id]
    changed = DeviceIndex.from_arrow(_table(batch))
    with mock.patch.object(compact, "_BULK", 0):  # the array path even for a few devices
        index.absorb(changed)
    model.update({e.device_id: e for e in batch})
    assert dict(index) == model
    assert len(index) == len(model)

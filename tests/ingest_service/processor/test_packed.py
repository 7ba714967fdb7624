"""Packed record values and keys behave like the lists they replace (pure logic)."""

from __future__ import annotations

import datetime as dt
import random

import numpy as np
import pytest

from ingest_service.processor.decode import Limits, RecordBatch, decode
from ingest_service.processor.packed import Packed, pack


def _items(rng: random.Random, n: int) -> list[bytes | None]:
    pool: list[bytes | None] = [None, b"", b"x", b'{"a":1}', b"two\nlines", b"\xff\x00"]
    return [
        rng.choice(pool)
        if rng.random() < 0.3
        else rng.randbytes(rng.randint(1, 40)).replace(b"\n", b"_")
        for _ in range(n)
    ]


@pytest.mark.parametrize("seed", range(20))
def test_slices_concatenations_and_items_match_the_list(seed: int) -> None:
    rng = random.Random(seed)
    items = _items(rng, rng.randint(0, 60))
    packed = Packed.of(items)
    assert len(packed) == len(items)
    assert packed.to_list() == items
    assert [packed[i] for i in range(len(items))] == items
    a, b = sorted(rng.randint(0, len(items)) for _ in range(2))
    assert packed[a:b].to_list() == items[a:b]
    assert packed[a:].to_list() == items[a:] and packed[:b].to_list() == items[:b]
    cuts = sorted(rng.randint(0, len(items)) for _ in range(3))
    parts = [packed[x:y] for x, y in zip([0, *cuts], [*cuts, len(items)], strict=True)]
    assert Packed.concat(parts).to_list() == items
    assert packed.has_empty == any(not x for x in items)


def test_pack_joins_with_newlines_and_marks_none() -> None:
    joined, lengths = pack([b"ab", None, b"", b"c"])
    assert joined == b"ab\n\n\nc"
    assert lengths.tolist() == [2, -1, 0, 1]
    assert Packed.concat([]).to_list() == []


def test_record_batches_concatenate_split_and_filter_like_lists() -> None:
    one = RecordBatch([b"a", b"b"], [b"k1", None], [0, 1], [10, 11])
    two = RecordBatch(
        Packed.of([b"c"]), Packed.of([b"k3"]), np.array([2], np.int32), np.array([12])
    )
    both = RecordBatch.concat([one, two])
    assert list(both.values) == [b"a", b"b", b"c"]
    assert list(both.keys) == [b"k1", None, b"k3"]
    assert list(both.partitions) == [0, 1, 2] and list(both.offsets) == [10, 11, 12]
    head, tail = both[:1], both[1:]
    assert list(head.values) == [b"a"] and list(tail.offsets) == [11, 12]
    kept = both.compress([True, False, True])
    assert list(kept.values) == [b"a", b"c"] and list(kept.partitions) == [0, 2]


def test_a_null_or_empty_record_is_rejected_not_fatal_and_its_neighbours_kept() -> None:
    ok = (
        b'{"device_id":"d1","seq":%d,"ts":"2026-01-01T00:00:00Z","tenant_id":"t",'
        b'"building_id":"b","device_type":"environment","readings":{"temperature":20}}'
    )
    values = Packed.of([ok % 1, None, ok % 2, b"", ok % 3])
    batch = RecordBatch(values, Packed.of([None] * 5), np.zeros(5, np.int32), np.arange(5))
    now = dt.datetime(2026, 1, 1, 0, 1, tzinfo=dt.UTC)
    accepted, rejected = decode(batch, now=now, limits=Limits())
    assert accepted["seq"].to_list() == [1, 2, 3]
    assert rejected["source_offset"].to_list() == [1, 3]
    assert rejected["reason"].to_list() == ["malformed: empty record"] * 2
    assert rejected["raw"].to_list() == [b"", b""]

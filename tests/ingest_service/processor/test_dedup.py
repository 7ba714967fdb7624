"""The dedup index's per-device fast path answers exactly what a full lookup answers."""

from __future__ import annotations

import datetime as dt
import random

import polars as pl
import pytest

from ingest_service.processor.dedup import SeenIndex

T0 = dt.datetime(2026, 11, 27, 5, 30, tzinfo=dt.UTC)


def _rows(rng: random.Random, n: int, first_offset: int, *, at: dt.datetime) -> pl.DataFrame:
    """Events of a few devices: mostly counting up, with re-sends, gaps and late ones."""
    devices = [f"d{i}" for i in range(12)]
    seqs = [rng.randrange(0, 40) for _ in range(n)]
    minutes = [s // 4 - (5 if rng.random() < 0.1 else 0) for s in seqs]
    return pl.DataFrame(
        {
            "source_partition": pl.Series([rng.randrange(3) for _ in range(n)], dtype=pl.Int32),
            "source_offset": range(first_offset, first_offset + n),
            "device_id": [rng.choice(devices) for _ in range(n)],
            "seq": seqs,
            "window_start": [T0 + dt.timedelta(minutes=m) for m in minutes],
            "late": [rng.random() < 0.15 for _ in range(n)],
            "ingested_at": [at] * n,
        }
    )


def _brute_duplicates(stored: list[tuple[str, int]], rows: pl.DataFrame) -> list[bool]:
    seen = set(stored)
    out = []
    for device, seq in rows.select("device_id", "seq").iter_rows():
        out.append((device, seq) in seen)
        seen.add((device, seq))
    return out


def _brute_new_devices(counted: set[tuple[str, dt.datetime]], rows: pl.DataFrame) -> list[bool]:
    done = set(counted)
    out = []
    for device, window, late in rows.select("device_id", "window_start", "late").iter_rows():
        new = not late and (device, window) not in done
        out.append(new)
        if not late:
            done.add((device, window))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_fast_path_matches_a_full_lookup_over_many_batches(seed: int) -> None:
    rng = random.Random(seed)
    index = SeenIndex()
    stored: list[tuple[str, int]] = []
    counted: set[tuple[str, dt.datetime]] = set()
    offset = 0
    for batch in range(8):
        rows = _rows(rng, 60, offset, at=T0 + dt.timedelta(minutes=batch))
        offset += len(rows)
        assert index.duplicate_mask(rows).to_list() == _brute_duplicates(stored, rows)
        fresh = rows.filter(~index.duplicate_mask(rows))
        assert index.new_device_mask(fresh).to_list() == _brute_new_devices(counted, fresh)
        index.add(fresh)
        stored += fresh.select("device_id", "seq").rows()
        counted |= set(fresh.filter(~pl.col("late")).select("device_id", "window_start").rows())
        if batch == 4:  # forgetting a partition forgets its events, fast path included
            index.forget_partitions({1})
            left = index._frame
            stored = left.select("device_id", "seq").rows()
            counted = set(left.filter(~pl.col("late")).select("device_id", "window_start").rows())


def test_pruned_events_are_no_longer_recognised() -> None:
    index = SeenIndex()
    old = pl.DataFrame(
        {
            "source_partition": pl.Series([0, 0], dtype=pl.Int32),
            "source_offset": [0, 1],
            "device_id": ["a", "b"],
            "seq": [5, 5],
            "window_start": [T0, T0],
            "late": [False, False],
            "ingested_at": [T0, T0 + dt.timedelta(minutes=20)],
        }
    )
    index.add(old)
    index.prune(T0 + dt.timedelta(minutes=10))
    again = old.with_columns(source_offset=pl.Series([2, 3]))
    assert index.duplicate_mask(again).to_list() == [False, True]
    assert len(index) == 1

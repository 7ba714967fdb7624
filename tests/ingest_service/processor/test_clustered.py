"""``telemetry``'s file order, found by ranking building and device pairs, is the order of
a stable sort by building, device and time."""

from __future__ import annotations

import datetime as dt

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest_service.processor.sink import clustered

KEYS = ["building_id", "device_id", "ts"]

_row = st.tuples(
    st.sampled_from(["b-2", "b-10", "b-1", None]),
    # a device seen in two buildings (moved between batches) keeps both pairs apart
    st.sampled_from(["d-9", "d-10", "d-1", "é", None]),
    st.integers(min_value=0, max_value=5),
    # the rows' own order, to see that ties keep it
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_row, max_size=60))
def test_the_order_is_a_stable_sort_by_building_device_and_time(rows: list[tuple]) -> None:
    frame = pl.DataFrame(
        [
            (b, d, dt.datetime(2026, 12, 7, tzinfo=dt.UTC) + dt.timedelta(seconds=t), i)
            for b, d, t, i in rows
        ],
        schema={
            "building_id": pl.String,
            "device_id": pl.String,
            "ts": pl.Datetime("us", "UTC"),
            "i": pl.Int64,
        },
        orient="row",
    )
    expected = sorted(
        frame.rows(),
        key=lambda r: tuple((v is not None, v) for v in r[:3]),  # nulls first, as polars
    )
    assert clustered(frame).rows() == expected


def test_an_empty_batch_stays_empty() -> None:
    frame = pl.DataFrame(
        schema={"building_id": pl.String, "device_id": pl.String, "ts": pl.Datetime("us", "UTC")}
    )
    assert clustered(frame).is_empty()

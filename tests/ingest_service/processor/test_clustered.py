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


def test_rows_equal_in_all_three_keep_their_order() -> None:
    # many ties: a sort that does not keep order (polars' parallel one) shows on batches
    # this large, not on the small ones above
    n = 200_000
    ts = dt.datetime(2026, 12, 7, tzinfo=dt.UTC)
    frame = pl.DataFrame(
        {
            "building_id": pl.Series(["b-2", "b-1"] * (n // 2)),
            "device_id": pl.Series(["d-1", "d-2", "d-3", "d-1"] * (n // 4)),
            "ts": pl.Series([ts] * n, dtype=pl.Datetime("us", "UTC")),
            "i": pl.int_range(n, eager=True),
        }
    )
    out = clustered(frame)
    assert out["i"].sort().equals(frame["i"])  # every row once
    within = out.group_by(KEYS, maintain_order=True).agg(pl.col("i").diff().min().alias("step"))
    assert within["step"].min() > 0  # each key's rows in their original order

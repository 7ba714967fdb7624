"""Decoding: promoted readings go to their column only when its type holds them exactly, and
a batch in which nothing parses as an event is rejected, not fatal."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from ingest_service.processor.decode import Limits, RecordBatch, decode
from ingest_service.processor.processor import Processor
from ingest_service.processor.windows import FixedClock
from tests.ingest_service.processor.conftest import T0, encode, event
from workbench.config import Config
from workbench.lake.promote import coerce

NOW = T0 + dt.timedelta(minutes=10)


def _decode(
    values: list[bytes], promoted: dict[str, pa.DataType] | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    n = len(values)
    return decode(
        RecordBatch(values, [None] * n, [0] * n, list(range(n))),
        now=NOW,
        limits=Limits(),
        promoted=promoted,
    )


VALUES: list[object] = [412, 412.0, 412.5, -3, True, False, "412", "high", [1], {"a": 1}]


@pytest.mark.parametrize(
    ("type_name", "arrow"),
    [
        ("double", pa.float64()),
        ("bigint", pa.int64()),
        ("boolean", pa.bool_()),
        ("string", pa.string()),
    ],
)
def test_a_promoted_reading_goes_to_its_column_only_when_the_type_holds_it(
    type_name: str, arrow: pa.DataType
) -> None:
    # one record per batch: pyarrow infers each value's own JSON type, as for a device
    # that always sends one kind of value
    for value in VALUES:
        accepted, rejected = _decode(
            [encode(event(readings={"temperature": 20.0, "co2": value, "voc": 1}))],  # type: ignore[dict-item]
            {"co2": arrow},
        )
        assert rejected.height == 0, (value, rejected["reason"].to_list())
        column = accepted["co2"].to_list()[0]
        extra = json.loads(accepted["extra"][0])
        expected = coerce(value, type_name)  # the backfill's rule for one value
        if expected is None:
            assert column is None and extra == {"co2": value, "voc": 1}, value
        else:
            assert column == expected and type(column) is type(expected), value
            assert extra == {"voc": 1}, value


def test_promoted_columns_never_change_which_records_are_accepted() -> None:
    values = [
        encode(event(seq=s, readings={"co2": v}))  # type: ignore[dict-item]
        for s, v in enumerate([400, "x", 1.5, True])
    ] + [b"not json", encode(event(seq=9, readings={"temperature": "hot"}))]
    plain, plain_rejected = _decode(values)
    promoted, promoted_rejected = _decode(values, {"co2": pa.int64(), "voc": pa.bool_()})
    assert promoted["seq"].to_list() == plain["seq"].to_list() == [0, 1, 2, 3]
    assert promoted_rejected.equals(plain_rejected)
    assert promoted["co2"].to_list() == [400, None, None, None]
    assert promoted["voc"].to_list() == [None] * 4
    assert plain.drop("extra").equals(promoted.drop("extra", "co2", "voc"))


@pytest.mark.parametrize(
    "values",
    [
        [b"[1]", b"2"],  # nothing is an object
        [b'{"seq": 1}'],  # objects without device_type (or anything else)
        [b"nope"],
    ],
)
def test_a_batch_with_no_event_in_it_is_rejected_not_fatal(
    values: list[bytes], tmp_path: Path
) -> None:
    accepted, rejected = _decode(values, {"co2": pa.float64()})
    assert accepted.height == 0 and "co2" in accepted.columns
    assert rejected.height == len(values)

    config = Config.from_env(
        {"WORKBENCH_HOME": str(tmp_path / "home"), "WORKBENCH_LAKE": str(tmp_path / "lake")}
    )
    processor = Processor(config, clock=FixedClock(NOW))
    processor.assign([0])
    n = len(values)
    result = processor.process(RecordBatch(values, [None] * n, [0] * n, list(range(n))))
    assert (result.stored, result.rejected) == (0, n)
    stored = pl.read_delta(f"{config.lake}/telemetry_rejected")
    assert stored["source_offset"].to_list() == list(range(n))

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


# Times of RFC 3339's common shape (parsed by pyarrow's cast when a whole batch has it)
# and others (parsed by the format, as every time was before): the decode must give
# each the time, or the reason, the format alone gives.
COMMON_TIMES = [
    "2026-11-27T05:30:00Z",
    "2026-11-27T05:30:00.1Z",
    "2026-11-27T05:30:00.123456Z",
    "2026-11-27T07:00:00.5+01:30",
    "2026-11-27T00:30:00-05:00",
    "2026-11-27T05:30:00-00:00",
    "2026-11-27T05:31:00+00:01",
]
ODD_TIMES = [
    "2026-02-30T05:30:00Z",  # the shape, but no such day
    "2026-11-27T05:29:60Z",  # a leap second: the format accepts it, the cast does not
    "2026-11-27T24:00:00Z",
    "2026-11-27T05:30:00+24:00",
    "2026-11-27 05:30:00Z",  # the cast alone would accept these three
    "2026-11-27T05:30Z",
    "2026-11-27T05:30:00",
    "2026-11-27T05:30:00.1234567Z",
    "2026-11-27T05:30:00+0100",
    "2026-11-27T05:30:00z",
]


def _format_parse(times: list[str]) -> list[dt.datetime | None]:
    parsed = pl.Series(times).str.to_datetime(
        "%Y-%m-%dT%H:%M:%S%.f%#z", time_zone="UTC", time_unit="us", strict=False
    )
    return parsed.to_list()


@pytest.mark.parametrize("odd", [None, *ODD_TIMES])
def test_times_decode_as_the_format_parses_them_whichever_parse_runs(odd: str | None) -> None:
    from ingest_service.processor.decode import _common_shape_times

    times = COMMON_TIMES + ([] if odd is None else [odd])
    received = list(reversed(times))  # received_at takes the same path
    values = [
        encode({**event(seq=i), "ts": t, "received_at": r})
        for i, (t, r) in enumerate(zip(times, received, strict=True))
    ]
    accepted, rejected = _decode(values)
    fast = _common_shape_times(pl.Series(times))
    assert (fast is None) == (odd is not None)  # the fast parse runs for common batches only
    expected_ts, expected_received = _format_parse(times), _format_parse(received)
    ok = [i for i, t in enumerate(expected_ts) if t is not None]
    assert accepted["seq"].to_list() == ok
    assert accepted["ts"].to_list() == [expected_ts[i] for i in ok]
    assert accepted["received_at"].to_list() == [expected_received[i] for i in ok]
    assert rejected["reason"].to_list() == [
        "malformed: ts is not RFC 3339 with an offset" for t in expected_ts if t is None
    ]


def _chunk(values: list[bytes], first: int) -> RecordBatch:
    from ingest_service.processor.ndjson import parse_chunk
    from ingest_service.processor.packed import Packed

    n = len(values)
    packed = Packed.of(values)
    offsets = list(range(first, first + n))
    return RecordBatch(packed, Packed.of([None] * n), [first % 3] * n, offsets, parse_chunk(packed))


@pytest.mark.parametrize(
    ("odd_chunk", "unifies"),
    [
        (None, True),
        # other fields of readings, a column the others lack: the parses unify
        ([encode({**event(seq=90, readings={"co2": 400}), "rejected": "x"})], True),
        # whole where the others are not: int64 meets double
        ([encode(event(seq=90, readings={"temperature": 20, "voc": 2}))], True),
        ([encode(event(seq=90)), b"not json"], False),  # the member could not parse it
        ([encode(event(seq=90, readings={"temperature": "hot"}))], False),  # other types
        # a type the whole parse would not give: it reads both as strings
        ([encode({**event(seq=90), "room": "2026-01-01T00:00:00"})], False),
    ],
)
def test_chunks_parsed_in_the_member_decode_as_the_decode_parses_them(
    odd_chunk: list[bytes] | None, unifies: bool
) -> None:
    chunks = [
        [
            encode(event(seq=10 * c + i, readings={"temperature": 20.0 + i, "voc": i}))
            for i in range(4)
        ]
        for c in range(3)
    ] + ([] if odd_chunk is None else [odd_chunk])
    parts = [_chunk(values, 100 * i) for i, values in enumerate(chunks)]
    assert all(p.parsed is not None for p in parts[:3])
    joined = RecordBatch.concat(parts)
    # the poller splits at a batch's size, the checkpoint drops what is stored already
    for batch in (
        joined,
        joined[2:],
        joined[:7],
        joined.compress([i % 3 != 1 for i in range(len(joined))]),
    ):
        assert (batch.parsed is not None) == unifies
        if batch.parsed is not None:
            assert batch.parsed.num_rows == len(batch)
        unparsed = RecordBatch(batch.values, batch.keys, batch.partitions, batch.offsets)
        accepted, rejected = decode(batch, now=NOW, limits=Limits(), promoted={"voc": pa.int64()})
        again, again_rejected = decode(
            unparsed, now=NOW, limits=Limits(), promoted={"voc": pa.int64()}
        )
        assert accepted.equals(again) and rejected.equals(again_rejected)
        assert len(accepted) >= 4  # rows of several chunks were compared


def test_a_fleets_chunks_of_several_shapes_are_decoded_from_the_members_parses() -> None:
    """The simulator's fleet, polled in small chunks: their parses have different columns
    (a chunk holds some device types only), and still stand for one parse of the batch."""
    from simulator.fleet import Fleet

    fleet = Fleet.generate(300, seed=3)
    start = NOW.replace(second=0, microsecond=0) - dt.timedelta(minutes=20)
    values = [value for _, value in fleet.kafka_records(start, 3_000)]
    parts = [_chunk(values[i : i + 250], i) for i in range(0, len(values), 250)]
    shapes = {p.parsed.schema.to_string() for p in parts if p.parsed is not None}
    assert len(shapes) > 1, "the chunks all parsed alike: the test proves nothing"
    batch = RecordBatch.concat(parts)
    assert batch.parsed is not None
    unparsed = RecordBatch(batch.values, batch.keys, batch.partitions, batch.offsets)
    accepted, rejected = decode(batch, now=NOW, limits=Limits())
    again, again_rejected = decode(unparsed, now=NOW, limits=Limits())
    assert accepted.equals(again) and rejected.equals(again_rejected)
    assert len(accepted) > 2_000

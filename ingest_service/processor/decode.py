"""Decode and validate a batch of Kafka record values, vectorized.

The fast path parses the whole batch as one NDJSON document with pyarrow (or takes
the Kafka member's parse of it, :attr:`RecordBatch.parsed`) and validates it with
polars expressions: no Python loop per event. Only when the
document does not parse (a line that is not JSON, a field whose type changes
between lines) is the batch split in halves, recursively, so the bad lines
are isolated and every good line is kept.

Every input record ends in exactly one of the two outputs: ``accepted`` (the
``telemetry`` columns, without ``ingested_at``, ``late`` and ``event_date``,
which the processor adds) or ``rejected`` (``reason`` plus the raw record and
its source, and the tenant, building and receipt time the gateway stamped, when it
did). A record with a ``rejected`` field is the gateway's note of a refusal it
attributed to a known device (:meth:`ingest_service.gateway.core.Gateway.reject`): it
is rejected with ``gateway: <reason>``.

Readings with unknown names go to ``extra`` (a JSON object), except those the
table has a promoted column for (``promoted``, see :mod:`workbench.lake.promote`):
their value goes to that column when the column's type holds it exactly, and
stays in ``extra`` otherwise. A promoted reading never rejects an event, so
which records are accepted does not depend on the table's columns.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from ingest_service.processor import ndjson
from ingest_service.processor.packed import Packed
from workbench.events import DEVICE_TYPES, KNOWN_READINGS
from workbench.lake import schemas

__all__ = ["GATEWAY_REFUSAL", "Limits", "Packed", "RecordBatch", "decode"]

logger = logging.getLogger(__name__)

# how the reason of a rejected row that is the gateway's note of a refusal begins
GATEWAY_REFUSAL = "gateway: "

_DType: TypeAlias = Any

_FLOAT_READINGS = [k for k, t in KNOWN_READINGS.items() if t is float]
_BOOL_READINGS = [k for k, t in KNOWN_READINGS.items() if t is bool]
_REQUIRED_STRINGS = ("device_id", "tenant_id", "building_id", "device_type")
_OPTIONAL_STRINGS = ("room", "protocol")
_TS_FORMAT = "%Y-%m-%dT%H:%M:%S%.f%#z"
# The shape most times have, which pyarrow's cast parses as _TS_FORMAT does (_as_ts).
_COMMON_TS = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$"


@dataclass(frozen=True)
class Limits:
    """What a plausible event looks like; anything outside is rejected as out of range."""

    max_future_s: float = 300.0
    earliest: dt.datetime = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    temperature: tuple[float, float] = (-60.0, 120.0)
    humidity: tuple[float, float] = (0.0, 100.0)
    light: tuple[float, float] = (0.0, 200_000.0)


@dataclass
class RecordBatch:
    """The columns of a polled batch of Kafka records, in offset order per partition.

    ``values`` and ``keys`` are lists or :class:`Packed`; ``partitions`` and
    ``offsets`` lists or numpy arrays (the Kafka member sends packed values and
    arrays, tests build lists). ``parsed``: the values already parsed
    (:func:`~ingest_service.processor.ndjson.parse`, a row per record), or None.
    """

    values: Sequence[bytes | None]
    keys: Sequence[bytes | None]
    partitions: Sequence[int] | np.ndarray[Any, Any]
    offsets: Sequence[int] | np.ndarray[Any, Any]
    parsed: pa.Table | None = None

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, index: slice) -> RecordBatch:
        parsed = None
        if self.parsed is not None:
            start, stop, _ = index.indices(len(self))
            parsed = self.parsed.slice(start, max(0, stop - start))
        return RecordBatch(
            self.values[index],
            self.keys[index],
            self.partitions[index],
            self.offsets[index],
            parsed,
        )

    @staticmethod
    def concat(parts: Sequence[RecordBatch]) -> RecordBatch:
        """One batch holding ``parts`` one after the other (packed, arrays), with their
        parsed tables joined when every part has one and their types unify (see
        :func:`_joined_parse`); otherwise the decode parses the joined values itself."""
        if len(parts) == 1:
            return parts[0]
        tables = [p.parsed for p in parts if p.parsed is not None]
        parsed = _joined_parse(tables) if len(tables) == len(parts) else None
        return RecordBatch(
            Packed.concat([Packed.of(p.values) for p in parts]),
            Packed.concat([Packed.of(p.keys) for p in parts]),
            np.concatenate([np.asarray(p.partitions, np.int32) for p in parts]),
            np.concatenate([np.asarray(p.offsets, np.int64) for p in parts]),
            parsed,
        )

    def compress(self, mask: Sequence[bool]) -> RecordBatch:
        """The records where ``mask`` is true."""
        keep = np.flatnonzero(np.asarray(mask, dtype=bool)).tolist()
        return RecordBatch(
            [self.values[i] for i in keep],
            [self.keys[i] for i in keep],
            [int(self.partitions[i]) for i in keep],
            [int(self.offsets[i]) for i in keep],
            None if self.parsed is None else self.parsed.take(keep),
        )


def _joined_parse(tables: Sequence[pa.Table]) -> pa.Table | None:
    """The chunks' parses as one table, standing for one parse of their joined values;
    None when their types do not unify.

    Chunks differ in columns (a chunk without a gateway refusal has no ``rejected``)
    and in the fields of ``readings`` (a chunk of a few hundred records holds some
    device types only), and a number may be whole in one chunk and not in the next.
    pyarrow's permissive promotion joins them as the parse of the whole joins its
    blocks: a missing column or field is null, int64 meets double as double, fields
    keep their order of first appearance. It refuses where the whole parse refuses
    (a string meets a number) and also where the whole parse would give another
    type (a time-like string meets a plain one, an integer beyond 2**53 meets a
    double): then the decode parses the values itself, so the member's parse is used
    only where it gives what the decode's own would.
    """
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None


def decode(
    batch: RecordBatch,
    *,
    now: dt.datetime,
    limits: Limits,
    promoted: Mapping[str, pa.DataType] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split ``batch`` into (accepted telemetry rows, rejected rows with a reason);
    ``promoted`` names the table's promoted reading columns and their types.

    >>> import datetime as dt
    >>> ok = b'{"device_id":"d1","seq":1,"ts":"2026-01-01T00:00:00Z","tenant_id":"t",'
    >>> ok += b'"building_id":"b","device_type":"environment","readings":{"temperature":20}}'
    >>> acc, rej = decode(RecordBatch([ok, b"nope"], [None, None], [0, 0], [0, 1]),
    ...                   now=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), limits=Limits())
    >>> acc["temperature"].to_list(), rej["reason"].to_list()
    ([20.0], ['malformed: not valid JSON'])
    >>> co2 = ok.replace(b'"temperature":20', b'"co2":412,"voc":3')
    >>> acc, _ = decode(RecordBatch([co2], [None], [0], [0]), now=dt.datetime(2026, 1, 1,
    ...                 tzinfo=dt.UTC), limits=Limits(), promoted={"co2": pa.float64()})
    >>> acc["co2"].to_list(), acc["extra"].to_list()
    ([412.0], ['{"voc":3}'])
    """
    columns = _promoted_dtypes(promoted or {})
    source = pl.DataFrame(
        {
            "_row": pl.Series(range(len(batch)), dtype=pl.Int64),
            "source_partition": pl.Series(batch.partitions, dtype=pl.Int32),
            "source_offset": pl.Series(batch.offsets, dtype=pl.Int64),
        }
    )
    pieces: list[pl.DataFrame] = []
    malformed: list[tuple[int, str]] = []
    if batch.parsed is not None and batch.parsed.num_rows == len(batch):
        pieces.append(_frame(batch.parsed, 0))  # parsed in the Kafka member
    else:
        _parse(batch.values, 0, pieces, malformed)
    if not pieces:  # nothing parsed: the columns still have to exist, with their types
        pieces.append(pl.DataFrame(schema={"_row": pl.Int64}))
    frames = [_normalize(p, now=now, limits=limits, promoted=columns) for p in pieces]
    if malformed:
        rows, reasons = zip(*malformed, strict=True)
        frames.append(
            pl.DataFrame({"_row": pl.Series(rows, dtype=pl.Int64), "reason": list(reasons)})
        )
    if len(pieces) == 1 and not malformed:
        # the common case: one parse, rows already in record order
        checked = pl.concat([source.drop("_row"), frames[0]], how="horizontal")
    else:
        checked = (
            pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame({"_row": []})
        )
        checked = source.join(checked, on="_row", how="left").sort("_row")
    accepted = checked.filter(pl.col("reason").is_null()).select(*_ACCEPTED_COLUMNS, *columns)
    bad = checked.filter(pl.col("reason").is_not_null())
    rejected = bad.select(
        "reason",
        pl.Series("raw", [batch.values[i] or b"" for i in bad["_row"]], dtype=pl.Binary),
        pl.Series(
            "key",
            [(batch.keys[i] or b"").decode("utf-8", "replace") for i in bad["_row"]],
            dtype=pl.String,
        ),
        pl.col("device_id") if "device_id" in bad.columns else pl.lit(None, pl.String),
        pl.col("seq") if "seq" in bad.columns else pl.lit(None, pl.Int64),
        "source_partition",
        "source_offset",
        # whom the refusal counts against (rejected-rate alarms): as the gateway stamped it
        *(
            pl.col(c) if c in bad.columns else pl.lit(None, t).alias(c)
            for c, t in _ATTRIBUTION.items()
        ),
    )
    return accepted, rejected


_ATTRIBUTION = {
    "tenant_id": pl.String(),
    "building_id": pl.String(),
    "received_at": pl.Datetime("us", "UTC"),
}


# The telemetry columns in table order, less those the processor adds when it writes.
_ACCEPTED_COLUMNS = [
    name for name in schemas.TELEMETRY.names if name not in {"ingested_at", "late", "event_date"}
]


def _parse(
    values: Sequence[bytes | None],
    first_row: int,
    pieces: list[pl.DataFrame],
    malformed: list[tuple[int, str]],
) -> None:
    """Parse ``values`` as NDJSON; on failure split in halves until the bad lines are alone."""
    if not values:
        return
    packed = Packed.of(values)
    try:
        pieces.append(_frame(ndjson.parse(packed), first_row))
        return
    except ValueError as exc:  # pyarrow.ArrowInvalid too
        if len(values) == 1:
            malformed.append((first_row, _why_malformed(values[0], exc)))
            return
    half = len(values) // 2
    _parse(packed[:half], first_row, pieces, malformed)
    _parse(packed[half:], first_row + half, pieces, malformed)


def _frame(table: pa.Table, first_row: int) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame.with_columns(_row=pl.int_range(len(frame)) + first_row)


def _why_malformed(value: bytes | None, exc: Exception) -> str:
    if not value:
        return "malformed: empty record"
    try:
        parsed = json.loads(value)
    except ValueError:
        return "malformed: not valid JSON"
    if not isinstance(parsed, dict):
        return "malformed: not a JSON object"
    return f"malformed: {str(exc).splitlines()[0][:200]}"


def _promoted_dtypes(promoted: Mapping[str, pa.DataType]) -> dict[str, _DType]:
    """The polars types of the promoted reading columns."""
    if not promoted:
        return {}
    empty = pa.schema([pa.field(n, t) for n, t in promoted.items()]).empty_table()
    frame = pl.from_arrow(empty)
    assert isinstance(frame, pl.DataFrame)
    return dict(frame.schema)


def _normalize(
    frame: pl.DataFrame, *, now: dt.datetime, limits: Limits, promoted: Mapping[str, _DType]
) -> pl.DataFrame:
    """Cast an inferred frame to the telemetry types and name each row's first problem."""
    cols = set(frame.columns)
    problems: list[pl.Expr] = []  # evaluated in order: the first failing check is the reason
    out: list[pl.Expr] = [pl.col("_row")]

    def raw(name: str) -> pl.Expr:
        return pl.col(name) if name in cols else pl.lit(None)

    if frame.schema.get("rejected") == pl.String:
        # a refusal the gateway attributed to a known device (no event: a marker)
        problems.append(
            pl.when(pl.col("rejected").is_not_null()).then(
                pl.lit(GATEWAY_REFUSAL) + pl.col("rejected")
            )
        )
    strings: dict[str, pl.Expr] = {}
    for name in _REQUIRED_STRINGS:
        dtype = frame.schema.get(name)
        good = pl.col(name).cast(pl.String) if dtype == pl.String else pl.lit(None, pl.String)
        problems.append(pl.when(good.is_null()).then(pl.lit(_missing_or_wrong(name, dtype))))
        out.append(good.alias(name))
        strings[name] = good
    problems.append(
        # not pl.col("device_type"): a batch whose records all lack it has no such column
        pl.when(~strings["device_type"].is_in(DEVICE_TYPES)).then(
            pl.lit("invalid: device_type is not one of " + "|".join(DEVICE_TYPES))
        )
    )
    seq = _as_number(frame, "seq", pl.Int64)
    problems.append(
        pl.when(seq.is_null()).then(pl.lit(_missing_or_wrong("seq", frame.schema.get("seq"))))
    )
    problems.append(pl.when(seq < 0).then(pl.lit("out_of_range: seq is negative")))
    out.append(seq.alias("seq"))

    ts = _as_ts(frame, "ts")
    problems.append(
        pl.when(raw("ts").is_null())
        .then(pl.lit("missing_field: ts"))
        .when(ts.is_null())
        .then(pl.lit("malformed: ts is not RFC 3339 with an offset"))
    )
    future = now + dt.timedelta(seconds=limits.max_future_s)
    problems.append(
        pl.when(ts > pl.lit(future))
        .then(pl.lit("out_of_range: ts is in the future"))
        .when(ts < pl.lit(limits.earliest))
        .then(pl.lit("out_of_range: ts is too old"))
    )
    out.append(ts.alias("ts"))
    out.append(_as_ts(frame, "received_at").alias("received_at"))
    out.append(_as_number(frame, "floor", pl.Int32).alias("floor"))
    for name in _OPTIONAL_STRINGS:
        dtype = frame.schema.get(name)
        ok = dtype in (pl.String, pl.Int64, pl.Float64)
        out.append((pl.col(name).cast(pl.String) if ok else pl.lit(None, pl.String)).alias(name))

    readings = frame.schema.get("readings")
    if not isinstance(readings, pl.Struct):
        problems.append(pl.lit(_missing_or_wrong("readings", readings)))
        fields: dict[str, _DType] = {}
    else:
        fields = {f.name: f.dtype for f in readings.fields}
    for name in _FLOAT_READINGS + _BOOL_READINGS:
        kind = fields.get(name)
        value_raw = pl.col("readings").struct.field(name) if kind is not None else pl.lit(None)
        value = _cast_reading(
            value_raw, kind, pl.Float64 if name in _FLOAT_READINGS else pl.Boolean
        )
        problems.append(
            pl.when(value_raw.is_not_null() & value.is_null()).then(
                pl.lit(f"wrong_type: readings.{name}")
            )
        )
        if name in _FLOAT_READINGS:
            lo, hi = getattr(limits, name)
            problems.append(
                pl.when((value < lo) | (value > hi) | value.is_nan()).then(
                    pl.lit(f"out_of_range: readings.{name} outside [{lo:g}, {hi:g}]")
                )
            )
        out.append(value.alias(name))
    unknown = [n for n in fields if n not in KNOWN_READINGS]
    out.append(pl.lit(None, pl.String).alias("extra"))
    leftovers: dict[str, pl.Expr] = {}  # per promoted reading: what its column cannot hold
    for name, target in promoted.items():
        kind = fields.get(name)
        value_raw = pl.col("readings").struct.field(name) if kind is not None else pl.lit(None)
        value = _cast_promoted(value_raw, kind, target)
        out.append(value.alias(name))
        leftovers[name] = pl.when(value.is_null()).then(value_raw).alias(name)

    reason = pl.coalesce(*problems) if problems else pl.lit(None, pl.String)
    result = frame.select(*out, reason.alias("reason"))
    if unknown:
        result = result.with_columns(_extra(frame, unknown, leftovers))
    return result


def _missing_or_wrong(name: str, dtype: object) -> str:
    return f"missing_field: {name}" if dtype is None or dtype == pl.Null else f"wrong_type: {name}"


def _as_number(frame: pl.DataFrame, name: str, target: _DType) -> pl.Expr:
    dtype = frame.schema.get(name)
    if dtype is None or not (dtype.is_numeric() or dtype == pl.String):
        return pl.lit(None, target)
    return pl.col(name).cast(target, strict=False)


def _as_ts(frame: pl.DataFrame, name: str) -> pl.Expr:
    dtype = frame.schema.get(name)
    if dtype == pl.String:
        fast = _common_shape_times(frame[name])
        if fast is not None:
            return pl.lit(fast)
        return pl.col(name).str.to_datetime(
            _TS_FORMAT, time_zone="UTC", time_unit="us", strict=False
        )
    if isinstance(dtype, pl.Datetime):  # pyarrow recognised the timestamp itself
        if dtype.time_zone is None:
            return pl.lit(None, pl.Datetime("us", "UTC"))  # no offset: refuse to guess
        return pl.col(name).dt.convert_time_zone("UTC").dt.cast_time_unit("us")
    return pl.lit(None, pl.Datetime("us", "UTC"))


def _common_shape_times(strings: pl.Series) -> pl.Series | None:
    """``strings`` parsed as times when every one has RFC 3339's common shape (what
    devices and the gateway send), else None and :data:`_TS_FORMAT` decides.

    Why: polars' format parse costs about 1 us per value, a fifth of the whole decode;
    the shape check plus pyarrow's ISO 8601 cast cost about a third of that. The cast
    alone accepts more than the format (a space for ``T``, no seconds), so only strings
    of the shape are given to it; within the shape the two agree, and what the cast
    refuses (February 30th, a leap second, a +24:00 offset) sends the whole column to
    the format parse, which rejects or accepts it as before.
    """
    arrow = strings.to_arrow()
    if not pc.all(pc.match_substring_regex(arrow, _COMMON_TS)).as_py():
        return None  # another shape, or no strings at all
    try:
        times = arrow.cast(pa.timestamp("us", "UTC"))
    except pa.ArrowInvalid:
        return None
    return pl.Series(strings.name, times)


def _cast_reading(value: pl.Expr, dtype: _DType | None, target: _DType) -> pl.Expr:
    if dtype is None or dtype == pl.Null:
        return pl.lit(None, target)
    if target == pl.Boolean:
        if dtype == pl.Boolean:
            return value
        if dtype == pl.String:
            return value.replace_strict(
                {"true": True, "false": False}, default=None, return_dtype=pl.Boolean
            )
        return pl.lit(None, pl.Boolean)
    if dtype.is_numeric() or dtype == pl.String:
        return value.cast(pl.Float64, strict=False)
    return pl.lit(None, pl.Float64)


def _cast_promoted(value: pl.Expr, dtype: _DType | None, target: _DType) -> pl.Expr:
    """``value`` in a promoted column's type where that type holds it exactly, else null:
    numbers for floating columns, whole numbers for integer columns, JSON booleans and
    strings for boolean and string columns. :func:`workbench.lake.promote.coerce` is the
    same rule for one value."""
    if dtype is None or dtype == pl.Null:
        return pl.lit(None, target)
    if target.is_float() and dtype.is_numeric():
        return value.cast(target, strict=False)
    if target.is_integer() and dtype.is_integer():
        return value.cast(target, strict=False)
    if target.is_integer() and dtype.is_float():
        whole = (value == value.round(0)) & (value.abs() < 2.0**63)
        return pl.when(whole).then(value.cast(target, strict=False)).otherwise(None)
    if target == dtype and target in (pl.Boolean, pl.String):
        return value
    return pl.lit(None, target)


def _extra(frame: pl.DataFrame, unknown: list[str], leftovers: dict[str, pl.Expr]) -> pl.Series:
    """Readings with unknown names as a JSON object per row (only the names a row has);
    ``leftovers`` replaces the values of promoted readings (null where their column took
    the value). Only rows holding one of them are encoded (the others are null): the
    encoding and its clean-up cost about a microsecond per row, and most rows hold only
    known readings."""
    fields = [leftovers.get(n, pl.col("readings").struct.field(n)) for n in unknown]
    encoded = (
        pl.struct(fields)
        .struct.json_encode()
        .str.replace_all(r'"(?:[^"\\]|\\.)*":null,?', "")  # names this row lacks
        .str.replace(r",}$", "}")
    )
    holding = frame.select(pl.any_horizontal(f.is_not_null() for f in fields))[:, 0]
    extra = pl.repeat(None, len(frame), dtype=pl.String, eager=True).alias("extra")
    if not holding.any():
        return extra
    some = frame.filter(holding).select(pl.when(encoded == "{}").then(None).otherwise(encoded))
    return extra.scatter(holding.arg_true(), some[:, 0])


def _jsonable(value: object) -> object:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value

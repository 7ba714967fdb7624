"""Arrow types as Hive sees them, and Arrow columns in the text form Hive clients expect.

>>> hive_type(pa.timestamp("us", tz="UTC")), hive_type(pa.list_(pa.float64()))
('TIMESTAMP', 'ARRAY<DOUBLE>')
>>> hive_type(pa.decimal128(10, 2))
'DECIMAL(10,2)'
>>> as_hive_text(pa.array([dt.datetime(2026, 11, 27, 5, 30, tzinfo=dt.UTC), None],
...                       pa.timestamp("us", tz="UTC"))).to_pylist()
['2026-11-27 05:30:00.000000', None]
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["Column", "as_hive_text", "hive_type", "normalize_table", "primitive_of"]


@dataclasses.dataclass(frozen=True)
class Column:
    """A result or table column: its name, Hive type name and (for DECIMAL) precision/scale."""

    name: str
    hive_type: str
    precision: int | None = None
    scale: int | None = None

    @property
    def primitive(self) -> str:
        """The leading type word: ``ARRAY<DOUBLE>`` -> ``ARRAY``, ``DECIMAL(10,2)`` ->
        ``DECIMAL``."""
        return primitive_of(self.hive_type)

    @classmethod
    def of(cls, field: pa.Field) -> Column:
        """The column of an Arrow field."""
        t = field.type
        if pa.types.is_decimal(t):
            return cls(field.name, hive_type(t), t.precision, t.scale)
        return cls(field.name, hive_type(t))


def primitive_of(hive: str) -> str:
    """The leading word of a Hive type name."""
    for sep in ("<", "("):
        hive = hive.split(sep, 1)[0]
    return hive


def hive_type(t: pa.DataType) -> str:
    """The Hive type name of an Arrow type (complex types spelled out, e.g. ``ARRAY<INT>``)."""
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_int8(t):
        return "TINYINT"
    if pa.types.is_int16(t) or pa.types.is_uint8(t):
        return "SMALLINT"
    if pa.types.is_int32(t) or pa.types.is_uint16(t):
        return "INT"
    if pa.types.is_integer(t):
        return "BIGINT"
    if pa.types.is_float16(t) or pa.types.is_float32(t):
        return "FLOAT"
    if pa.types.is_floating(t):
        return "DOUBLE"
    if pa.types.is_decimal(t):
        return f"DECIMAL({t.precision},{t.scale})"
    if pa.types.is_timestamp(t):
        return "TIMESTAMP"
    if pa.types.is_date(t):
        return "DATE"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return "BINARY"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return f"ARRAY<{hive_type(t.value_type)}>"
    if pa.types.is_map(t):
        return f"MAP<{hive_type(t.key_type)},{hive_type(t.item_type)}>"
    if pa.types.is_struct(t):
        inner = ",".join(f"{f.name}:{hive_type(f.type)}" for f in t)
        return f"STRUCT<{inner}>"
    return "STRING"


def normalize_table(table: pa.Table) -> pa.Table:
    """DuckDB's HUGEINT sums arrive as DECIMAL(38,0): make them BIGINT when they fit (as
    Hive's ``sum(bigint)`` is), dictionary columns plain."""
    columns, fields = [], []
    for field, column in zip(table.schema, table.columns, strict=True):
        t = field.type
        if pa.types.is_decimal(t) and t.scale == 0 and t.precision == 38:
            with contextlib.suppress(pa.ArrowInvalid, pa.ArrowNotImplementedError):
                column = column.cast(pa.int64())
        elif pa.types.is_dictionary(t):
            column = column.cast(t.value_type)
        columns.append(column)
        fields.append(pa.field(field.name, column.type))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def as_hive_text(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The column as strings the way HiveServer2 sends non-numeric types (TIMESTAMP as
    ``yyyy-MM-dd HH:mm:ss.ffffff`` in UTC, DATE ``yyyy-MM-dd``, complex types as JSON)."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    t = array.type
    if pa.types.is_timestamp(t):
        naive = array.cast(pa.timestamp(t.unit, tz="UTC")).cast(pa.timestamp("us"))
        return pc.strftime(naive, format="%Y-%m-%d %H:%M:%S")
    if (
        pa.types.is_list(t)
        or pa.types.is_large_list(t)
        or pa.types.is_map(t)
        or pa.types.is_struct(t)
        or pa.types.is_fixed_size_list(t)
    ):
        return pa.array(
            [
                None if v is None else json.dumps(v, default=_json_default)
                for v in array.to_pylist()
            ],
            pa.string(),
        )
    return array.cast(pa.string())

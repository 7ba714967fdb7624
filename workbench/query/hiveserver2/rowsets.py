"""Query results on the wire: Arrow columns as TCLIService row sets and type descriptors.

:func:`table_schema` describes a result's columns (``GetResultSetMetadata``);
:func:`rowset` slices a materialised result into a column-based row set (protocol
V6 and later, what pyhive and modern JDBC ask for) or a row-based one. ``MAP`` and
``STRUCT`` values travel as JSON text and are described as ``STRING``; an ``ARRAY``
is described with its element type, its values sent as text.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from TCLIService import ttypes as t

from workbench.query.engine import QueryResult
from workbench.query.types import Column, as_hive_text

__all__ = ["rowset", "table_schema"]

_TYPE_IDS = {
    "BOOLEAN": t.TTypeId.BOOLEAN_TYPE,
    "TINYINT": t.TTypeId.TINYINT_TYPE,
    "SMALLINT": t.TTypeId.SMALLINT_TYPE,
    "INT": t.TTypeId.INT_TYPE,
    "BIGINT": t.TTypeId.BIGINT_TYPE,
    "FLOAT": t.TTypeId.FLOAT_TYPE,
    "DOUBLE": t.TTypeId.DOUBLE_TYPE,
    "STRING": t.TTypeId.STRING_TYPE,
    "TIMESTAMP": t.TTypeId.TIMESTAMP_TYPE,
    "BINARY": t.TTypeId.BINARY_TYPE,
    "DECIMAL": t.TTypeId.DECIMAL_TYPE,
    "DATE": t.TTypeId.DATE_TYPE,
    "ARRAY": t.TTypeId.ARRAY_TYPE,
    "MAP": t.TTypeId.MAP_TYPE,
    "STRUCT": t.TTypeId.STRUCT_TYPE,
}


def _type_desc(column: Column) -> t.TTypeDesc:
    prim = column.primitive
    if prim == "ARRAY":
        inner = column.hive_type[len("ARRAY<") : -1]
        elem = _TYPE_IDS.get(Column("", inner).primitive, t.TTypeId.STRING_TYPE)
        return t.TTypeDesc(
            types=[
                t.TTypeEntry(arrayEntry=t.TArrayTypeEntry(objectTypePtr=1)),
                t.TTypeEntry(primitiveEntry=t.TPrimitiveTypeEntry(type=elem)),
            ]
        )
    if prim in ("MAP", "STRUCT"):  # sent as JSON text; described as STRING
        prim = "STRING"
    qualifiers = None
    if prim == "DECIMAL" and column.precision is not None:
        qualifiers = t.TTypeQualifiers(
            qualifiers={
                "precision": t.TTypeQualifierValue(i32Value=column.precision),
                "scale": t.TTypeQualifierValue(i32Value=column.scale or 0),
            }
        )
    return t.TTypeDesc(
        types=[
            t.TTypeEntry(
                primitiveEntry=t.TPrimitiveTypeEntry(
                    type=_TYPE_IDS.get(prim, t.TTypeId.STRING_TYPE), typeQualifiers=qualifiers
                )
            )
        ]
    )


def table_schema(columns: list[Column]) -> t.TTableSchema:
    """The TCLIService description of a result with ``columns``."""
    return t.TTableSchema(
        columns=[
            t.TColumnDesc(columnName=c.name, typeDesc=_type_desc(c), position=i + 1, comment="")
            for i, c in enumerate(columns)
        ]
    )


def _nulls(array: pa.Array) -> bytes:
    if array.null_count == 0:
        return b""
    mask = np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    return bytes(np.packbits(mask, bitorder="little").tobytes())


def _tcolumn(column: Column, array: pa.Array) -> t.TColumn:
    prim = column.primitive
    nulls = _nulls(array)
    if prim == "BOOLEAN":
        return t.TColumn(boolVal=t.TBoolColumn(array.fill_null(False).to_pylist(), nulls))
    if prim in ("TINYINT", "SMALLINT", "INT", "BIGINT"):
        values = array.fill_null(0).to_pylist()
        kind = {"TINYINT": "byteVal", "SMALLINT": "i16Val", "INT": "i32Val", "BIGINT": "i64Val"}
        cls = {
            "byteVal": t.TByteColumn,
            "i16Val": t.TI16Column,
            "i32Val": t.TI32Column,
            "i64Val": t.TI64Column,
        }[kind[prim]]
        return t.TColumn(**{kind[prim]: cls(values, nulls)})
    if prim in ("FLOAT", "DOUBLE"):
        return t.TColumn(doubleVal=t.TDoubleColumn(array.fill_null(0.0).to_pylist(), nulls))
    if prim == "BINARY":
        return t.TColumn(binaryVal=t.TBinaryColumn(array.fill_null(b"").to_pylist(), nulls))
    text = as_hive_text(array)
    return t.TColumn(stringVal=t.TStringColumn(text.fill_null("").to_pylist(), nulls))


def _tvalue(column: Column, value: Any) -> t.TColumnValue:
    prim = column.primitive
    if prim == "BOOLEAN":
        return t.TColumnValue(boolVal=t.TBoolValue(value))
    if prim == "TINYINT":
        return t.TColumnValue(byteVal=t.TByteValue(value))
    if prim == "SMALLINT":
        return t.TColumnValue(i16Val=t.TI16Value(value))
    if prim == "INT":
        return t.TColumnValue(i32Val=t.TI32Value(value))
    if prim == "BIGINT":
        return t.TColumnValue(i64Val=t.TI64Value(value))
    if prim in ("FLOAT", "DOUBLE"):
        return t.TColumnValue(doubleVal=t.TDoubleValue(value))
    return t.TColumnValue(stringVal=t.TStringValue(value))


def rowset(result: QueryResult, start: int, count: int, columnar: bool) -> t.TRowSet:
    """Rows ``start`` to ``start + count`` of ``result``, by column when ``columnar``."""
    part = result.table.slice(start, count)
    if columnar:
        columns = [
            _tcolumn(c, part.column(i).combine_chunks()) for i, c in enumerate(result.columns)
        ]
        return t.TRowSet(startRowOffset=start, rows=[], columns=columns)
    texts = []
    for i, c in enumerate(result.columns):
        arr = part.column(i).combine_chunks()
        if c.primitive in ("BOOLEAN", "TINYINT", "SMALLINT", "INT", "BIGINT", "FLOAT", "DOUBLE"):
            texts.append(arr.to_pylist())
        else:
            texts.append(as_hive_text(arr).to_pylist())
    rows = [
        t.TRow(colVals=[_tvalue(c, texts[i][r]) for i, c in enumerate(result.columns)])
        for r in range(part.num_rows)
    ]
    return t.TRowSet(startRowOffset=start, rows=rows)

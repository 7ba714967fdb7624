"""The NDJSON parse of a batch's record values, shared by the processor and its Kafka
member.

The librdkafka member parses each chunk it polls and sends the table beside the raw
records, so the parse (about half of the decode's time) runs in the member's process,
on the other core, while the processor stores the previous batch
(:class:`~ingest_service.processor.decode.RecordBatch` carries the table through
slicing, filtering and joining, and the decode parses again itself whenever the
chunks' tables cannot stand for one parse of the whole batch).
"""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.json as pa_json

from ingest_service.processor.packed import Packed

__all__ = ["parse", "parse_chunk"]

# Times stay text (pyarrow would guess timestamps and drop offsets); the rest is inferred.
_PARSE_OPTIONS = pa_json.ParseOptions(
    explicit_schema=pa.schema([("ts", pa.string()), ("received_at", pa.string())]),
    unexpected_field_behavior="infer",
)
_READ_OPTIONS = pa_json.ReadOptions(block_size=1 << 26)


def parse(packed: Packed) -> pa.Table:
    """``packed`` as one table, a row per record; raises ``ValueError`` (or
    ``pyarrow.ArrowInvalid``, a subclass) when a record is empty, is not one JSON object,
    or a field's type changes between records.

    >>> table = parse(Packed.of([b'{"seq":1}', b'{"seq":2,"x":"a"}']))
    >>> table.column_names, table.column("x").to_pylist()
    (['ts', 'received_at', 'seq', 'x'], [None, 'a'])
    """
    if packed.has_empty:  # the parse would skip the line
        raise ValueError("an empty record")
    table = pa_json.read_json(
        io.BytesIO(packed.joined), read_options=_READ_OPTIONS, parse_options=_PARSE_OPTIONS
    )
    if table.num_rows != len(packed):  # a line holding two objects
        raise ValueError("row count differs from record count")
    return table


def parse_chunk(packed: Packed) -> pa.Table | None:
    """:func:`parse`, or None when it fails (the processor then parses the batch, and
    isolates the bad records, itself)."""
    try:
        return parse(packed)
    except ValueError:
        return None

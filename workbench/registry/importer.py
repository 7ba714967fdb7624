"""Reading and checking a device CSV before :meth:`Registry.import_csv` commits it.

Columns: ``device_id, building_id, device_type`` and optionally ``floor, room,
protocol`` (empty protocol = ``http``). Every bad row is reported with its line
number (the header is line 1), all at once, and then nothing is applied.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path

import polars as pl

from workbench.events import DEVICE_TYPES
from workbench.exceptions import ImportRejected, InvalidInput
from workbench.registry.records import (
    FLOOR_RANGE,
    ID_MAX,
    ID_PATTERN,
    ROOM_MAX,
    protocols,
)

__all__ = ["ProgressFn", "read_devices_csv", "validate_devices"]

ProgressFn = Callable[[str, int, int], None]
"""``progress(stage, done, total)``, called while importing."""


def read_devices_csv(path: str | Path) -> pl.DataFrame:
    """The file's cells as strings (empty cells as ``""``), or :class:`InvalidInput`."""
    try:
        raw = pl.read_csv(path, infer_schema=False, empty_string_is_null=False)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise InvalidInput(f"cannot read {path}: {exc}", hint="pass a readable CSV file") from None
    return raw.with_columns(pl.all().fill_null(""))


def validate_devices(
    raw: pl.DataFrame,
    buildings: pl.DataFrame,
    report: ProgressFn,
    *,
    taken: Collection[str] = (),
) -> pl.DataFrame:
    """The rows of ``raw`` ready to merge (``tenant_id`` from ``buildings``, the
    ``building_id, tenant_id`` pairs the importer may use), or :class:`ImportRejected`
    listing every invalid row and why. ``taken``: device ids of other tenants, which
    the importer may not move into its own."""
    allowed = protocols()
    required = ("device_id", "building_id", "device_type")
    missing = [c for c in required if c not in raw.columns]
    unknown = [c for c in raw.columns if c not in (*required, "floor", "room", "protocol")]
    if missing or unknown:
        raise ImportRejected(
            "import file has the wrong columns"
            + (f": missing {', '.join(missing)}" if missing else "")
            + (f": unknown {', '.join(unknown)}" if unknown else ""),
            errors=[(1, "header")],
            hint="columns: device_id,building_id,device_type[,floor,room,protocol]",
        )
    for optional in ("floor", "room", "protocol"):
        if optional not in raw.columns:
            raw = raw.with_columns(pl.lit("", dtype=pl.String).alias(optional))
    frame = raw.with_row_index("line", offset=2).with_columns(
        pl.col(c).str.strip_chars() for c in ("device_id", "building_id", "device_type")
    )
    frame = (
        frame.with_columns(
            pl.when(pl.col("protocol").str.strip_chars() == "")
            .then(pl.lit("http"))
            .otherwise(pl.col("protocol").str.strip_chars())
            .alias("protocol"),
            pl.when(pl.col("room").str.strip_chars() == "")
            .then(None)
            .otherwise(pl.col("room").str.strip_chars())
            .alias("room"),
            pl.col("floor").str.strip_chars().cast(pl.Int64, strict=False).alias("floor_int"),
        )
        .join(buildings, on="building_id", how="left")
        .sort("line")
    )
    low, high = FLOOR_RANGE
    floor_text = pl.col("floor").str.strip_chars()
    whole = floor_text.str.contains(r"^[+-]?[0-9]+$")
    checks: list[tuple[pl.Expr, str]] = [
        (pl.col("device_id") == "", "device_id is empty"),
        (
            pl.col("device_id").str.len_chars() > ID_MAX,
            f"device_id is longer than {ID_MAX} characters",
        ),
        (
            (pl.col("device_id") != "")
            & (pl.col("device_id").str.len_chars() <= ID_MAX)
            & ~pl.col("device_id").str.contains(ID_PATTERN.pattern),
            "invalid device_id: use letters, digits, '.', '_', ':' or '-', "
            "starting with a letter or digit",
        ),
        (pl.col("device_id").is_duplicated(), "device_id appears more than once in the file"),
        (pl.col("device_id").is_in(list(taken)), "device_id is taken by another tenant"),
        (pl.col("tenant_id").is_null(), "unknown building_id"),
        (
            ~pl.col("device_type").is_in(DEVICE_TYPES),
            "device_type must be one of " + "|".join(DEVICE_TYPES),
        ),
        (
            ~pl.col("protocol").is_in(allowed),
            "protocol must be one of " + "|".join(allowed),
        ),
        ((floor_text != "") & ~whole, "floor must be a whole number"),
        (
            (floor_text != "")
            & whole
            & ~(pl.col("floor_int").is_between(low, high).fill_null(False)),
            f"floor is out of range: a floor is from {low} to {high}",
        ),
        (
            pl.col("room").str.strip_chars().str.len_chars() > ROOM_MAX,
            f"room is longer than {ROOM_MAX} characters",
        ),
        (
            pl.col("room").str.contains(r"[\x00-\x1f\x7f]").fill_null(False),
            "room holds a control character",
        ),
    ]
    errors: list[tuple[int, str]] = []
    chunk = 10_000
    for start in range(0, frame.height, chunk):
        part = frame.slice(start, chunk)
        bad = part.select(
            "line",
            *(
                pl.when(cond).then(pl.lit(msg)).alias(f"e{i}")
                for i, (cond, msg) in enumerate(checks)
            ),
        )
        for row in bad.iter_rows():
            errors.extend((int(row[0]), msg) for msg in row[1:] if msg is not None)
        report("validating", min(start + chunk, frame.height), frame.height)
    if frame.height == 0:
        errors.append((1, "no rows"))
    if errors:
        errors.sort()
        raise ImportRejected(
            f"{len(errors)} invalid row(s); nothing was imported "
            f"(first: line {errors[0][0]}: {errors[0][1]})",
            errors=errors,
            hint="fix the listed lines and import again",
        )
    return frame.with_columns(pl.col("floor_int").alias("floor")).drop("floor_int", "line")

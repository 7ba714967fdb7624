"""Tick frames → wire bytes, built with polars string expressions (no per-event json.dumps).

Three shapes of the same event:

* :func:`kafka_values` — the gateway's enriched record (:mod:`workbench.events`);
* :func:`device_payloads` — what a device POSTs to the gateway (docs/gateway.md, "HTTP API");
* :func:`truth_lines` — the ground-truth log line (device_id, seq, ts, readings, status).

A NaN reading (a faulty sensor) is written as JSON ``null``: JSON has no NaN,
and the receiver is expected to reject the reading as invalid. FBK1 devices
cannot send a NaN at all: their frame (and so the gateway's record) leaves the
reading out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import polars as pl

__all__ = ["EncodedFleet", "device_payloads", "kafka_values", "readings_json", "truth_lines"]


class EncodedFleet(Protocol):
    """What the encoders read of a :class:`simulator.fleet.Fleet` (named structurally:
    the fleet encodes its own Kafka records with this module)."""

    @property
    def device_ids(self) -> Sequence[str]:
        """Device ids by device index."""

    @property
    def _record_parts(self) -> tuple[pl.Series, pl.Series, list[bytes]]:
        """Per-device constant JSON fragments of the Kafka record, and the keys."""


_TS_FORMAT = "%Y-%m-%dT%H:%M:%S%.3fZ"


def _number(name: str) -> pl.Expr:
    col = pl.col(name)
    return pl.when(col.is_nan()).then(pl.lit("null")).otherwise(col.cast(pl.String))


def _boolean(name: str) -> pl.Expr:
    return pl.when(pl.col(name)).then(pl.lit("true")).otherwise(pl.lit("false"))


def _ts(name: str) -> pl.Expr:
    return pl.col(name).cast(pl.Datetime("ms", "UTC")).dt.strftime(_TS_FORMAT)


def readings_json() -> pl.Expr:
    """The ``readings`` object of each event, by device type (``kind``)."""
    environment = pl.concat_str(
        [
            pl.lit('{"temperature":'),
            _number("temperature"),
            pl.lit(',"humidity":'),
            _number("humidity"),
            pl.lit(',"light":'),
            _number("light"),
            pl.lit("}"),
        ]
    )
    # FBK1 cannot carry a NaN: a legacy device leaves the reading out of its frame.
    legacy_environment = pl.concat_str(
        [
            pl.lit("{"),
            pl.concat_str(
                [
                    pl.when(pl.col(name).is_nan())
                    .then(pl.lit(None, dtype=pl.String))
                    .otherwise(pl.concat_str([pl.lit(f'"{name}":'), pl.col(name).cast(pl.String)]))
                    for name in ("temperature", "humidity", "light")
                ],
                separator=",",
                ignore_nulls=True,
            ),
            pl.lit("}"),
        ]
    )
    smoke = pl.concat_str(
        [
            pl.lit('{"smoke":'),
            _boolean("smoke"),
            pl.lit(',"battery":'),
            _number("battery"),
            pl.lit("}"),
        ]
    )
    intrusion = pl.concat_str([pl.lit('{"intrusion":'), _boolean("intrusion"), pl.lit("}")])
    kind = pl.col("kind")
    return (
        pl.when((kind == 0) & (pl.col("protocol") == 1))
        .then(legacy_environment)
        .when(kind == 0)
        .then(environment)
        .when(kind == 1)
        .then(smoke)
        .otherwise(intrusion)
    )


def kafka_values(fleet: EncodedFleet, frame: pl.DataFrame) -> pl.Series:
    """One Kafka record value (bytes) per row of ``frame``."""
    head, meta, _ = fleet._record_parts
    idx = frame["device"]
    return (
        frame.select(
            pl.concat_str(
                [
                    head.gather(idx),
                    pl.col("seq").cast(pl.String),
                    pl.lit(',"ts":"'),
                    _ts("ts"),
                    pl.lit('","received_at":"'),
                    _ts("received"),
                    meta.gather(idx),
                    readings_json(),
                    pl.lit("}"),
                ]
            ).cast(pl.Binary)
        )
        .to_series()
        .alias("value")
    )


def device_payloads(frame: pl.DataFrame) -> pl.Series:
    """One device→gateway event object (JSON text) per row: ``{"ts", "seq", "readings"}``."""
    return (
        frame.select(
            pl.concat_str(
                [
                    pl.lit('{"ts":"'),
                    _ts("ts"),
                    pl.lit('","seq":'),
                    pl.col("seq").cast(pl.String),
                    pl.lit(',"readings":'),
                    readings_json(),
                    pl.lit("}"),
                ]
            )
        )
        .to_series()
        .alias("payload")
    )


def truth_lines(
    fleet: EncodedFleet, frame: pl.DataFrame, outcome: pl.Series | None = None
) -> pl.Series:
    """Ground-truth JSON lines: what each device sent, and (when known) what came back."""
    ids = pl.Series(list(fleet.device_ids))
    parts = [
        pl.lit('{"device_id":"'),
        ids.gather(frame["device"]),
        pl.lit('","seq":'),
        pl.col("seq").cast(pl.String),
        pl.lit(',"ts":"'),
        _ts("ts"),
        pl.lit('","readings":'),
        readings_json(),
    ]
    if outcome is not None:
        parts += [pl.lit(',"outcome":"'), outcome, pl.lit('"')]
    parts.append(pl.lit("}"))
    return frame.select(pl.concat_str(parts)).to_series().alias("truth")

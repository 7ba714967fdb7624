"""Pure validation of device events and the problem+json errors the gateway answers with.

>>> import datetime as dt
>>> now = dt.datetime(2026, 11, 27, 5, 31, tzinfo=dt.UTC)
>>> validate_event({"ts": "2026-11-27T06:30:00+01:00", "seq": 1,
...                 "readings": {"temperature": 21.5}}, now=now, max_future_s=60)
('2026-11-27T05:30:00.000Z', 1, {'temperature': 21.5})
>>> validate_event({"ts": "yesterday", "seq": 1, "readings": {}}, now=now, max_future_s=60)
Traceback (most recent call last):
...
ingest_service.gateway.validation.Problem: 422 invalid: ts: ...
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from typing import Any

from workbench.events import KNOWN_READINGS, format_ts

__all__ = ["Problem", "stored_ts", "validate_event", "validate_readings"]

_CANONICAL_TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")  # as stored
_TS = re.compile(r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")
_READING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_MAX_READINGS = 32
_MAX_SEQ = 2**63 - 1
_EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_EVENT_KEYS = frozenset({"ts", "seq", "readings", "device_id"})
_VALID_NAMES: set[str] = set()  # reading names already checked (devices repeat theirs)
_MAX_VALID_NAMES = 4096

_TITLES = {
    400: "Malformed request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Invalid event",
    429: "Too many requests",
    503: "Service unavailable",
}


class Problem(Exception):
    """An RFC 9457 problem: HTTP ``status``, a metric ``reason`` and a human ``detail``."""

    def __init__(
        self,
        status: int,
        reason: str,
        detail: str,
        *,
        retry_after: int | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(f"{status} {reason}: {detail}")
        self.status = status
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after
        self.errors = errors

    def body(self) -> dict[str, Any]:
        """The ``application/problem+json`` document."""
        doc: dict[str, Any] = {
            "type": f"https://smart-building-workbench.example/problems/{self.reason}",
            "title": _TITLES.get(self.status, "Error"),
            "status": self.status,
            "reason": self.reason,
            "detail": self.detail,
        }
        if self.errors:
            doc["errors"] = self.errors
        return doc


def _invalid(field: str, detail: str) -> Problem:
    return Problem(
        422, "invalid", f"{field}: {detail}", errors=[{"field": field, "detail": detail}]
    )


def parse_ts(value: Any, *, now: dt.datetime, max_future_s: float) -> dt.datetime:
    """An RFC 3339 timestamp with offset, not before 2000 nor too far ahead of ``now``."""
    if not isinstance(value, str):
        raise _invalid("ts", "must be an RFC 3339 string with offset")
    m = _TS.match(value)
    if not m:
        raise _invalid("ts", "must be RFC 3339 with an offset, e.g. 2026-11-27T05:30:00.123Z")
    date, time, frac, offset = m.groups()
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        ts = dt.datetime.fromisoformat(f"{date}T{time}{(frac or '')[:7]}{offset}")
    except ValueError:
        raise _invalid("ts", "is not a valid date and time") from None
    if ts < _EARLIEST:
        raise _invalid("ts", "is before 2000-01-01")
    if (ts - now).total_seconds() > max_future_s:
        raise _invalid("ts", f"is more than {max_future_s:.0f} s ahead of the gateway clock")
    return ts


def validate_readings(readings: Any) -> dict[str, Any]:
    """``readings`` when it is 1-32 finite numbers or booleans of the right type per name."""
    if not isinstance(readings, dict) or not readings:
        raise _invalid("readings", "must be a non-empty object")
    if len(readings) > _MAX_READINGS:
        raise _invalid("readings", f"holds more than {_MAX_READINGS} readings")
    for name, value in readings.items():
        if name not in _VALID_NAMES:
            if not isinstance(name, str) or not _READING_NAME.match(name):
                raise _invalid(f"readings.{name}", "names are letters, digits and _, at most 64")
            if len(_VALID_NAMES) < _MAX_VALID_NAMES:
                _VALID_NAMES.add(name)
        expected = KNOWN_READINGS.get(name)
        if isinstance(value, bool):
            if expected is float:
                raise _invalid(f"readings.{name}", "must be a number")
        elif isinstance(value, int | float):
            if expected is bool:
                raise _invalid(f"readings.{name}", "must be true or false")
            if not math.isfinite(value) or abs(value) > 1e15:
                raise _invalid(f"readings.{name}", "must be a finite number")
        else:
            raise _invalid(f"readings.{name}", "must be a number or a boolean")
    return readings


def stored_ts(value: Any, *, now: dt.datetime, max_future_s: float) -> str:
    """``value`` as stored (UTC, milliseconds, ``Z``), checked like :func:`parse_ts`.

    A timestamp already in that form (what well-behaved devices send) is checked and
    kept as is instead of being parsed, converted and formatted again.

    >>> now = dt.datetime(2026, 11, 27, 5, 31, tzinfo=dt.UTC)
    >>> stored_ts("2026-11-27T05:30:00.123Z", now=now, max_future_s=60)
    '2026-11-27T05:30:00.123Z'
    >>> stored_ts("2026-11-27T06:30:00.1234+01:00", now=now, max_future_s=60)
    '2026-11-27T05:30:00.123Z'
    """
    if isinstance(value, str) and len(value) == 24 and _CANONICAL_TS.match(value):
        try:
            ts = dt.datetime.fromisoformat(value)
        except ValueError:
            raise _invalid("ts", "is not a valid date and time") from None
        if ts < _EARLIEST:
            raise _invalid("ts", "is before 2000-01-01")
        if (ts - now).total_seconds() > max_future_s:
            raise _invalid("ts", f"is more than {max_future_s:.0f} s ahead of the gateway clock")
        return value
    return format_ts(parse_ts(value, now=now, max_future_s=max_future_s))


def validate_event(
    event: Any, *, now: dt.datetime, max_future_s: float
) -> tuple[str, int, dict[str, Any]]:
    """``(ts as stored, seq, readings)`` of a device event, or raise a 422 Problem."""
    if not isinstance(event, Mapping):
        raise Problem(400, "malformed", "an event must be a JSON object")
    if not event.keys() <= _EVENT_KEYS:
        unknown = sorted(set(event) - _EVENT_KEYS, key=str)[0]
        raise _invalid(unknown, "unknown field (events hold ts, seq and readings)")
    for required in ("ts", "seq", "readings"):
        if required not in event:
            raise _invalid(required, "is required")
    seq = event["seq"]
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= _MAX_SEQ:
        raise _invalid("seq", "must be a whole number >= 0")
    ts = stored_ts(event["ts"], now=now, max_future_s=max_future_s)
    return ts, seq, validate_readings(event["readings"])

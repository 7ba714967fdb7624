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
import json
import math
import re
from collections.abc import Mapping
from typing import Any

import orjson

from workbench.events import KNOWN_READINGS, format_ts

__all__ = [
    "Problem",
    "check_frame_ts",
    "stored_ts",
    "validate_body",
    "validate_event",
    "validate_readings",
]

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
    408: "Request timeout",
    409: "Replayed",
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
    _check_bounds(ts, now=now, max_future_s=max_future_s)
    return ts


def _check_bounds(ts: dt.datetime, *, now: dt.datetime, max_future_s: float) -> None:
    """The rule every door applies to ``ts``: not before 2000, at most ``max_future_s``
    ahead of the gateway clock."""
    if ts < _EARLIEST:
        raise _invalid("ts", "is before 2000-01-01")
    if (ts - now).total_seconds() > max_future_s:
        raise _invalid("ts", f"is more than {max_future_s:.0f} s ahead of the gateway clock")


def check_frame_ts(
    ts: dt.datetime, *, now: dt.datetime, max_future_s: float, max_age_s: float
) -> None:
    """A legacy frame's ``ts``: the HTTP rule (not before 2000, at most ``max_future_s``
    ahead), and not more than ``max_age_s`` behind ``now``.

    Frames carry no nonce: the window bounds how long the gateway must remember a frame
    to refuse its replays. ``stale`` is a reason of its own so that a device with a lagging
    clock is told so.

    >>> now = dt.datetime(2026, 11, 27, 5, 31, tzinfo=dt.UTC)
    >>> check_frame_ts(now - dt.timedelta(seconds=901), now=now, max_future_s=60,
    ...                max_age_s=900)
    Traceback (most recent call last):
    ...
    ingest_service.gateway.validation.Problem: 422 stale: ts: is more than 900 s behind ...
    """
    _check_bounds(ts, now=now, max_future_s=max_future_s)
    if (now - ts).total_seconds() > max_age_s:
        detail = (
            f"is more than {max_age_s:.0f} s behind the gateway clock (WORKBENCH_LEGACY_MAX_AGE);"
            " a frame must arrive within that window of its ts"
        )
        raise Problem(422, "stale", f"ts: {detail}", errors=[{"field": "ts", "detail": detail}])


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
        _check_bounds(ts, now=now, max_future_s=max_future_s)
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


def _parse_constant(name: str) -> float:
    return float(name)  # NaN/Infinity parse, then fail validation as non-finite (422)


def _loads(body: bytes) -> Any:
    """orjson for the common case; the standard library for what orjson refuses but the
    doors answer precisely (NaN/Infinity and integers beyond 64 bits are 422, not 400)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body, parse_constant=_parse_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise Problem(400, "malformed", "the body is not valid JSON") from None


def validate_body(
    body: bytes, *, device_id: str, now: dt.datetime, max_future_s: float, max_batch: int
) -> list[tuple[str, int, dict[str, Any]]]:
    """The events of a door's body (one event object or ``{"events": [...]}``) sent by
    ``device_id``, each as :func:`validate_event` returns it; all-or-nothing: raise a
    400/403/413 Problem, or one 422 listing every invalid event.

    >>> now = dt.datetime(2026, 11, 27, 5, 31, tzinfo=dt.UTC)
    >>> validate_body(b'{"ts": "2026-11-27T05:30:00Z", "seq": 2, "readings": {"smoke": false}}',
    ...               device_id="d-1", now=now, max_future_s=60, max_batch=10)
    [('2026-11-27T05:30:00.000Z', 2, {'smoke': False})]
    """
    doc = _loads(body)
    if isinstance(doc, dict) and "events" in doc:
        if set(doc) != {"events"} or not isinstance(doc["events"], list):
            raise Problem(400, "malformed", 'a batch is {"events": [ ... ]} and nothing else')
        events: list[Any] = doc["events"]
        if not events:
            raise Problem(400, "malformed", "the batch holds no events")
        if len(events) > max_batch:
            raise Problem(413, "too_large", f"a batch holds at most {max_batch} events")
    elif isinstance(doc, dict):
        events = [doc]
    else:
        raise Problem(400, "malformed", 'the body must be an event object or {"events": [...]}')
    valid = []
    errors: list[dict[str, Any]] = []
    for index, event in enumerate(events):
        if isinstance(event, dict):
            claimed = event.get("device_id")
            if claimed is not None and claimed != device_id:
                raise Problem(
                    403,
                    "device_mismatch",
                    f"event {index} names device {claimed!r}, the token is {device_id!r}",
                )
        try:
            valid.append(validate_event(event, now=now, max_future_s=max_future_s))
        except Problem as problem:
            if problem.status != 422:
                raise Problem(
                    problem.status, problem.reason, f"event {index}: {problem.detail}"
                ) from None
            errors.extend({"index": index, **e} for e in problem.errors or [])
    if errors:
        first = errors[0]
        raise Problem(
            422,
            "invalid",
            f"{len(errors)} invalid event(s), nothing was accepted; first: event "
            f"{first['index']}: {first['field']}: {first['detail']}",
            errors=errors[:100],
        )
    return valid

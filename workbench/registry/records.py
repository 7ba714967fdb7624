"""What a registry device is, and the values its columns may take.

:class:`DeviceEntry` is what the services need of a device (the gateway keeps one per
device in memory); :class:`Device` is the whole row, with its audit columns.

The protocols a device may be provisioned with are ``http`` (the gateway's own door)
and the name of every installed legacy translator, read from the
``workbench.translators`` entry-point group when asked: the registry learns about a
translator installed later without importing the service that runs it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from typing import Any, Literal

from workbench import plugins
from workbench.exceptions import InvalidInput

__all__ = [
    "DEVICE_STATUSES",
    "FLOOR_RANGE",
    "ID_MAX",
    "ID_PATTERN",
    "NAME_MAX",
    "ROOM_MAX",
    "Device",
    "DeviceEntry",
    "DeviceType",
    "ProvisionedDevice",
    "check_choice",
    "parse_floor",
    "protocols",
    "shown",
    "valid_floor",
    "valid_id",
    "valid_name",
    "valid_room",
]

DEVICE_STATUSES = ("provisioned", "disabled", "deprovisioned")
DeviceType = Literal["environment", "smoke", "intrusion"]
ID_MAX = 128
ID_PATTERN = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9._:-]{{0,{ID_MAX - 1}}}$")
NAME_MAX = 100  # a display name: tenants, buildings
ROOM_MAX = 64
FLOOR_RANGE = (-20, 300)  # basements to the tallest towers; a device's floor, if given
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def protocols() -> tuple[str, ...]:
    """``http`` and the installed translators' protocols, e.g. ``('http', 'bin1', 'fbk1')``.

    >>> protocols()[0], "fbk1" in protocols()
    ('http', True)
    """
    return ("http", *plugins.names("workbench.translators"))


def shown(value: object, limit: int = 40) -> str:
    """``value`` quoted for a message, cut to ``limit`` characters (a 5,000-character
    name must not become a 5,000-character error line).

    >>> shown("x" * 100)
    "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…' (100 characters)"
    """
    text = str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}"[:-1] + f"…' ({len(text):,} characters)"


def valid_id(value: str, what: str) -> str:
    """``value`` when it is a usable id (letters, digits, ``._:-``; at most 128), else raise
    :class:`InvalidInput` saying what is wrong.

    >>> valid_id("b-1", "building id")
    'b-1'
    >>> valid_id("b" * 200, "building id")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    workbench.exceptions.InvalidInput: building id is 200 characters long, at most 128 ...
    """
    hint = f"use 1-{ID_MAX} letters, digits, '.', '_', ':' or '-', starting with a letter or digit"
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{what} is empty", hint=hint)
    if len(value) > ID_MAX:
        raise InvalidInput(
            f"{what} is {len(value):,} characters long, at most {ID_MAX} are allowed", hint=hint
        )
    if not ID_PATTERN.match(value):
        raise InvalidInput(f"invalid {what} {shown(value)}", hint=hint)
    return value


def valid_name(value: str | None, what: str) -> str | None:
    """A display name stripped of outer spaces (None when empty), or :class:`InvalidInput`
    when it is longer than :data:`NAME_MAX` or holds control characters.

    >>> valid_name("  Harbour House ", "building name")
    'Harbour House'
    >>> valid_name("x" * 5000, "building name")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    workbench.exceptions.InvalidInput: building name is 5,000 characters long, at most 100 ...
    """
    return _text(value, what, NAME_MAX)


def valid_room(value: str | None) -> str | None:
    """A room stripped of outer spaces (None when empty), at most :data:`ROOM_MAX`
    characters, no control characters."""
    return _text(value, "room", ROOM_MAX)


def _text(value: str | None, what: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be text, not {type(value).__name__}", hint="pass text")
    text = value.strip()
    if len(text) > limit:
        raise InvalidInput(
            f"{what} is {len(text):,} characters long, at most {limit} are allowed",
            hint=f"shorten it to {limit} characters",
        )
    if _CONTROL.search(text):
        raise InvalidInput(
            f"{what} {shown(text)} holds a control character (a line break, tab, ...)",
            hint="use printable characters only",
        )
    return text or None


def valid_floor(value: int | None) -> int | None:
    """``value`` when it is None or a whole number in :data:`FLOOR_RANGE`, else raise.

    >>> valid_floor(3)
    3
    >>> valid_floor(99999999999999999999)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    workbench.exceptions.InvalidInput: floor 99999999999999999999 is out of range: ...
    """
    low, high = FLOOR_RANGE
    hint = f"give a floor from {low} to {high}, or none"
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"floor {shown(value)} is not a whole number", hint=hint)
    if not low <= value <= high:
        digits = str(value)
        if len(digits) > 24:
            digits = f"{digits[:20]}… ({len(digits):,} digits)"
        raise InvalidInput(
            f"floor {digits} is out of range: a floor is from {low} to {high}", hint=hint
        )
    return value


def parse_floor(text: str | None) -> int | None:
    """A floor typed as text (a form field, a CSV cell, a CLI option): None when empty,
    else a whole number in :data:`FLOOR_RANGE`, or :class:`InvalidInput`.

    >>> parse_floor(" -2 "), parse_floor("")
    (-2, None)
    >>> parse_floor("2.5")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    workbench.exceptions.InvalidInput: floor '2.5' is not a whole number; ...
    """
    raw = (text or "").strip()
    if not raw:
        return None
    if not re.fullmatch(r"[+-]?[0-9]+", raw):
        low, high = FLOOR_RANGE
        raise InvalidInput(
            f"floor {shown(raw)} is not a whole number", hint=f"give a floor from {low} to {high}"
        )
    return valid_floor(int(raw))


def check_choice(value: str, choices: tuple[str, ...], what: str) -> None:
    """Raise :class:`InvalidInput` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise InvalidInput(f"invalid {what} {value!r}", hint=f"choose one of {', '.join(choices)}")


@dataclasses.dataclass(frozen=True, slots=True)
class DeviceEntry:
    """A device as the services see it: where it is, what it speaks, whether and with
    which key version it may send."""

    device_id: str
    tenant_id: str
    building_id: str
    floor: int | None
    room: str | None
    device_type: str
    protocol: str
    status: str
    key_version: int


@dataclasses.dataclass(frozen=True, slots=True)
class Device(DeviceEntry):
    """One row of ``registry/devices``: the entry and who made it and changed it last."""

    created_at: dt.datetime
    created_by: str
    updated_at: dt.datetime
    updated_by: str

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (timestamps as RFC 3339)."""
        out = dataclasses.asdict(self)
        for k in ("created_at", "updated_at"):
            out[k] = out[k].isoformat()
        return out


@dataclasses.dataclass(frozen=True)
class ProvisionedDevice:
    """The result of provisioning or key rotation: the key is shown here once and never stored."""

    device: Device
    key: str

    def to_json(self) -> dict[str, Any]:
        """``{"device_id": ..., "key": ..., ...}``: what a device is configured with."""
        return {"device_id": self.device.device_id, "key": self.key, **self.device.to_json()}

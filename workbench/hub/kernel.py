"""In a notebook kernel the hub started: the workbench's doors as the logged-in user.

The hub gives each server its user's name (``JUPYTERHUB_USER``) and API token
(``JUPYTERHUB_API_TOKEN``); the doors accept the token in place of the password, so
no password is typed and the kernel sees what the user may see, nothing more. The
kernel cannot read the lake's files: every read goes through a door::

    from workbench.hub.kernel import building_state, hive_connection, hive_url, query, telemetry
    rows = hive_connection().cursor()       # DB-API (pyhive), row by row
    %sql {hive_url()}                       # JupySQL / SQLAlchemy
    frame = query("SELECT * FROM telemetry WHERE event_date = '2026-11-20'")  # Arrow Flight
    day = telemetry(building_id="b-0001", start=..., end=...)               # Arrow Flight

:func:`query`, :func:`telemetry` and :func:`building_state` read through the Arrow
Flight door (``WORKBENCH_FLIGHT_PORT``): the same scope, caps and access log as
HiveServer2, with the columns handed over as Arrow, a hundred times faster for
dataframe-sized results.
"""

from __future__ import annotations

import datetime as dt
import os
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from workbench.config import Config
from workbench.exceptions import InvalidState
from workbench.lake import schemas

__all__ = [
    "building_metrics",
    "building_state",
    "buildings",
    "hive_connection",
    "hive_url",
    "query",
    "telemetry",
    "telemetry_hiveql",
]

# a registry id (workbench.registry.records.ID_PATTERN): what a literal may hold here
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-")


def _identity(environ: Mapping[str, str] | None) -> tuple[str, str, Config]:
    env = os.environ if environ is None else environ
    user, token = env.get("JUPYTERHUB_USER"), env.get("JUPYTERHUB_API_TOKEN")
    if not user or not token:
        raise InvalidState(
            "not in a notebook server of the workbench's hub (no JUPYTERHUB_USER or token)",
            hint="log in at the hub, or connect with your user name and password",
        )
    # where the doors are comes from the settings the spawner passed (defaults otherwise)
    doors = {
        k: v for k, v in env.items() if k.startswith("WORKBENCH_") and k.endswith(("_PORT", "HOST"))
    }
    return user, token, Config.from_env(doors)


def hive_connection(environ: Mapping[str, str] | None = None) -> Any:
    """A pyhive connection to the HiveServer2 door as this server's user."""
    from pyhive import hive

    user, token, config = _identity(environ)
    return hive.connect(
        host=config.host, port=config.hive_port, username=user, password=token, auth="CUSTOM"
    )


def hive_url(environ: Mapping[str, str] | None = None) -> str:
    """The SQLAlchemy URL (pyhive's ``hive://`` dialect) of the door as this server's user.

    >>> hive_url({"JUPYTERHUB_USER": "ann", "JUPYTERHUB_API_TOKEN": "t0k",
    ...           "WORKBENCH_HOST": "127.0.0.1", "WORKBENCH_HIVE_PORT": "10000"})
    'hive://ann:t0k@127.0.0.1:10000/default?auth=CUSTOM'
    """
    user, token, config = _identity(environ)
    quoted = urllib.parse.quote(user, safe="")
    secret = urllib.parse.quote(token, safe="")
    return f"hive://{quoted}:{secret}@{config.host}:{config.hive_port}/default?auth=CUSTOM"


def query(hiveql: str, *, environ: Mapping[str, str] | None = None) -> pl.DataFrame:
    """The result of one HiveQL statement as a polars frame, through the Arrow Flight door
    as this server's user (raises QueryRefused / QueryFailed saying why); in shared memory
    when the door is on this machine."""
    from workbench.query.local_door import bulk_read

    user, token, config = _identity(environ)
    table = bulk_read(hiveql, host=config.host, port=config.flight_port, user=user, password=token)
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def telemetry(
    *,
    building_id: str | None = None,
    device_id: str | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    columns: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> pl.DataFrame:
    """Stored events in the user's scope with ``start <= ts < end``, oldest first: what
    :func:`workbench.telemetry` returns on the server, read through the Flight door."""
    return query(
        telemetry_hiveql(
            building_id=building_id, device_id=device_id, start=start, end=end, columns=columns
        ),
        environ=environ,
    )


def building_state(
    *, building_id: str | None = None, environ: Mapping[str, str] | None = None
) -> pl.DataFrame:
    """The rolling five-minute view: one row per building in the user's scope (or the
    one asked for), through the Flight door."""
    where = f" WHERE building_id = {_literal(building_id, 'building_id')}" if building_id else ""
    return query(f"SELECT * FROM building_state{where} ORDER BY building_id", environ=environ)


def buildings(*, environ: Mapping[str, str] | None = None) -> pl.DataFrame:
    """The buildings in the user's scope: ``building_id, tenant_id, name``, by id."""
    return query(
        "SELECT building_id, tenant_id, name FROM buildings ORDER BY building_id", environ=environ
    )


def building_metrics(
    *,
    building_id: str,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    environ: Mapping[str, str] | None = None,
) -> pl.DataFrame:
    """One building's one-minute windows with ``start <= window_start < end``, oldest
    first: what :func:`workbench.lake.building_metrics` returns on the server (empty for
    a building out of scope), through the Flight door."""
    where = [f"building_id = {_literal(building_id, 'building_id')}"]
    if start is not None:
        where.append(f"window_start >= '{_utc(start, 'start'):%Y-%m-%d %H:%M:%S.%f}'")
    if end is not None:
        where.append(f"window_start < '{_utc(end, 'end'):%Y-%m-%d %H:%M:%S.%f}'")
    sql = f"SELECT * FROM building_metrics_1m WHERE {' AND '.join(where)} ORDER BY window_start"
    return query(sql, environ=environ)


def telemetry_hiveql(
    *,
    building_id: str | None = None,
    device_id: str | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    columns: Sequence[str] | None = None,
) -> str:
    """The HiveQL :func:`telemetry` sends (checked: known columns, registry-shaped ids,
    timezone-aware times).

    >>> telemetry_hiveql(building_id="b-0001", columns=["ts", "temperature"],
    ...     start=dt.datetime(2026, 11, 20, tzinfo=dt.UTC))  # doctest: +NORMALIZE_WHITESPACE
    "SELECT ts, temperature FROM telemetry WHERE event_date >= '2026-11-20' AND
     ts >= '2026-11-20 00:00:00.000000' AND building_id = 'b-0001' ORDER BY ts"
    """
    names = list(columns) if columns else list(schemas.TELEMETRY.names)
    unknown = [c for c in names if c not in schemas.TELEMETRY.names]
    if unknown:
        raise ValueError(
            f"unknown telemetry column(s) {unknown}; known: {', '.join(schemas.TELEMETRY.names)}"
        )
    where = []
    if start is not None:
        start = _utc(start, "start")
        where += [f"event_date >= '{start.date()}'", f"ts >= '{start:%Y-%m-%d %H:%M:%S.%f}'"]
    if end is not None:
        end = _utc(end, "end")
        where += [f"event_date <= '{end.date()}'", f"ts < '{end:%Y-%m-%d %H:%M:%S.%f}'"]
    if building_id is not None:
        where.append(f"building_id = {_literal(building_id, 'building_id')}")
    if device_id is not None:
        where.append(f"device_id = {_literal(device_id, 'device_id')}")
    sql = f"SELECT {', '.join(names)} FROM telemetry"
    if where:
        sql += " WHERE " + " AND ".join(where)
    order = [c for c in ("ts", "device_id") if c in names]
    return sql + (f" ORDER BY {', '.join(order)}" if order else "")


def _utc(value: dt.datetime, name: str) -> dt.datetime:
    if value.tzinfo is None:
        raise ValueError(f"{name} is a naive datetime: pass a timezone-aware one")
    return value.astimezone(dt.UTC)


def _literal(value: str, name: str) -> str:
    if not value or not set(value) <= _ID_CHARS:
        raise ValueError(f"{name} {value!r} is not a registry id (letters, digits, . _ : -)")
    return f"'{value}'"

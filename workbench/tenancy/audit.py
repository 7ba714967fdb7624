"""The access log: who queried, logged in (or failed to), and was refused what, and when.

Changes to the registry are audited by the registry tables' own Delta history
(each commit names its actor); reads and logins land here, in
``lake/audit/access_log``, partitioned by day.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import polars as pl
import pyarrow as pa

from workbench.config import Config
from workbench.tenancy.principal import Principal

if TYPE_CHECKING:
    from deltalake import DeltaTable

__all__ = [
    "ACCESS_LOG",
    "AccessEntry",
    "access_log",
    "access_log_uri",
    "record_access",
    "record_accesses",
]

logger = logging.getLogger(__name__)

ACCESS_LOG = pa.schema(
    [
        pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("user", pa.string(), nullable=False),
        pa.field("role", pa.string()),
        pa.field("tenant_id", pa.string()),
        pa.field("action", pa.string(), nullable=False),
        pa.field("target", pa.string()),
        pa.field("outcome", pa.string(), nullable=False),  # ok | denied | error
        pa.field("detail", pa.string()),
        pa.field("day", pa.date32(), nullable=False),
    ]
)

_MAX_TARGET = 2000


def access_log_uri(config: Config) -> str:
    """``lake/audit/access_log``."""
    return f"{config.lake.rstrip('/')}/audit/access_log"


@dataclasses.dataclass(frozen=True)
class AccessEntry:
    """One access-log entry, timed when it happened (it may be written later)."""

    who: Principal | str
    action: str
    target: str
    outcome: str
    detail: str = ""
    ts: dt.datetime = dataclasses.field(default_factory=lambda: dt.datetime.now(dt.UTC))


def record_access(
    config: Config,
    who: Principal | str,
    *,
    action: str,
    target: str,
    outcome: str,
    detail: str = "",
) -> None:
    """Append one entry. Never raises: a failing audit write is logged as an error instead
    of failing the user's request (the log line carries the entry)."""
    record_accesses(config, [AccessEntry(who, action, target, outcome, detail)])


def record_accesses(config: Config, entries: Sequence[AccessEntry]) -> None:
    """Append ``entries`` in one commit. Never raises, as :func:`record_access`."""
    if not entries:
        return
    columns: dict[str, list[object]] = {name: [] for name in ACCESS_LOG.names}
    for entry in entries:
        principal = entry.who if isinstance(entry.who, Principal) else None
        columns["ts"].append(entry.ts)
        columns["user"].append(principal.user if principal else str(entry.who))
        columns["role"].append(principal.role if principal else None)
        columns["tenant_id"].append(principal.tenant_id if principal else None)
        columns["action"].append(entry.action)
        columns["target"].append(entry.target[:_MAX_TARGET])
        columns["outcome"].append(entry.outcome)
        columns["detail"].append(entry.detail[:_MAX_TARGET])
        columns["day"].append(entry.ts.date())
    try:
        _append(access_log_uri(config), pa.table(columns, schema=ACCESS_LOG))
    except Exception:
        logger.exception("could not write the access log entries %s", columns)


# The access log's table, kept open per process: an append through an open table reads
# only the commits since its last one (about 10 ms a statement here), where opening it by
# URI replays the log (about 28 ms at 100 versions, more as it grows). Other processes'
# appends in between are fine: Delta retries an append at the next free version.
_OPEN: dict[str, DeltaTable] = {}
_OPEN_LOCK = threading.Lock()


def _append(uri: str, entry: pa.Table) -> None:
    from deltalake import DeltaTable, write_deltalake

    with _OPEN_LOCK:
        table = _OPEN.pop(uri, None)
        if table is not None:
            try:
                write_deltalake(table, entry, mode="append", partition_by=["day"])
                _OPEN[uri] = table
                return
            except Exception:  # the table was deleted or replaced meanwhile: open it afresh
                logger.debug("the open access log table failed; opening %s again", uri)
        write_deltalake(uri, entry, mode="append", partition_by=["day"])
        _OPEN[uri] = DeltaTable(uri)


def access_log(config: Config, *, principal: Principal) -> pl.DataFrame:
    """The access log as ``principal`` may see it: admins everything, others their tenant."""
    from deltalake.exceptions import TableNotFoundError

    try:
        frame = pl.read_delta(access_log_uri(config))
    except (TableNotFoundError, FileNotFoundError):
        frame = pl.from_arrow(ACCESS_LOG.empty_table())  # type: ignore[assignment]
    assert isinstance(frame, pl.DataFrame)
    if not principal.is_admin:
        frame = frame.filter(pl.col("tenant_id") == principal.tenant_id)
    return frame.sort("ts")

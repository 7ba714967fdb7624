"""The access log: who queried, logged in (or failed to), and was refused what, and when.

Changes to the registry are audited by the registry tables' own Delta history
(each commit names its actor); reads and logins land here, in
``lake/audit/access_log``, partitioned by day.
"""

from __future__ import annotations

import datetime as dt
import logging

import polars as pl
import pyarrow as pa

from workbench.config import Config
from workbench.tenancy.principal import Principal

__all__ = ["ACCESS_LOG", "access_log", "access_log_uri", "record_access"]

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
    from deltalake import write_deltalake

    now = dt.datetime.now(dt.UTC)
    principal = who if isinstance(who, Principal) else None
    row = {
        "ts": [now],
        "user": [principal.user if principal else str(who)],
        "role": [principal.role if principal else None],
        "tenant_id": [principal.tenant_id if principal else None],
        "action": [action],
        "target": [target[:_MAX_TARGET]],
        "outcome": [outcome],
        "detail": [detail[:_MAX_TARGET]],
        "day": [now.date()],
    }
    try:
        write_deltalake(
            access_log_uri(config),
            pa.table(row, schema=ACCESS_LOG),
            mode="append",
            partition_by=["day"],
        )
    except Exception:
        logger.exception("could not write the access log entry %s", row)


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

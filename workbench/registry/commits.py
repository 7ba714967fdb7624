"""Reading and writing one ``lake/registry/*`` Delta table: the one write path is a MERGE.

Writers use optimistic concurrency: each change is a ``MERGE`` whose condition
encodes the check (e.g. "only a provisioned device can be disabled"), committed with
``max_commit_retries=0`` so that *any* concurrent commit makes it fail; it is then
re-read and retried (:func:`merge`). No update is ever lost and no check is ever made
against stale data. Every commit's ``custom_metadata`` names the actor and the
operation, so the table history is the audit trail.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any, TypedDict, Unpack

import polars as pl
import pyarrow as pa

from workbench.exceptions import RegistryBusy

__all__ = [
    "CHANGE_FEED",
    "TABLE_PROPERTIES",
    "MergeOptions",
    "merge",
    "open_table",
    "read_frame",
    "table_version",
]

logger = logging.getLogger(__name__)

_MAX_ATTEMPTS = 50


class MergeOptions(TypedDict, total=False):
    """What a :func:`merge` does besides matching (all optional)."""

    insert: bool  # insert the source rows that match no row
    update: dict[str, str]  # column -> SQL expression, for the rows that match
    update_when: str  # ... only where this SQL condition holds
    metrics_out: dict[str, int]  # receives the MERGE's metrics
    commit_out: dict[str, int]  # receives {"version": the commit's Delta version} on a change


CHANGE_FEED = {"delta.enableChangeDataFeed": "true"}
"""Every registry table records its changed rows (``_change_data``): a reader applies one
change by reading that change (``DeltaTable.load_cdf``), not the files a MERGE rewrote,
which hold every row that shared a file with the changed one."""

TABLE_PROPERTIES = {**CHANGE_FEED, "delta.targetFileSize": str(1 << 20)}
"""The change feed, and small files: a MERGE of one device rewrites the file holding it,
so the cost of a single-device command is one file's rows (about 50,000 devices in
1 MiB), not the fleet's. Writers sort by key, so a file holds a narrow range of ids and
the MERGE's file skipping finds the one that matters."""


def open_table(uri: str, schema: pa.Schema, name: str) -> Any:
    """The Delta table at ``uri``, created empty with ``schema`` when it is not there."""
    from deltalake import DeltaTable
    from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

    try:
        return _with_change_feed(DeltaTable(uri))
    except TableNotFoundError:
        pass
    if "://" not in uri:
        Path(uri).mkdir(parents=True, exist_ok=True)
    try:
        return DeltaTable.create(
            uri, schema, mode="ignore", name=f"registry_{name}", configuration=TABLE_PROPERTIES
        )
    except (CommitFailedError, DeltaError):  # a concurrent creator won
        return _with_change_feed(DeltaTable(uri))


def _with_change_feed(table: Any) -> Any:
    """``table``, with :data:`TABLE_PROPERTIES` set first when it was created without
    (tables of earlier releases): one metadata commit, once per table."""
    from deltalake.exceptions import CommitFailedError

    configuration = table.metadata().configuration
    if all(configuration.get(k) == v for k, v in TABLE_PROPERTIES.items()):
        return table
    try:
        table.alter.set_table_properties(TABLE_PROPERTIES)
    except CommitFailedError:  # a concurrent writer moved the table (or switched it on too)
        table.update_incremental()
    return table


def existing_table(uri: str) -> Any | None:
    """The ``deltalake.DeltaTable`` at ``uri`` (its log read once), None when it does not
    exist yet."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(uri)
    except TableNotFoundError:
        return None


def table_version(uri: str) -> int | None:
    """The Delta version of the table at ``uri``, None when it does not exist yet."""
    table = existing_table(uri)
    return None if table is None else int(table.version())


def read_frame(uri: str, empty: pa.Schema) -> pl.DataFrame:
    """The whole table at ``uri`` (empty, with schema ``empty``, when it does not exist)."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        table = DeltaTable(uri).to_pyarrow_table()
    except TableNotFoundError:
        table = empty.empty_table()
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def merge(
    uri: str,
    name: str,
    schema: pa.Schema,
    source: pa.Table,
    predicate: str,
    *,
    actor: str,
    operation: str,
    **how: Unpack[MergeOptions],
) -> bool:
    """MERGE ``source`` into the table ``name`` at ``uri`` (created with ``schema`` when
    missing); True when a row was inserted or updated.

    1. read the table's latest version;
    2. merge with the check in the MERGE's conditions (never against stale reads);
    3. commit with no automatic rebase: a concurrent commit fails this one;
    4. on that conflict, back off and start again at 1.
    """
    from deltalake import CommitProperties
    from deltalake.exceptions import CommitFailedError

    update, metrics_out = how.get("update"), how.get("metrics_out")
    commit_out = how.get("commit_out")
    props = CommitProperties(
        custom_metadata={"actor": actor, "workbench.operation": operation}, max_commit_retries=0
    )
    for attempt in range(_MAX_ATTEMPTS):
        table = open_table(uri, schema, name)  # 1.
        merger = table.merge(  # 2.
            source,
            predicate,
            source_alias="s",
            target_alias="t",
            commit_properties=props,
            # a materialized source lets the MERGE skip the files whose ids it cannot
            # match (by their statistics); streamed, it scans every file: 2 s against
            # 0.15 s for one device among a million
            streamed_exec=False,
        )
        if update is not None:
            merger = merger.when_matched_update(update, predicate=how.get("update_when"))
        if how.get("insert", False):
            merger = merger.when_not_matched_insert_all()
        try:
            metrics: dict[str, Any] = merger.execute()  # 3.
        except CommitFailedError as exc:  # 4.
            logger.debug("registry %s: %s conflicted (%s), retrying", name, operation, exc)
            time.sleep(random.uniform(0.005, 0.05) * min(attempt + 1, 10))
            continue
        if metrics_out is not None:
            metrics_out.update({k: int(v) for k, v in metrics.items() if isinstance(v, int)})
        changed = int(metrics.get("num_target_rows_inserted", 0)) + int(
            metrics.get("num_target_rows_updated", 0)
        )
        if changed and commit_out is not None:
            commit_out["version"] = int(table.version())
        return changed > 0
    raise RegistryBusy(
        f"registry {name}: {operation} conflicted with concurrent writers {_MAX_ATTEMPTS} times",
        hint="try again; if it persists, look for a runaway writer",
    )

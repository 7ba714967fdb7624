"""Where the lake's tables live and how they are written: names, URIs, storage options.

One root URI (``WORKBENCH_LAKE``: a folder, or ``s3://`` / ``az://`` / ``gs://``)
names the whole lake; each table is a Delta table under it.

>>> from workbench.config import Config
>>> table_uri(Config.from_env({"WORKBENCH_LAKE": "s3://bucket/lake"}), TELEMETRY)
's3://bucket/lake/telemetry'
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa

from workbench.config import Config
from workbench.exceptions import ConfigError
from workbench.lake import schemas

T = TypeVar("T")

__all__ = [
    "ALARMS",
    "ALARM_RULES",
    "BUILDING_METRICS_1M",
    "BUILDING_STATE",
    "TABLES",
    "TELEMETRY",
    "TELEMETRY_REJECTED",
    "TableSpec",
    "check_commit_safety",
    "describe_store_error",
    "ensure_tables",
    "is_store_error",
    "latest_table",
    "open_table",
    "retry_on_conflict",
    "storage_options",
    "table_schema",
    "table_uri",
    "telemetry_readings",
    "writer_properties",
]

logger = logging.getLogger(__name__)

TELEMETRY = "telemetry"
TELEMETRY_REJECTED = "telemetry_rejected"
BUILDING_METRICS_1M = "building_metrics_1m"
BUILDING_STATE = "building_state"
ALARMS = "alarms"
ALARM_RULES = "alarm_rules"


class TableSpec:
    """A table's schema, partition columns and the columns compaction clusters by."""

    def __init__(self, schema: pa.Schema, partition_by: list[str], cluster_by: list[str]) -> None:
        self.schema = schema
        self.partition_by = partition_by
        self.cluster_by = cluster_by


TABLES: dict[str, TableSpec] = {
    TELEMETRY: TableSpec(schemas.TELEMETRY, ["event_date"], ["building_id", "ts"]),
    TELEMETRY_REJECTED: TableSpec(schemas.TELEMETRY_REJECTED, ["rejected_date"], []),
    BUILDING_METRICS_1M: TableSpec(
        schemas.BUILDING_METRICS_1M, [], ["building_id", "window_start"]
    ),
    BUILDING_STATE: TableSpec(schemas.BUILDING_STATE, [], []),
    ALARMS: TableSpec(schemas.ALARMS, [], ["tenant_id", "building_id"]),
    ALARM_RULES: TableSpec(schemas.ALARM_RULES, [], []),
}


def table_uri(config: Config, name: str) -> str:
    """The URI of table ``name`` under the lake root."""
    return f"{config.lake.rstrip('/')}/{name}"


def storage_options(config: Config) -> dict[str, str] | None:
    """Options deltalake needs for the lake's store (None for a local folder).

    Credentials for ``s3://``, ``az://`` and ``gs://`` come from the standard
    variables of each cloud (``AWS_*``, ``AZURE_*``, ``GOOGLE_*``), which
    deltalake reads itself; S3 needs conditional puts (on by default on AWS)
    for several writers to commit safely.

    The store's client retries a throttled (``503 SlowDown``), failed or unanswered
    request with back-off for ``WORKBENCH_LAKE_RETRY_TIMEOUT`` seconds, not the three
    minutes of its default: past that the processor says so in its log and status and
    backs off itself, rather than hanging silently in a commit.

    >>> storage_options(Config.from_env({"WORKBENCH_LAKE": "s3://b/lake"}))
    {'retry_timeout': '30000ms'}
    """
    if "://" not in config.lake or config.lake.startswith("file://"):
        return None
    return {"retry_timeout": f"{round(max(config.lake_retry_timeout, 0) * 1000)}ms"}


def _truthy(value: str) -> bool:
    # the spellings deltalake itself takes as true (str_is_truthy in delta-rs)
    return value.strip().lower() in {"1", "true", "on", "yes", "y"}


def check_commit_safety(config: Config, environ: Mapping[str, str]) -> None:
    """Refuse, with one line naming the variable, an S3 configuration under which two
    writers could overwrite each other's Delta commit.

    deltalake 1.x commits on S3 with a conditional put (``If-None-Match: *``): of two
    writers racing for the same log entry one gets 412 and retries, so concurrent
    commits are safe. ``AWS_S3_ALLOW_UNSAFE_RENAME`` switches that to copy-then-delete,
    which overwrites silently; ``AWS_S3_LOCKING_PROVIDER=dynamodb`` does the same in
    deltalake 1.x, which dropped the DynamoDB lock and only logs that it did. The lake
    always has several writers (processor members, maintenance beside the appends,
    registry changes), so neither is accepted.

    >>> cfg = Config.from_env({"WORKBENCH_LAKE": "s3://b/lake"})
    >>> check_commit_safety(cfg, {"AWS_S3_ALLOW_UNSAFE_RENAME": "true"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    workbench.exceptions.ConfigError: AWS_S3_ALLOW_UNSAFE_RENAME=true lets concurrent writers ...
    """
    if not config.lake.startswith(("s3://", "s3a://")):
        return
    if _truthy(environ.get("AWS_S3_ALLOW_UNSAFE_RENAME", "")):
        setting = f"AWS_S3_ALLOW_UNSAFE_RENAME={environ['AWS_S3_ALLOW_UNSAFE_RENAME']}"
    elif environ.get("AWS_S3_LOCKING_PROVIDER", "").strip().lower() == "dynamodb":
        setting = "AWS_S3_LOCKING_PROVIDER=dynamodb (no longer supported by deltalake 1.x)"
    else:
        return
    # short enough for `workbench up` to show whole (it quotes a start-up error's line)
    raise ConfigError(
        f"{setting} lets concurrent writers of {config.lake} overwrite each other's "
        "commits; unset it (the workbench commits with S3's conditional put, If-None-Match)"
    )


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def is_store_error(exc: BaseException) -> bool:
    """Whether ``exc``, raised by deltalake, is the object store failing a request: an
    ``OSError``, or a ``DeltaError`` wrapping the store's error (a merge's Parquet write
    reports a store that went down that way).

    >>> is_store_error(OSError("Generic S3 error: error sending request"))
    True
    >>> is_store_error(RuntimeError("Failed to parse parquet: External: Generic "
    ...     "MicrosoftAzure error: Error performing PUT http://127.0.0.1:10000/…"))
    True
    >>> is_store_error(RuntimeError("Schema error: cannot cast"))
    False
    """
    return isinstance(exc, OSError) or bool(_STORE_ERROR.search(str(exc)))


_STORE_ERROR = re.compile(r"Generic \w+ error")
# S3 answers 503 SlowDown, Azure 503 ServerBusy, GCS 429: the store asks for fewer requests
_UNAVAILABLE = re.compile(r"\b(503|429)(?= (Service Unavailable|Too Many Requests|Slow Down))")
# what S3 (SlowDown), Azure (ServerBusy) and GCS/others answer a client sending too much
_THROTTLE_CODES = frozenset(
    {"SlowDown", "ServerBusy", "TooManyRequests", "RequestLimitExceeded", "Throttling"}
)


def describe_store_error(config: Config, exc: BaseException) -> str:
    """One line saying why the lake's store refused or failed a request, from the error
    deltalake raised (an ``OSError`` whose text nests the HTTP exchange over many
    lines), naming what to check.

    >>> cfg = Config.from_env({"WORKBENCH_LAKE": "s3://nobucket/lake"})
    >>> describe_store_error(cfg, OSError("Generic S3 error\\n  404 Not Found <Code>NoSuchBucket"))
    'bucket nobucket does not exist (s3://nobucket/lake); create it, or fix WORKBENCH_LAKE'
    >>> describe_store_error(cfg, OSError("Generic S3 error\\n 503 Service Unavailable\\n"
    ...     "<Error><Code>SlowDown</Code><Message>Please reduce your request rate."))
    'store throttling requests (503 SlowDown) on s3://nobucket/lake'
    >>> describe_store_error(cfg, OSError("Generic S3 error\\n 503 Service Unavailable"))
    'store unavailable (503 Service Unavailable) on s3://nobucket/lake'
    """
    text = _ANSI.sub("", str(exc))
    scheme, _, rest = config.lake.partition("://")
    bucket = rest.split("/", 1)[0]
    kind = {"s3": "bucket", "s3a": "bucket", "gs": "bucket"}.get(scheme, "container")
    keys = {
        "s3": "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY",
        "s3a": "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY",
        "gs": "GOOGLE_APPLICATION_CREDENTIALS",
    }.get(scheme, "AZURE_STORAGE_ACCOUNT_NAME / AZURE_STORAGE_ACCOUNT_KEY")
    if any(m in text for m in ("NoSuchBucket", "ContainerNotFound", "BucketNotFound")) or (
        "404 Not Found" in text and "list" in text
    ):
        return f"{kind} {bucket} does not exist ({config.lake}); create it, or fix WORKBENCH_LAKE"
    if any(m in text for m in ("403 Forbidden", "lacked the necessary privileges", "401 ")):
        return f"access to {config.lake} denied (403); check {keys}"
    unavailable = _UNAVAILABLE.search(text)
    if unavailable:
        # a 503 without a throttling code may be a proxy or load balancer in front of a
        # store that is down: named as such, not as throttling
        found = re.search(r"<Code>(\w+)</Code>", text)
        code = found.group(1) if found else None
        if unavailable.group(1) == "429" or code in _THROTTLE_CODES:
            said = f"{unavailable.group(1)}{f' {code}' if code else ''}"
            return f"store throttling requests ({said}) on {config.lake}"
        said = f"{unavailable.group(1)} {code or unavailable.group(2)}"
        return f"store unavailable ({said}) on {config.lake}"
    if any(m in text for m in ("error sending request", "Connect", "timed out", "Timeout")):
        found = re.search(r"(https?://[^/\s]+)", text)
        where = found.group(1) if found else config.lake
        return f"store endpoint {where} unreachable ({config.lake})"
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    return f"store error on {config.lake}: {first[:200]}"


def open_table(config: Config, name: str) -> Any | None:
    """The ``deltalake.DeltaTable`` of ``name``, or None when it does not exist yet."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(table_uri(config, name), storage_options=storage_options(config))
    except TableNotFoundError:
        return None


_LATEST: dict[str, Any] = {}
_LATEST_LOCK = threading.Lock()


def latest_table(config: Config, name: str) -> Any | None:
    """``name``'s ``DeltaTable`` at its newest version, or None when it does not exist.

    The processor commits about once a second and the notifier looks every second:
    opening a table anew replays its log from the last Delta checkpoint every time,
    while bringing a kept one up to date reads only the new commits.
    One kept table per table URI and process, brought up to date by each caller.
    """
    uri = table_uri(config, name)
    with _LATEST_LOCK:
        table = _LATEST.get(uri)
        if table is None:
            table = open_table(config, name)
            if table is not None:
                _LATEST[uri] = table
        else:
            table.update_incremental()
        return table


def table_schema(table: Any) -> pa.Schema:
    """The Arrow schema of a ``deltalake.DeltaTable`` at the version it has loaded."""
    return pa.schema(table.schema().to_arrow())


def telemetry_readings(table: Any) -> dict[str, pa.DataType]:
    """The promoted reading columns of a ``telemetry`` DeltaTable (see
    :func:`workbench.lake.schemas.promoted_readings`)."""
    return schemas.promoted_readings(table_schema(table))


def ensure_tables(config: Config) -> None:
    """Create every lake table that does not exist yet (empty, with its schema)."""
    from deltalake import DeltaTable

    if "://" not in config.lake:
        Path(config.lake).mkdir(parents=True, exist_ok=True)
    for name, spec in TABLES.items():
        table = open_table(config, name)
        if table is not None:
            _add_missing_columns(name, table, spec.schema)
            continue
        try:
            DeltaTable.create(
                table_uri(config, name),
                spec.schema,
                partition_by=spec.partition_by or None,
                mode="ignore",
                storage_options=storage_options(config),
            )
            logger.info("created lake table %s", table_uri(config, name))
        except Exception as exc:  # a concurrent creator won the race
            if open_table(config, name) is None:
                raise
            logger.debug("table %s created concurrently (%s)", name, exc)


def _add_missing_columns(name: str, table: Any, schema: pa.Schema) -> None:
    """Add the nullable columns ``schema`` gained since ``table`` was created (a lake of
    an older release): a metadata-only commit, and old rows read them as null."""
    from deltalake.schema import Field

    have = set(table_schema(table).names)
    missing = [f for f in schema if f.name not in have and f.nullable]
    if not missing:
        return
    try:
        table.alter.add_columns([Field.from_arrow(f) for f in missing])
        logger.info("added columns %s to lake table %s", [f.name for f in missing], name)
    except Exception as exc:  # a concurrent processor added them first
        logger.debug("columns of %s added concurrently (%s)", name, exc)


def writer_properties(name: str) -> Any:
    """Parquet settings per table: zstd, and encodings that suit sorted telemetry."""
    from deltalake import ColumnProperties, WriterProperties

    columns: dict[str, ColumnProperties] = {}
    if name == TELEMETRY:
        delta = ColumnProperties(dictionary_enabled=False, encoding="DELTA_BINARY_PACKED")
        for column in ("seq", "ts", "received_at", "source_offset"):
            columns[column] = delta
    return WriterProperties(
        compression="ZSTD", compression_level=3, column_properties=columns or None
    )


def retry_on_conflict(action: Callable[[], T], *, what: str, attempts: int = 20) -> T:
    """Run ``action``; when a concurrent writer won the commit, reload and run it again."""
    from deltalake.exceptions import CommitFailedError

    for attempt in range(attempts):
        try:
            return action()
        except CommitFailedError as exc:
            if attempt == attempts - 1:
                raise
            logger.info("%s: concurrent commit (%s), retrying", what, str(exc).splitlines()[0])
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")

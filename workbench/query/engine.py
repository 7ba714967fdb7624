"""The query engine: one DuckDB connection per session, over the lake's Delta tables, scoped
to one principal.

Each lake table is read through ``deltalake.DeltaTable(...).to_pyarrow_dataset()``
(DuckDB pushes projections and filters into the Arrow scan, so ``event_date``
predicates prune partitions and Parquet statistics prune row groups).

Tenant isolation is by construction, not by vetting: the dataset a session
registers is already filtered to its principal (:meth:`Principal.scope_arrow`), so
no name in the session's catalog, however it is reached, holds another tenant's
rows. Each is shown to SQL as a view that applies :meth:`Principal.scope_sql` once
more, under the table's own name; the datasets themselves sit under random names
that no checked statement may name. After the views exist the connection is
locked: no external access (files, network, extensions), locked configuration, no
Python replacement scans.

Sessions are not shared between threads; one statement runs at a time.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import duckdb
import polars as pl
import pyarrow as pa

from workbench.config import Config
from workbench.exceptions import QueryFailed, QueryRefused
from workbench.lake import schemas
from workbench.lake.tables import storage_options, table_uri
from workbench.query.hiveql import DATABASE, MACROS, Dialect, Statement, parse_statement
from workbench.query.scan import Comparison, Scan, plain_scan
from workbench.query.types import Column, normalize_table
from workbench.tenancy.principal import Principal

if TYPE_CHECKING:
    from deltalake import DeltaTable
    from polars.lazyframe.in_process import InProcessQuery

__all__ = [
    "AuditFn",
    "HiveSession",
    "QueryResult",
    "QuerySession",
    "TableSource",
    "lake_sources",
    "like",
]

logger = logging.getLogger(__name__)

AuditFn = Callable[[Principal, str, str, str], None]
"""``audit(principal, hiveql, outcome, detail)``: where a session reports each statement."""


@dataclasses.dataclass(frozen=True)
class TableSource:
    """A Delta table exposed to SQL: its name, URI, empty-table schema, the column it is
    partitioned by and how it is scoped (``None``: admins only)."""

    name: str
    uri: str
    schema: pa.Schema
    tenant_col: str | None = "tenant_id"
    building_col: str | None = "building_id"
    partition_col: str | None = None
    comment: str = ""
    # read whole into memory at each new version: a small table whose files are written
    # by Delta merges (string_view columns, which DuckDB's filter pushdown into an Arrow
    # dataset does not compare with its string literals)
    materialize: bool = False


def lake_sources(config: Config) -> list[TableSource]:
    """The tables a query session exposes: the lake's and the registry's
    devices, buildings and tenants (never users or the access log)."""
    registry_root = f"{config.lake.rstrip('/')}/registry"
    try:
        from workbench.registry import store

        reg_schemas = {
            "devices": store.DEVICES,
            "buildings": store.BUILDINGS,
            "tenants": store.TENANTS,
        }
    except (ImportError, AttributeError):  # pragma: no cover - registry mid-change
        reg_schemas = {}
    empty = pa.schema([pa.field("tenant_id", pa.string()), pa.field("building_id", pa.string())])
    return [
        TableSource(
            "telemetry",
            table_uri(config, "telemetry"),
            schemas.TELEMETRY,
            partition_col="event_date",
            comment="every accepted device event, partitioned by event_date (UTC)",
        ),
        TableSource(
            "building_metrics_1m",
            table_uri(config, "building_metrics_1m"),
            schemas.BUILDING_METRICS_1M,
            comment="one row per building per minute of event time",
        ),
        TableSource(
            "building_state",
            table_uri(config, "building_state"),
            schemas.BUILDING_STATE,
            comment="rolling 5-minute view, one row per building",
        ),
        TableSource(
            "alarms",
            table_uri(config, "alarms"),
            schemas.ALARMS,
            comment="alarms raised by the tenants' rules: one row per device and episode",
            materialize=True,
        ),
        TableSource(
            "telemetry_rejected",
            table_uri(config, "telemetry_rejected"),
            schemas.TELEMETRY_REJECTED,
            tenant_col=None,
            partition_col="rejected_date",
            comment="dead letters with reason (admins only)",
        ),
        TableSource(
            "devices",
            f"{registry_root}/devices",
            reg_schemas.get("devices", empty),
            comment="the device registry",
        ),
        TableSource(
            "buildings",
            f"{registry_root}/buildings",
            reg_schemas.get("buildings", empty),
            comment="buildings and their tenants",
        ),
        TableSource(
            "tenants",
            f"{registry_root}/tenants",
            reg_schemas.get("tenants", empty),
            building_col=None,  # no building: a viewer sees no tenant row
            comment="tenants",
        ),
    ]


@dataclasses.dataclass(frozen=True)
class QueryResult:
    """A statement's result: Hive-typed columns and the rows as an Arrow table."""

    columns: list[Column]
    table: pa.Table

    @property
    def rows(self) -> list[tuple[Any, ...]]:
        """The rows as Python tuples (small results; use :attr:`table` for big ones)."""
        names = self.table.column_names
        return [tuple(r[n] for n in names) for r in self.table.to_pylist()]

    @classmethod
    def of(cls, table: pa.Table) -> QueryResult:
        """Result of an Arrow table."""
        table = normalize_table(table)
        return cls([Column.of(f) for f in table.schema], table)


class HiveSession(Protocol):
    """What the HiveServer2 door asks of an engine's session (DuckDB's
    :class:`QuerySession`, Spark's ``SparkQuerySession``)."""

    def tables(self) -> list[str]: ...
    def source(self, name: str) -> TableSource: ...
    def describe(self, name: str) -> list[Column]: ...
    def execute(self, hiveql: str) -> QueryResult: ...
    def interrupt(self) -> None: ...
    def close(self) -> None: ...


class _Table:
    """One exposed Delta table: its DeltaTable (None until it exists), version, and the
    principal's row filter, applied to every dataset it hands out."""

    def __init__(self, source: TableSource, config: Config, principal: Principal) -> None:
        self.source = source
        self.config = config
        self.scope = principal.scope_arrow(
            tenant_col=source.tenant_col or "tenant_id", building_col=source.building_col
        )
        self.delta: DeltaTable | None = None
        self.version: int | None = None
        self.raw_name = f"_src_{source.name}_{secrets.token_hex(8)}"
        self.schema: tuple[int | None, pa.Schema] | None = None  # the view's, at a version
        self._memo: dict[tuple[str, Any], Any] = {}
        self._memo_version: int | None = None

    def memo(self, kind: str, key: Any, compute: Callable[[], Any]) -> Any:
        """``compute()``'s answer for ``key``, kept while the table stays at this version:
        what a statement learns of the table's files (its add actions, a row's width) and
        how it reads it, cost milliseconds each time a notebook cell runs again."""
        if self._memo_version != self.version or len(self._memo) >= _MEMO_ENTRIES:
            self._memo.clear()
            self._memo_version = self.version
        if (kind, key) not in self._memo:
            self._memo[kind, key] = compute()
        return self._memo[kind, key]

    def dataset(self) -> Any:
        """A fresh Arrow dataset of the table (or an empty table), or None when unchanged."""
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        if self.delta is None:
            try:
                self.delta = DeltaTable(
                    self.source.uri, storage_options=storage_options(self.config)
                )
            except TableNotFoundError:
                if self.version is None:
                    self.version = -1
                    return self.source.schema.empty_table()
                return None
        else:
            self.delta.update_incremental()
        version = int(self.delta.version())
        if version == self.version:
            return None
        self.version = version
        dataset = self.delta.to_pyarrow_dataset()
        if self.source.materialize:
            dataset = dataset.to_table()
        return dataset if self.scope is None else dataset.filter(self.scope)


class StatementRunner:
    """What every engine's session does the same way around its own reads: parse and vet a
    statement against the tables the session exposes, answer the statements about the
    catalog itself, and audit each outcome. A subclass sets ``principal``, ``_audit``,
    ``_lock`` and :attr:`dialect`, and gives :meth:`_exposed` and :meth:`_run_read`."""

    dialect: Dialect = "duckdb"
    principal: Principal
    _audit: AuditFn | None
    _lock: threading.Lock

    def tables(self) -> list[str]:
        """The tables this session may query, by name."""
        return sorted(self._exposed())

    def _exposed(self) -> dict[str, Any]:
        raise NotImplementedError

    def _run_read(self, st: Statement) -> QueryResult:
        raise NotImplementedError

    def execute(self, hiveql: str, *, polars_types: bool = False) -> QueryResult:
        """Run one HiveQL statement; raise QueryRefused / QueryFailed with a clear reason.

        ``polars_types``: a result polars reads from the lake keeps polars' own Arrow
        types (``string_view`` for strings), from which a polars frame is made without a
        copy; otherwise every result has the engine's types, as HiveServer2 maps them."""
        try:
            statement = parse_statement(hiveql, tables=self._exposed(), dialect=self.dialect)
            with self._lock:
                self._polars_types = polars_types
                result = self._run(statement)
        except QueryRefused as exc:
            self._report(hiveql, "denied", str(exc))
            raise
        except QueryFailed as exc:
            self._report(hiveql, "error", str(exc))
            raise
        self._report(hiveql, "ok", f"rows={result.table.num_rows}")
        return result

    def _report(self, hiveql: str, outcome: str, detail: str) -> None:
        if self._audit is not None:
            self._audit(self.principal, hiveql, outcome, detail)

    def _run(self, st: Statement) -> QueryResult:
        if st.kind == "use":
            return QueryResult.of(pa.table({"result": pa.array([], pa.string())}))
        if st.kind == "show_databases":
            names = [DATABASE] if like(DATABASE, st.pattern) else []
            return QueryResult.of(pa.table({"database_name": pa.array(names, pa.string())}))
        if st.kind == "show_tables":
            names = [n for n in self.tables() if like(n, st.pattern)]
            return QueryResult.of(pa.table({"tab_name": pa.array(names, pa.string())}))
        return self._run_read(st)


class QuerySession(StatementRunner):
    """A principal's HiveQL session over the lake.

    >>> import tempfile
    >>> from workbench.config import Config
    >>> cfg = Config.from_env({"WORKBENCH_HOME": tempfile.mkdtemp()})
    >>> with QuerySession(cfg, Principal("ann", "analyst", "t-0001")) as s:
    ...     s.execute("SELECT count(*) AS n FROM telemetry").rows
    [(0,)]
    """

    def __init__(
        self,
        config: Config,
        principal: Principal,
        *,
        audit: AuditFn | None = None,
        max_rows: int | None = None,
        max_bytes: int | None = None,
        statement_timeout: float | None = None,
    ) -> None:
        principal.require("query")
        self.config = config
        self.principal = principal
        self.max_rows = max_rows or config.hive_max_rows
        self.max_bytes = max_bytes or config.hive_max_result_bytes
        self.statement_timeout = statement_timeout or config.hive_statement_timeout
        self._audit = audit
        self._lock = threading.Lock()
        self._con = duckdb.connect(":memory:")
        self._tables: dict[str, _Table] = {}
        self._scanning: InProcessQuery | None = None  # a plain scan polars is reading
        self._cancelled = False
        self._polars_types = False  # of the statement running (StatementRunner.execute)
        try:
            self._setup()
        except Exception:
            self._con.close()
            raise

    # --- set-up ---------------------------------------------------------------------------

    def _setup(self) -> None:
        con = self._con
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET python_enable_replacements = false")
        for macro in MACROS:
            con.execute(macro)
        for source in lake_sources(self.config):
            if source.tenant_col is None and not self.principal.is_admin:
                continue
            table = _Table(source, self.config, self.principal)
            self._tables[source.name] = table
            con.register(table.raw_name, table.dataset())
            scope = self.principal.scope_sql(
                tenant_col=source.tenant_col or "tenant_id",
                building_col=source.building_col or "NULL",
            )
            con.execute(
                f'CREATE VIEW "{source.name}" AS SELECT * FROM "{table.raw_name}" WHERE {scope}'
            )
        # each session is its own DuckDB database: this bounds one session, and so one
        # statement, whatever it builds (a recursive CTE, a huge join)
        con.execute(f"SET memory_limit = '{self.config.hive_memory_limit}'")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")

    def _refresh(self, names: tuple[str, ...]) -> None:
        for name in names:
            table = self._tables[name]
            fresh = table.dataset()
            if fresh is not None:
                self._con.register(table.raw_name, fresh)

    # --- catalog ---------------------------------------------------------------------------

    def _exposed(self) -> dict[str, Any]:
        return self._tables

    def source(self, name: str) -> TableSource:
        """The definition behind table ``name``."""
        return self._tables[name].source

    def describe(self, name: str) -> list[Column]:
        """The Hive-typed columns of table ``name``."""
        if name not in self._tables:
            raise QueryFailed(f"table {name!r} not found", hint="SHOW TABLES lists the tables")
        with self._lock:
            self._refresh((name,))
            schema = self._con.sql(f'SELECT * FROM "{name}" LIMIT 0').to_arrow_table().schema
        return [Column.of(f) for f in schema]

    # --- statements ------------------------------------------------------------------------

    def _run_read(self, st: Statement) -> QueryResult:
        if st.kind == "describe":
            self._refresh((st.target,))
            schema = self._con.sql(f'SELECT * FROM "{st.target}" LIMIT 0').to_arrow_table().schema
            cols = [Column.of(f) for f in schema]
            return QueryResult.of(
                pa.table(
                    {
                        "col_name": [c.name for c in cols],
                        "data_type": [c.hive_type.lower() for c in cols],
                        "comment": pa.array([""] * len(cols), pa.string()),
                    }
                )
            )
        if st.kind == "show_partitions":
            col = self._tables[st.target].source.partition_col
            if col is None:
                raise QueryFailed(f"table {st.target!r} is not partitioned")
            self._refresh((st.target,))
            rows = self._con.execute(
                f'SELECT DISTINCT "{col}" FROM "{st.target}" ORDER BY 1'
            ).fetchall()
            parts = [f"{col}={r[0].isoformat()}" for r in rows]
            return QueryResult.of(pa.table({"partition": pa.array(parts, pa.string())}))
        self._refresh(st.tables)
        scan = self._plain_scan(st)
        result = self._scan(scan) if scan is not None else None
        return QueryResult.of(result if result is not None else self._fetch(st.sql))

    # --- plain scans, read by polars (workbench.query.scan) -------------------------------

    def _plain_scan(self, st: Statement) -> Scan | None:
        if len(st.tables) != 1:
            return None
        table = self._tables[st.tables[0]]
        if table.delta is None or table.source.materialize:
            return None
        if table.source.building_col is None and self.principal.role == "viewer":
            return None
        if table.schema is None or table.schema[0] != table.version:
            view = self._con.sql(f'SELECT * FROM "{st.tables[0]}" LIMIT 0')
            table.schema = (table.version, view.to_arrow_table().schema)
        schemas = {st.tables[0]: table.schema[1]}
        scan: Scan | None = table.memo("scan", st.sql, lambda: plain_scan(st.sql, schemas))
        return scan

    def _scan(self, scan: Scan) -> pa.Table | None:
        """``scan`` read by polars from the Delta table's files, at the session's version,
        in the principal's scope, as the view would answer it (DuckDB's column types), under
        the same row and byte caps and statement timeout; None when it may be too big for
        that (DuckDB then answers it, streaming it under its memory limit).

        polars has no memory limit and checks the byte cap only on the whole result, so
        the first rows are read first: a result whose rows, that size, would fill more
        than a quarter of the byte cap is left to DuckDB."""
        rows = self.max_rows + 1 if scan.limit is None else min(scan.limit, self.max_rows + 1)
        deadline = time.monotonic() + self.statement_timeout
        if rows > _PROBE_ROWS:
            # no more rows than the files the filter may match hold (their partition
            # values and column statistics say which): a building's day, not the table
            rows = min(rows, self._rows_in_reach(scan))
        if rows > _PROBE_ROWS:
            # a few rows of one file tell the width of a row far cheaper than a probe
            # through the whole table (20 ms of a 30 ms million-row read): a result that
            # surely fits is read at once
            width = self._row_width(scan)
            if width is not None and rows * width <= self.max_bytes / 4:
                return self._capped(self._read(scan, rows, deadline))
        probe = self._read(scan, min(rows, _PROBE_ROWS), deadline)
        if probe.num_rows < min(rows, _PROBE_ROWS) or probe.num_rows == rows:
            return self._capped(probe)  # that was all of it
        if rows * probe.nbytes / max(probe.num_rows, 1) > self.max_bytes / 4:
            return None
        return self._capped(self._read(scan, rows, deadline))

    def _rows_in_reach(self, scan: Scan) -> int:
        """The rows of the table's files that ``scan``'s comparisons may match, by each
        file's partition value and min/max statistics (a bound, not a count)."""
        table = self._tables[scan.table]
        delta = table.delta
        assert delta is not None
        actions: pa.Table = table.memo(
            "add actions", None, lambda: pa.table(delta.get_add_actions(flatten=True))
        )
        partition = table.source.partition_col
        reach = [True] * actions.num_rows
        for comparison in scan.where:
            column = comparison.column
            if column == partition and f"partition.{column}" in actions.column_names:
                lows = highs = actions.column(f"partition.{column}").to_pylist()
            elif f"min.{column}" in actions.column_names:
                lows = actions.column(f"min.{column}").to_pylist()
                highs = actions.column(f"max.{column}").to_pylist()
            else:
                continue
            for i, (low, high) in enumerate(zip(lows, highs, strict=True)):
                reach[i] = reach[i] and _may_match(comparison, low, high)
        counts = actions.column("num_records").to_pylist()
        return sum(int(n or 0) for n, kept in zip(counts, reach, strict=True) if kept)

    def _row_width(self, scan: Scan) -> float | None:
        width: float | None = self._tables[scan.table].memo(
            "width", scan.columns, lambda: self._sample_width(scan)
        )
        return width

    def _sample_width(self, scan: Scan) -> float | None:
        """Bytes per row of ``scan``'s columns, in up to :data:`_PROBE_ROWS` rows of the
        table's first file, whoever's they are (they are only measured); None when
        there is no such file or it lacks a column (written before the column was).
        The partition column is in the file's path, not in it: counted as 8 bytes."""
        table = self._tables[scan.table]
        assert table.delta is not None
        files = table.delta.file_uris()
        stored = [c for c in scan.columns if c != table.source.partition_col]
        if not files:
            return None
        try:
            sample = (
                pl.scan_parquet(files[0], storage_options=storage_options(self.config) or None)
                .select(stored)
                .head(_PROBE_ROWS)
                .collect()
            )
        except (pl.exceptions.PolarsError, OSError):
            return None
        if sample.height == 0:
            return None
        return sample.estimated_size() / sample.height + 8 * (len(scan.columns) - len(stored))

    def _capped(self, result: pa.Table) -> pa.Table:
        if result.num_rows > self.max_rows:
            raise self._too_many_rows()
        if result.nbytes > self.max_bytes:
            raise self._too_large()
        return result

    def _read(self, scan: Scan, rows: int, deadline: float) -> pa.Table:
        """At most ``rows`` rows of ``scan``, stopped at ``deadline`` (monotonic) or a
        cancel."""
        table = self._tables[scan.table]
        assert table.delta is not None and table.schema is not None
        source = table.source
        keep = self.principal.scope_filter(
            tenant_col=source.tenant_col or "tenant_id",
            building_col=source.building_col or "building_id",
        )
        for comparison in scan.where:
            keep = keep & comparison.expr()
        frame = (
            pl.scan_delta(table.delta, storage_options=storage_options(self.config) or None)
            .filter(keep)
            .select(scan.columns)
            .head(rows)
        )
        running = frame.collect(background=True)
        self._scanning = running
        try:
            while (found := running.fetch()) is None:
                if self._cancelled or time.monotonic() > deadline:
                    running.cancel()
                    if self._cancelled:
                        raise QueryFailed("the statement was cancelled")
                    raise _timed_out(self.statement_timeout)
                time.sleep(0.002)
        except pl.exceptions.PolarsError as exc:
            raise QueryFailed(f"query failed: {_first_line(exc)}") from None
        finally:
            self._scanning = None
            self._cancelled = False
        if self._polars_types:
            return found.to_arrow(compat_level=pl.CompatLevel.newest())
        return found.to_arrow().cast(pa.schema([table.schema[1].field(c) for c in scan.columns]))

    def _too_many_rows(self) -> QueryFailed:
        return QueryFailed(
            f"the result has more than {self.max_rows} rows",
            hint="aggregate, add a LIMIT, or raise WORKBENCH_HIVE_MAX_ROWS",
        )

    def _too_large(self) -> QueryFailed:
        return QueryFailed(
            f"the result is larger than {self.max_bytes} bytes",
            hint="select fewer or narrower columns, aggregate, add a LIMIT, "
            "or raise WORKBENCH_HIVE_MAX_RESULT_BYTES",
        )

    def _fetch(self, sql: str) -> pa.Table:
        deadline = _Deadline(self._con, self.statement_timeout)
        try:
            reader = self._con.sql(sql).to_arrow_reader(65536)
            batches, rows, size = [], 0, 0
            for batch in reader:
                rows += batch.num_rows
                size += batch.nbytes
                if rows > self.max_rows:
                    raise self._too_many_rows()
                if size > self.max_bytes:
                    raise self._too_large()
                batches.append(batch)
            return pa.Table.from_batches(batches, schema=reader.schema)
        except duckdb.InterruptException:
            raise self._interrupted(deadline) from None
        except duckdb.PermissionException as exc:
            raise QueryRefused(f"refused by the engine: {_first_line(exc)}") from None
        except duckdb.OutOfMemoryException:
            raise QueryFailed(
                f"the statement needed more than this session's "
                f"{self.config.hive_memory_limit} of memory",
                hint="aggregate earlier, narrow the time range, or ask an operator to raise "
                "WORKBENCH_HIVE_MEMORY_LIMIT",
            ) from None
        except duckdb.Error as exc:
            raise QueryFailed(f"query failed: {_first_line(exc)}") from None
        except (OSError, pa.ArrowException) as exc:
            # a streamed result reports DuckDB's errors, the interrupt included, through
            # pyarrow's reader
            if "INTERRUPT" in str(exc):
                raise self._interrupted(deadline) from None
            raise QueryFailed(f"query failed: {_first_line(exc)}") from None
        finally:
            deadline.stop()

    def _interrupted(self, deadline: _Deadline) -> QueryFailed:
        if deadline.expired:
            return _timed_out(deadline.seconds)
        return QueryFailed("the statement was cancelled")

    def interrupt(self) -> None:
        """Cancel the running statement (from another thread)."""
        if self._scanning is not None:
            self._cancelled = True
        self._con.interrupt()

    def close(self) -> None:
        """Release the DuckDB connection."""
        self._con.close()

    def __enter__(self) -> QuerySession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _may_match(comparison: Comparison, low: Any, high: Any) -> bool:
    """Whether a file whose ``comparison.column`` spans ``low``..``high`` may hold a row
    the comparison keeps (True when its statistics are missing or not comparable)."""
    if low is None or high is None:
        return True
    value = comparison.value
    try:
        match comparison.op.__name__:
            case "eq":
                return bool(low <= value <= high)
            case "ne":
                return not (low == high == value)
            case "lt":
                return bool(low < value)
            case "le":
                return bool(low <= value)
            case "gt":
                return bool(high > value)
            case "ge":
                return bool(high >= value)
    except TypeError:
        pass
    return True


# rows a plain scan reads first, to tell its result's size from (QuerySession._scan)
_PROBE_ROWS = 1000
# what a table keeps of its last statements (see _Table.memo)
_MEMO_ENTRIES = 256


def _timed_out(seconds: float) -> QueryFailed:
    return QueryFailed(
        f"the statement ran longer than {seconds:g} s and was stopped",
        hint="narrow it (a WHERE on event_date, fewer rows, a LIMIT), "
        "or ask an operator to raise WORKBENCH_HIVE_STATEMENT_TIMEOUT",
    )


class _Deadline:
    """Interrupts a connection's statement once it has run ``seconds``.

    The interrupt is repeated until :meth:`stop`, because DuckDB drops one that lands
    between two steps of a streamed result; :meth:`stop` returns only once no
    interrupt can follow, so none reaches the connection's next statement."""

    def __init__(self, con: duckdb.DuckDBPyConnection, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._con = con
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="query-deadline", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        if self._done.wait(self.seconds):
            return
        self.expired = True
        while True:
            self._con.interrupt()
            if self._done.wait(0.05):
                return

    def stop(self) -> None:
        """The statement is over: stop watching."""
        self._done.set()
        self._thread.join()


def like(name: str, pattern: str) -> bool:
    """Hive's SHOW ... LIKE: ``*`` any characters, ``|`` alternatives, case-insensitive."""
    if not pattern:
        return True
    alternatives = [re.escape(p.strip()).replace(r"\*", ".*") for p in pattern.split("|")]
    return re.fullmatch("|".join(alternatives), name, flags=re.IGNORECASE) is not None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    # DuckDB names internal raw sources in some messages; never show them
    text = re.sub(r"_src_(\w+?)_[0-9a-f]{16}", r"\1", text)
    return text.splitlines()[0] if text else type(exc).__name__

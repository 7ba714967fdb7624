"""The query engine: one DuckDB connection per session, over the lake's Delta tables, scoped
to one principal.

Each lake table is read through ``deltalake.DeltaTable(...).to_pyarrow_dataset()``
(DuckDB pushes projections and filters into the Arrow scan, so ``event_date``
predicates prune partitions and Parquet statistics prune row groups) and shown
to SQL as a view that already applies :meth:`Principal.scope_sql`; the raw
datasets are registered under random names that no checked statement may name.
After the views exist the connection is locked: no external access (files,
network, extensions), locked configuration, no Python replacement scans.

Sessions are not shared between threads; one statement runs at a time.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import secrets
import threading
from collections.abc import Callable
from typing import Any

import duckdb
import pyarrow as pa

from workbench.config import Config
from workbench.exceptions import QueryFailed, QueryRefused
from workbench.lake import schemas
from workbench.lake.tables import storage_options, table_uri
from workbench.query.hiveql import DATABASE, MACROS, Statement, parse_statement
from workbench.query.types import Column, normalize_table
from workbench.tenancy.principal import Principal

__all__ = ["AuditFn", "QueryResult", "QuerySession", "TableSource", "lake_sources"]

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
    building_col: str = "building_id"
    partition_col: str | None = None
    comment: str = ""


def lake_sources(config: Config) -> list[TableSource]:
    """The tables a query session exposes: the lake's (DESIGN.md §7) and the registry's
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
            building_col="NULL",  # a viewer's building list never matches a tenant row
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


class _Table:
    """One exposed Delta table: its DeltaTable (None until it exists) and version."""

    def __init__(self, source: TableSource, config: Config) -> None:
        self.source = source
        self.config = config
        self.delta: Any = None
        self.version: int | None = None
        self.raw_name = f"_src_{source.name}_{secrets.token_hex(8)}"

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
        return self.delta.to_pyarrow_dataset()


class QuerySession:
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
    ) -> None:
        principal.require("query")
        self.config = config
        self.principal = principal
        self.max_rows = max_rows or config.hive_max_rows
        self._audit = audit
        self._lock = threading.Lock()
        self._con = duckdb.connect(":memory:")
        self._tables: dict[str, _Table] = {}
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
            table = _Table(source, self.config)
            self._tables[source.name] = table
            con.register(table.raw_name, table.dataset())
            scope = self.principal.scope_sql(
                tenant_col=source.tenant_col or "tenant_id", building_col=source.building_col
            )
            con.execute(
                f'CREATE VIEW "{source.name}" AS SELECT * FROM "{table.raw_name}" WHERE {scope}'
            )
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")

    def _refresh(self, names: tuple[str, ...]) -> None:
        for name in names:
            table = self._tables[name]
            fresh = table.dataset()
            if fresh is not None:
                self._con.register(table.raw_name, fresh)

    # --- catalog ---------------------------------------------------------------------------

    def tables(self) -> list[str]:
        """The tables this session may query, by name."""
        return sorted(self._tables)

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

    def execute(self, hiveql: str) -> QueryResult:
        """Run one HiveQL statement; raise QueryRefused / QueryFailed with a clear reason."""
        try:
            statement = parse_statement(hiveql, tables=self._tables)
            with self._lock:
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
            names = [DATABASE] if _like(DATABASE, st.pattern) else []
            return QueryResult.of(pa.table({"database_name": pa.array(names, pa.string())}))
        if st.kind == "show_tables":
            names = [n for n in self.tables() if _like(n, st.pattern)]
            return QueryResult.of(pa.table({"tab_name": pa.array(names, pa.string())}))
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
        return QueryResult.of(self._fetch(st.sql))

    def _fetch(self, sql: str) -> pa.Table:
        try:
            reader = self._con.sql(sql).to_arrow_reader(65536)
            batches, rows = [], 0
            for batch in reader:
                rows += batch.num_rows
                if rows > self.max_rows:
                    raise QueryFailed(
                        f"the result has more than {self.max_rows} rows",
                        hint="aggregate, add a LIMIT, or raise WORKBENCH_HIVE_MAX_ROWS",
                    )
                batches.append(batch)
            return pa.Table.from_batches(batches, schema=reader.schema)
        except duckdb.InterruptException:
            raise QueryFailed("the statement was cancelled") from None
        except duckdb.PermissionException as exc:
            raise QueryRefused(f"refused by the engine: {_first_line(exc)}") from None
        except duckdb.Error as exc:
            raise QueryFailed(f"query failed: {_first_line(exc)}") from None

    def interrupt(self) -> None:
        """Cancel the running statement (from another thread)."""
        self._con.interrupt()

    def close(self) -> None:
        """Release the DuckDB connection."""
        self._con.close()

    def __enter__(self) -> QuerySession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _like(name: str, pattern: str) -> bool:
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

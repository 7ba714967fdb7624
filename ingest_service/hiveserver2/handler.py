"""The TCLIService handler: HiveServer2 sessions and operations over :mod:`workbench.query`.

One :class:`Backend` per server holds every session and operation; one
:class:`Handler` per connection carries who authenticated on it. Results are
materialised Arrow tables that ``FetchResults`` slices into column-based row sets
(protocol V6 and later, what pyhive and modern JDBC ask for) or row-based ones.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
from TCLIService import ttypes as t

from workbench.config import Config
from workbench.exceptions import AccessDenied, QueryFailed, WorkbenchError
from workbench.query.engine import QueryResult, QuerySession
from workbench.query.types import Column, as_hive_text
from workbench.tenancy.principal import Principal

__all__ = ["Backend", "Handler"]

logger = logging.getLogger(__name__)

V6 = t.TProtocolVersion.HIVE_CLI_SERVICE_PROTOCOL_V6
VMAX = t.TProtocolVersion.HIVE_CLI_SERVICE_PROTOCOL_V10

_TYPE_IDS = {
    "BOOLEAN": t.TTypeId.BOOLEAN_TYPE,
    "TINYINT": t.TTypeId.TINYINT_TYPE,
    "SMALLINT": t.TTypeId.SMALLINT_TYPE,
    "INT": t.TTypeId.INT_TYPE,
    "BIGINT": t.TTypeId.BIGINT_TYPE,
    "FLOAT": t.TTypeId.FLOAT_TYPE,
    "DOUBLE": t.TTypeId.DOUBLE_TYPE,
    "STRING": t.TTypeId.STRING_TYPE,
    "TIMESTAMP": t.TTypeId.TIMESTAMP_TYPE,
    "BINARY": t.TTypeId.BINARY_TYPE,
    "DECIMAL": t.TTypeId.DECIMAL_TYPE,
    "DATE": t.TTypeId.DATE_TYPE,
    "ARRAY": t.TTypeId.ARRAY_TYPE,
    "MAP": t.TTypeId.MAP_TYPE,
    "STRUCT": t.TTypeId.STRUCT_TYPE,
}
# java.sql.Types codes, for GetColumns/GetTypeInfo
_JDBC = {
    "BOOLEAN": 16,
    "TINYINT": -6,
    "SMALLINT": 5,
    "INT": 4,
    "BIGINT": -5,
    "FLOAT": 6,
    "DOUBLE": 8,
    "STRING": 12,
    "TIMESTAMP": 93,
    "BINARY": -2,
    "DECIMAL": 3,
    "DATE": 91,
    "ARRAY": 2003,
    "MAP": 2000,
    "STRUCT": 2002,
}
_FUNCTIONS = [
    "avg",
    "count",
    "sum",
    "min",
    "max",
    "collect_list",
    "collect_set",
    "percentile_approx",
    "concat_ws",
    "date_format",
    "from_unixtime",
    "unix_timestamp",
    "to_date",
    "year",
    "month",
    "day",
    "hour",
    "minute",
    "datediff",
    "date_add",
    "date_sub",
    "size",
    "explode",
    "nvl",
    "coalesce",
    "get_json_object",
    "regexp_extract",
    "split",
    "round",
    "floor",
    "ceil",
    "abs",
    "lower",
    "upper",
    "length",
    "substr",
    "trim",
    "cast",
]


def _ok() -> t.TStatus:
    return t.TStatus(statusCode=t.TStatusCode.SUCCESS_STATUS)


def _error(message: str, sql_state: str = "42000") -> t.TStatus:
    return t.TStatus(
        statusCode=t.TStatusCode.ERROR_STATUS,
        errorMessage=message,
        sqlState=sql_state,
        errorCode=1,
        infoMessages=[message],
    )


def _handle() -> t.THandleIdentifier:
    return t.THandleIdentifier(guid=uuid.uuid4().bytes, secret=uuid.uuid4().bytes)


def _type_desc(column: Column) -> t.TTypeDesc:
    prim = column.primitive
    if prim == "ARRAY":
        inner = column.hive_type[len("ARRAY<") : -1]
        elem = _TYPE_IDS.get(Column("", inner).primitive, t.TTypeId.STRING_TYPE)
        return t.TTypeDesc(
            types=[
                t.TTypeEntry(arrayEntry=t.TArrayTypeEntry(objectTypePtr=1)),
                t.TTypeEntry(primitiveEntry=t.TPrimitiveTypeEntry(type=elem)),
            ]
        )
    if prim in ("MAP", "STRUCT"):  # sent as JSON text; described as STRING
        prim = "STRING"
    qualifiers = None
    if prim == "DECIMAL" and column.precision is not None:
        qualifiers = t.TTypeQualifiers(
            qualifiers={
                "precision": t.TTypeQualifierValue(i32Value=column.precision),
                "scale": t.TTypeQualifierValue(i32Value=column.scale or 0),
            }
        )
    return t.TTypeDesc(
        types=[
            t.TTypeEntry(
                primitiveEntry=t.TPrimitiveTypeEntry(
                    type=_TYPE_IDS.get(prim, t.TTypeId.STRING_TYPE), typeQualifiers=qualifiers
                )
            )
        ]
    )


def _schema(columns: list[Column]) -> t.TTableSchema:
    return t.TTableSchema(
        columns=[
            t.TColumnDesc(columnName=c.name, typeDesc=_type_desc(c), position=i + 1, comment="")
            for i, c in enumerate(columns)
        ]
    )


def _nulls(array: pa.Array) -> bytes:
    if array.null_count == 0:
        return b""
    mask = np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    return bytes(np.packbits(mask, bitorder="little").tobytes())


def _tcolumn(column: Column, array: pa.Array) -> t.TColumn:
    prim = column.primitive
    nulls = _nulls(array)
    if prim == "BOOLEAN":
        return t.TColumn(boolVal=t.TBoolColumn(array.fill_null(False).to_pylist(), nulls))
    if prim in ("TINYINT", "SMALLINT", "INT", "BIGINT"):
        values = array.fill_null(0).to_pylist()
        kind = {"TINYINT": "byteVal", "SMALLINT": "i16Val", "INT": "i32Val", "BIGINT": "i64Val"}
        cls = {
            "byteVal": t.TByteColumn,
            "i16Val": t.TI16Column,
            "i32Val": t.TI32Column,
            "i64Val": t.TI64Column,
        }[kind[prim]]
        return t.TColumn(**{kind[prim]: cls(values, nulls)})
    if prim in ("FLOAT", "DOUBLE"):
        return t.TColumn(doubleVal=t.TDoubleColumn(array.fill_null(0.0).to_pylist(), nulls))
    if prim == "BINARY":
        return t.TColumn(binaryVal=t.TBinaryColumn(array.fill_null(b"").to_pylist(), nulls))
    text = as_hive_text(array)
    return t.TColumn(stringVal=t.TStringColumn(text.fill_null("").to_pylist(), nulls))


def _tvalue(column: Column, value: Any) -> t.TColumnValue:
    prim = column.primitive
    if prim == "BOOLEAN":
        return t.TColumnValue(boolVal=t.TBoolValue(value))
    if prim == "TINYINT":
        return t.TColumnValue(byteVal=t.TByteValue(value))
    if prim == "SMALLINT":
        return t.TColumnValue(i16Val=t.TI16Value(value))
    if prim == "INT":
        return t.TColumnValue(i32Val=t.TI32Value(value))
    if prim == "BIGINT":
        return t.TColumnValue(i64Val=t.TI64Value(value))
    if prim in ("FLOAT", "DOUBLE"):
        return t.TColumnValue(doubleVal=t.TDoubleValue(value))
    return t.TColumnValue(stringVal=t.TStringValue(value))


def _rowset(result: QueryResult, start: int, count: int, columnar: bool) -> t.TRowSet:
    part = result.table.slice(start, count)
    if columnar:
        columns = [
            _tcolumn(c, part.column(i).combine_chunks()) for i, c in enumerate(result.columns)
        ]
        return t.TRowSet(startRowOffset=start, rows=[], columns=columns)
    texts = []
    for i, c in enumerate(result.columns):
        arr = part.column(i).combine_chunks()
        if c.primitive in ("BOOLEAN", "TINYINT", "SMALLINT", "INT", "BIGINT", "FLOAT", "DOUBLE"):
            texts.append(arr.to_pylist())
        else:
            texts.append(as_hive_text(arr).to_pylist())
    rows = [
        t.TRow(colVals=[_tvalue(c, texts[i][r]) for i, c in enumerate(result.columns)])
        for r in range(part.num_rows)
    ]
    return t.TRowSet(startRowOffset=start, rows=rows)


def _like(pattern: str | None) -> re.Pattern[str]:
    """A JDBC search pattern (``%`` any, ``_`` one character) as a regex; None, '' or '*'
    match all."""
    if not pattern or pattern in ("*", "%"):
        return re.compile(".*", re.S)
    out = ""
    for ch in pattern:
        out += ".*" if ch in "%*" else "." if ch == "_" else re.escape(ch)
    return re.compile(out, re.I | re.S)


@dataclasses.dataclass
class _Session:
    handle: t.THandleIdentifier
    principal: Principal
    query: QuerySession
    protocol: int
    ops: set[bytes] = dataclasses.field(default_factory=set)


@dataclasses.dataclass
class _Operation:
    handle: t.TOperationHandle
    session: _Session
    state: int = t.TOperationState.INITIALIZED_STATE
    result: QueryResult | None = None
    error: str = ""
    offset: int = 0
    done: threading.Event = dataclasses.field(default_factory=threading.Event)


class Backend:
    """Every session and operation of one server, the query thread pool and the audit
    writer."""

    def __init__(
        self,
        config: Config,
        *,
        audit: Callable[..., None] | None = None,
        workers: int = 4,
    ) -> None:
        from workbench.tenancy import record_access

        self.config = config
        self._record = audit or record_access
        self._lock = threading.Lock()
        self.sessions: dict[bytes, _Session] = {}
        self.operations: dict[bytes, _Operation] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="hs2-op")
        self._audit_q: queue.Queue[tuple[Any, ...] | None] = queue.Queue()
        self._audit_thread = threading.Thread(
            target=self._audit_loop, name="hs2-audit", daemon=True
        )
        self._audit_thread.start()

    # --- audit: written off the request path, in order ------------------------------------

    def audit(
        self, who: Principal | str, action: str, target: str, outcome: str, detail: str
    ) -> None:
        """Queue one access-log entry."""
        self._audit_q.put((who, action, target, outcome, detail))

    def _audit_loop(self) -> None:
        while True:
            item = self._audit_q.get()
            if item is None:
                return
            who, action, target, outcome, detail = item
            try:
                self._record(
                    self.config,
                    who,
                    action=action,
                    target=target[:500],
                    outcome=outcome,
                    detail=detail,
                )
            except Exception:  # record_access never raises; a replacement might
                logger.exception("access log write failed")

    def _statement_audit(
        self, principal: Principal, hiveql: str, outcome: str, detail: str
    ) -> None:
        self.audit(principal, "query", hiveql, outcome, f"hiveserver2: {detail}")

    def close(self) -> None:
        """Close every session, stop the pool, flush the audit log."""
        with self._lock:
            sessions = list(self.sessions.values())
        for session in sessions:
            self.close_session(session)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._audit_q.put(None)
        self._audit_thread.join(timeout=10)

    # --- sessions --------------------------------------------------------------------------

    def open_session(self, principal: Principal, protocol: int) -> _Session:
        """A new session for ``principal`` (raises AccessDenied for roles that may not query)."""
        query = QuerySession(self.config, principal, audit=self._statement_audit)
        session = _Session(_handle(), principal, query, protocol)
        with self._lock:
            self.sessions[session.handle.guid] = session
        logger.info("session opened for %s (%s)", principal.user, principal.role)
        return session

    def session(self, handle: t.TSessionHandle | None) -> _Session:
        """The live session of ``handle``, or raise KeyError."""
        if handle is None or handle.sessionId is None:
            raise KeyError("no session handle")
        with self._lock:
            return self.sessions[handle.sessionId.guid]

    def close_session(self, session: _Session) -> None:
        """Close a session and its operations: cancel what still runs, wait for it to stop
        (DuckDB refuses to close a connection a statement is using), then close."""
        with self._lock:
            self.sessions.pop(session.handle.guid, None)
            ops = [o for guid in session.ops if (o := self.operations.pop(guid, None))]
        for op in ops:
            self.cancel(op)
        session.query.close()

    def cancel(self, op: _Operation, *, timeout: float = 30.0) -> None:
        """Cancel ``op`` if it has not finished, and wait until its statement has stopped.

        An interrupt that reaches DuckDB before the statement starts is lost, so it is
        repeated until the operation reports done."""
        if op.state in (t.TOperationState.RUNNING_STATE, t.TOperationState.INITIALIZED_STATE):
            op.state = t.TOperationState.CANCELED_STATE
        if op.state != t.TOperationState.CANCELED_STATE or op.done.is_set():
            return
        deadline = time.monotonic() + timeout
        while not op.done.wait(0.05):
            op.session.query.interrupt()
            if time.monotonic() > deadline:
                logger.warning("operation did not stop within %.0f s of its cancel", timeout)
                return

    # --- operations ------------------------------------------------------------------------

    def new_operation(self, session: _Session, kind: int) -> _Operation:
        """Register an operation of ``kind`` (TOperationType)."""
        handle = t.TOperationHandle(operationId=_handle(), operationType=kind, hasResultSet=True)
        op = _Operation(handle, session)
        with self._lock:
            self.operations[handle.operationId.guid] = op
            session.ops.add(handle.operationId.guid)
        return op

    def operation(self, handle: t.TOperationHandle | None) -> _Operation:
        """The live operation of ``handle``, or raise KeyError."""
        if handle is None or handle.operationId is None:
            raise KeyError("no operation handle")
        with self._lock:
            return self.operations[handle.operationId.guid]

    def run(self, op: _Operation, work: Callable[[], QueryResult], *, run_async: bool) -> None:
        """Run ``work`` for ``op`` now, or on the pool when ``run_async``."""
        op.state = t.TOperationState.RUNNING_STATE

        def execute() -> None:
            try:
                if op.state != t.TOperationState.RUNNING_STATE:
                    return  # cancelled before it started
                result = work()
                if op.state == t.TOperationState.RUNNING_STATE:
                    op.result = result
                    op.state = t.TOperationState.FINISHED_STATE
            except WorkbenchError as exc:
                if op.state == t.TOperationState.RUNNING_STATE:
                    op.error = str(exc)
                    op.state = t.TOperationState.ERROR_STATE
            except Exception as exc:
                logger.exception("operation failed")
                if op.state == t.TOperationState.RUNNING_STATE:
                    op.error = f"internal error: {type(exc).__name__}: {exc}"
                    op.state = t.TOperationState.ERROR_STATE
            finally:
                op.done.set()

        if run_async:
            self._pool.submit(execute)
        else:
            execute()

    def close_operation(self, op: _Operation) -> None:
        """Forget an operation."""
        with self._lock:
            self.operations.pop(op.handle.operationId.guid, None)
            op.session.ops.discard(op.handle.operationId.guid)
        op.state = t.TOperationState.CLOSED_STATE


class Handler:
    """``TCLIService.Iface`` for one connection; ``principal`` is who authenticated on it
    (None on a trusted NOSASL connection, where OpenSession names the user)."""

    def __init__(self, backend: Backend, principal: Principal | None) -> None:
        self.backend = backend
        self.principal = principal
        self.opened: list[_Session] = []

    def disconnected(self) -> None:
        """The client went away: close the sessions it left open."""
        for session in self.opened:
            if session.handle.guid in self.backend.sessions:
                self.backend.close_session(session)

    # --- sessions --------------------------------------------------------------------------

    def OpenSession(self, req: t.TOpenSessionReq) -> t.TOpenSessionResp:
        protocol = min(req.client_protocol if req.client_protocol is not None else VMAX, VMAX)
        principal = self.principal
        try:
            if principal is None:
                principal = self._trusted(req.username or "")
            session = self.backend.open_session(principal, protocol)
        except AccessDenied as exc:
            self.backend.audit(principal or "?", "query", "OpenSession", "denied", str(exc))
            return t.TOpenSessionResp(
                status=_error(str(exc), "42000"), serverProtocolVersion=protocol
            )
        except WorkbenchError as exc:
            return t.TOpenSessionResp(
                status=_error(str(exc), "08004"), serverProtocolVersion=protocol
            )
        self.opened.append(session)
        return t.TOpenSessionResp(
            status=_ok(),
            serverProtocolVersion=protocol,
            sessionHandle=t.TSessionHandle(sessionId=session.handle),
            configuration={},
        )

    def _trusted(self, user: str) -> Principal:
        from workbench.exceptions import AuthenticationFailed
        from workbench.tenancy import UserStore

        try:
            found = UserStore(self.backend.config).get(user)
        except WorkbenchError:
            raise AuthenticationFailed(f"unknown user {user!r}") from None
        if found.status != "active":
            raise AuthenticationFailed(f"user {user!r} is disabled")
        return found.principal()

    def CloseSession(self, req: t.TCloseSessionReq) -> t.TCloseSessionResp:
        try:
            session = self.backend.session(req.sessionHandle)
        except KeyError:
            return t.TCloseSessionResp(status=_error("invalid session handle", "HY000"))
        self.backend.close_session(session)
        return t.TCloseSessionResp(status=_ok())

    def GetInfo(self, req: t.TGetInfoReq) -> t.TGetInfoResp:
        values = {
            t.TGetInfoType.CLI_SERVER_NAME: "Smart-building workbench HiveServer2",
            t.TGetInfoType.CLI_DBMS_NAME: "Apache Hive",
            t.TGetInfoType.CLI_DBMS_VER: "3.1.3 (workbench, DuckDB engine)",
        }
        value = values.get(req.infoType)
        if value is None:
            return t.TGetInfoResp(status=_error(f"GetInfo type {req.infoType} is not supported"))
        return t.TGetInfoResp(status=_ok(), infoValue=t.TGetInfoValue(stringValue=value))

    # --- statements and metadata -----------------------------------------------------------

    def _start(
        self,
        req: Any,
        kind: int,
        work: Callable[[_Session], QueryResult],
        resp_cls: Any,
        *,
        run_async: bool = False,
    ) -> Any:
        try:
            session = self.backend.session(req.sessionHandle)
        except KeyError:
            return resp_cls(status=_error("invalid session handle", "HY000"))
        op = self.backend.new_operation(session, kind)
        self.backend.run(op, lambda: work(session), run_async=run_async)
        if op.state == t.TOperationState.ERROR_STATE:
            self.backend.close_operation(op)
            return resp_cls(status=_error(op.error))
        return resp_cls(status=_ok(), operationHandle=op.handle)

    def ExecuteStatement(self, req: t.TExecuteStatementReq) -> t.TExecuteStatementResp:
        statement = req.statement or ""
        return self._start(
            req,
            t.TOperationType.EXECUTE_STATEMENT,
            lambda s: s.query.execute(statement),
            t.TExecuteStatementResp,
            run_async=bool(req.runAsync),
        )

    def GetTypeInfo(self, req: t.TGetTypeInfoReq) -> t.TGetTypeInfoResp:
        return self._start(
            req, t.TOperationType.GET_TYPE_INFO, lambda s: _type_info(), t.TGetTypeInfoResp
        )

    def GetCatalogs(self, req: t.TGetCatalogsReq) -> t.TGetCatalogsResp:
        table = pa.table({"TABLE_CAT": pa.array([], pa.string())})
        return self._start(
            req, t.TOperationType.GET_CATALOGS, lambda s: QueryResult.of(table), t.TGetCatalogsResp
        )

    def GetSchemas(self, req: t.TGetSchemasReq) -> t.TGetSchemasResp:
        names = ["default"] if _like(req.schemaName).fullmatch("default") else []
        table = pa.table(
            {
                "TABLE_SCHEM": pa.array(names, pa.string()),
                "TABLE_CATALOG": pa.array([""] * len(names), pa.string()),
            }
        )
        return self._start(
            req, t.TOperationType.GET_SCHEMAS, lambda s: QueryResult.of(table), t.TGetSchemasResp
        )

    def GetTables(self, req: t.TGetTablesReq) -> t.TGetTablesResp:
        def work(session: _Session) -> QueryResult:
            wanted = {x.upper() for x in (req.tableTypes or [])}
            in_schema = _like(req.schemaName).fullmatch("default") is not None
            match = _like(req.tableName)
            names = [
                n
                for n in session.query.tables()
                if in_schema and match.fullmatch(n) and (not wanted or "TABLE" in wanted)
            ]
            remarks = [session.query.source(n).comment for n in names]
            return QueryResult.of(
                pa.table(
                    {
                        "TABLE_CAT": pa.array([""] * len(names), pa.string()),
                        "TABLE_SCHEM": pa.array(["default"] * len(names), pa.string()),
                        "TABLE_NAME": pa.array(names, pa.string()),
                        "TABLE_TYPE": pa.array(["TABLE"] * len(names), pa.string()),
                        "REMARKS": pa.array(remarks, pa.string()),
                    }
                )
            )

        return self._start(req, t.TOperationType.GET_TABLES, work, t.TGetTablesResp)

    def GetTableTypes(self, req: t.TGetTableTypesReq) -> t.TGetTableTypesResp:
        table = pa.table({"TABLE_TYPE": pa.array(["TABLE"], pa.string())})
        return self._start(
            req,
            t.TOperationType.GET_TABLE_TYPES,
            lambda s: QueryResult.of(table),
            t.TGetTableTypesResp,
        )

    def GetColumns(self, req: t.TGetColumnsReq) -> t.TGetColumnsResp:
        def work(session: _Session) -> QueryResult:
            rows: list[dict[str, Any]] = []
            if _like(req.schemaName).fullmatch("default"):
                tmatch, cmatch = _like(req.tableName), _like(req.columnName)
                for name in session.query.tables():
                    if not tmatch.fullmatch(name):
                        continue
                    for pos, col in enumerate(session.query.describe(name), start=1):
                        if cmatch.fullmatch(col.name):
                            rows.append(_column_row(name, pos, col))
            return QueryResult.of(pa.Table.from_pylist(rows, schema=_COLUMNS_SCHEMA))

        return self._start(req, t.TOperationType.GET_COLUMNS, work, t.TGetColumnsResp)

    def GetFunctions(self, req: t.TGetFunctionsReq) -> t.TGetFunctionsResp:
        match = _like(req.functionName)
        names = [f for f in _FUNCTIONS if match.fullmatch(f)]
        table = pa.table(
            {
                "FUNCTION_CAT": pa.array([None] * len(names), pa.string()),
                "FUNCTION_SCHEM": pa.array([None] * len(names), pa.string()),
                "FUNCTION_NAME": pa.array(names, pa.string()),
                "REMARKS": pa.array([""] * len(names), pa.string()),
                "FUNCTION_TYPE": pa.array([1] * len(names), pa.int32()),
                "SPECIFIC_NAME": pa.array(names, pa.string()),
            }
        )
        return self._start(
            req,
            t.TOperationType.GET_FUNCTIONS,
            lambda s: QueryResult.of(table),
            t.TGetFunctionsResp,
        )

    def GetPrimaryKeys(self, req: t.TGetPrimaryKeysReq) -> t.TGetPrimaryKeysResp:
        return t.TGetPrimaryKeysResp(status=_error("GetPrimaryKeys is not supported"))

    def GetCrossReference(self, req: t.TGetCrossReferenceReq) -> t.TGetCrossReferenceResp:
        return t.TGetCrossReferenceResp(status=_error("GetCrossReference is not supported"))

    # --- operation life cycle --------------------------------------------------------------

    def GetOperationStatus(self, req: t.TGetOperationStatusReq) -> t.TGetOperationStatusResp:
        try:
            op = self.backend.operation(req.operationHandle)
        except KeyError:
            return t.TGetOperationStatusResp(status=_error("invalid operation handle", "HY000"))
        return t.TGetOperationStatusResp(
            status=_ok(),
            operationState=op.state,
            errorMessage=op.error or None,
            sqlState="42000" if op.error else None,
            hasResultSet=True,
        )

    def CancelOperation(self, req: t.TCancelOperationReq) -> t.TCancelOperationResp:
        try:
            op = self.backend.operation(req.operationHandle)
        except KeyError:
            return t.TCancelOperationResp(status=_error("invalid operation handle", "HY000"))
        self.backend.cancel(op)
        return t.TCancelOperationResp(status=_ok())

    def CloseOperation(self, req: t.TCloseOperationReq) -> t.TCloseOperationResp:
        try:
            op = self.backend.operation(req.operationHandle)
        except KeyError:
            return t.TCloseOperationResp(status=_error("invalid operation handle", "HY000"))
        self.backend.close_operation(op)
        return t.TCloseOperationResp(status=_ok())

    def _finished(self, handle: t.TOperationHandle | None) -> _Operation:
        op = self.backend.operation(handle)
        op.done.wait()
        if op.state == t.TOperationState.CANCELED_STATE:
            raise QueryFailed("the operation was cancelled")
        if op.state != t.TOperationState.FINISHED_STATE or op.result is None:
            raise QueryFailed(op.error or "the operation has no result")
        return op

    def GetResultSetMetadata(self, req: t.TGetResultSetMetadataReq) -> t.TGetResultSetMetadataResp:
        try:
            op = self._finished(req.operationHandle)
        except KeyError:
            return t.TGetResultSetMetadataResp(status=_error("invalid operation handle", "HY000"))
        except WorkbenchError as exc:
            return t.TGetResultSetMetadataResp(status=_error(str(exc)))
        assert op.result is not None
        return t.TGetResultSetMetadataResp(status=_ok(), schema=_schema(op.result.columns))

    def FetchResults(self, req: t.TFetchResultsReq) -> t.TFetchResultsResp:
        try:
            op = self._finished(req.operationHandle)
        except KeyError:
            return t.TFetchResultsResp(status=_error("invalid operation handle", "HY000"))
        except WorkbenchError as exc:
            return t.TFetchResultsResp(status=_error(str(exc)))
        assert op.result is not None
        columnar = op.session.protocol >= V6
        if req.fetchType == 1:  # logs: none kept
            logs = QueryResult.of(pa.table({"log": pa.array([], pa.string())}))
            return t.TFetchResultsResp(
                status=_ok(), hasMoreRows=False, results=_rowset(logs, 0, 0, columnar)
            )
        if req.orientation == t.TFetchOrientation.FETCH_FIRST:
            op.offset = 0
        count = max(0, min(int(req.maxRows or 1000), 1_000_000))
        start = op.offset
        rowset = _rowset(op.result, start, count, columnar)
        op.offset = min(op.result.table.num_rows, start + count)
        more = op.offset < op.result.table.num_rows
        return t.TFetchResultsResp(status=_ok(), hasMoreRows=more, results=rowset)

    def GetLog(self, req: t.TGetLogReq) -> t.TGetLogResp:
        return t.TGetLogResp(status=_ok(), log="")

    def GetDelegationToken(self, req: t.TGetDelegationTokenReq) -> t.TGetDelegationTokenResp:
        return t.TGetDelegationTokenResp(status=_error("delegation tokens are not supported"))

    def CancelDelegationToken(
        self, req: t.TCancelDelegationTokenReq
    ) -> t.TCancelDelegationTokenResp:
        return t.TCancelDelegationTokenResp(status=_error("delegation tokens are not supported"))

    def RenewDelegationToken(self, req: t.TRenewDelegationTokenReq) -> t.TRenewDelegationTokenResp:
        return t.TRenewDelegationTokenResp(status=_error("delegation tokens are not supported"))


_COLUMNS_SCHEMA = pa.schema(
    [
        ("TABLE_CAT", pa.string()),
        ("TABLE_SCHEM", pa.string()),
        ("TABLE_NAME", pa.string()),
        ("COLUMN_NAME", pa.string()),
        ("DATA_TYPE", pa.int32()),
        ("TYPE_NAME", pa.string()),
        ("COLUMN_SIZE", pa.int32()),
        ("BUFFER_LENGTH", pa.int8()),
        ("DECIMAL_DIGITS", pa.int32()),
        ("NUM_PREC_RADIX", pa.int32()),
        ("NULLABLE", pa.int32()),
        ("REMARKS", pa.string()),
        ("COLUMN_DEF", pa.string()),
        ("SQL_DATA_TYPE", pa.int32()),
        ("SQL_DATETIME_SUB", pa.int32()),
        ("CHAR_OCTET_LENGTH", pa.int32()),
        ("ORDINAL_POSITION", pa.int32()),
        ("IS_NULLABLE", pa.string()),
        ("SCOPE_CATALOG", pa.string()),
        ("SCOPE_SCHEMA", pa.string()),
        ("SCOPE_TABLE", pa.string()),
        ("SOURCE_DATA_TYPE", pa.int16()),
        ("IS_AUTO_INCREMENT", pa.string()),
    ]
)

_SIZES = {"TINYINT": 3, "SMALLINT": 5, "INT": 10, "BIGINT": 19, "FLOAT": 7, "DOUBLE": 15}


def _column_row(table: str, position: int, col: Column) -> dict[str, Any]:
    prim = col.primitive
    size = col.precision if prim == "DECIMAL" else _SIZES.get(prim)
    return {
        "TABLE_CAT": None,
        "TABLE_SCHEM": "default",
        "TABLE_NAME": table,
        "COLUMN_NAME": col.name,
        "DATA_TYPE": _JDBC.get(prim, 12),
        "TYPE_NAME": col.hive_type,
        "COLUMN_SIZE": size,
        "BUFFER_LENGTH": None,
        "DECIMAL_DIGITS": col.scale if prim == "DECIMAL" else None,
        "NUM_PREC_RADIX": 10 if size is not None else None,
        "NULLABLE": 1,
        "REMARKS": "",
        "COLUMN_DEF": None,
        "SQL_DATA_TYPE": None,
        "SQL_DATETIME_SUB": None,
        "CHAR_OCTET_LENGTH": None,
        "ORDINAL_POSITION": position,
        "IS_NULLABLE": "YES",
        "SCOPE_CATALOG": None,
        "SCOPE_SCHEMA": None,
        "SCOPE_TABLE": None,
        "SOURCE_DATA_TYPE": None,
        "IS_AUTO_INCREMENT": "NO",
    }


def _type_info() -> QueryResult:
    names = [n for n in _JDBC if n not in ("MAP", "STRUCT")]
    rows = [
        {
            "TYPE_NAME": n,
            "DATA_TYPE": _JDBC[n],
            "PRECISION": 38 if n == "DECIMAL" else _SIZES.get(n),
            "LITERAL_PREFIX": "'" if n in ("STRING", "DATE", "TIMESTAMP") else None,
            "LITERAL_SUFFIX": "'" if n in ("STRING", "DATE", "TIMESTAMP") else None,
            "CREATE_PARAMS": "precision,scale" if n == "DECIMAL" else None,
            "NULLABLE": 1,
            "CASE_SENSITIVE": n == "STRING",
            "SEARCHABLE": 3,
            "UNSIGNED_ATTRIBUTE": False,
            "FIXED_PREC_SCALE": False,
            "AUTO_INCREMENT": False,
            "LOCAL_TYPE_NAME": None,
            "MINIMUM_SCALE": 0,
            "MAXIMUM_SCALE": 38 if n == "DECIMAL" else 0,
            "SQL_DATA_TYPE": None,
            "SQL_DATETIME_SUB": None,
            "NUM_PREC_RADIX": 10 if n in _SIZES or n == "DECIMAL" else None,
        }
        for n in names
    ]
    schema = pa.schema(
        [
            ("TYPE_NAME", pa.string()),
            ("DATA_TYPE", pa.int32()),
            ("PRECISION", pa.int32()),
            ("LITERAL_PREFIX", pa.string()),
            ("LITERAL_SUFFIX", pa.string()),
            ("CREATE_PARAMS", pa.string()),
            ("NULLABLE", pa.int16()),
            ("CASE_SENSITIVE", pa.bool_()),
            ("SEARCHABLE", pa.int16()),
            ("UNSIGNED_ATTRIBUTE", pa.bool_()),
            ("FIXED_PREC_SCALE", pa.bool_()),
            ("AUTO_INCREMENT", pa.bool_()),
            ("LOCAL_TYPE_NAME", pa.string()),
            ("MINIMUM_SCALE", pa.int16()),
            ("MAXIMUM_SCALE", pa.int16()),
            ("SQL_DATA_TYPE", pa.int32()),
            ("SQL_DATETIME_SUB", pa.int32()),
            ("NUM_PREC_RADIX", pa.int32()),
        ]
    )
    return QueryResult.of(pa.Table.from_pylist(rows, schema=schema))

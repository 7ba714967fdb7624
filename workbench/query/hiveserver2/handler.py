"""The TCLIService handler: each HiveServer2 call of one connection, answered.

One :class:`Handler` per connection carries who authenticated on it and turns each
Thrift call into work on the server's :class:`~.sessions.Backend`: statements run
through :mod:`workbench.query`, metadata calls through :mod:`.catalog`, and results
go back as :mod:`.rowsets`. A session and its operations belong to the connection
that opened them: a handle presented on any other connection, or with a secret
other than the one issued, is refused as unknown and audited.
"""

from __future__ import annotations

import functools
import hmac
import logging
import re
from collections.abc import Callable
from typing import Any, TypeVar, cast

import pyarrow as pa
from TCLIService import ttypes as t

from workbench.exceptions import AccessDenied, QueryFailed, WorkbenchError
from workbench.query.engine import QueryResult
from workbench.query.hiveserver2 import catalog, rowsets
from workbench.query.hiveserver2.sessions import Backend, Operation, Session
from workbench.tenancy.principal import Principal

__all__ = ["Handler"]

logger = logging.getLogger(__name__)

# `USE db`, which clients send as they connect, runs nothing: it never counts towards (nor
# is refused by) the per-user statement cap, so a busy user can still open a connection
_USE = re.compile(r"\s*use\s+[`\w.]+\s*;?\s*", re.IGNORECASE)

V6 = t.TProtocolVersion.HIVE_CLI_SERVICE_PROTOCOL_V6
VMAX = t.TProtocolVersion.HIVE_CLI_SERVICE_PROTOCOL_V10


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


class _InvalidHandle(Exception):
    """A session or operation handle this connection may not use: unknown, closed, or
    another's. Every call answers it alike, "invalid <kind> handle", so a client cannot
    tell a stolen handle from one that never existed."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"invalid {kind} handle")


_Call = TypeVar("_Call", bound=Callable[..., Any])


def _refuses_invalid_handles(resp_cls: type) -> Callable[[_Call], _Call]:
    """Decorate a call that looks a handle up: an :class:`_InvalidHandle` is answered as
    ``resp_cls`` with an error status, so each call states only what it does."""

    def decorate(call: _Call) -> _Call:
        @functools.wraps(call)
        def answer(handler: Handler, req: Any) -> Any:
            try:
                return call(handler, req)
            except _InvalidHandle as exc:
                return resp_cls(status=_error(str(exc), "HY000"))

        return cast(_Call, answer)

    return decorate


class _Metadata:
    """A metadata call (GetTables, GetColumns, …) of :class:`Handler`: every one starts an
    operation of ``kind`` whose result is ``work(session, request)``, answered as
    ``resp_cls``, so the calls differ only in those three and are written as table rows."""

    def __init__(
        self, kind: int, resp_cls: type, work: Callable[[Session, Any], QueryResult]
    ) -> None:
        self.kind = kind
        self.resp_cls = resp_cls
        self.work = work

    def __get__(self, handler: Handler | None, owner: type) -> Any:
        if handler is None:
            return self
        return lambda req: handler._start(
            req, self.kind, lambda session: self.work(session, req), self.resp_cls
        )


class Handler:
    """``TCLIService.Iface`` for one connection; ``principal`` is who authenticated on it
    (None on a trusted NOSASL connection, where OpenSession names the user)."""

    def __init__(
        self,
        backend: Backend,
        principal: Principal | None,
        *,
        peer_gone: Callable[[], bool] | None = None,
    ) -> None:
        self.backend = backend
        self.principal = principal
        self.peer_gone = peer_gone  # True once the client has closed or reset the connection
        self.opened: list[Session] = []

    def disconnected(self) -> None:
        """The client went away: cancel what its sessions still run and close them."""
        for session in self.opened:
            if session.handle.guid in self.backend.sessions:
                self.backend.close_session(session)

    # --- handles: only the connection that was issued one may use it -----------------------

    def _session(self, handle: t.TSessionHandle | None) -> Session:
        """The session of ``handle`` if this connection opened it, or raise _InvalidHandle."""
        try:
            session = self.backend.session(handle)
        except KeyError:
            raise _InvalidHandle("session") from None
        assert handle is not None
        self._vet("session", handle.sessionId, session.handle, session)
        return session

    def _operation(self, handle: t.TOperationHandle | None) -> Operation:
        """The operation of ``handle`` if this connection started it, or raise _InvalidHandle."""
        try:
            op = self.backend.operation(handle)
        except KeyError:
            raise _InvalidHandle("operation") from None
        assert handle is not None
        self._vet("operation", handle.operationId, op.handle.operationId, op.session)
        return op

    def _vet(
        self,
        kind: str,
        presented: t.THandleIdentifier,
        issued: t.THandleIdentifier,
        session: Session,
    ) -> None:
        """Raise _InvalidHandle, as for an unknown handle, unless ``presented`` may be used here.

        The answer is the same as for a guid that does not exist, so a client learns
        nothing; the operator finds the attempt in the access log."""
        secret = presented.secret
        if session.owner is not self:
            reason = f"opened by {session.principal.user} on another connection"
        elif self.principal is not None and session.principal != self.principal:
            reason = f"opened by {session.principal.user}"
        elif not isinstance(secret, bytes) or not hmac.compare_digest(secret, issued.secret):
            reason = "presented with a secret other than the one issued"
        else:
            return
        guid = issued.guid.hex()
        logger.warning("%s handle %s refused: %s", kind, guid, reason)
        self.backend.audit(
            self.principal or "?",
            "session:hive",
            f"{kind} {guid}",
            "denied",
            f"hiveserver2: {kind} handle {reason}",
        )
        raise _InvalidHandle(kind)

    # --- sessions --------------------------------------------------------------------------

    def OpenSession(self, req: t.TOpenSessionReq) -> t.TOpenSessionResp:
        protocol = min(req.client_protocol if req.client_protocol is not None else VMAX, VMAX)
        principal = self.principal
        try:
            if principal is None:
                principal = self._trusted(req.username or "")
            session = self.backend.open_session(principal, protocol, owner=self)
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

    @_refuses_invalid_handles(t.TCloseSessionResp)
    def CloseSession(self, req: t.TCloseSessionReq) -> t.TCloseSessionResp:
        session = self._session(req.sessionHandle)
        self.backend.close_session(session)
        return t.TCloseSessionResp(status=_ok())

    @_refuses_invalid_handles(t.TGetInfoResp)
    def GetInfo(self, req: t.TGetInfoReq) -> t.TGetInfoResp:
        self._session(req.sessionHandle)  # only to refuse a handle it may not use
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
        work: Callable[[Session], QueryResult],
        resp_cls: Any,
        *,
        run_async: bool = False,
        statement: str | None = None,
    ) -> Any:
        try:
            session = self._session(req.sessionHandle)
        except _InvalidHandle as exc:
            return resp_cls(status=_error(str(exc), "HY000"))
        op = self.backend.new_operation(session, kind)
        self.backend.run(
            op,
            lambda: work(session),
            run_async=run_async,
            statement=None if statement is None or _USE.fullmatch(statement) else statement,
            watch=None if statement is None else self.peer_gone,
        )
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
            statement=statement,
        )

    # Each metadata call is one row: which operation it starts, which response answers it,
    # and the catalog query it runs for the session and the request's filters.
    GetTypeInfo = _Metadata(
        t.TOperationType.GET_TYPE_INFO, t.TGetTypeInfoResp, lambda s, req: catalog.type_info()
    )
    GetCatalogs = _Metadata(
        t.TOperationType.GET_CATALOGS, t.TGetCatalogsResp, lambda s, req: catalog.catalogs()
    )
    GetSchemas = _Metadata(
        t.TOperationType.GET_SCHEMAS,
        t.TGetSchemasResp,
        lambda s, req: catalog.schemas(req.schemaName),
    )
    GetTables = _Metadata(
        t.TOperationType.GET_TABLES,
        t.TGetTablesResp,
        lambda s, req: catalog.tables(s.query, req.schemaName, req.tableName, req.tableTypes),
    )
    GetTableTypes = _Metadata(
        t.TOperationType.GET_TABLE_TYPES,
        t.TGetTableTypesResp,
        lambda s, req: catalog.table_types(),
    )
    GetColumns = _Metadata(
        t.TOperationType.GET_COLUMNS,
        t.TGetColumnsResp,
        lambda s, req: catalog.columns(s.query, req.schemaName, req.tableName, req.columnName),
    )
    GetFunctions = _Metadata(
        t.TOperationType.GET_FUNCTIONS,
        t.TGetFunctionsResp,
        lambda s, req: catalog.functions(req.functionName),
    )

    def GetPrimaryKeys(self, req: t.TGetPrimaryKeysReq) -> t.TGetPrimaryKeysResp:
        return t.TGetPrimaryKeysResp(status=_error("GetPrimaryKeys is not supported"))

    def GetCrossReference(self, req: t.TGetCrossReferenceReq) -> t.TGetCrossReferenceResp:
        return t.TGetCrossReferenceResp(status=_error("GetCrossReference is not supported"))

    # --- operation life cycle --------------------------------------------------------------

    @_refuses_invalid_handles(t.TGetOperationStatusResp)
    def GetOperationStatus(self, req: t.TGetOperationStatusReq) -> t.TGetOperationStatusResp:
        op = self._operation(req.operationHandle)
        return t.TGetOperationStatusResp(
            status=_ok(),
            operationState=op.state,
            errorMessage=op.error or None,
            sqlState="42000" if op.error else None,
            hasResultSet=True,
        )

    @_refuses_invalid_handles(t.TCancelOperationResp)
    def CancelOperation(self, req: t.TCancelOperationReq) -> t.TCancelOperationResp:
        op = self._operation(req.operationHandle)
        self.backend.cancel(op)
        return t.TCancelOperationResp(status=_ok())

    @_refuses_invalid_handles(t.TCloseOperationResp)
    def CloseOperation(self, req: t.TCloseOperationReq) -> t.TCloseOperationResp:
        op = self._operation(req.operationHandle)
        self.backend.close_operation(op)
        return t.TCloseOperationResp(status=_ok())

    def _finished(self, handle: t.TOperationHandle | None) -> Operation:
        op = self._operation(handle)
        self.backend.wait(op, self.peer_gone)
        op.done.wait()
        if op.state == t.TOperationState.CANCELED_STATE:
            raise QueryFailed("the operation was cancelled")
        if op.state != t.TOperationState.FINISHED_STATE or op.result is None:
            raise QueryFailed(op.error or "the operation has no result")
        return op

    @_refuses_invalid_handles(t.TGetResultSetMetadataResp)
    def GetResultSetMetadata(self, req: t.TGetResultSetMetadataReq) -> t.TGetResultSetMetadataResp:
        try:
            op = self._finished(req.operationHandle)
        except WorkbenchError as exc:
            return t.TGetResultSetMetadataResp(status=_error(str(exc)))
        assert op.result is not None
        return t.TGetResultSetMetadataResp(
            status=_ok(), schema=rowsets.table_schema(op.result.columns)
        )

    @_refuses_invalid_handles(t.TFetchResultsResp)
    def FetchResults(self, req: t.TFetchResultsReq) -> t.TFetchResultsResp:
        try:
            op = self._finished(req.operationHandle)
        except WorkbenchError as exc:
            return t.TFetchResultsResp(status=_error(str(exc)))
        assert op.result is not None
        columnar = op.session.protocol >= V6
        if req.fetchType == 1:  # logs: none kept
            logs = QueryResult.of(pa.table({"log": pa.array([], pa.string())}))
            return t.TFetchResultsResp(
                status=_ok(), hasMoreRows=False, results=rowsets.rowset(logs, 0, 0, columnar)
            )
        if req.orientation == t.TFetchOrientation.FETCH_FIRST:
            op.offset = 0
        count = max(0, min(int(req.maxRows or 1000), 1_000_000))
        start = op.offset
        rowset = rowsets.rowset(op.result, start, count, columnar)
        op.offset = min(op.result.table.num_rows, start + count)
        more = op.offset < op.result.table.num_rows
        return t.TFetchResultsResp(status=_ok(), hasMoreRows=more, results=rowset)

    @_refuses_invalid_handles(t.TGetLogResp)
    def GetLog(self, req: t.TGetLogReq) -> t.TGetLogResp:
        self._operation(req.operationHandle)  # only to refuse a handle it may not use
        return t.TGetLogResp(status=_ok(), log="")

    def GetDelegationToken(self, req: t.TGetDelegationTokenReq) -> t.TGetDelegationTokenResp:
        return t.TGetDelegationTokenResp(status=_error("delegation tokens are not supported"))

    def CancelDelegationToken(
        self, req: t.TCancelDelegationTokenReq
    ) -> t.TCancelDelegationTokenResp:
        return t.TCancelDelegationTokenResp(status=_error("delegation tokens are not supported"))

    def RenewDelegationToken(self, req: t.TRenewDelegationTokenReq) -> t.TRenewDelegationTokenResp:
        return t.TRenewDelegationTokenResp(status=_error("delegation tokens are not supported"))

"""HiveServer2 sessions and operations: who holds which handle, what runs, within which limits.

One :class:`Backend` per server holds every :class:`Session` and :class:`Operation`,
the pool that runs asynchronous statements and the access-log writer. A session
belongs to the connection that opened it (``owner``); the handler refuses its
handles anywhere else. Statements are bounded: the engine stops one that outruns
``WORKBENCH_HIVE_STATEMENT_TIMEOUT`` or whose result outgrows the row and byte caps,
a user runs at most ``WORKBENCH_HIVE_MAX_CONCURRENT_PER_USER`` at once, and a
statement whose client goes away (even in the middle of a synchronous one) is
cancelled. Access-log entries are written by one thread, off the request path, in
the order they were queued.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from TCLIService import ttypes as t

from workbench.config import Config
from workbench.exceptions import WorkbenchError
from workbench.query.engine import HiveSession, QueryResult, QuerySession
from workbench.tenancy.audit import AccessEntry, record_accesses
from workbench.tenancy.principal import Principal

if TYPE_CHECKING:
    from workbench.query.spark import SparkEngine

__all__ = ["WATCH_INTERVAL", "Backend", "Operation", "Session", "new_handle"]

logger = logging.getLogger(__name__)

# how often a connection thread waiting for a statement checks that its client is still there
WATCH_INTERVAL = 0.2


def new_handle() -> t.THandleIdentifier:
    """A fresh handle: a random guid, and a random secret only its holder knows."""
    return t.THandleIdentifier(guid=uuid.uuid4().bytes, secret=uuid.uuid4().bytes)


@dataclasses.dataclass
class Session:
    """One HiveServer2 session: its principal's query session and its operations."""

    handle: t.THandleIdentifier
    principal: Principal
    query: HiveSession
    protocol: int
    ops: set[bytes] = dataclasses.field(default_factory=set)
    owner: object = None  # the Handler (connection) that opened it; only it may use it


@dataclasses.dataclass
class Operation:
    """One statement or metadata call of a session, and its result once done."""

    handle: t.TOperationHandle
    session: Session
    state: int = t.TOperationState.INITIALIZED_STATE
    result: QueryResult | None = None
    error: str = ""
    offset: int = 0
    done: threading.Event = dataclasses.field(default_factory=threading.Event)


# the access-log entries queued within this long of the first share one commit, and at
# most this many (see Backend._audit_loop)
_AUDIT_GATHER_S = 1.0
_AUDIT_BATCH = 1000


class Backend:
    """Every session and operation of one server, the query thread pool and the audit
    writer."""

    def __init__(
        self,
        config: Config,
        *,
        audit: Callable[[list[AccessEntry]], None] | None = None,
        workers: int = 32,
    ) -> None:
        self.config = config
        # the Spark engine when it runs HiveQL; None: each session is its own DuckDB
        self.spark: SparkEngine | None = None
        self._record: Callable[[list[AccessEntry]], None] = (
            (lambda batch: record_accesses(config, batch)) if audit is None else audit
        )
        self._lock = threading.Lock()
        self.sessions: dict[bytes, Session] = {}
        self.operations: dict[bytes, Operation] = {}
        # statements running (or queued to run) per user, for the per-user cap; the pool
        # is much larger than that cap so one user cannot hold every worker
        self.running: dict[str, int] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="hs2-op")
        self._audit_q: queue.Queue[AccessEntry | None] = queue.Queue()
        self._audit_thread = threading.Thread(
            target=self._audit_loop, name="hs2-audit", daemon=True
        )
        self._audit_thread.start()

    # --- audit: written off the request path, in order ------------------------------------

    def audit(
        self, who: Principal | str, action: str, target: str, outcome: str, detail: str
    ) -> None:
        """Queue one access-log entry, timed now."""
        self._audit_q.put(AccessEntry(who, action, target[:500], outcome, detail))

    def _audit_loop(self) -> None:
        """Write the queued entries, those of up to :data:`_AUDIT_GATHER_S` in one commit:
        a commit per statement (10 ms of CPU here) slowed the next statement by as much."""
        stopping = False
        while not stopping:
            first = self._audit_q.get()
            if first is None:
                return
            batch = [first]
            until = time.monotonic() + _AUDIT_GATHER_S
            while len(batch) < _AUDIT_BATCH:
                try:
                    entry = self._audit_q.get(timeout=max(0.0, until - time.monotonic()))
                except queue.Empty:
                    break
                if entry is None:
                    stopping = True  # closing: write what came, then stop
                    break
                batch.append(entry)
            try:
                self._record(batch)
            except Exception:  # record_accesses never raises; a replacement might
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

    def open_session(self, principal: Principal, protocol: int, owner: object = None) -> Session:
        """A new session for ``principal``, usable only on connection ``owner`` (raises
        AccessDenied for roles that may not query)."""
        query: HiveSession
        if self.spark is not None:
            query = self.spark.open(self.config, principal, audit=self._statement_audit)
        else:
            query = QuerySession(self.config, principal, audit=self._statement_audit)
        session = Session(new_handle(), principal, query, protocol, owner=owner)
        with self._lock:
            self.sessions[session.handle.guid] = session
        logger.info("session opened for %s (%s)", principal.user, principal.role)
        return session

    def session(self, handle: t.TSessionHandle | None) -> Session:
        """The live session of ``handle``, or raise KeyError."""
        if handle is None or handle.sessionId is None:
            raise KeyError("no session handle")
        with self._lock:
            return self.sessions[handle.sessionId.guid]

    def close_session(self, session: Session) -> None:
        """Close a session and its operations: cancel what still runs, wait for it to stop
        (DuckDB refuses to close a connection a statement is using), then close."""
        with self._lock:
            self.sessions.pop(session.handle.guid, None)
            ops = [o for guid in session.ops if (o := self.operations.pop(guid, None))]
        for op in ops:
            self.cancel(op)
        session.query.close()

    def cancel(self, op: Operation, *, timeout: float = 30.0) -> None:
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

    def new_operation(self, session: Session, kind: int) -> Operation:
        """Register an operation of ``kind`` (TOperationType)."""
        handle = t.TOperationHandle(operationId=new_handle(), operationType=kind, hasResultSet=True)
        op = Operation(handle, session)
        with self._lock:
            self.operations[handle.operationId.guid] = op
            session.ops.add(handle.operationId.guid)
        return op

    def operation(self, handle: t.TOperationHandle | None) -> Operation:
        """The live operation of ``handle``, or raise KeyError."""
        if handle is None or handle.operationId is None:
            raise KeyError("no operation handle")
        with self._lock:
            return self.operations[handle.operationId.guid]

    def run(
        self,
        op: Operation,
        work: Callable[[], QueryResult],
        *,
        run_async: bool,
        statement: str | None = None,
        watch: Callable[[], bool] | None = None,
    ) -> None:
        """Run ``work`` for ``op`` now, or on the pool when ``run_async``.

        A ``statement`` (HiveQL text) counts towards its user's concurrency cap and is
        refused (``op`` in ERROR_STATE) beyond it. When ``watch`` is given, a synchronous
        run executes on its own thread while the caller waits and cancels it as soon as
        ``watch()`` reports the client gone."""
        user = op.session.principal.user
        if statement is not None and not self._admit(op, statement):
            return
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
                if statement is not None:
                    self._release(user)
                op.done.set()

        if run_async:
            self._pool.submit(execute)
        elif watch is None:
            execute()
        else:
            threading.Thread(target=execute, name="hs2-statement", daemon=True).start()
            self.wait(op, watch)

    def wait(self, op: Operation, watch: Callable[[], bool] | None = None) -> None:
        """Wait until ``op`` is done; cancel it if ``watch()`` reports the client gone
        meanwhile (nobody is left to read its result)."""
        while not op.done.wait(WATCH_INTERVAL):
            if watch is not None and watch():
                logger.info(
                    "client of %s went away during a statement: cancelling it",
                    op.session.principal.user,
                )
                self.cancel(op)
                return

    def _admit(self, op: Operation, statement: str) -> bool:
        """Count ``op`` as one of its user's running statements, or refuse it."""
        principal = op.session.principal
        cap = self.config.hive_max_concurrent_per_user
        with self._lock:
            running = self.running.get(principal.user, 0)
            if running < cap:
                self.running[principal.user] = running + 1
                return True
        op.error = (
            f"{principal.user} already runs {running} HiveQL statements, the most one user "
            f"may run at once (WORKBENCH_HIVE_MAX_CONCURRENT_PER_USER={cap}); wait for one "
            "to finish or cancel it, then retry"
        )
        op.state = t.TOperationState.ERROR_STATE
        op.done.set()
        logger.warning("statement of %s refused: %d already running", principal.user, running)
        self._statement_audit(principal, statement, "denied", f"concurrency cap: {op.error}")
        return False

    def _release(self, user: str) -> None:
        with self._lock:
            left = self.running.get(user, 0) - 1
            if left > 0:
                self.running[user] = left
            else:
                self.running.pop(user, None)

    def close_operation(self, op: Operation) -> None:
        """Forget an operation."""
        with self._lock:
            self.operations.pop(op.handle.operationId.guid, None)
            op.session.ops.discard(op.handle.operationId.guid)
        op.state = t.TOperationState.CLOSED_STATE

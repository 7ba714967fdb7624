"""Cancel and close race the statement's start: pure logic, with a stand-in for DuckDB
whose interrupt is lost when it arrives before the statement runs (as DuckDB's is)."""

from __future__ import annotations

import threading
from pathlib import Path

from TCLIService import ttypes as t

from workbench.config import Config
from workbench.exceptions import QueryFailed
from workbench.query.engine import QueryResult
from workbench.query.hiveserver2.sessions import Backend, Session, new_handle
from workbench.tenancy.principal import Principal


class SlowStartQuery:
    """Runs a statement that only an interrupt *during* it stops; close() refuses while
    it runs, like DuckDB's connection."""

    def __init__(self) -> None:
        self.running = threading.Event()
        self.stop = threading.Event()
        self.start_allowed = threading.Event()
        self.lost_interrupts = 0

    def statement(self) -> QueryResult:
        self.start_allowed.wait()
        self.running.set()
        try:
            if not self.stop.wait(10):
                raise AssertionError("the statement was never interrupted")
            raise QueryFailed("the statement was cancelled")
        finally:
            self.running.clear()

    def interrupt(self) -> None:
        if self.running.is_set():
            self.stop.set()
        else:
            self.lost_interrupts += 1

    def close(self) -> None:
        assert not self.running.is_set(), "closed while a statement runs"


def start(tmp_path: Path, workers: int = 4) -> tuple[Backend, Session, SlowStartQuery]:
    config = Config.from_env({"WORKBENCH_HOME": str(tmp_path)})
    backend = Backend(config, audit=lambda *a, **k: None, workers=workers)
    fake = SlowStartQuery()
    session = Session(new_handle(), Principal.system("ann"), fake, 11)  # type: ignore[arg-type]
    backend.sessions[session.handle.guid] = session
    return backend, session, fake


def test_cancel_repeats_an_interrupt_that_arrived_before_the_statement_started(tmp_path):
    backend, session, fake = start(tmp_path)
    op = backend.new_operation(session, t.TOperationType.EXECUTE_STATEMENT)
    backend.run(op, fake.statement, run_async=True)
    threading.Timer(0.3, fake.start_allowed.set).start()  # starts after the first interrupt
    backend.cancel(op)
    assert fake.lost_interrupts >= 1
    assert op.done.is_set()
    assert op.state == t.TOperationState.CANCELED_STATE
    backend.close()


def test_close_session_waits_for_the_running_statement(tmp_path):
    backend, session, fake = start(tmp_path)
    op = backend.new_operation(session, t.TOperationType.EXECUTE_STATEMENT)
    backend.run(op, fake.statement, run_async=True)
    fake.start_allowed.set()
    fake.running.wait(5)
    backend.close_session(session)  # SlowStartQuery.close asserts nothing runs
    assert op.done.is_set()
    assert session.handle.guid not in backend.sessions
    backend.close()


def test_an_operation_cancelled_while_queued_never_starts(tmp_path):
    backend, session, fake = start(tmp_path, workers=1)
    first = backend.new_operation(session, t.TOperationType.EXECUTE_STATEMENT)
    backend.run(first, fake.statement, run_async=True)  # occupies the only worker
    queued = backend.new_operation(session, t.TOperationType.EXECUTE_STATEMENT)
    started = threading.Event()

    def never() -> QueryResult:
        started.set()
        raise AssertionError("a cancelled operation ran")

    backend.run(queued, never, run_async=True)
    fake.start_allowed.set()
    fake.running.wait(5)
    backend.cancel(queued)  # interrupts the session's connection, so `first` stops too
    assert queued.done.is_set() and not started.is_set()
    assert queued.state == t.TOperationState.CANCELED_STATE
    backend.close()

"""Clients of a running HiveServer2 for the limit and handle tests: pyhive connections,
raw Thrift clients whose socket a test can cut, and bounded waits on server state."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import time
from collections.abc import Callable
from typing import Any

import polars as pl
from pyhive import hive
from pyhive.hive import get_installed_sasl
from TCLIService import TCLIService
from TCLIService import ttypes as t
from thrift.protocol.TBinaryProtocol import TBinaryProtocol
from thrift.transport.TSocket import TSocket
from thrift_sasl import TSaslClientTransport

from tests.workbench.query.hiveserver2.lake import USERS
from workbench.config import Config
from workbench.query.hiveserver2 import HiveServer2
from workbench.query.hiveserver2.sessions import Operation
from workbench.tenancy import access_log
from workbench.tenancy.principal import Principal

# a scan too long for any test to wait out: it ends only when cancelled or stopped
ENDLESS = "SELECT count(*) FROM range(5000000000000)"
SUCCESS = t.TStatusCode.SUCCESS_STATUS
V8 = t.TProtocolVersion.HIVE_CLI_SERVICE_PROTOCOL_V8


def connect(server: HiveServer2, user: str) -> hive.Connection:
    """A pyhive connection as ``user`` (SASL PLAIN)."""
    return hive.connect(
        host="127.0.0.1", port=server.port, username=user, password=USERS[user][2], auth="CUSTOM"
    )


@dataclasses.dataclass
class Raw:
    """A raw TCLIService client on its own socket."""

    client: TCLIService.Client
    transport: TSaslClientTransport
    socket: TSocket

    def open_session(self) -> t.TSessionHandle:
        resp = self.client.OpenSession(t.TOpenSessionReq(client_protocol=V8))
        assert resp.status.statusCode == SUCCESS, resp.status
        return resp.sessionHandle

    def cut(self) -> None:
        """Drop the connection the way a killed client does (FIN, no CloseSession)."""
        with contextlib.suppress(OSError):
            self.socket.handle.shutdown(socket.SHUT_RDWR)
        self.transport.close()


def raw_client(server: HiveServer2, user: str) -> Raw:
    """A raw Thrift client logged in as ``user``."""
    sock = TSocket("127.0.0.1", server.port)
    transport = TSaslClientTransport(
        lambda: get_installed_sasl(
            host="127.0.0.1", sasl_auth="PLAIN", username=user, password=USERS[user][2]
        ),
        "PLAIN",
        sock,
    )
    transport.open()
    return Raw(TCLIService.Client(TBinaryProtocol(transport)), transport, sock)


def wait_for(check: Callable[[], Any], what: str, within: float = 60.0) -> Any:
    """Poll ``check`` until it returns something other than None or False; fail naming
    ``what`` after ``within`` seconds (a bound on waiting, not a claim about speed)."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within:.0f} s: {what}")
        time.sleep(0.05)


def server_op(server: HiveServer2, handle: t.TOperationHandle) -> Operation:
    """The server's record of the operation behind ``handle``."""
    return server.backend.operations[handle.operationId.guid]


def running_statement(server: HiveServer2, session: t.TSessionHandle) -> Operation | None:
    """The RUNNING operation of the server session behind ``session``, if any."""
    live = server.backend.sessions.get(session.sessionId.guid)
    if live is None:
        return None
    for guid in list(live.ops):
        op = server.backend.operations.get(guid)
        if op is not None and op.state == t.TOperationState.RUNNING_STATE:
            return op
    return None


def audited(config: Config, check: Callable[[pl.DataFrame], pl.DataFrame]) -> pl.DataFrame:
    """The access-log rows ``check`` selects, once there are some (written off the
    request path, so they may lag the answer)."""

    def rows() -> pl.DataFrame | None:
        found = check(access_log(config, principal=Principal.system()))
        return found if found.height else None

    found: pl.DataFrame = wait_for(rows, "the access-log entry", within=30)
    return found

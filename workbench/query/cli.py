"""``workbench query "<HiveQL>" [--as USER] [--json|--csv]``: one statement through the
HiveServer2 endpoint (pyhive, SASL PLAIN).

Without ``--as`` the CLI logs in as the local admin with the secret in
``$WORKBENCH_HOME/secrets/hive-admin.secret``; with ``--as USER`` the password
comes from ``WORKBENCH_PASSWORD`` or a prompt.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import decimal
import getpass
import json
import os
import sys
from typing import Any

from workbench.cli import Verb, print_table, say, verb_group
from workbench.config import Config
from workbench.exceptions import QueryFailed, QueryRefused

__all__ = ["register", "run_query"]


def _password(user: str) -> str:
    password = os.environ.get("WORKBENCH_PASSWORD")
    if password is None:
        password = getpass.getpass(f"password for {user}: ")
    return password


def run_query(
    config: Config, hiveql: str, *, user: str | None = None, password: str | None = None
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run ``hiveql`` on the endpoint; the column names and rows."""
    from pyhive.exc import OperationalError

    from workbench.query.client import connect

    conn = connect(config, user=user, password=password)
    try:
        cursor = conn.cursor()
        cursor.arraysize = 10_000
        try:
            cursor.execute(hiveql)
            names = [d[0] for d in cursor.description or []]
            rows = cursor.fetchall() if cursor.description else []
        except OperationalError as exc:
            message = _status_message(exc)
            cls = (
                QueryRefused if "refused" in message or "not accessible" in message else QueryFailed
            )
            raise cls(message) from None
        return names, rows
    finally:
        conn.close()


def _status_message(exc: Exception) -> str:
    response = exc.args[0] if exc.args else None
    status = getattr(response, "status", None)
    return str(getattr(status, "errorMessage", None) or exc)


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _cmd_query(config: Config, args: argparse.Namespace) -> int:
    user = args.as_user
    password = _password(user) if user else None
    names, rows = run_query(config, args.hiveql, user=user, password=password)
    if args.json:
        print(json.dumps([dict(zip(names, map(_plain, r), strict=True)) for r in rows], indent=1))
    elif args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(names)
        writer.writerows([[_plain(v) for v in r] for r in rows])
    else:
        print_table([[("NULL" if v is None else _plain(v)) for v in r] for r in rows], header=names)
        print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})", file=sys.stderr)
    return 0


def _cmd_spark_fetch(config: Config, args: argparse.Namespace) -> int:
    from workbench.query.spark import delta_jars, delta_version

    jars = delta_jars(report=say)
    print(f"Delta Lake {delta_version()} for Spark: {', '.join(jars)}")
    return 0


def register(verb: Verb) -> None:
    """Add ``workbench query`` and ``workbench spark fetch``."""
    sub = verb_group(verb, "spark", "the HiveQL Spark engine's Delta jars")
    f = sub.add_parser(
        "fetch",
        help="resolve the pinned Delta Lake jars for Spark with Maven (make install runs it)",
        description="Resolve the Delta Lake version pinned in the workbench's pom with Maven "
        "(WORKBENCH_HIVE_ENGINE=spark needs it): downloaded once into Maven's local "
        "repository, offline afterwards. Prints the jars.",
    )
    f.set_defaults(handler=_cmd_spark_fetch)
    p = verb("query", _cmd_query, "run one HiveQL statement on the HiveServer2 endpoint")
    p.add_argument("hiveql", metavar="HIVEQL", help='e.g. "SHOW TABLES"')
    p.add_argument(
        "--as",
        dest="as_user",
        metavar="USER",
        help="run as this workbench user (password: WORKBENCH_PASSWORD or a prompt); "
        "default: the local platform admin",
    )
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="rows as a JSON list of objects")
    fmt.add_argument("--csv", action="store_true", help="rows as CSV with a header")

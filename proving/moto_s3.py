"""moto's S3 server with its writes decided one at a time, as S3 decides a conditional put.

moto answers requests on threads and checks ``If-None-Match: *`` before it stores the
object, in two steps. Two writers racing for one Delta log entry can then both pass the
check and both be told 200: one commit silently overwrites the other. A loaded CI machine
hit that once (a table of 60 appends read 59 rows). Real S3 decides such a race
atomically, so this server runs moto's own application behind one lock for every request
that changes the store; reads still run side by side.

``python -m proving.moto_s3 --port N`` (what :class:`proving.objstore.MotoS3` starts).
``--slow-writes S`` holds each stored object back for S seconds inside moto, which widens
the race's window so a test can show the lock closes it.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["WRITES", "main", "serialized_writes"]

# The methods that change S3's state; GET and HEAD only read it.
WRITES = frozenset({"PUT", "POST", "DELETE"})

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def serialized_writes(app: WsgiApp, *, lock: threading.Lock | None = None) -> WsgiApp:
    """``app`` with every write request run under one lock, the whole answer included."""
    held = lock or threading.Lock()

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD", "GET") not in WRITES:
            return app(environ, start_response)
        with held:
            # moto's answers are small: gathering one here keeps the write and the
            # check before it inside the lock, whatever the server does with the body
            return list(app(environ, start_response))

    return serve


def _slow_writes(seconds: float) -> None:
    from moto.s3.models import S3Backend

    original = S3Backend.put_object

    def put_object(self: S3Backend, *args: Any, **kwargs: Any) -> Any:
        time.sleep(seconds)
        return original(self, *args, **kwargs)

    S3Backend.put_object = put_object  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m proving.moto_s3", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--slow-writes", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument(
        "--unserialized",
        action="store_true",
        help="serve moto as it ships (to show the race this server closes)",
    )
    args = parser.parse_args(argv)

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    # moto builds the addresses it hands out (presigned URLs, redirects) from this
    os.environ.setdefault("MOTO_PORT", str(args.port))
    if args.slow_writes:
        _slow_writes(args.slow_writes)
    app: Any = DomainDispatcherApplication(create_backend_app)
    run_simple(
        args.host,
        args.port,
        app if args.unserialized else serialized_writes(app),
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()

"""Real object stores on loopback, for tests and drills of a lake on ``s3://`` and ``az://``.

:class:`MotoS3` runs moto's S3 server (from the ``moto[server]`` test extra, through
:mod:`proving.moto_s3`, which makes its conditional writes atomic as on S3) and
:class:`Azurite` runs Microsoft's Azure Blob emulator (an npm package that
:func:`azurite_bin` installs under the virtualenv once, ``make install`` does it). Each
listens on a free loopback port, holds one bucket or container, and hands out the
standard environment variables deltalake reads its credentials and endpoint from
(:meth:`~MotoS3.env`), so the workbench's processes reach them exactly as they would a
cloud account.

``python -m proving.objstore install`` installs Azurite (what ``make install`` runs).
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import hashlib
import hmac
import http.client
import importlib.util
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from proving.ports import free_port
from proving.processes import stop_process
from workbench.exceptions import WorkbenchError
from workbench.npm import NpmFailed, npm_install

__all__ = [
    "AZURITE_VERSION",
    "Azurite",
    "MotoS3",
    "ObjectStoreUnavailable",
    "StoreProxy",
    "azurite_bin",
]

AZURITE_VERSION = "3.37.0"
# Azurite's one account and its key: published in Microsoft's documentation, not a secret.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


class ObjectStoreUnavailable(WorkbenchError):
    """An emulated object store could not be installed or started (the message says why)."""


def azurite_bin() -> Path:
    """``azurite-blob`` of the pinned version, installed with npm the first time."""
    try:
        return npm_install("azurite", AZURITE_VERSION, "azurite-blob")
    except NpmFailed as exc:
        raise ObjectStoreUnavailable(str(exc)) from None


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ObjectStoreUnavailable(f"{url} exited with {proc.returncode}; see {log}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # it answers, if only to refuse an anonymous request
        except OSError:
            time.sleep(0.1)
    raise ObjectStoreUnavailable(f"{url} did not answer within {timeout:.0f}s; see {log}")


class _Server:
    """One emulator process on a fixed loopback port, stoppable and restartable."""

    def __init__(self, root: Path, port: int | None) -> None:
        self.root = root
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.environ: dict[str, str] = {}  # the server's own variables
        root.mkdir(parents=True, exist_ok=True)

    @property
    def log(self) -> Path:
        """The server's console output (appended to across restarts)."""
        return self.root / "server.log"

    @property
    def url(self) -> str:
        """The endpoint."""
        return f"http://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        """Start the server (again, on the same port and with the same data)."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv(),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env={**os.environ, **self.environ},
            )
        _wait_http(self.url, self.proc, self.log, timeout=60)

    def stop(self) -> None:
        """Stop the server: its endpoint refuses connections until :meth:`start`."""
        if self.proc is not None and self.proc.poll() is None:
            stop_process(self.proc, timeout_s=15)
        self.proc = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class MotoS3(_Server):
    """moto's S3 server with one bucket. Its data lives in memory: a restart empties it
    (an outage is drilled on :class:`Azurite`, which keeps its blobs on disk)."""

    def __init__(
        self,
        root: Path,
        *,
        bucket: str = "workbench-lake",
        port: int | None = None,
        check_keys: bool = False,
        server_args: tuple[str, ...] = (),
    ) -> None:
        super().__init__(root, port)
        self.bucket = bucket
        self.server_args = server_args  # more options of ``python -m proving.moto_s3``
        # moto accepts any key pair unless told to check them; these are placeholders
        self.access_key = "moto-test-key"
        self.secret_key = "moto-test-secret"
        if check_keys:
            # moto then checks every request after the first N against its IAM users, of
            # which there are none: the start-up probe and the bucket's creation pass,
            # every key pair after them is wrong (403 InvalidAccessKeyId, as on AWS)
            self.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "2"

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "proving.moto_s3", "--port", str(self.port),
                *self.server_args]  # fmt: skip

    def __enter__(self) -> MotoS3:
        if importlib.util.find_spec("moto") is None:
            raise ObjectStoreUnavailable("moto is missing; run: python -m pip install -e '.[test]'")
        self.start()
        self.create_bucket(self.bucket)
        return self

    def create_bucket(self, name: str) -> None:
        """A plain ``PUT /name`` (moto needs no signature for it)."""
        req = urllib.request.Request(f"{self.url}/{name}", method="PUT")
        urllib.request.urlopen(req, timeout=10).close()

    def lake(self, prefix: str) -> str:
        """A lake root under ``prefix`` in the bucket."""
        return f"s3://{self.bucket}/{prefix}"

    def env(self) -> dict[str, str]:
        """The variables deltalake (and boto-style tools) read to reach this server."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
        }


class Azurite(_Server):
    """Azurite's Blob service with one container; its data is kept under ``root``."""

    def __init__(
        self, root: Path, *, container: str = "workbench-lake", port: int | None = None
    ) -> None:
        super().__init__(root, port)
        self.container = container

    def argv(self) -> list[str]:
        return [str(azurite_bin()), "--silent", "--skipApiVersionCheck",
                "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
                "--location", str(self.root / "data")]  # fmt: skip

    def __enter__(self) -> Azurite:
        self.start()
        self.create_container(self.container)
        return self

    def create_container(self, name: str) -> None:
        """Create Blob container ``name``, signed with the account key (Shared Key)."""
        date = dt.datetime.now(dt.UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")
        version = "2021-08-06"
        # the string to sign: the verb, eleven empty standard headers, then the x-ms-*
        # headers and the resource (path-style URL: the account appears twice)
        to_sign = "\n".join(
            ["PUT", *[""] * 11, f"x-ms-date:{date}", f"x-ms-version:{version}",
             f"/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{name}\nrestype:container"]
        )  # fmt: skip
        key = base64.b64decode(AZURITE_KEY)
        signature = base64.b64encode(hmac.new(key, to_sign.encode(), hashlib.sha256).digest())
        req = urllib.request.Request(
            f"{self.url}/{AZURITE_ACCOUNT}/{name}?restype=container",
            method="PUT",
            headers={
                "x-ms-date": date,
                "x-ms-version": version,
                "Authorization": f"SharedKey {AZURITE_ACCOUNT}:{signature.decode()}",
            },
        )
        urllib.request.urlopen(req, timeout=10).close()

    def lake(self, prefix: str) -> str:
        """A lake root under ``prefix`` in the container."""
        return f"az://{self.container}/{prefix}"

    def env(self) -> dict[str, str]:
        """The variables deltalake reads to reach this emulator."""
        return {
            "AZURE_STORAGE_ACCOUNT_NAME": AZURITE_ACCOUNT,
            "AZURE_STORAGE_ACCOUNT_KEY": AZURITE_KEY,
            "AZURE_STORAGE_USE_EMULATOR": "true",
            "AZURITE_BLOB_STORAGE_URL": self.url,
            "AZURE_ALLOW_HTTP": "true",
        }


if __name__ == "__main__":
    if sys.argv[1:] != ["install"]:
        sys.exit("usage: python -m proving.objstore install")
    try:
        print(f"azurite: {azurite_bin()}")
    except ObjectStoreUnavailable as exc:
        sys.exit(f"error: {exc}")


# What S3 answers a client that sends more than a prefix takes while it scales up
# (docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html).
_SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


class StoreProxy(ThreadingHTTPServer):
    """An HTTP proxy on loopback in front of an object store: it counts what passes, by
    ``classify(method, path)``, and while :attr:`throttling` is set it answers every
    request ``503 SlowDown`` itself, as S3 does under too many requests. Point a
    process's ``AWS_ENDPOINT_URL`` at :attr:`url`; start it with ``proxy.thread.start()``."""

    daemon_threads = True

    def __init__(self, upstream: str, classify: Callable[[str, str], Any] = lambda m, p: m) -> None:
        super().__init__(("127.0.0.1", 0), _Forward)
        parts = urllib.parse.urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.classify = classify
        self.counts: collections.Counter[Any] = collections.Counter()
        self.throttled = 0  # requests answered 503 SlowDown
        self.throttling = threading.Event()
        self.lock = threading.Lock()
        self.local = threading.local()
        self.thread = threading.Thread(target=self.serve_forever, name="store-proxy", daemon=True)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up mid-answer (a cancelled read) is not the proxy's error."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def snapshot(self) -> collections.Counter[Any]:
        with self.lock:
            return collections.Counter(self.counts)

    def upstream_connection(self, fresh: bool = False) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self.local, "conn", None)
        if conn is None or fresh:
            conn = http.client.HTTPConnection(*self.upstream, timeout=60)
            self.local.conn = conn
        return conn


class _Forward(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: StoreProxy

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request would drown the output of whoever runs the proxy

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        if self.server.throttling.is_set():
            with self.server.lock:
                self.server.throttled += 1
            self._answer(503, [("Content-Type", "application/xml")], _SLOW_DOWN)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
        for attempt in (0, 1):  # a kept-alive upstream connection may have been closed
            conn = self.server.upstream_connection(fresh=attempt > 0)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                break
            except (ConnectionError, http.client.HTTPException):
                conn.close()
                if attempt:
                    raise
        # counted before the client has its answer: whoever saw the answer sees the count
        with self.server.lock:
            self.server.counts[self.server.classify(self.command, self.path)] += 1
        # a HEAD answer's length is the object's, which the client reads as its size
        size = answer.getheader("Content-Length") if self.command == "HEAD" else None
        self._answer(answer.status, answer.getheaders(), data, size)

    def _answer(
        self, status: int, headers: list[tuple[str, str]], data: bytes, size: str | None = None
    ) -> None:
        self.send_response_only(status)
        for key, value in headers:
            if key.lower() not in ("connection", "transfer-encoding", "content-length"):
                self.send_header(key, value)
        self.send_header("Content-Length", size or str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

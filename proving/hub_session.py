"""Driving the real hub as a browser and a notebook front-end would: log in with the
form, take a token, spawn a server through the REST API, run code in a real kernel over
the Jupyter server's websocket (the hub's tests and ``workbench bench hub``)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
from websockets.sync.client import connect

__all__ = ["HubSession", "Kernel", "KernelError"]


class HubSession:
    """A user logged in at the hub (cookie), holding an API token of theirs."""

    def __init__(self, base: str, user: str, password: str) -> None:
        self.base = base.rstrip("/")
        self.user = user
        self.http = httpx.Client(base_url=self.base, timeout=30.0)
        self.login = self._login(password)
        self.token = ""
        if self.login.status_code == 302:
            self.token = self._new_token()

    def _login(self, password: str) -> httpx.Response:
        page = self.http.get("/hub/login")
        page.raise_for_status()
        xsrf = self.http.cookies.get("_xsrf") or ""
        return self.http.post(
            "/hub/login",
            data={"username": self.user, "password": password, "_xsrf": xsrf},
        )

    def _new_token(self) -> str:
        answer = self.http.post(
            f"/hub/api/users/{self.user}/tokens",
            json={"note": "test front-end", "expires_in": 3600},
            headers={"X-XSRFToken": self.http.cookies.get("_xsrf") or ""},
        )
        answer.raise_for_status()
        token: str = answer.json()["token"]
        return token

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The hub's REST API with the user's token."""
        headers = {"Authorization": f"token {self.token}"}
        return self.http.request(method, f"/hub/api{path}", headers=headers, **kwargs)

    def spawn(self, timeout_s: float = 90.0) -> dict[str, Any]:
        """Start the user's server; its model once ready (raises with the hub's message)."""
        started = self.api("POST", f"/users/{self.user}/server")
        if started.status_code not in (201, 202):
            raise AssertionError(f"spawn refused: {started.status_code} {started.text}")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            model = self.api("GET", f"/users/{self.user}").json()
            server = (model.get("servers") or {}).get("")
            if server and server.get("ready"):
                return dict(server)
            if not server or not server.get("pending"):
                raise AssertionError(f"server of {self.user} did not start: {model}")
            time.sleep(0.5)
        raise AssertionError(f"server of {self.user} not ready after {timeout_s:.0f}s")

    def stop(self) -> None:
        """Stop the user's server (and wait)."""
        self.api("DELETE", f"/users/{self.user}/server")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            model = self.api("GET", f"/users/{self.user}").json()
            if not (model.get("servers") or {}).get(""):
                return
            time.sleep(0.5)

    def server_api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The user's Jupyter server REST API (through the hub's proxy)."""
        headers = {"Authorization": f"token {self.token}"}
        return self.http.request(method, f"/user/{self.user}/api{path}", headers=headers, **kwargs)

    def kernel(self, kernel_id: str | None = None) -> Kernel:
        """A new python kernel in the user's server (or the channels of a running one)."""
        if kernel_id is None:
            made = self.server_api("POST", "/kernels", json={"name": "python3"})
            made.raise_for_status()
            kernel_id = made.json()["id"]
        ws = self.base.replace("http://", "ws://", 1)
        return Kernel(
            kernel_id,
            f"{ws}/user/{self.user}/api/kernels/{kernel_id}/channels",
            {"Authorization": f"token {self.token}"},
        )


class KernelError(Exception):
    """Code run in the kernel raised (the traceback's last line)."""


class Kernel:
    """A kernel's websocket channels (Jupyter messaging protocol 5.3, JSON frames)."""

    def __init__(self, kernel_id: str, url: str, headers: dict[str, str]) -> None:
        self.id = kernel_id
        self._connection = connect(url, additional_headers=headers, open_timeout=30, max_size=None)
        self.ws = self._connection.__enter__()
        self.session = uuid.uuid4().hex

    def run(self, code: str, timeout_s: float = 120.0) -> str:
        """Execute ``code``; its stdout. Raises KernelError when it raised."""
        msg_id = uuid.uuid4().hex
        self.ws.send(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "msg_type": "execute_request",
                        "session": self.session,
                        "username": "test",
                        "version": "5.3",
                    },
                    "parent_header": {},
                    "metadata": {},
                    "content": {
                        "code": code,
                        "silent": False,
                        "store_history": False,
                        "user_expressions": {},
                        "allow_stdin": False,
                        "stop_on_error": True,
                    },
                    "channel": "shell",
                    "buffers": [],
                }
            )
        )
        out: list[str] = []
        error: str | None = None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream" and content["name"] == "stdout":
                out.append(content["text"])
            elif kind == "error":
                error = f"{content['ename']}: {content['evalue']}"
            elif kind == "status" and content["execution_state"] == "idle":
                if error is not None:
                    raise KernelError(error)
                return "".join(out)
        raise TimeoutError(f"kernel did not finish within {timeout_s:.0f}s")

    def close(self) -> None:
        self._connection.__exit__(None, None, None)

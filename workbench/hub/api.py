"""Talking to the running hub over its REST API: the stack's status line and the doors'
check of a per-user API token.

Both use the hub's own port (``WORKBENCH_HUB_API_PORT``), not the proxy's. The
workbench reads the hub as the ``workbench`` service, whose token is the secret
``$WORKBENCH_HOME/secrets/hub-service-token``.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import hashlib
import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from workbench.config import Config
from workbench.secretfiles import load_secret, secret_path

__all__ = [
    "TOKEN_CACHE_S",
    "HubClient",
    "service_token",
    "status_line",
    "stop_all_servers",
    "verify_hub_token",
]

TOKEN_CACHE_S = 10.0
"""Seconds a door trusts a checked hub token before asking the hub again: a revoked
token (or a stopped server's) is refused at most this long after."""

# the hub's API tokens are uuid4 hex; a password of this shape is still tried as one
_TOKEN_SHAPE = re.compile(r"[0-9a-f]{32}")


def service_token(config: Config) -> str:
    """The token the hub gives the ``workbench`` service (created on first use)."""
    secret = load_secret(
        secret_path(config, "hub-service-token"),
        what="hub service token",
        lost_hint="restart the hub: 'workbench restart hub' makes a new one",
    )
    return base64.urlsafe_b64encode(secret).decode().rstrip("=")


@dataclasses.dataclass(frozen=True)
class HubClient:
    """The hub's REST API at ``http://host:WORKBENCH_HUB_API_PORT/hub/api``."""

    config: Config
    timeout_s: float = 3.0

    @functools.cached_property
    def _service_token(self) -> str:
        # read once per client: stop_all_servers polls the API every 0.3 s
        return service_token(self.config)

    @property
    def url(self) -> str:
        """Base URL of the API."""
        return f"http://{self.config.host}:{self.config.hub_api_port}/hub/api"

    def get(self, path: str, *, token: str | None = None) -> Any:
        """``GET path`` as the workbench service (or as ``token``'s owner); JSON answer."""
        request = urllib.request.Request(
            self.url + path,
            headers={"Authorization": f"token {token or self._service_token}"},
        )
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            return json.loads(response.read())

    def delete(self, path: str) -> None:
        """``DELETE path`` as the workbench service."""
        request = urllib.request.Request(
            self.url + path,
            method="DELETE",
            headers={"Authorization": f"token {self._service_token}"},
        )
        # the hub answers once the server stopped, or after its own slow-stop wait (10 s)
        with urllib.request.urlopen(request, timeout=max(self.timeout_s, 30.0)):
            pass

    def running_servers(self) -> dict[str, str]:
        """``{user: server url}`` of every running (or starting) notebook server."""
        users = self.get("/users?state=active")
        out = {}
        for user in users:
            for server in (user.get("servers") or {}).values():
                if server.get("ready") or server.get("pending"):
                    out[user["name"]] = server.get("url", "")
        return out


def status_line(config: Config) -> tuple[str, dict[str, int]]:
    """``workbench status``'s line for the hub and its figures: running notebook servers
    against the cap (``WORKBENCH_HUB_MAX_SERVERS``), then each user whose server failed
    to start, when and why."""
    from workbench.hub.failures import spawn_failures

    servers = HubClient(config).running_servers()
    names = ", ".join(sorted(servers))
    text = f"ok: {len(servers)} of {config.hub_max_servers} notebook servers running"
    text += f" ({names})" if names else ""
    failed = spawn_failures(config)
    for user, failure in sorted(failed.items()):
        text += f"; {user}'s server failed to start at {failure['at']}: {failure['reason']}"
    figures = {"servers": len(servers), "max_servers": config.hub_max_servers}
    return text, {**figures, "spawn_failures": len(failed)}


def stop_all_servers(config: Config, *, timeout_s: float = 30.0) -> list[str]:
    """Ask the hub to stop every user's server and wait until they are gone (``workbench
    down``: a restarted hub leaves them running on purpose). The users stopped."""
    client = HubClient(config)
    running = sorted(client.running_servers())
    for user in running:
        with contextlib.suppress(urllib.error.HTTPError):  # already stopping
            client.delete(f"/users/{urllib.parse.quote(user)}/server")
    deadline = time.monotonic() + timeout_s
    while client.running_servers() and time.monotonic() < deadline:
        time.sleep(0.3)
    return running


_cache: dict[str, tuple[str, float]] = {}
_cache_lock = threading.Lock()


def verify_hub_token(config: Config, user: str, token: str) -> bool:
    """Whether ``token`` is a live hub API token of hub user ``user``.

    Asks the hub (``GET /hub/api/user`` with the token); answers are cached
    :data:`TOKEN_CACHE_S` seconds. False when the hub is not running.
    """
    if not _TOKEN_SHAPE.fullmatch(token):
        return False
    key = hashlib.sha256(token.encode()).hexdigest()
    now = time.monotonic()
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None and cached[1] > now:
        return cached[0] == user
    try:
        owner = HubClient(config).get("/user", token=token).get("name", "")
    except (urllib.error.URLError, OSError, ValueError):
        owner = ""  # 403 for an unknown or revoked token, or no hub: not a token
    with _cache_lock:
        for stale in [k for k, (_, until) in _cache.items() if until <= now]:
            del _cache[stale]
        _cache[key] = (owner, now + TOKEN_CACHE_S)
    return bool(owner) and owner == user

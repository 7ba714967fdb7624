"""Dashboard logins ended at logout, so a copied session cookie dies with the logout.

The session cookie is a signed ``user|expiry|HMAC`` that any server holding the secret
accepts until its expiry; a logout therefore writes the cookie's signature and expiry
to ``$WORKBENCH_HOME/run/dashboard-logouts.json`` (owner only), and both dashboard
servers refuse a cookie named there. An entry is dropped once its cookie has expired
anyway, so the file stays as small as the logins of one session length.

>>> import tempfile, pathlib
>>> logouts = Logouts(pathlib.Path(tempfile.mkdtemp()) / "logouts.json")
>>> logouts.revoke("rita|2000000000|c2lnbmF0dXJl", now=1_900_000_000)
>>> logouts.revoked("rita|2000000000|c2lnbmF0dXJl")
True
>>> logouts.revoked("rita|2000000000|b3RoZXI")
False
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from workbench.config import Config
from workbench.filemodes import write_json

__all__ = ["Logouts", "logouts"]


class Logouts:
    """The signatures of logged-out session cookies, kept in one file (read again only
    when it changed)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: int | None = None
        self._entries: dict[str, int] = {}

    def _load(self) -> dict[str, int]:
        try:
            stamp = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return {}
        if stamp != self._stamp:
            try:
                raw = json.loads(self.path.read_text())
            except (OSError, ValueError):
                raw = {}
            self._entries = {str(k): int(v) for k, v in raw.items()}
            self._stamp = stamp
        return self._entries

    def revoked(self, token: str) -> bool:
        """Whether ``token``'s session was logged out."""
        signature = token.strip().rsplit("|", 1)[-1]
        with self._lock:
            return signature in self._load()

    def revoke(self, token: str, *, now: float) -> None:
        """End ``token``'s session for good (a malformed token is ignored: it is refused
        anyway)."""
        parts = token.strip().split("|")
        if len(parts) != 3 or not parts[1].isdigit():
            return
        with self._lock:
            entries = {k: v for k, v in self._load().items() if v > now}
            entries[parts[2]] = int(parts[1])
            write_json(self.path, entries)
            self._entries, self._stamp = entries, self.path.stat().st_mtime_ns


_BY_PATH: dict[Path, Logouts] = {}
_BY_PATH_LOCK = threading.Lock()


def logouts(config: Config) -> Logouts:
    """The logouts of ``config``'s dashboards (one object per file in a process)."""
    path = config.run_dir / "dashboard-logouts.json"
    with _BY_PATH_LOCK:
        return _BY_PATH.setdefault(path, Logouts(path))

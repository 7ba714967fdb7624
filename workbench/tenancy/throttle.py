"""Login throttling: exponential back-off per user name and per client address.

Every password check (:func:`workbench.tenancy.users.authenticate`, behind the CLI's
``--as``, the Voila login and HiveServer2) is admitted here first. After
``WORKBENCH_LOGIN_MAX_FAILURES`` failed logins of one user name, or
``WORKBENCH_LOGIN_SOURCE_MAX_FAILURES`` from one client address, further attempts are
refused — the right password included — for ``WORKBENCH_LOGIN_BACKOFF`` seconds; each
failure after that doubles the back-off, up to ``WORKBENCH_LOGIN_BACKOFF_MAX``. A
successful login clears the user name's failures (not the address's: an attacker with
one account of their own must not be able to wipe the count of their guesses). Failures
are forgotten after twice the longest back-off without any.

Unknown and known user names are counted and refused alike, so the throttle does not
tell which users exist. An attempt is counted as a failure *before* its password is
checked and refunded when it turns out right: guesses sent in parallel cannot all slip
through one check.

The state is a small SQLite database, ``$WORKBENCH_HOME/login-throttle.sqlite`` (mode
0600), shared by every door of every process on the home: the CLI runs one process per
call. SQLite gives the cross-process locking and crash-safe updates a hand-written file
would need to reimplement, and looks up a key without reading every other one.

>>> policy = Policy(user_limit=2, source_limit=10, backoff=30, backoff_max=100)
>>> ledger, keys = Ledger(policy, {}), policy.keys("anna", None)
>>> [ledger.admit(keys, now=t) for t in (0, 1, 2, 31, 32)]  # 0.0: admitted and charged
[0.0, 0.0, 29.0, 0.0, 59.0]
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from workbench.config import Config
from workbench.exceptions import AuthenticationFailed
from workbench.filemodes import private_dir

__all__ = [
    "Admission",
    "Entry",
    "Key",
    "Ledger",
    "LoginThrottle",
    "LoginThrottled",
    "Policy",
    "throttle_path",
]

logger = logging.getLogger(__name__)


class LoginThrottled(AuthenticationFailed):
    """Too many failed logins of this user name or from this address: wait ``retry_after``
    seconds. The message is the same for unknown and known users."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins; try again in {retry_after} s")
        self.retry_after = retry_after


@dataclasses.dataclass(frozen=True)
class Key:
    """One throttled thing: a user name or a client address, and its failure limit."""

    name: str  # "user:<sha256>" or "source:<sha256>": bounded size, whatever was typed
    limit: int
    label: str  # for the operator's log: "user 'anna'", "address 10.0.0.7"


@dataclasses.dataclass(frozen=True)
class Entry:
    """The failures counted against one key."""

    failures: int
    last: float  # when the last one was counted (epoch seconds)
    until: float  # attempts before this time are refused (epoch seconds; 0: none)


@dataclasses.dataclass(frozen=True)
class Policy:
    """Limits and back-off of the throttle."""

    user_limit: int
    source_limit: int
    backoff: float
    backoff_max: float

    @classmethod
    def from_config(cls, config: Config) -> Policy:
        """The policy of ``WORKBENCH_LOGIN_*``."""
        return cls(
            user_limit=config.login_max_failures,
            source_limit=config.login_source_max_failures,
            backoff=config.login_backoff,
            backoff_max=config.login_backoff_max,
        )

    @property
    def cap(self) -> float:
        """The longest back-off (never shorter than the first)."""
        return max(self.backoff, self.backoff_max)

    @property
    def forget_after(self) -> float:
        """Seconds without a failure after which a key starts from zero again: longer than
        the longest back-off, so that sitting one out never buys a fresh set of guesses."""
        return 2 * self.cap

    def lock_seconds(self, failures: int, limit: int) -> float:
        """How long a key with ``failures`` is refused after its latest failure."""
        if failures < limit:
            return 0.0
        return min(self.cap, self.backoff * 2.0 ** min(failures - limit, 64))

    def keys(self, user: str, source: str | None) -> list[Key]:
        """The keys one login attempt is counted against."""
        keys = [Key(f"user:{_digest(user)}", self.user_limit, f"user {user!r}")]
        if source:
            keys.append(Key(f"source:{_digest(source)}", self.source_limit, f"address {source}"))
        return keys


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class Ledger:
    """The throttle's logic on a mapping ``key -> Entry``: no I/O, the clock passed in."""

    def __init__(self, policy: Policy, entries: dict[str, Entry]) -> None:
        self.policy = policy
        self.entries = entries

    def current(self, key: str, now: float) -> Entry | None:
        """The key's entry, or None when it has none or it was forgotten."""
        entry = self.entries.get(key)
        if entry is not None and now - entry.last > self.policy.forget_after:
            return None
        return entry

    def admit(self, keys: list[Key], now: float) -> float:
        """0.0 when the attempt may go ahead (then it is counted as a failure against every
        key); else the seconds until it may, with nothing counted."""
        wait = max(
            ((e.until - now) for k in keys if (e := self.current(k.name, now)) is not None),
            default=0.0,
        )
        if wait > 0:
            return wait
        for key in keys:
            before = self.current(key.name, now)
            failures = (before.failures if before else 0) + 1
            lock = self.policy.lock_seconds(failures, key.limit)
            self.entries[key.name] = Entry(failures, now, now + lock if lock else 0.0)
        return 0.0

    def refund(self, key: str, charged: Entry, before: Entry | None) -> None:
        """Take back the failure an admission counted: the entry as it was when nothing
        else was counted since, else one failure fewer."""
        entry = self.entries.get(key)
        if entry is None:
            return
        if entry == charged:
            if before is None:
                del self.entries[key]
            else:
                self.entries[key] = before
        elif entry.failures <= 1:
            del self.entries[key]
        else:
            self.entries[key] = dataclasses.replace(entry, failures=entry.failures - 1)

    def reset(self, key: str) -> None:
        """Forget the key's failures (a successful login of that user)."""
        self.entries.pop(key, None)


@dataclasses.dataclass(frozen=True)
class Admission:
    """An attempt the throttle let through, counted as a failure until settled."""

    keys: tuple[Key, ...]
    before: Mapping[str, Entry | None]
    charged: Mapping[str, Entry]

    def locked(self) -> list[tuple[str, float, int]]:
        """(label, seconds, failures) of each key this attempt's failure locks."""
        return [
            (k.label, e.until - e.last, e.failures)
            for k in self.keys
            if (e := self.charged[k.name]).until
        ]


def throttle_path(config: Config) -> Path:
    """``$WORKBENCH_HOME/login-throttle.sqlite``."""
    return config.home / "login-throttle.sqlite"


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS failures "
    "(key TEXT PRIMARY KEY, failures INTEGER NOT NULL, last REAL NOT NULL, until REAL NOT NULL)"
)


class LoginThrottle:
    """The throttle of one home, kept in :func:`throttle_path`."""

    def __init__(
        self, path: Path, policy: Policy, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = path
        self.policy = policy
        # wall-clock time: the state outlives processes, whose monotonic clocks differ
        self.clock = clock

    @classmethod
    def for_config(cls, config: Config) -> LoginThrottle:
        """The throttle of ``config``'s home with its ``WORKBENCH_LOGIN_*`` policy."""
        return cls(throttle_path(config), Policy.from_config(config))

    def admit(self, user: str, source: str | None) -> Admission:
        """Count the attempt as a failure of ``user`` and ``source``, or raise
        :class:`LoginThrottled` while either is backed off."""
        keys = self.policy.keys(user, source)
        now = self.clock()
        with self._ledger(keys, prune_before=now - self.policy.forget_after) as ledger:
            before = {k.name: ledger.current(k.name, now) for k in keys}
            wait = ledger.admit(keys, now)
            charged = {k.name: e for k in keys if (e := ledger.entries.get(k.name))}
        if wait > 0:
            logger.warning(
                "login of %s refused for %.0f s more: too many failed logins",
                " from ".join(k.label for k in keys),
                wait,
            )
            raise LoginThrottled(max(1, math.ceil(wait)))
        return Admission(tuple(keys), before, charged)

    def succeeded(self, admission: Admission) -> None:
        """The password was right: clear the user's failures, refund the address's."""
        user, *sources = admission.keys
        with self._ledger(admission.keys) as ledger:
            ledger.reset(user.name)
            for key in sources:
                ledger.refund(key.name, admission.charged[key.name], admission.before[key.name])

    def refund(self, admission: Admission) -> None:
        """The attempt was no guess after all (the right password of a disabled user, or
        no answer at all): take back what it counted."""
        with self._ledger(admission.keys) as ledger:
            for key in admission.keys:
                ledger.refund(key.name, admission.charged[key.name], admission.before[key.name])

    @contextlib.contextmanager
    def _ledger(
        self, keys: tuple[Key, ...] | list[Key], prune_before: float = 0
    ) -> Iterator[Ledger]:
        """The keys' entries in one write transaction; what the block changes is stored."""
        names = [k.name for k in keys]
        try:
            conn = self._connect()
        except (OSError, sqlite3.Error) as exc:
            raise self._unusable(exc) from None
        try:
            conn.execute("BEGIN IMMEDIATE")  # the write lock first: no lost updates
            if prune_before:
                conn.execute(
                    "DELETE FROM failures WHERE last < ? AND until < ?", (prune_before,) * 2
                )
            marks = ",".join("?" * len(names))
            rows = conn.execute(
                f"SELECT key, failures, last, until FROM failures WHERE key IN ({marks})", names
            ).fetchall()
            loaded = {r[0]: Entry(int(r[1]), float(r[2]), float(r[3])) for r in rows}
            ledger = Ledger(self.policy, dict(loaded))
            yield ledger
            for name in names:
                entry = ledger.entries.get(name)
                if entry is None and name in loaded:
                    conn.execute("DELETE FROM failures WHERE key = ?", (name,))
                elif entry is not None and entry != loaded.get(name):
                    conn.execute(
                        "INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?)",
                        (name, entry.failures, entry.last, entry.until),
                    )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._unusable(exc) from None
        finally:
            if conn.in_transaction:
                conn.rollback()
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        if not self.path.exists():
            private_dir(self.path.parent)
            # created owner-only before SQLite opens it (its journal copies this mode)
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            conn.execute(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    def _unusable(self, exc: Exception) -> AuthenticationFailed:
        # refusing every login is safer than unthrottled guessing; the operator sees why
        logger.error("cannot record login attempts in %s: %s", self.path, exc)
        return AuthenticationFailed(
            "logins are unavailable: the server cannot record login attempts",
            hint="ask an operator to look at the server's log",
        )

"""The legacy doors' replay memory: accepted frames, remembered until they turn stale.

Legacy frames carry no nonce, so an exact copy of an accepted frame is as well signed as
the original. The adapter refuses a frame whose ``ts`` is older than
``WORKBENCH_LEGACY_MAX_AGE`` anyway; inside that window this memory recognises a copy by
a 63-bit fingerprint of ``(device_id, MAC)`` and keeps each one only until its frame
would be refused as stale, so its size follows the window, not the uptime.

It is a fixed table of ``WORKBENCH_LEGACY_REPLAY_SLOTS`` slots (16 bytes each: the
fingerprint and the unix millisecond it may be forgotten) in one memory-mapped file,
``$WORKBENCH_HOME/run/gateway-replay``, shared by every gateway worker under an
``flock``: a copy sent on another connection, which the kernel may hand to another
worker, is recognised too, and so is one sent after a restart. A fingerprint lives in
one of :data:`PROBES` neighbouring slots; when all of them hold frames still inside the
window, the table is full for that fingerprint and the frame is refused (503, retried by
the device) rather than accepted unremembered.

A frame is claimed in two steps, so that a worker dying half-way loses no event: before
it is produced the claim is *pending* for a short lease (a copy arriving meanwhile is
told to retry, not that it was stored), and only once the broker acknowledged it is the
claim *confirmed* until the frame turns stale. A pending claim whose worker died lapses
with its lease and the device's resend passes.

>>> guard = ReplayGuard(None, slots=64)
>>> fp = fingerprint("dev-1", b"mac")
>>> guard.claim(fp, lease_until_ms=1_100, now_ms=1_000)
'new'
>>> guard.claim(fp, lease_until_ms=1_200, now_ms=1_050)  # the first one is being produced
'pending'
>>> guard.confirm(fp, until_ms=2_000, now_ms=1_060)
>>> guard.claim(fp, lease_until_ms=1_600, now_ms=1_500)
'replay'
>>> guard.claim(fp, lease_until_ms=2_100, now_ms=2_000)  # stale by now (refused upstream)
'new'
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import mmap
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

__all__ = ["PROBES", "ReplayGuard", "fingerprint"]

PROBES = 16
"""Neighbouring slots a fingerprint may occupy."""

_PENDING = 1 << 63  # set in a stored fingerprint while its frame is being produced

Claim = Literal["new", "pending", "replay", "full"]


def fingerprint(device_id: str, mac: bytes) -> int:
    """A non-zero 63-bit fingerprint of a device's frame MAC (0 marks an empty slot)."""
    digest = hashlib.blake2b(device_id.encode() + b"\0" + mac, digest_size=8).digest()
    return (int.from_bytes(digest, "little") & (_PENDING - 1)) or 1


class ReplayGuard:
    """The table; ``path`` None keeps it in this process only (tests, a single process)."""

    def __init__(self, path: Path | None, *, slots: int) -> None:
        self.slots = slots
        cells = slots + PROBES  # the last fingerprints probe past the end, not around
        size = 2 * 8 * cells
        self._fd: int | None = None
        if path is None:
            self._map = mmap.mmap(-1, size)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if os.fstat(fd).st_size != size:  # new, or made with another slot count
                    os.ftruncate(fd, 0)
                    os.ftruncate(fd, size)
                fcntl.flock(fd, fcntl.LOCK_UN)
                self._map = mmap.mmap(fd, size)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
        self._view = memoryview(self._map)
        self._fps = self._view[: 8 * cells].cast("Q")
        self._until = self._view[8 * cells :].cast("q")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self._fd is None:
            yield
            return
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _find(self, fp: int, now_ms: int) -> int:
        """The live slot holding ``fp`` (pending or not), or -1."""
        fps, until = self._fps, self._until
        start = fp % self.slots
        for i in range(start, start + PROBES):
            if until[i] > now_ms and fps[i] & ~_PENDING == fp:
                return i
        return -1

    def claim(self, fp: int, *, lease_until_ms: int, now_ms: int) -> Claim:
        """Claim ``fp`` as pending until ``lease_until_ms``: ``"new"``. ``"replay"`` when it
        is confirmed already, ``"pending"`` when another claim of it is still being produced,
        ``"full"`` when its slots all hold live fingerprints."""
        fps, until = self._fps, self._until
        start = fp % self.slots
        with self._locked():
            free = -1
            for i in range(start, start + PROBES):
                if until[i] > now_ms:
                    if fps[i] & ~_PENDING == fp:
                        return "pending" if fps[i] & _PENDING else "replay"
                elif free < 0:
                    free = i
            if free < 0:
                return "full"
            fps[free] = fp | _PENDING
            until[free] = lease_until_ms
        return "new"

    def confirm(self, fp: int, *, until_ms: int, now_ms: int) -> None:
        """The claimed frame was stored: remember ``fp`` until ``until_ms``."""
        with self._locked():
            i = self._find(fp, now_ms)
            if i < 0:  # the lease ran out meanwhile: claim it again for the window
                self._put(fp, until_ms, now_ms)
                return
            self._fps[i] = fp
            self._until[i] = max(self._until[i], until_ms)

    def _put(self, fp: int, until_ms: int, now_ms: int) -> None:
        start = fp % self.slots
        for i in range(start, start + PROBES):
            if self._until[i] <= now_ms:
                self._fps[i] = fp
                self._until[i] = until_ms
                return

    def release(self, fp: int, *, now_ms: int) -> None:
        """Drop a pending claim of ``fp`` (its frame was not stored: a resend must pass)."""
        with self._locked():
            i = self._find(fp, now_ms)
            if i >= 0 and self._fps[i] & _PENDING:
                self._until[i] = 0

    def close(self) -> None:
        """Unmap the table and close its file."""
        self._fps.release()
        self._until.release()
        self._view.release()
        self._map.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

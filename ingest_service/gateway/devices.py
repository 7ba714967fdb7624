"""The gateway's view of the registry: ``registry/devices`` in memory, kept current by change.

Each worker loads the table once, then applies only what each new Delta version
changed (the table's change data feed, :class:`workbench.registry.feed.DeviceFeed`):
one change costs the changed rows, not the fleet. A version the feed cannot explain
(vacuumed, or from before the feed) is a full reload, counted in
``gateway_registry_resyncs_total`` and logged.

A worker reads the registry when

* a registry command on this host wakes it (a datagram on the port named in its view
  file, :mod:`workbench.registry.views`): at once, and the command that revokes waits
  for the worker's file to show the new version;
* a door is about to refuse a device whose token verifies (:meth:`DeviceCache.sync`):
  the view may be older than a grant whose command has returned, so the door answers
  from a read that began after the request arrived;
* ``WORKBENCH_REGISTRY_POLL`` seconds passed (changes made on another host).

Reads are coalesced: one at a time per worker, and a caller waits for one that began
after it asked, never for an older one. Keys are derived from the master secret and
cached per device for its current key version.

**When the registry cannot be read** (the lake's store down, its folder gone) the worker
keeps serving its last view: a store outage must not refuse the whole fleet. It says so
— the first failure of an outage is logged with the reason, ``unreadable_since`` and the
error go into its view file (a revoking command that waits for it and ``workbench
status`` name them), and :attr:`DeviceCache.on_read` lets the gateway export the failed
reads and how stale the view is. It keeps trying at every poll; the first read that
succeeds applies every version committed meanwhile (revocations included) by feed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import Callable

from workbench.config import Config
from workbench.exceptions import RegistryUnreadable
from workbench.registry.compact import DeviceIndex
from workbench.registry.feed import Changes, DeviceFeed
from workbench.registry.keys import derive_device_key, load_master_key
from workbench.registry.records import DeviceEntry
from workbench.registry.store import Registry
from workbench.registry.views import ViewFile
from workbench.tenancy.principal import Principal

__all__ = ["DeviceCache"]

logger = logging.getLogger(__name__)


class _Wake(asyncio.DatagramProtocol):
    """The worker's wake-up port: any datagram means "read the registry now"."""

    def __init__(self, cache: DeviceCache) -> None:
        self.cache = cache

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        self.cache.woken()


class DeviceCache:
    """Device lookups for the gateway; :meth:`run` keeps them current."""

    def __init__(self, config: Config, *, name: str = "gateway") -> None:
        self.config = config
        self.name = name  # how registry commands name this worker when it lags
        uri = Registry(config, principal=Principal.system("gateway")).table_uri("devices")
        self.feed = DeviceFeed(uri)
        self.version: int | None = None
        self._devices = DeviceIndex()
        self._keys: dict[str, tuple[int, bytes]] = {}  # device -> (key version, key)
        self._master = load_master_key(config)
        self.loaded = asyncio.Event()
        self.on_change: Callable[[Changes], None] | None = None
        self.on_read: Callable[[bool], None] | None = None  # after each read: did it fail?
        self.resyncs = 0  # full reloads after the first load
        self.read_errors = 0  # registry reads that failed
        self.last_read_at: float | None = None  # epoch s of the last read that succeeded
        self.unreadable_since: float | None = None  # epoch s of the first failed read of
        self.read_error = ""  # the current outage, and its last error (None/"": none)
        self._view: ViewFile | None = None
        self._begun = 0  # reads started / finished, in order (one at a time)
        self._done = 0
        self._running: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[bool]] = set()

    def __len__(self) -> int:
        return len(self._devices)

    def get(self, device_id: str) -> DeviceEntry | None:
        """The device, or None when it is not in this view of the registry."""
        return self._devices.get(device_id)

    def key(self, entry: DeviceEntry) -> bytes:
        """The device's current key bytes."""
        cached = self._keys.get(entry.device_id)
        if cached is not None and cached[0] == entry.key_version:
            return cached[1]
        key = self.derive(entry.device_id, entry.key_version)
        self._keys[entry.device_id] = (entry.key_version, key)
        return key

    def derive(self, device_id: str, key_version: int) -> bytes:
        """The key of ``device_id`` at ``key_version`` (not cached: a door tries versions it
        does not know yet, and a stranger must not fill the cache)."""
        return base64.b64decode(derive_device_key(self._master, device_id, key_version))

    # --- reading the registry -------------------------------------------------------------

    def _apply(self, changes: Changes) -> bool:
        """Apply what :class:`DeviceFeed` read (on the event loop: requests never see half
        a change); True when anything moved."""
        if changes.resync:
            if self.version is not None:
                self.resyncs += 1
                logger.warning(
                    "registry resync (%d so far): %s; reloaded %d devices at version %s",
                    self.resyncs,
                    changes.reason,
                    len(changes.devices),
                    changes.version,
                )
            else:
                logger.info(
                    "registry version %s: %d devices", changes.version, len(changes.devices)
                )
            self._devices = changes.devices
            self._keys = {
                k: v
                for k, v in self._keys.items()
                if (d := self._devices.get(k)) and d.key_version == v[0]
            }
        else:
            for device_id in changes.deleted:
                self._devices.pop(device_id, None)
                self._keys.pop(device_id, None)
            self._devices.absorb(changes.devices)
            if changes.devices or changes.deleted:
                logger.info(
                    "registry version %s: %d device(s) changed, %d removed",
                    changes.version,
                    len(changes.devices),
                    len(changes.deleted),
                )
        moved = changes.version != self.version or changes.resync
        self.version = changes.version
        # listeners first: a door that cuts off revoked sessions has done so before the
        # view file tells a waiting command that this worker applied the version
        try:
            if moved and self.on_change is not None:
                self.on_change(changes)
        finally:  # a failing listener must not keep the version from being reported
            self._publish()
        return moved

    def _publish(self) -> None:
        if self._view is not None:
            self._view.publish(
                self.version, unreadable_since=self.unreadable_since, error=self.read_error
            )

    def stale_seconds(self, now: float | None = None) -> float:
        """Seconds since the last read that succeeded while reads fail; 0 while they work."""
        if self.unreadable_since is None:
            return 0.0
        since = self.last_read_at if self.last_read_at is not None else self.unreadable_since
        return max(0.0, (time.time() if now is None else now) - since)

    def _read_failed(self, exc: Exception) -> None:
        self.read_errors += 1
        self.read_error = exc.message if isinstance(exc, RegistryUnreadable) else repr(exc)
        if self.unreadable_since is None:
            self.unreadable_since = time.time()
            logger.warning(
                "registry unreadable; serving the last view (version %s) until it can be "
                "read again: %s",
                self.version,
                self.read_error,
            )
        self._publish()
        if self.on_read is not None:
            self.on_read(True)

    def _read_succeeded(self) -> None:
        self.last_read_at = time.time()
        if self.unreadable_since is not None:
            logger.warning(
                "registry readable again after %.1f s (%d failed reads so far)",
                self.last_read_at - self.unreadable_since,
                self.read_errors,
            )
            self.unreadable_since = None
            self.read_error = ""
            self._publish()
        if self.on_read is not None:
            self.on_read(False)

    def refresh(self) -> bool:
        """Read and apply what changed; True when the view moved. Blocking, for callers
        without an event loop (tests, tools)."""
        try:
            changes = self.feed.changes()
        except Exception as exc:
            self._read_failed(exc)
            raise
        self._read_succeeded()
        return self._apply(changes)

    async def sync(self) -> None:
        """Return once a registry read that began after this call has been applied (raises
        what the read raised)."""
        wanted = self._begun + 1
        while self._done < wanted:
            if self._running is None:
                self._running = asyncio.create_task(self._read_once(), name="registry-read")
            await asyncio.shield(self._running)

    async def _read_once(self) -> None:
        self._begun += 1
        number = self._begun
        try:
            try:
                changes = await asyncio.to_thread(self.feed.changes)
            except Exception as exc:
                self._read_failed(exc)
                raise
            self._read_succeeded()
            self._apply(changes)
            self._done = number
        finally:
            self._running = None

    def woken(self) -> None:
        """A registry command asked for a read (its datagram arrived)."""
        task = asyncio.create_task(self._quiet_sync("wake"))
        self._background.add(task)  # keep a reference until it is done
        task.add_done_callback(self._background.discard)

    async def _quiet_sync(self, why: str) -> bool:
        try:
            await self.sync()
        except RegistryUnreadable:  # logged once per outage by _read_failed
            return False
        except Exception:  # keep serving the last good view
            logger.exception("registry read (%s) failed; keeping version %s", why, self.version)
            return False
        return True

    async def run(self) -> None:
        """Register this worker's view file and wake-up port, load, then keep current
        forever (wake-ups and a poll every ``WORKBENCH_REGISTRY_POLL`` seconds)."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Wake(self), local_addr=("127.0.0.1", 0)
        )
        port = int(transport.get_extra_info("sockname")[1])
        # the file exists before the first load: a command committing from now on waits
        # for this worker; one that committed before is in the load
        self._view = ViewFile(self.config, self.name, port=port)
        self._view.publish(None)
        try:
            while True:
                if await self._quiet_sync("poll"):
                    self.loaded.set()
                await asyncio.sleep(self.config.registry_poll_interval)
        finally:
            transport.close()
            with contextlib.suppress(OSError):
                self._view.remove()

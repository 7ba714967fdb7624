"""The gateway's view of the registry: a dict reloaded whenever ``registry/devices`` changes.

The poller checks the table's Delta version every ``registry_poll_interval``
seconds and reloads the whole table when it moved, so provisioning,
disabling, de-provisioning and key rotation reach the gateway within a couple
of seconds without a restart. Keys are derived from the master secret on
first use and cached per ``(device_id, key_version)``.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from workbench.config import Config
from workbench.registry.keys import derive_device_key, load_master_key
from workbench.registry.store import Registry
from workbench.tenancy.principal import Principal

__all__ = ["DeviceCache", "DeviceEntry"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class DeviceEntry:
    """What the gateway knows about one device."""

    device_id: str
    tenant_id: str
    building_id: str
    floor: int | None
    room: str | None
    device_type: str
    protocol: str
    status: str
    key_version: int


class DeviceCache:
    """Device lookups for the gateway; :meth:`run` keeps them fresh."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.registry = Registry(config, principal=Principal.system("gateway"))
        self.version: int | None = None
        self._devices: dict[str, DeviceEntry] = {}
        self._keys: dict[tuple[str, int], bytes] = {}
        self._master = load_master_key(config)
        self.loaded = asyncio.Event()

    def __len__(self) -> int:
        return len(self._devices)

    def get(self, device_id: str) -> DeviceEntry | None:
        """The device, or None when it is not in the registry."""
        return self._devices.get(device_id)

    def key(self, entry: DeviceEntry) -> bytes:
        """The device's current key bytes."""
        cache_key = (entry.device_id, entry.key_version)
        key = self._keys.get(cache_key)
        if key is None:
            text = derive_device_key(self._master, entry.device_id, entry.key_version)
            key = self._keys[cache_key] = base64.b64decode(text)
        return key

    def refresh(self) -> bool:
        """Reload when the table's version moved; True when it did. Blocking: run in a thread."""
        version = self.registry.version("devices")
        if version == self.version:
            return False
        frame = self.registry.devices()
        rows: list[dict[str, Any]] = frame.select(
            [f.name for f in dataclasses.fields(DeviceEntry)]
        ).to_dicts()
        devices = {row["device_id"]: DeviceEntry(**row) for row in rows}
        self._keys = {
            k: v
            for k, v in self._keys.items()
            if (d := devices.get(k[0])) and d.key_version == k[1]
        }
        self._devices = devices
        self.version = version
        logger.info("registry version %s: %d devices", version, len(devices))
        return True

    async def run(self, on_change: Callable[[], None] | None = None) -> None:
        """Poll for registry changes forever; call ``on_change`` after each reload."""
        while True:
            try:
                if await asyncio.to_thread(self.refresh) and on_change is not None:
                    on_change()
                self.loaded.set()
            except Exception:  # keep serving the last good view
                logger.exception("registry reload failed; keeping version %s", self.version)
            await asyncio.sleep(self.config.registry_poll_interval)

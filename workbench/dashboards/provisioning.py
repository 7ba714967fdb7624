"""Provisioning actions for the operators' notebook, UI-free: every action is the
registry's, called as the logged-in principal, after checking the principal may act
on that tenant.

Operators and admins act; everyone else is refused by :meth:`Principal.require`.
An operator never learns whether another tenant's building or device exists: both
read as "not one of your tenant's". Every action is all-or-nothing (one Delta
commit), so a refused or failed action leaves the registry as it was.

>>> import tempfile
>>> from workbench.tenancy import Principal
>>> cfg = Config.from_env({"WORKBENCH_HOME": tempfile.mkdtemp()})
>>> ProvisioningActions(cfg, Principal("vic", "viewer", "t-1")).search()  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
workbench.exceptions.AccessDenied: not authorized: vic (viewer) may not provision ...
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shlex
from pathlib import Path
from typing import Any

import polars as pl

from workbench.config import Config
from workbench.dashboards.data import registry_for
from workbench.exceptions import AlreadyExists, NotFound
from workbench.registry.keys import sas_token
from workbench.registry.records import shown
from workbench.tenancy import Principal

__all__ = ["FirstEvent", "ProvisioningActions", "first_event"]

logger = logging.getLogger(__name__)

ProgressFn = Any  # (stage, done, total) -> None, see workbench.registry.importer.ProgressFn


class ProvisioningActions:
    """Provision, disable, enable, de-provision, rotate keys, import and search, as one
    principal."""

    def __init__(self, config: Config, principal: Principal) -> None:
        self.config = config
        self.principal = principal
        self.registry = registry_for(config, principal)

    # --- scope ---------------------------------------------------------------------------

    def _require(self, tenant_id: str | None = None) -> None:
        self.principal.require("provision", tenant_id=tenant_id or self.principal.tenant_id)

    def _yours(self) -> str:
        return "any tenant's" if self.principal.is_admin else f"tenant {self.principal.tenant_id}'s"

    def buildings(self) -> pl.DataFrame:
        """The buildings this principal may provision into: ``building_id, tenant_id, name``."""
        self._require()
        frame: pl.DataFrame = self.registry.buildings()
        frame = frame.select("building_id", "tenant_id", "name")
        if not self.principal.is_admin:
            frame = frame.filter(pl.col("tenant_id") == self.principal.tenant_id)
        return frame.sort("building_id")

    def _building_tenant(self, building_id: str) -> str:
        rows = self.buildings().filter(pl.col("building_id") == building_id)
        if rows.height == 0:
            raise NotFound(
                f"unknown building {shown(building_id)}: not one of {self._yours()} buildings",
                hint="pick one of the buildings listed",
            )
        return str(rows["tenant_id"][0])

    def _device_tenant(self, device_id: str) -> str | None:
        try:  # a keyed read: one small file at any fleet size
            return self.registry.device(device_id).tenant_id
        except NotFound:
            return None

    def _own_device(self, device_id: str) -> str:
        self._require()
        tenant = self._device_tenant(device_id)
        if tenant is None or not self.principal.can_write(tenant):
            raise NotFound(
                f"unknown device {shown(device_id)}: not one of {self._yours()} devices",
                hint="search the fleet for the device id",
            )
        self._require(tenant)
        return tenant

    # --- actions ---------------------------------------------------------------------------

    def add_building(
        self, building_id: str, *, name: str | None = None, tenant: str | None = None
    ) -> str:
        """Add a building to the operator's own tenant (an admin names the tenant);
        returns its tenant."""
        self._require(tenant)
        logger.info("%s adds building %s", self.principal.user, building_id)
        return str(
            self.registry.add_building(building_id.strip(), tenant=tenant or None, name=name)
        )

    def rename_building(self, building_id: str, name: str) -> None:
        """Give one of the tenant's buildings a new display name."""
        self._building_tenant(building_id.strip())  # another tenant's reads as unknown
        self.registry.rename_building(building_id.strip(), name)

    def provision(
        self,
        device_id: str,
        *,
        building: str,
        device_type: str,
        floor: int | None = None,
        room: str | None = None,
        protocol: str = "http",
    ) -> Any:
        """Provision a device; returns the registry's ``ProvisionedDevice`` (its key is shown
        this once)."""
        device_id = device_id.strip()
        tenant = self._building_tenant(building.strip())
        self._require(tenant)
        owner = self._device_tenant(device_id)
        if owner is not None and owner != tenant:
            # re-provisioning would move another tenant's (de-provisioned) device id
            raise AlreadyExists(
                f"device id {shown(device_id)} is taken", hint="choose another device id"
            )
        logger.info("%s provisions %s in %s", self.principal.user, device_id, building)
        return self.registry.provision(
            device_id,
            building=building.strip(),
            device_type=device_type,
            floor=floor,
            room=room or None,
            protocol=protocol,
        )

    def disable(self, device_id: str) -> Any:
        """Stop accepting a device's events (until enabled)."""
        self._own_device(device_id)
        return self.registry.disable(device_id)

    def enable(self, device_id: str) -> Any:
        """Accept a disabled device's events again."""
        self._own_device(device_id)
        return self.registry.enable(device_id)

    def deprovision(self, device_id: str) -> Any:
        """De-provision a device for good (its key stops working)."""
        self._own_device(device_id)
        return self.registry.deprovision(device_id)

    def rotate_key(self, device_id: str) -> Any:
        """Issue a new key (shown this once); the old one stops working."""
        self._own_device(device_id)
        return self.registry.rotate_key(device_id)

    def import_csv(self, path: str | Path, *, progress: ProgressFn | None = None) -> dict[str, int]:
        """Bulk-import a device CSV (``device_id,building_id,device_type[,floor,room,protocol]``)
        in one commit; every bad row is reported at once (``ImportRejected.errors``: the
        registry checks the rows, another tenant's buildings and device ids included) and
        then nothing is applied."""
        self._require()
        return dict(self.registry.import_csv(path, progress=progress))

    def search(
        self,
        text: str = "",
        *,
        building: str | None = None,
        status: str | None = None,
        limit: int = 200,
    ) -> pl.DataFrame:
        """Devices in scope whose id, building or room contains ``text`` (case-insensitive)."""
        self._require()
        return self.registry.search_devices(
            text,
            tenant=None if self.principal.is_admin else self.principal.tenant_id,
            building=building or None,
            status=status or None,
            limit=limit,
        )


_SAMPLE_READINGS: dict[str, dict[str, object]] = {
    "environment": {"temperature": 21.5, "humidity": 40.0, "light": 300.0},
    "smoke": {"smoke": False},
    "intrusion": {"intrusion": False},
}


@dataclasses.dataclass(frozen=True)
class FirstEvent:
    """How a newly provisioned device sends its first event: a SAS token, and a curl and a
    ``mosquitto_pub`` command ready to paste into a shell (both empty for a device of a
    legacy protocol)."""

    token: str
    curl: str
    note: str
    mqtt: str = ""


def first_event(
    config: Config,
    *,
    device_id: str,
    key: str,
    device_type: str,
    protocol: str = "http",
    ttl_s: int = 3600,
) -> FirstEvent:
    """A token valid for ``ttl_s`` seconds, the ``curl`` that posts one event of the
    device's type to this workbench's gateway, stamped with the shell's current time, and
    the ``mosquitto_pub`` that publishes the same event through the MQTT door.

    >>> cfg = Config.from_env({"WORKBENCH_GATEWAY_PORT": "8080"})
    >>> first = first_event(cfg, device_id="dev-1", key="a2V5" * 11, device_type="smoke")
    >>> print(first.curl)  # doctest: +ELLIPSIS
    curl -sS http://127.0.0.1:8080/v1/telemetry \\
      -H 'Content-Type: application/json' \\
      -H 'Authorization: SharedAccessSignature sr=dev-1&se=...' \\
      --data-binary "{\\"ts\\": \\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\\", ...{\\"smoke\\": false}}"
    >>> print(first.mqtt)  # doctest: +ELLIPSIS
    mosquitto_pub -h 127.0.0.1 -p 1883 -V mqttv5 -q 1 -i dev-1 -u dev-1 \\
      -P 'SharedAccessSignature sr=dev-1&se=...' \\
      -t devices/dev-1/messages/events/ \\
      -m "{\\"ts\\": \\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\\", ...{\\"smoke\\": false}}"
    """
    token = sas_token(device_id, key, ttl_s=ttl_s)
    minutes = ttl_s // 60
    if protocol != "http":
        return FirstEvent(
            token,
            "",
            f"{device_id} speaks {protocol}: it sends over the gateway's legacy TCP port "
            f"({config.host}:{config.legacy_port}) in its own protocol, with its key.",
        )
    readings = json.dumps(_SAMPLE_READINGS.get(device_type, {"temperature": 21.5}))
    # double quotes for the shell, so that $(date ...) stamps the event when it is sent
    body = '{"ts": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "seq": 1, "readings": ' + readings + "}"
    quoted = '"' + body.replace('"', '\\"') + '"'
    url = f"http://{config.host}:{config.gateway_port}/v1/telemetry"
    curl = (
        f"curl -sS {url} \\\n"
        "  -H 'Content-Type: application/json' \\\n"
        f"  -H {shlex.quote('Authorization: ' + token)} \\\n"
        f"  --data-binary {quoted}"
    )
    mqtt = (
        f"mosquitto_pub -h {config.host} -p {config.mqtt_port} -V mqttv5 -q 1 "
        f"-i {shlex.quote(device_id)} -u {shlex.quote(device_id)} \\\n"
        f"  -P {shlex.quote(token)} \\\n"
        f"  -t {shlex.quote(f'devices/{device_id}/messages/events/')} \\\n"
        f"  -m {quoted}"
    )
    note = (
        f"The token in these commands is valid for {minutes} minutes; make a new one with "
        f"'workbench devices token {device_id} --key KEY'. The gateway answers "
        '{"accepted": 1}; the event shows on the building page within a minute.'
    )
    return FirstEvent(token, curl, note, mqtt)

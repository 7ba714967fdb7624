"""The device registry: tenants, buildings and devices, per-device keys and SAS tokens.

>>> from workbench.registry import Registry, sas_token  # doctest: +SKIP
"""

from workbench.registry.keys import derive_device_key, load_master_key, sas_token
from workbench.registry.records import Device, DeviceEntry, ProvisionedDevice, protocols
from workbench.registry.store import Registry

__all__ = [
    "Device",
    "DeviceEntry",
    "ProvisionedDevice",
    "Registry",
    "derive_device_key",
    "load_master_key",
    "protocols",
    "sas_token",
]

"""The device registry: tenants, buildings and devices, per-device keys and SAS tokens.

>>> from workbench.registry import Registry, sas_token  # doctest: +SKIP
"""

from workbench.registry.keys import derive_device_key, load_master_key, sas_token
from workbench.registry.store import Device, ProvisionedDevice, Registry

__all__ = [
    "Device",
    "ProvisionedDevice",
    "Registry",
    "derive_device_key",
    "load_master_key",
    "sas_token",
]

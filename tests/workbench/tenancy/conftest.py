"""A lake with two tenants, their buildings and devices, and one user per role."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from workbench.config import Config
from workbench.registry import Registry
from workbench.tenancy import Principal, UserStore

PASSWORD = "correct-horse-battery"
ADMIN = Principal.system("root")

# tenant -> building -> devices; t-b reuses a building-like naming to tempt wildcards
LAYOUT = {
    "t-a": {"b-a1": ["dev-a1-1", "dev-a1-2"], "b-a2": ["dev-a2-1"]},
    "t-b": {"b-b1": ["dev-b1-1", "dev-b1-2"]},
}
USERS = {  # user -> (role, tenant, buildings)
    "ada": ("admin", None, ()),
    "olga": ("operator", "t-a", ()),
    "anna": ("analyst", "t-a", ()),
    "vic": ("viewer", "t-a", ("b-a1",)),
    "otto": ("operator", "t-b", ()),
    "bert": ("analyst", "t-b", ()),
}


@dataclasses.dataclass
class Tenancy:
    config: Config

    def registry(self, user: str) -> Registry:
        role, tenant, buildings = USERS[user]
        principal = Principal(user, role, tenant, frozenset(buildings))  # type: ignore[arg-type]
        return Registry(self.config, principal=principal)

    def devices_of(self, tenant: str, building: str | None = None) -> set[str]:
        return {
            d for b, devices in LAYOUT[tenant].items() if building in (None, b) for d in devices
        }


@pytest.fixture(scope="module")
def tenancy(tmp_path_factory: pytest.TempPathFactory) -> Tenancy:
    home: Path = tmp_path_factory.mktemp("tenancy")
    config = Config.from_env({"WORKBENCH_HOME": str(home)})
    registry = Registry(config, principal=ADMIN)
    for tenant, buildings in LAYOUT.items():
        registry.add_tenant(tenant)
        for building, devices in buildings.items():
            registry.add_building(building, tenant=tenant)
            for device in devices:
                registry.provision(device, building=building, device_type="environment")
    users = UserStore(config)
    for user, (role, tenant, buildings) in USERS.items():
        users.add(user, role=role, tenant=tenant, password=PASSWORD, buildings=buildings, by=ADMIN)
    return Tenancy(config)

"""Dashboards and notebooks: the data behind the Voila pages, their views, the provisioning
actions, the daily report, and the Voila server with per-user login.

Layered, so that every scope check lives below the pages: :class:`DataStore` and
:class:`ProvisioningActions` read and write through the library as one
:class:`~workbench.tenancy.Principal`; the views in :mod:`workbench.dashboards.views`
only draw; notebooks only call these (docs/dashboards.md, "Design").
"""

from workbench.dashboards.data import BuildingSnapshot, DataStore
from workbench.dashboards.identity import session_principal
from workbench.dashboards.provisioning import ProvisioningActions

__all__ = [
    "BuildingSnapshot",
    "DataStore",
    "ProvisioningActions",
    "session_principal",
]

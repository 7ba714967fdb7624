"""Dashboards and notebooks: the data behind the Voila pages, their views, the provisioning
actions, the daily report, and the Voila server with per-user login.

Layered (STYLE.md §14): :class:`DataStore` and :class:`ProvisioningActions` read and
write through the library as one :class:`~workbench.tenancy.Principal`; the views in
:mod:`workbench.dashboards.views` only draw; notebooks only call these.
"""

from workbench.dashboards.data import BuildingSnapshot, DataStore
from workbench.dashboards.identity import request_parameter, session_principal
from workbench.dashboards.provisioning import ProvisioningActions

__all__ = [
    "BuildingSnapshot",
    "DataStore",
    "ProvisioningActions",
    "request_parameter",
    "session_principal",
]

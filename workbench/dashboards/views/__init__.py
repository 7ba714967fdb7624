"""The dashboards' views: they only draw what a store returns.

* :mod:`~workbench.dashboards.views.live` — the Panel apps ``BuildingApp`` and
  ``FleetApp``, and ``building_app()`` / ``fleet_app()``, what the building and fleet
  page notebooks call;
* :mod:`~workbench.dashboards.views.drawing` — style, formatting, tables and the
  matplotlib trend chart of the reports and the ipywidgets pages;
* :mod:`~workbench.dashboards.views.provisioning_panel` — ``ProvisioningPanel``;
* :mod:`~workbench.dashboards.views.pages` — ``provisioning_page()``.

Every element a browser test reads carries a ``wb-...`` CSS class.
"""

from workbench.dashboards.views.drawing import trend_png
from workbench.dashboards.views.pages import Page, provisioning_page
from workbench.dashboards.views.provisioning_panel import ProvisioningPanel

__all__ = [
    "Page",
    "ProvisioningPanel",
    "provisioning_page",
    "trend_png",
]

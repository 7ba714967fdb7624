"""What the provisioning notebook calls: build its view for the session's user, or say why
not. (The building and fleet pages are Panel apps: :mod:`~workbench.dashboards.views.live`.)

``provisioning_page`` resolves the session's principal (the signed identity in
Voila, ``as_user`` elsewhere), builds the view, and turns a
refusal into a :class:`Page` carrying the message instead of a traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as w

from workbench.config import Config
from workbench.dashboards.identity import session_principal
from workbench.dashboards.provisioning import ProvisioningActions
from workbench.dashboards.views.drawing import STYLE, error_html, html_widget
from workbench.dashboards.views.provisioning_panel import ProvisioningPanel
from workbench.exceptions import WorkbenchError

__all__ = ["Page", "provisioning_page"]


class Page:
    """What a notebook displays: a view's widget, or the reason there is none."""

    def __init__(self, view: Any = None, *, error: str | None = None) -> None:
        self.view = view
        self.error = error
        self.widget: w.Widget = (
            view.widget if view is not None else w.VBox([w.HTML(STYLE), _message_widget(error)])
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


def _message_widget(message: str | None) -> w.HTML:
    widget = html_widget("wb-message")
    widget.value = error_html(message or "")
    return widget


def _page(build: Callable[[], Any]) -> Page:
    try:
        return Page(build())
    except WorkbenchError as exc:
        return Page(error=str(exc))


def provisioning_page(config: Config, *, as_user: str | None = None) -> Page:
    """The provisioning forms (the tenant's operators and admins)."""
    return _page(
        lambda: ProvisioningPanel(
            ProvisioningActions(config, session_principal(config, as_user=as_user))
        )
    )

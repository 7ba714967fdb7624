"""The hub's login: the workbench's user store, its throttling and its access log.

Analysts, operators and admins get a notebook server; a viewer's login is refused
with the address of the dashboards, where viewers see their buildings.
"""

from __future__ import annotations

from typing import Any

from jupyterhub.auth import Authenticator
from tornado import web

from workbench.config import Config
from workbench.exceptions import AuthenticationFailed
from workbench.hub.settings import dashboards_url
from workbench.tenancy import LoginThrottled, authenticate, record_access

__all__ = ["NOTEBOOK_ROLES", "WorkbenchAuthenticator"]

NOTEBOOK_ROLES = ("analyst", "operator", "admin")


class WorkbenchAuthenticator(Authenticator):  # type: ignore[misc]
    """Users and passwords of ``lake/registry/users``; every failure lands in the access
    log (``login:hub``) and counts toward the login back-off like the other doors'."""

    def _config(self) -> Config:
        return Config.from_env()

    async def authenticate(self, handler: web.RequestHandler, data: dict[str, str]) -> Any:
        """The user's name and role, None for a wrong password (the hub says so)."""
        config = self._config()
        user, password = data.get("username", ""), data.get("password", "")
        source = handler.request.remote_ip if handler is not None else None
        try:
            principal = authenticate(config, user, password, door="hub", source=source)
        except LoginThrottled as exc:
            error = web.HTTPError(429, reason="Too many failed logins")
            error.jupyterhub_message = str(exc)  # type: ignore[attr-defined]
            raise error from None
        except AuthenticationFailed:
            return None
        if principal.role not in NOTEBOOK_ROLES:
            dashboards = dashboards_url(config)
            record_access(
                config, principal, action="login:hub", target=user, outcome="denied",
                detail="viewers have no notebook server; dashboards instead",
            )  # fmt: skip
            error = web.HTTPError(403, reason="No notebook server for viewers")
            error.jupyterhub_message = (  # type: ignore[attr-defined]
                f"{user} is a viewer: viewers see their buildings on the dashboards at "
                f"{dashboards} (same login); notebook servers are for analysts"
            )
            raise error
        return {"name": principal.user, "auth_state": {"role": principal.role}}

    def check_allowed(self, username: str, authentication: Any = None) -> bool:
        """Whoever the user store let in (it refused everyone else)."""
        return True

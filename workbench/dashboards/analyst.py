"""Who an analyst's notebook (``notebooks/exploration.ipynb``) acts as, and the way it
reads: the analyst's own workbench user, never the platform administrator by default.

On the server (``make lab``, papermill on the server) the notebook reads the lake as
its principal; in a notebook server of the hub the lake's files are out of reach, so
the same calls go through the doors with the hub's token (:mod:`workbench.hub.kernel`).
:func:`analyst_reader` picks the way, so that one notebook serves both.

>>> import tempfile
>>> cfg = Config.from_env({"WORKBENCH_HOME": tempfile.mkdtemp()})
>>> analyst_principal(cfg)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
workbench.exceptions.InvalidInput: no workbench user to act as; set WORKBENCH_USER ...
>>> analyst_principal(cfg, as_admin=True).is_admin
True
>>> hub = {"JUPYTERHUB_USER": "ann", "JUPYTERHUB_API_TOKEN": "t0k"}
>>> analyst_reader(cfg, environ=hub).who
'ann (hub login, through the doors)'
>>> analyst_reader(cfg, as_user="bob", environ=hub)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
workbench.exceptions.InvalidInput: this notebook server is ann's: it cannot act as bob; ...
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from typing import Protocol

import polars as pl

from workbench.config import Config
from workbench.dashboards.identity import session_principal
from workbench.exceptions import InvalidInput
from workbench.tenancy import Principal

__all__ = ["AnalystReader", "analyst_principal", "analyst_reader"]


def analyst_principal(
    config: Config, *, as_user: str | None = None, as_admin: bool = False
) -> Principal:
    """``as_user``'s principal, else ``WORKBENCH_USER``'s; the platform administrator only
    when ``as_admin`` says so (it sees every tenant). Under Voila, the logged-in user."""
    if as_admin:
        return session_principal(config)
    user = as_user or config.notebook_user
    if not user:
        raise InvalidInput(
            "no workbench user to act as",
            hint="set WORKBENCH_USER to your user name, or run with -p as_user NAME "
            "(-p as_admin True: the platform administrator, who sees every tenant)",
        )
    return session_principal(config, as_user=user)


class AnalystReader(Protocol):
    """The exploration notebook's reads, each already limited to the analyst's scope."""

    @property
    def who(self) -> str:
        """Whom the reads act as, for people."""

    def buildings(self) -> pl.DataFrame:
        """``building_id, tenant_id, name`` of the buildings in scope."""

    def building_state(self) -> pl.DataFrame:
        """The rolling five-minute view of every building in scope."""

    def telemetry(
        self, *, building_id: str | None, start: dt.datetime, end: dt.datetime
    ) -> pl.DataFrame:
        """Stored events with ``start <= ts < end``, oldest first."""

    def building_metrics(
        self, *, building_id: str, start: dt.datetime, end: dt.datetime
    ) -> pl.DataFrame:
        """One building's one-minute windows, oldest first."""


class _LakeReader:
    """On the server: the lake, as the principal."""

    def __init__(self, config: Config, principal: Principal) -> None:
        self.config, self.principal = config, principal

    @property
    def who(self) -> str:
        return f"{self.principal.user} ({self.principal.role})"

    def buildings(self) -> pl.DataFrame:
        from workbench.dashboards.data import DataStore

        return DataStore(self.config, self.principal).buildings()

    def building_state(self) -> pl.DataFrame:
        from workbench.lake import building_state

        return building_state(self.config, principal=self.principal)

    def telemetry(
        self, *, building_id: str | None, start: dt.datetime, end: dt.datetime
    ) -> pl.DataFrame:
        from workbench.lake import telemetry

        return telemetry(
            self.config, building_id=building_id, start=start, end=end, principal=self.principal
        )

    def building_metrics(
        self, *, building_id: str, start: dt.datetime, end: dt.datetime
    ) -> pl.DataFrame:
        from workbench.lake import building_metrics

        return building_metrics(
            self.config, building_id=building_id, start=start, end=end, principal=self.principal
        )


class _DoorReader:
    """In a hub server: the Arrow Flight door, as the hub's user, with its token."""

    def __init__(self, user: str, environ: Mapping[str, str] | None) -> None:
        self.user, self.environ = user, environ

    @property
    def who(self) -> str:
        return f"{self.user} (hub login, through the doors)"

    def buildings(self) -> pl.DataFrame:
        from workbench.hub import kernel

        return kernel.buildings(environ=self.environ)

    def building_state(self) -> pl.DataFrame:
        from workbench.hub import kernel

        return kernel.building_state(environ=self.environ)

    def telemetry(
        self, *, building_id: str | None, start: dt.datetime, end: dt.datetime
    ) -> pl.DataFrame:
        from workbench.hub import kernel

        return kernel.telemetry(building_id=building_id, start=start, end=end, environ=self.environ)

    def building_metrics(
        self, *, building_id: str, start: dt.datetime, end: dt.datetime
    ) -> pl.DataFrame:
        from workbench.hub import kernel

        return kernel.building_metrics(
            building_id=building_id, start=start, end=end, environ=self.environ
        )


def analyst_reader(
    config: Config,
    *,
    as_user: str | None = None,
    as_admin: bool = False,
    environ: Mapping[str, str] | None = None,
) -> AnalystReader:
    """The reads of :func:`analyst_principal`'s user: through the doors in a notebook
    server of the hub (which is one user's: ``as_user`` may only name that user, and
    ``as_admin`` is refused), from the lake anywhere else."""
    env = os.environ if environ is None else environ
    hub_user = env.get("JUPYTERHUB_USER")
    if hub_user and env.get("JUPYTERHUB_API_TOKEN"):
        if as_admin or (as_user and as_user != hub_user):
            other = "the platform administrator" if as_admin else as_user
            raise InvalidInput(
                f"this notebook server is {hub_user}'s: it cannot act as {other}",
                hint="leave as_user and as_admin unset; the hub's login decides who reads",
            )
        return _DoorReader(hub_user, environ)
    return _LakeReader(config, analyst_principal(config, as_user=as_user, as_admin=as_admin))

"""The dashboards' data layer: one :class:`DataStore` per session, UI-free.

A store belongs to one :class:`~workbench.tenancy.Principal` and asks the
reading API and the registry for everything *as that principal*; views only
draw what it returns (STYLE.md §14). A building outside the principal's scope
is refused here, whatever a page, a URL or a widget asks for.

>>> import tempfile
>>> from workbench.tenancy import Principal
>>> cfg = Config.from_env({"WORKBENCH_HOME": tempfile.mkdtemp()})
>>> DataStore(cfg, Principal.system()).fleet().height
0
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

import polars as pl

from workbench.config import Config
from workbench.exceptions import AccessDenied
from workbench.lake import building_metrics, building_state, telemetry
from workbench.registry import Registry
from workbench.tenancy import Principal

__all__ = ["BuildingSnapshot", "DataStore", "registry_for"]

logger = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]

_STATE_FIELDS = (
    "temperature_avg_5m",
    "humidity_avg_5m",
    "light_avg_5m",
    "readings_5m",
    "devices_5m",
    "active_smoke_alarms",
    "active_intrusion_alarms",
    "window_start",
    "last_event_ts",
    "as_of",
)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def registry_for(config: Config, principal: Principal) -> Registry:
    """The registry as ``principal`` sees it (its reads are scoped, its writes checked)."""
    return Registry(config, principal=principal)


@dataclasses.dataclass(frozen=True)
class BuildingSnapshot:
    """Everything the building dashboard draws at one moment."""

    building_id: str
    name: str
    tenant_id: str
    taken_at: dt.datetime
    state: dict[str, Any] | None  # the building_state row, None before the first event
    alarms: pl.DataFrame  # device_id, device_type, floor, room, alarm, since, last_ts
    trends: pl.DataFrame  # building_metrics_1m rows of the last hours
    devices: pl.DataFrame  # device_id, device_type, floor, room, status, last_seen, silent

    @property
    def smoke_alarms(self) -> int:
        """Smoke detectors whose latest reading of the last five minutes is an alarm."""
        return int((self.alarms["alarm"] == "smoke").sum()) if self.alarms.height else 0

    @property
    def intrusion_alarms(self) -> int:
        """Intrusion sensors whose latest reading of the last five minutes is an alarm."""
        return int((self.alarms["alarm"] == "intrusion").sum()) if self.alarms.height else 0

    @property
    def silent_devices(self) -> int:
        """Provisioned devices with no event in the last five minutes."""
        return int(self.devices["silent"].sum()) if self.devices.height else 0


class DataStore:
    """The dashboards' reads for one principal."""

    def __init__(
        self,
        config: Config,
        principal: Principal,
        *,
        clock: Clock | None = None,
        silent_after: dt.timedelta = dt.timedelta(minutes=5),
        trend_hours: float = 3.0,
    ) -> None:
        self.config = config
        self.principal = principal
        self.clock = clock or _now
        self.silent_after = silent_after
        self.trend_hours = trend_hours
        self.registry = registry_for(config, principal)

    # --- scope ---------------------------------------------------------------------------

    def buildings(self) -> pl.DataFrame:
        """The buildings this principal may see: ``building_id, tenant_id, name``."""
        self.principal.require("read")
        frame: pl.DataFrame = self.registry.buildings()
        frame = frame.select("building_id", "tenant_id", "name")
        return frame.filter(self.principal.scope_filter()).sort("building_id")

    def building(self, building_id: str) -> dict[str, Any]:
        """One building of this principal's scope; AccessDenied for any other id (whether it
        exists or not, so ids cannot be probed)."""
        rows = self.buildings().filter(pl.col("building_id") == building_id)
        if rows.height == 0:
            raise AccessDenied(
                f"building {building_id!r} is not one of yours",
                hint="pick one of the buildings listed",
            )
        return rows.row(0, named=True)

    # --- one building ----------------------------------------------------------------------

    def snapshot(self, building_id: str) -> BuildingSnapshot:
        """Current five-minute figures, active alarms, trends and device health."""
        info = self.building(building_id)
        now = self.clock()
        p = self.principal
        state_rows = building_state(self.config, building_id=building_id, principal=p)
        state_rows = state_rows.filter(p.scope_filter())
        state = (
            {k: state_rows[k][0] for k in _STATE_FIELDS if k in state_rows.columns}
            if state_rows.height
            else None
        )
        lookback = now - dt.timedelta(hours=1)
        recent = telemetry(
            self.config,
            building_id=building_id,
            start=min(lookback, now - self.silent_after),
            columns=["device_id", "tenant_id", "building_id", "ts", "smoke", "intrusion"],
            principal=p,
        ).filter(p.scope_filter())
        window_start = state["window_start"] if state else now - self.silent_after
        trends = building_metrics(
            self.config,
            building_id=building_id,
            start=now - dt.timedelta(hours=self.trend_hours),
            principal=p,
        ).filter(p.scope_filter())
        devices = self._devices(building_id, recent, now)
        return BuildingSnapshot(
            building_id=building_id,
            name=str(info["name"] or building_id),
            tenant_id=str(info["tenant_id"]),
            taken_at=now,
            state=state,
            alarms=self._alarms(recent, devices, window_start),
            trends=trends.select(
                "window_start",
                "readings",
                "devices",
                "temperature_avg",
                "humidity_avg",
                "light_avg",
                "smoke_alarms",
                "intrusion_alarms",
            ),
            devices=devices,
        )

    def _registered(self, building_ids: list[str] | None) -> pl.DataFrame:
        frame: pl.DataFrame = self.registry.devices()
        frame = frame.filter(self.principal.scope_filter())
        if building_ids is not None:
            frame = frame.filter(pl.col("building_id").is_in(building_ids))
        return frame.filter(pl.col("status") != "deprovisioned")

    def _devices(self, building_id: str, recent: pl.DataFrame, now: dt.datetime) -> pl.DataFrame:
        seen = recent.group_by("device_id").agg(last_seen=pl.col("ts").max())
        silent_since = now - self.silent_after
        return (
            self._registered([building_id])
            .select("device_id", "device_type", "floor", "room", "status")
            .join(seen, on="device_id", how="left")
            .with_columns(
                silent=(pl.col("status") == "provisioned")
                & (pl.col("last_seen").is_null() | (pl.col("last_seen") < silent_since))
            )
            .sort(["silent", "device_id"], descending=[True, False])
        )

    @staticmethod
    def _alarms(
        recent: pl.DataFrame, devices: pl.DataFrame, window_start: dt.datetime
    ) -> pl.DataFrame:
        """Devices whose latest reading since ``window_start`` is a smoke or intrusion alarm,
        with its first alarm reading in that window."""
        rows = recent.filter(pl.col("ts") >= window_start).sort("device_id", "ts")
        if rows.height == 0:
            return pl.DataFrame(
                schema={
                    "device_id": pl.String,
                    "device_type": pl.String,
                    "floor": pl.Int32,
                    "room": pl.String,
                    "alarm": pl.String,
                    "since": pl.Datetime("us", "UTC"),
                    "last_ts": pl.Datetime("us", "UTC"),
                }
            )
        alarm = (
            pl.when(pl.col("smoke").fill_null(False))
            .then(pl.lit("smoke"))
            .when(pl.col("intrusion").fill_null(False))
            .then(pl.lit("intrusion"))
            .otherwise(None)
        )
        per_device = (
            rows.with_columns(alarm=alarm)
            .group_by("device_id", maintain_order=True)
            .agg(
                alarm=pl.col("alarm").last(),
                last_ts=pl.col("ts").last(),
                since=pl.col("ts").filter(pl.col("alarm").is_not_null()).min(),
            )
            .filter(pl.col("alarm").is_not_null())
        )
        return (
            per_device.join(
                devices.select("device_id", "device_type", "floor", "room"),
                on="device_id",
                how="left",
            )
            .select("device_id", "device_type", "floor", "room", "alarm", "since", "last_ts")
            .sort("alarm", "floor", "room", "device_id", nulls_last=True)
        )

    # --- the fleet -------------------------------------------------------------------------

    def fleet(self) -> pl.DataFrame:
        """Every building in scope, one row each, buildings with alarms first, then those
        with silent devices: ``building_id, name, tenant_id, temperature_avg_5m,
        humidity_avg_5m, light_avg_5m, active_smoke_alarms, active_intrusion_alarms,
        devices, silent_devices, last_event_ts``."""
        p = self.principal
        if not (p.is_admin or p.role == "operator"):
            raise AccessDenied(
                f"not authorized: {p.user} ({p.role}) may not see the fleet overview",
                hint="it is for operators and admins; your buildings are on the building page",
            )
        buildings = self.buildings()
        now = self.clock()
        state = (
            building_state(self.config, principal=p)
            .filter(p.scope_filter())
            .select(
                "building_id",
                "temperature_avg_5m",
                "humidity_avg_5m",
                "light_avg_5m",
                "active_smoke_alarms",
                "active_intrusion_alarms",
                "last_event_ts",
            )
        )
        seen = (
            telemetry(
                self.config,
                start=now - self.silent_after,
                columns=["device_id", "tenant_id", "building_id"],
                principal=p,
            )
            .filter(p.scope_filter())
            .select("device_id")
            .unique()
            .with_columns(seen=pl.lit(True))
        )
        devices = (
            self._registered(None)
            .join(seen, on="device_id", how="left")
            .group_by("building_id")
            .agg(
                devices=pl.len(),
                silent_devices=(
                    (pl.col("status") == "provisioned") & pl.col("seen").is_null()
                ).sum(),
            )
        )
        return (
            buildings.join(state, on="building_id", how="left")
            .join(devices, on="building_id", how="left")
            .with_columns(
                pl.col("active_smoke_alarms", "active_intrusion_alarms").fill_null(0),
                pl.col("devices", "silent_devices").fill_null(0).cast(pl.Int64),
            )
            .with_columns(
                _alarms=pl.col("active_smoke_alarms") + pl.col("active_intrusion_alarms"),
            )
            .sort(
                ["_alarms", "silent_devices", "building_id"],
                descending=[True, True, False],
            )
            .drop("_alarms")
            .select(
                "building_id",
                "name",
                "tenant_id",
                "temperature_avg_5m",
                "humidity_avg_5m",
                "light_avg_5m",
                "active_smoke_alarms",
                "active_intrusion_alarms",
                "devices",
                "silent_devices",
                "last_event_ts",
            )
        )

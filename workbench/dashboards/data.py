"""The dashboards' data layer: one :class:`DataStore` per session, UI-free.

A store belongs to one :class:`~workbench.tenancy.Principal` and asks the
reading API and the registry for everything *as that principal*; views only
draw what it returns. A building outside the principal's scope is refused here,
whatever a page, a URL or a widget asks for.

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
import time
from collections.abc import Callable
from typing import Any

import polars as pl

from workbench.alarms.store import acknowledge as acknowledge_alarm
from workbench.alarms.store import alarms as stored_alarms
from workbench.config import Config
from workbench.exceptions import AccessDenied
from workbench.lake import building_metrics, building_state, telemetry
from workbench.registry import Registry
from workbench.tenancy import Principal

__all__ = ["BuildingSnapshot", "DataStore", "alarm_kind", "registry_for"]

logger = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]


def alarm_kind() -> pl.Expr:
    """A telemetry row's alarm, ``"smoke"`` before ``"intrusion"``, else null: what the
    building page and the daily report both show."""
    return (
        pl.when(pl.col("smoke").fill_null(False))
        .then(pl.lit("smoke"))
        .when(pl.col("intrusion").fill_null(False))
        .then(pl.lit("intrusion"))
        .otherwise(None)
    )


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


_TREND_FIELDS = (
    "window_start",
    "readings",
    "devices",
    "temperature_avg",
    "humidity_avg",
    "light_avg",
    "smoke_alarms",
    "intrusion_alarms",
)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def registry_for(config: Config, principal: Principal) -> Registry:
    """The registry as ``principal`` sees it (its reads are scoped, its writes checked)."""
    return Registry(config, principal=principal)


_DEVICE_COLUMNS = (
    "device_id",
    "tenant_id",
    "building_id",
    "floor",
    "room",
    "device_type",
    "status",
)
"""The registry's columns the dashboards' device lists and counts use."""


@dataclasses.dataclass(frozen=True)
class BuildingSnapshot:
    """Everything the building dashboard draws at one moment."""

    building_id: str
    name: str
    tenant_id: str
    taken_at: dt.datetime
    state: dict[str, Any] | None  # the building_state row, None before the first event
    alarms: pl.DataFrame  # active alarms: device_id, device_type, floor, room, alarm, since,
    # last_ts, alarm_id, rule, severity, acknowledged_by, acknowledged_at
    trends: pl.DataFrame  # one row per minute of the range (see DataStore.trends)
    devices: pl.DataFrame  # device_id, device_type, floor, room, status, last_seen, silent

    @property
    def smoke_alarms(self) -> int:
        """Devices with an active (not cleared) smoke alarm."""
        smoke = self.alarms.filter(pl.col("alarm") == "smoke")
        return smoke["device_id"].n_unique() if smoke.height else 0

    @property
    def intrusion_alarms(self) -> int:
        """Devices with an active (not cleared) intrusion alarm."""
        intrusion = self.alarms.filter(pl.col("alarm") == "intrusion")
        return intrusion["device_id"].n_unique() if intrusion.height else 0

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
        scope_cache_s: float = 2.0,
    ) -> None:
        self.config = config
        self.principal = principal
        self.clock = clock or _now
        self.silent_after = silent_after
        self.trend_hours = trend_hours
        self.registry = registry_for(config, principal)
        self.scope_cache_s = scope_cache_s
        self._scope: tuple[float, pl.DataFrame] | None = None

    # --- scope ---------------------------------------------------------------------------

    def buildings(self) -> pl.DataFrame:
        """The buildings this principal may see: ``building_id, tenant_id, name``.

        Kept for ``scope_cache_s`` seconds: a page's one refresh asks for them up to three
        times (its picker, the snapshot's scope check, the trends' scope check), and each
        ask is a registry scan."""
        self.principal.require("read")
        now = time.monotonic()
        if self._scope is not None and now - self._scope[0] < self.scope_cache_s:
            return self._scope[1]
        frame: pl.DataFrame = self.registry.buildings()
        frame = frame.select("building_id", "tenant_id", "name")
        frame = frame.filter(self.principal.scope_filter()).sort("building_id")
        self._scope = (now, frame)
        return frame

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

    def snapshot(
        self,
        building_id: str,
        *,
        trends_start: dt.datetime | None = None,
        trends_end: dt.datetime | None = None,
    ) -> BuildingSnapshot:
        """Current five-minute figures, active alarms, device health and the trends of
        :meth:`trends` from ``trends_start`` (default: ``trend_hours`` ago) to
        ``trends_end`` (default: the current minute, held back)."""
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
            columns=["device_id", "tenant_id", "building_id", "ts"],
            principal=p,
        ).filter(p.scope_filter())
        start = trends_start or now - dt.timedelta(hours=self.trend_hours)
        trends = self._trends(building_id, start=start, end=trends_end, now=now)
        devices = self._devices(building_id, recent, now)
        return BuildingSnapshot(
            building_id=building_id,
            name=str(info["name"] or building_id),
            tenant_id=str(info["tenant_id"]),
            taken_at=now,
            state=state,
            alarms=self._alarms(building_id, devices),
            trends=trends,
            devices=devices,
        )

    def _registered(self, building_ids: list[str] | None) -> pl.DataFrame:
        # only the columns the pages use: at a million devices the whole table costs
        # the building page most of its server time
        # the registry is the principal's (registry_for): its scan is already scoped
        frame = self.registry.device_columns(_DEVICE_COLUMNS, buildings=building_ids)
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

    def _alarms(self, building_id: str, devices: pl.DataFrame) -> pl.DataFrame:
        """The building's active alarms (not cleared) from the ``alarms`` table, one row
        each; ``alarm`` is the reading of a smoke or intrusion rule (else the rule's name),
        ``since`` when it was raised, ``last_ts`` the device's last reading."""
        rows = stored_alarms(
            self.config, principal=self.principal, building_id=building_id, active=True
        )
        return (
            rows.with_columns(
                alarm=pl.when(pl.col("kind") == "flag")
                .then(pl.col("reading"))
                .otherwise(pl.col("rule")),
                since=pl.col("raised_at"),
            )
            .join(devices.select("device_id", last_ts="last_seen"), on="device_id", how="left")
            .select(
                "device_id",
                "device_type",
                "floor",
                "room",
                "alarm",
                "since",
                pl.col("last_ts").cast(pl.Datetime("us", "UTC")),
                "alarm_id",
                "rule",
                "severity",
                "acknowledged_by",
                "acknowledged_at",
            )
            .sort("alarm", "floor", "room", "device_id", nulls_last=True)
        )

    def acknowledge(self, alarm_id: str) -> dict[str, Any]:
        """Acknowledge an alarm as this principal, as ``workbench alarms ack`` does: the
        alarms library checks the scope (another's alarm is "no alarm … of yours") and the
        role (analysts only read), and refuses a second acknowledgement naming the first."""
        return acknowledge_alarm(self.config, alarm_id, principal=self.principal)

    # --- time ranges and one device ----------------------------------------------------------

    def trends(
        self, building_id: str, *, start: dt.datetime, end: dt.datetime | None = None
    ) -> pl.DataFrame:
        """The building's one-minute windows with ``start <= window_start < end`` (``end``
        is at most, and defaults to, the start of the current, incomplete minute, which is
        held back), one
        row per minute of the range: a minute without data is a row of nulls, so a chart
        draws a gap instead of a line across it. ``window_start, readings, devices,
        temperature_avg, humidity_avg, light_avg, smoke_alarms, intrusion_alarms``."""
        self.building(building_id)
        return self._trends(building_id, start=start, end=end, now=self.clock())

    def _trends(
        self, building_id: str, *, start: dt.datetime, end: dt.datetime | None, now: dt.datetime
    ) -> pl.DataFrame:
        start = start.replace(second=0, microsecond=0)
        held = now.replace(second=0, microsecond=0)  # the current minute is incomplete
        stop = held if end is None else min(end, held)
        rows = building_metrics(
            self.config, building_id=building_id, start=start, end=stop, principal=self.principal
        ).filter(self.principal.scope_filter())
        rows = rows.select(_TREND_FIELDS)
        if start >= stop:
            return rows.clear()
        minutes = pl.DataFrame(
            {
                "window_start": pl.datetime_range(
                    start, stop, "1m", closed="left", time_unit="us", time_zone="UTC", eager=True
                )
            }
        )
        return minutes.join(
            rows.with_columns(pl.col("window_start").cast(pl.Datetime("us", "UTC"))),
            on="window_start",
            how="left",
        ).sort("window_start")

    def device_series(
        self,
        building_id: str,
        device_id: str,
        *,
        start: dt.datetime,
        end: dt.datetime | None = None,
    ) -> pl.DataFrame:
        """One device's stored readings from ``start`` until ``end`` (None: now), oldest
        first: ``ts, temperature, humidity, light, smoke, intrusion``. The device must be
        in ``building_id`` and the building in scope; another id gives an empty frame,
        never another tenant's rows."""
        self.building(building_id)
        return (
            telemetry(
                self.config,
                building_id=building_id,
                device_id=device_id,
                start=start,
                end=end,
                principal=self.principal,
            )
            .filter(self.principal.scope_filter())
            .filter((pl.col("building_id") == building_id) & (pl.col("device_id") == device_id))
            .select("ts", "temperature", "humidity", "light", "smoke", "intrusion")
            .sort("ts")
        )

    # --- the fleet -------------------------------------------------------------------------

    def fleet(self) -> pl.DataFrame:
        """Every building in scope, one row each, buildings with alarms first, then those
        with silent devices (alarm counts are devices with an active smoke or intrusion
        alarm in the ``alarms`` table): ``building_id, name, tenant_id, temperature_avg_5m,
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
                "last_event_ts",
            )
        )
        active = stored_alarms(self.config, principal=p, active=True).filter(
            pl.col("kind") == "flag"
        )
        counts = active.group_by("building_id").agg(
            active_smoke_alarms=pl.col("device_id").filter(pl.col("reading") == "smoke").n_unique(),
            active_intrusion_alarms=pl.col("device_id")
            .filter(pl.col("reading") == "intrusion")
            .n_unique(),
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
            .join(counts, on="building_id", how="left")
            .join(devices, on="building_id", how="left")
            .with_columns(
                pl.col("active_smoke_alarms", "active_intrusion_alarms")
                .fill_null(0)
                .cast(pl.Int64),
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

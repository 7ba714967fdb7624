"""The built-in scenarios. Each class docstring says what a dashboard should show.

Each is declared in the ``workbench.scenarios`` entry-point group of this project's
``pyproject.toml``, as another distribution would declare its own.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import numpy.typing as npt
import polars as pl

from simulator.fleet import Fleet, TickContext
from simulator.scenarios.base import Scenario

__all__ = [
    "Burst",
    "DeprovisionDuringRun",
    "FaultySensors",
    "Fire",
    "Heatwave",
    "Intrusion",
    "LateAndDuplicate",
    "Normal",
    "Unprovisioned",
]

ENVIRONMENT, SMOKE, INTRUSION = 0, 1, 2


def _elapsed_min(ctx: TickContext) -> pl.Expr:
    return (pl.col("send") - ctx.start_ms) / 60_000.0


def _pick(fleet: Fleet, seed: int, name: str, candidates: npt.NDArray[np.int64]) -> int:
    rng = np.random.default_rng([seed, *name.encode()])
    return int(candidates[rng.integers(len(candidates))])


def _share(
    fleet: Fleet, seed: int, name: str, pool: npt.NDArray[np.int64], share: float
) -> npt.NDArray[np.int64]:
    """A seeded subset (at least one device when the pool is not empty) of ``pool``."""
    if len(pool) == 0:
        return pool
    rng = np.random.default_rng([seed, *name.encode()])
    k = max(1, round(len(pool) * share))
    return np.sort(rng.choice(pool, size=min(k, len(pool)), replace=False))


class Normal(Scenario):
    """Nothing unusual: daily temperature and light cycles, occupancy, drift and noise."""

    name = "normal"
    summary = "plain physics, no incident"
    dashboard = (
        "every building's temperature follows a gentle daily curve around 21-23 °C, warmer "
        "during office hours; light peaks around midday and drops at night; no alarms"
    )

    def apply(self, frame: pl.DataFrame, ctx: TickContext) -> pl.DataFrame:
        return frame


@dataclasses.dataclass
class Heatwave(Scenario):
    """One building overheats: +3 °C at once, climbing towards +12 °C (10-minute time
    constant); its humidity drops as the air warms."""

    name = "heatwave"
    summary = "one building overheats (+3 °C at once, towards +12 °C)"
    dashboard = (
        "one building's temperature (building_state, building_metrics_1m) jumps ~3 °C above "
        "its neighbours and keeps climbing towards +12 °C; its humidity sags"
    )
    building: int | None = None  # index; None = chosen from the seed

    def target(self, fleet: Fleet) -> int:
        """The overheating building's index."""
        if self.building is not None:
            return self.building
        return _pick(fleet, fleet.seed, self.name, np.arange(len(fleet.buildings)))

    def apply(self, frame: pl.DataFrame, ctx: TickContext) -> pl.DataFrame:
        b = self.target(ctx.fleet)
        rise = 3.0 + 9.0 * (1.0 - (-_elapsed_min(ctx) / 10.0).exp())
        hit = (pl.col("building") == b) & (pl.col("kind") == ENVIRONMENT)
        return frame.with_columns(
            temperature=pl.when(hit)
            .then(pl.col("temperature") + rise)
            .otherwise(pl.col("temperature")),
            humidity=pl.when(hit)
            .then((pl.col("humidity") - 0.6 * rise).clip(5.0, 95.0))
            .otherwise(pl.col("humidity")),
        )


@dataclasses.dataclass(eq=False)
class Fire(Scenario):
    """A fire starts in one room of one floor: the smoke detector nearest the origin
    alarms first, then one more detector on that floor every ``spread_s`` seconds
    (by room distance); that floor's environment sensors warm up and see less light."""

    name = "fire"
    summary = "smoke alarms spreading across one floor"
    dashboard = (
        "one building shows active smoke alarms, all on one floor, their count growing "
        "minute by minute; that floor's temperature climbs steeply"
    )
    spread_s: float = 60.0

    @functools.cached_property
    def _plan(self) -> dict[int, object]:
        return {}

    def target(self, fleet: Fleet) -> tuple[int, int, npt.NDArray[np.int64]]:
        """(building index, floor, smoke detectors on that floor in alarm order)."""
        cached = self._plan.get(id(fleet))
        if cached is not None:
            return cached  # type: ignore[return-value]
        smoke = np.flatnonzero(fleet.kind == SMOKE)
        if len(smoke) == 0:
            plan: tuple[int, int, npt.NDArray[np.int64]] = (0, 0, smoke.astype(np.int64))
        else:
            first = _pick(fleet, fleet.seed, self.name, smoke.astype(np.int64))
            b, f = int(fleet.building_index[first]), int(fleet.floor[first])
            same = smoke[(fleet.building_index[smoke] == b) & (fleet.floor[smoke] == f)]
            rooms = np.array([int(fleet.room[i].split(".")[1]) for i in same])
            origin = int(fleet.room[first].split(".")[1])
            order = np.lexsort((same, np.abs(rooms - origin)))
            plan = (b, f, same[order].astype(np.int64))
        self._plan[id(fleet)] = plan
        return plan

    def apply(self, frame: pl.DataFrame, ctx: TickContext) -> pl.DataFrame:
        b, f, detectors = self.target(ctx.fleet)
        if len(detectors) == 0:
            return frame
        rank = pl.Series("rank", np.arange(len(detectors), dtype=np.int64))
        order = pl.DataFrame({"device": detectors.astype(np.uint32), "rank": rank})
        elapsed_s = (pl.col("send") - ctx.start_ms) / 1000.0
        on_floor = (pl.col("building") == b) & (pl.col("floor") == f)
        heat = (elapsed_s / 60.0 * 1.5).clip(0.0, 40.0) + 2.0
        out = frame.join(order, on="device", how="left", maintain_order="left")
        return out.with_columns(
            smoke=pl.col("smoke")
            | (
                pl.col("rank").is_not_null()
                & (pl.col("rank").cast(pl.Float64) * self.spread_s <= elapsed_s)
            ),
            temperature=pl.when(on_floor & (pl.col("kind") == ENVIRONMENT))
            .then(pl.col("temperature") + heat)
            .otherwise(pl.col("temperature")),
            light=pl.when(on_floor & (pl.col("kind") == ENVIRONMENT))
            .then(pl.col("light") * 0.4)
            .otherwise(pl.col("light")),
        ).drop("rank")


@dataclasses.dataclass(eq=False)
class Intrusion(Scenario):
    """An intruder walks through one building: its intrusion sensors trip one after
    another (floor by floor, room by room), each staying tripped for three steps."""

    name = "intrusion"
    summary = "intrusion sensors tripping in sequence in one building"
    dashboard = (
        "one building shows a few active intrusion alarms at a time, moving from room to "
        "room; every other building stays quiet"
    )
    step_s: float = 90.0
    linger_steps: int = 3

    @functools.cached_property
    def _plan(self) -> dict[int, object]:
        return {}

    def target(self, fleet: Fleet) -> tuple[int, npt.NDArray[np.int64]]:
        """(building index, its intrusion sensors in walking order)."""
        cached = self._plan.get(id(fleet))
        if cached is not None:
            return cached  # type: ignore[return-value]
        sensors = np.flatnonzero(fleet.kind == INTRUSION).astype(np.int64)
        if len(sensors) == 0:
            plan: tuple[int, npt.NDArray[np.int64]] = (0, sensors)
        else:
            b = int(fleet.building_index[_pick(fleet, fleet.seed, self.name, sensors)])
            mine = sensors[fleet.building_index[sensors] == b]
            order = sorted(mine.tolist(), key=lambda i: (int(fleet.floor[i]), fleet.room[i], i))
            plan = (b, np.asarray(order, dtype=np.int64))
        self._plan[id(fleet)] = plan
        return plan

    def apply(self, frame: pl.DataFrame, ctx: TickContext) -> pl.DataFrame:
        _, sensors = self.target(ctx.fleet)
        n = len(sensors)
        if n == 0:
            return frame
        order = pl.DataFrame(
            {"device": sensors.astype(np.uint32), "rank": np.arange(n, dtype=np.int64)}
        )
        step = ((pl.col("send") - ctx.start_ms) / (self.step_s * 1000.0)).floor().cast(pl.Int64)
        # How many steps ago the intruder passed this sensor (walking in a loop).
        behind = (step - pl.col("rank")) % n
        out = frame.join(order, on="device", how="left", maintain_order="left")
        return out.with_columns(
            intrusion=pl.col("intrusion")
            | (
                pl.col("rank").is_not_null()
                & (step >= pl.col("rank"))
                & (behind < self.linger_steps)
            )
        ).drop("rank")


@dataclasses.dataclass(eq=False)
class FaultySensors(Scenario):
    """A share of environment sensors misbehave, a third each way: stuck (the same
    readings every time), out of range (150 °C / -80 °C, 140 %RH, negative lux) and
    NaN (sent as JSON null)."""

    name = "faulty-sensors"
    summary = "stuck, out-of-range and NaN readings from some sensors"
    dashboard = (
        "telemetry_rejected fills with invalid-reading dead letters (out of range, null); "
        "a few sensors draw perfectly flat lines; building averages stay plausible"
    )
    share: float = 0.03

    def faulty(self, fleet: Fleet) -> npt.NDArray[np.int64]:
        """The faulty devices; mode = position % 3 (0 stuck, 1 out of range, 2 NaN)."""
        pool = np.flatnonzero(fleet.kind == ENVIRONMENT).astype(np.int64)
        return _share(fleet, fleet.seed, self.name, pool, self.share)

    def apply(self, frame: pl.DataFrame, ctx: TickContext) -> pl.DataFrame:
        faulty = self.faulty(ctx.fleet)
        if len(faulty) == 0:
            return frame
        modes = pl.DataFrame(
            {
                "device": faulty.astype(np.uint32),
                "mode": (np.arange(len(faulty)) % 3).astype(np.int8),
                "stuck_t": np.round(19.0 + (faulty % 50) / 10.0, 2),
            }
        )
        out = frame.join(modes, on="device", how="left", maintain_order="left")
        mode = pl.col("mode")
        hot = (ctx.index % 2) == 0
        return out.with_columns(
            temperature=pl.when(mode == 0)
            .then(pl.col("stuck_t"))
            .when(mode == 1)
            .then(pl.lit(150.0 if hot else -80.0))
            .when(mode == 2)
            .then(pl.lit(float("nan")))
            .otherwise(pl.col("temperature")),
            humidity=pl.when(mode == 0)
            .then(pl.lit(45.0))
            .when(mode == 1)
            .then(pl.lit(140.0))
            .otherwise(pl.col("humidity")),
            light=pl.when(mode == 0)
            .then(pl.lit(123.0))
            .when(mode == 1)
            .then(pl.lit(-5.0))
            .when(mode == 2)
            .then(pl.lit(float("nan")))
            .otherwise(pl.col("light")),
        ).drop("mode", "stuck_t")


@dataclasses.dataclass(eq=False)
class LateAndDuplicate(Scenario):
    """Clock skew, late delivery and resends: ``skew_share`` of devices run their
    clock 30 s-10 min behind or 10 s-2 min ahead; each tick ``late_share`` of events
    arrive 1-10 minutes after their event time; ``duplicate_share`` of events are sent
    again later in the same tick with the same ``seq`` (a device retrying after a lost
    acknowledgement)."""

    name = "late-and-duplicate"
    summary = "clock skew, late events and resends with the same seq"
    dashboard = (
        "nothing should look wrong: building_metrics_1m windows within the grace period "
        "are corrected, resends are not counted twice, too-late events land in "
        "telemetry_rejected (or in telemetry with their true event time)"
    )
    skew_share: float = 0.05
    late_share: float = 0.02
    duplicate_share: float = 0.02

    def skewed(self, fleet: Fleet) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(devices with a skewed clock, their skew in ms)."""
        pool = np.arange(len(fleet), dtype=np.int64)
        devices = _share(fleet, fleet.seed, self.name + "/skew", pool, self.skew_share)
        rng = np.random.default_rng([fleet.seed, len(devices), 7])
        behind = rng.integers(30_000, 600_000, len(devices))
        ahead = rng.integers(10_000, 120_000, len(devices))
        skew = np.where(rng.random(len(devices)) < 0.7, -behind, ahead)
        return devices, skew.astype(np.int64)

    def apply(self, frame: pl.DataFrame, ctx: TickContext) -> pl.DataFrame:
        devices, skew = self.skewed(ctx.fleet)
        rng = ctx.rng(self.name)
        n = frame.height
        if len(devices):
            skews = pl.DataFrame({"device": devices.astype(np.uint32), "skew": skew})
            frame = frame.join(skews, on="device", how="left", maintain_order="left")
            frame = frame.with_columns(ts=pl.col("ts") + pl.col("skew").fill_null(0)).drop("skew")
        late = rng.random(n) < self.late_share
        delay = np.where(late, rng.integers(60_000, 600_000, n), 0)
        frame = frame.with_columns(ts=pl.col("ts") - pl.Series(delay))
        dup_rows = np.flatnonzero(rng.random(n) < self.duplicate_share)
        if len(dup_rows) == 0:
            return frame
        tick_end = ctx.start_ms + (ctx.index + 1) * ctx.interval_ms - 1
        dups = frame[dup_rows]
        later = rng.integers(1_000, max(1_001, ctx.interval_ms // 2), len(dup_rows))
        send = np.minimum(dups["send"].to_numpy() + later, tick_end)
        dups = dups.with_columns(send=pl.Series(send), received=pl.Series(send + 40))
        return pl.concat([frame, dups]).sort("send", maintain_order=True)


@dataclasses.dataclass(eq=False)
class Unprovisioned(Scenario):
    """``share`` of devices were never provisioned: they hold no credentials (the
    simulator signs with a random key) and the gateway must refuse every event."""

    name = "unprovisioned"
    summary = "some devices have no credentials (403s, nothing stored)"
    dashboard = (
        "the gateway's 403 counter (GET /metrics) climbs steadily; none of those devices "
        "ever appears in telemetry; building figures are unaffected"
    )
    share: float = 0.01

    def devices(self, fleet: Fleet) -> npt.NDArray[np.int64]:
        """The devices without credentials."""
        pool = np.arange(len(fleet), dtype=np.int64)
        return _share(fleet, fleet.seed, self.name, pool, self.share)

    def apply(self, frame: pl.DataFrame, ctx: TickContext) -> pl.DataFrame:
        bad = pl.Series(self.devices(ctx.fleet).astype(np.uint32))
        return frame.with_columns(
            status=pl.when(pl.col("device").is_in(bad.implode()))
            .then(pl.lit(1, dtype=pl.UInt8))
            .otherwise(pl.col("status"))
        )


@dataclasses.dataclass(eq=False)
class DeprovisionDuringRun(Scenario):
    """From tick ``after_ticks`` on, ``share`` of devices are de-provisioned (by the
    simulator through the registry, when sending through the gateway); their later
    events must be refused."""

    name = "deprovision-during-run"
    summary = "some devices are de-provisioned mid-run (then 403)"
    dashboard = (
        "a handful of devices stop appearing in telemetry after a few minutes while the "
        "gateway's 403 counter starts climbing; devices_5m of their buildings drops"
    )
    share: float = 0.01
    after_ticks: int = 2

    def devices(self, fleet: Fleet) -> npt.NDArray[np.int64]:
        """The devices that get de-provisioned."""
        pool = np.arange(len(fleet), dtype=np.int64)
        return _share(fleet, fleet.seed, self.name, pool, self.share)

    def apply(self, frame: pl.DataFrame, ctx: TickContext) -> pl.DataFrame:
        if ctx.index < self.after_ticks:
            return frame
        gone = pl.Series(self.devices(ctx.fleet).astype(np.uint32))
        return frame.with_columns(
            status=pl.when(pl.col("device").is_in(gone.implode()) & (pl.col("status") == 0))
            .then(pl.lit(2, dtype=pl.UInt8))
            .otherwise(pl.col("status"))
        )


@dataclasses.dataclass(eq=False)
class Burst(Scenario):
    """Every ``every``-th tick (starting with the second), every device fires at the
    same instant, halfway through the tick (as after a site-wide power cut)."""

    name = "burst"
    summary = "every device at once, every 10th tick"
    dashboard = (
        "the gateway's request rate spikes to the whole fleet within a second, maybe with "
        "429s and retries; building figures keep their shape, freshness lags briefly"
    )
    every: int = 10

    def apply(self, frame: pl.DataFrame, ctx: TickContext) -> pl.DataFrame:
        if ctx.index % self.every != 1:
            return frame
        at = ctx.start_ms + ctx.index * ctx.interval_ms + ctx.interval_ms // 2
        shift = pl.lit(at, dtype=pl.Int64) - pl.col("send")
        return frame.with_columns(
            ts=pl.col("ts") + shift,
            received=pl.col("received") + shift,
            send=pl.lit(at, dtype=pl.Int64),
        )

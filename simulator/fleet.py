"""The simulated fleet: tenants → buildings → floors → rooms → devices, and its event stream.

Everything is deterministic for a seed: :meth:`Fleet.generate` with the same
arguments builds the same fleet, and :meth:`Fleet.ticks` /
:meth:`Fleet.kafka_records` with the same start and scenarios yield the same
events, byte for byte.

Events are produced one *tick* at a time: tick ``k`` holds every device's
``k``-th event, at ``start + phase * interval + k * interval`` where the
device's ``phase`` in [0, 1) is its start-up jitter, so devices do not fire
together. Each tick is a polars frame built with vectorized numpy/polars work
(see :mod:`simulator.physics`), which is what keeps 100,000 devices at one
event a minute far below a quarter of a core.

>>> fleet = Fleet.generate(10, seed=1)
>>> fleet.devices[0].device_id, fleet.devices[0].building_id
('dev-000001', 'b-0001')
>>> import datetime as dt
>>> key, value = next(fleet.kafka_records(dt.datetime(2026, 11, 27, tzinfo=dt.UTC), 1))
>>> key, value[:30]
(b'dev-000007', b'{"device_id":"dev-000007","seq')
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import math
import zlib
from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt
import polars as pl

from simulator import physics
from simulator.encode import kafka_values
from workbench.exceptions import SimulatorError

__all__ = [
    "DEVICE_TYPES",
    "PROTOCOLS",
    "STATUS",
    "Building",
    "Device",
    "Fleet",
    "TickContext",
    "TickTransform",
    "to_ms",
]

DEVICE_TYPES = ("environment", "smoke", "intrusion")
# The protocols the simulator can *speak*, not those the gateway can translate: the fleet
# only assigns what the gateway target knows how to encode (index 1 = FBK1 lines, also
# how readings are rounded), so a translator installed later does not belong here.
PROTOCOLS = ("http", "fbk1")
# What the gateway is expected to do with an event (the `status` column of a tick).
STATUS = ("ok", "unprovisioned", "deprovisioned")

_TENANT_OFFSETS_H = (0.0, 1.0, -5.0, 2.0, 8.0, -3.0)


def to_ms(value: dt.datetime) -> int:
    """Milliseconds since the epoch of an aware datetime."""
    if value.tzinfo is None:
        raise SimulatorError(
            "naive datetime given as the simulation start",
            hint="pass an aware datetime, e.g. datetime.now(datetime.UTC)",
        )
    return math.floor(value.timestamp() * 1000)


def _salt(name: str) -> int:
    return zlib.crc32(name.encode())


@dataclasses.dataclass(frozen=True)
class Device:
    """One simulated device, as the registry knows it."""

    device_id: str
    tenant_id: str
    building_id: str
    floor: int
    room: str
    device_type: str  # environment | smoke | intrusion
    protocol: str  # http | fbk1


@dataclasses.dataclass(frozen=True)
class Building:
    """One simulated building."""

    building_id: str
    tenant_id: str
    name: str
    floors: int


@dataclasses.dataclass(frozen=True)
class TickContext:
    """What a scenario knows about the tick it transforms."""

    fleet: Fleet
    index: int  # tick number, 0 = first
    start_ms: int  # start of the simulation
    interval_ms: int
    seed: int

    def rng(self, name: str) -> np.random.Generator:
        """A generator private to this tick and ``name`` (a scenario's name)."""
        return np.random.default_rng([self.seed, self.index, _salt(name)])

    def fleet_rng(self, name: str) -> np.random.Generator:
        """A generator private to ``name`` but the same for every tick (choices that persist)."""
        return np.random.default_rng([self.seed, _salt(name)])


class TickTransform(Protocol):
    """What :meth:`Fleet.ticks` needs of a scenario (:class:`simulator.scenarios.Scenario`)."""

    def apply(self, frame: pl.DataFrame, ctx: TickContext) -> pl.DataFrame:
        """The tick ``frame`` after this transform."""
        ...


@dataclasses.dataclass(frozen=True, eq=False)
class Fleet:
    """A generated fleet. Build it with :meth:`generate`; per-device data lives in
    numpy arrays indexed by device number (0-based; ``dev-000001`` is index 0)."""

    seed: int
    tenant_ids: tuple[str, ...]
    buildings: tuple[Building, ...]
    device_ids: tuple[str, ...]
    building_index: npt.NDArray[np.int32]
    floor: npt.NDArray[np.int16]
    room: tuple[str, ...]
    kind: npt.NDArray[np.uint8]  # index into DEVICE_TYPES
    protocol: npt.NDArray[np.uint8]  # index into PROTOCOLS
    phase: npt.NDArray[np.float64]  # start-up jitter, share of the interval
    traits: physics.DeviceTraits

    # --- construction ----------------------------------------------------------------------

    @classmethod
    def generate(
        cls,
        devices: int,
        *,
        seed: int = 0,
        tenants: int = 2,
        buildings: int | None = None,
        rooms_per_floor: int = 12,
        fbk1_share: float = 0.05,
        mix: tuple[float, float, float] = (0.80, 0.12, 0.08),
    ) -> Fleet:
        """A fleet of ``devices`` devices in ``buildings`` buildings (default: one per
        ~400 devices, and up to 10 of ~50 devices for small fleets) owned round-robin by
        ``tenants`` tenants.

        ``mix`` is the share of environment, smoke and intrusion devices;
        ``fbk1_share`` of the environment sensors are legacy devices speaking FBK1.
        """
        if devices < 1:
            raise SimulatorError(f"a fleet needs at least one device, got {devices}")
        if tenants < 1:
            raise SimulatorError(f"a fleet needs at least one tenant, got {tenants}")
        if not 0.0 <= fbk1_share <= 1.0 or abs(sum(mix) - 1.0) > 1e-6 or min(mix) < 0:
            raise SimulatorError(
                "invalid device mix", hint="fbk1_share in [0, 1], mix shares >= 0 summing to 1"
            )
        # ~400 devices per building at scale; small demo fleets still get up to 10 buildings.
        n_buildings = buildings or (
            round(devices / 400) if devices >= 4000 else max(1, min(10, devices // 50))
        )
        n_buildings = min(n_buildings, devices)
        rng = np.random.default_rng([seed, _salt("fleet")])

        tenant_ids = tuple(f"t-{t + 1:04d}" for t in range(tenants))
        floors_per_building = rng.integers(2, 13, n_buildings)
        building_list = tuple(
            Building(
                building_id=f"b-{b + 1:04d}",
                tenant_id=tenant_ids[b % tenants],
                name=f"Building {b + 1}",
                floors=int(floors_per_building[b]),
            )
            for b in range(n_buildings)
        )
        # Contiguous blocks of devices per building: dev ids read naturally per building.
        building_index = (np.arange(devices, dtype=np.int64) * n_buildings // devices).astype(
            np.int32
        )
        floors_of = floors_per_building[building_index]
        floor = np.floor(rng.random(devices) * floors_of).astype(np.int16)
        room_no = rng.integers(1, rooms_per_floor + 1, devices)
        room = tuple(f"{f}.{r:02d}" for f, r in zip(floor.tolist(), room_no.tolist(), strict=True))
        kind = rng.choice(3, size=devices, p=list(mix)).astype(np.uint8)
        legacy = (kind == 0) & (rng.random(devices) < fbk1_share)
        protocol = legacy.astype(np.uint8)
        phase = rng.random(devices)

        tenant_of_building = np.arange(n_buildings) % tenants
        b_setpoint = rng.uniform(20.5, 23.0, n_buildings)
        b_humidity = rng.uniform(35.0, 50.0, n_buildings)
        b_offset = np.asarray(_TENANT_OFFSETS_H)[tenant_of_building % len(_TENANT_OFFSETS_H)]
        traits = physics.DeviceTraits(
            setpoint=b_setpoint[building_index],
            utc_offset_h=b_offset[building_index].astype(np.float64),
            humidity_base=b_humidity[building_index],
            temp_offset=rng.normal(0.0, 0.6, devices),
            drift_per_day=rng.normal(0.0, 0.05, devices),
            humidity_offset=rng.normal(0.0, 3.0, devices),
            window=rng.uniform(0.15, 1.0, devices),
            battery_start=rng.uniform(60.0, 100.0, devices),
        )
        return cls(
            seed=seed,
            tenant_ids=tenant_ids,
            buildings=building_list,
            device_ids=tuple(f"dev-{i + 1:06d}" for i in range(devices)),
            building_index=building_index,
            floor=floor,
            room=room,
            kind=kind,
            protocol=protocol,
            phase=phase,
            traits=traits,
        )

    # --- views -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.device_ids)

    @functools.cached_property
    def devices(self) -> tuple[Device, ...]:
        """Every device as a frozen record (in device-id order)."""
        b_ids = [b.building_id for b in self.buildings]
        t_ids = [b.tenant_id for b in self.buildings]
        return tuple(
            Device(
                device_id=d,
                tenant_id=t_ids[b],
                building_id=b_ids[b],
                floor=f,
                room=r,
                device_type=DEVICE_TYPES[k],
                protocol=PROTOCOLS[p],
            )
            for d, b, f, r, k, p in zip(
                self.device_ids,
                self.building_index.tolist(),
                self.floor.tolist(),
                self.room,
                self.kind.tolist(),
                self.protocol.tolist(),
                strict=True,
            )
        )

    @functools.cached_property
    def frame(self) -> pl.DataFrame:
        """The devices as a polars frame (one row per device, in device-id order)."""
        b_ids = pl.Series([b.building_id for b in self.buildings])
        t_ids = pl.Series([b.tenant_id for b in self.buildings])
        idx = pl.Series(self.building_index)
        return pl.DataFrame(
            {
                "device_id": list(self.device_ids),
                "tenant_id": t_ids.gather(idx),
                "building_id": b_ids.gather(idx),
                "floor": self.floor.astype(np.int64),
                "room": list(self.room),
                "device_type": pl.Series(list(DEVICE_TYPES)).gather(pl.Series(self.kind)),
                "protocol": pl.Series(list(PROTOCOLS)).gather(pl.Series(self.protocol)),
            }
        )

    @functools.cached_property
    def _record_parts(self) -> tuple[pl.Series, pl.Series, list[bytes]]:
        """Per-device constant JSON fragments of the Kafka record, and the keys."""
        f = self.frame
        head = pl.concat_str([pl.lit('{"device_id":"'), f["device_id"], pl.lit('","seq":')])
        meta = f.select(
            pl.concat_str(
                [
                    pl.lit('","tenant_id":"'),
                    pl.col("tenant_id"),
                    pl.lit('","building_id":"'),
                    pl.col("building_id"),
                    pl.lit('","floor":'),
                    pl.col("floor").cast(pl.String),
                    pl.lit(',"room":"'),
                    pl.col("room"),
                    pl.lit('","device_type":"'),
                    pl.col("device_type"),
                    pl.lit('","protocol":"'),
                    pl.col("protocol"),
                    pl.lit('","readings":'),
                ]
            )
        ).to_series()
        keys = [d.encode() for d in self.device_ids]
        return f.select(head).to_series(), meta, keys

    # --- the event stream -----------------------------------------------------------------

    def ticks(
        self,
        start: dt.datetime,
        *,
        interval_s: float = 60.0,
        scenarios: Sequence[TickTransform] = (),
        first_seq: int = 1,
        first_tick: int = 0,
    ) -> Iterator[pl.DataFrame]:
        """Every device's events, one frame per tick, in sending order, forever.

        Columns: ``device`` (index), ``seq``, ``ts`` (event time the device
        claims, epoch ms), ``send`` (when the device sends, epoch ms),
        ``received`` (the gateway clock on arrival), ``temperature``,
        ``humidity``, ``light``, ``battery``, ``smoke``, ``intrusion``,
        ``building``, ``floor``, ``kind``, ``protocol`` and ``status``
        (index into :data:`STATUS`). Readings are already rounded to what the
        device reports. ``scenarios`` transform each tick in order.
        """
        if interval_s <= 0:
            raise SimulatorError(f"interval must be positive, got {interval_s}")
        start_ms = to_ms(start)
        interval_ms = max(1, round(interval_s * 1000))
        offsets = np.floor(self.phase * interval_ms).astype(np.int64)
        order = np.argsort(offsets, kind="stable")
        static = pl.DataFrame(
            {
                "device": order.astype(np.uint32),
                "building": self.building_index[order],
                "floor": self.floor[order],
                "kind": self.kind[order],
                "protocol": self.protocol[order],
            }
        )
        offsets_sorted = offsets[order]
        traits = physics.DeviceTraits(
            **{
                k: np.asarray(v)[order]
                for k, v in dataclasses.asdict(self.traits).items()  # arrays, gathered once
            }
        )
        n = len(self)
        tick = first_tick
        while True:
            ctx = TickContext(self, tick, start_ms, interval_ms, self.seed)
            rng = ctx.rng("physics")
            ts = start_ms + tick * interval_ms + offsets_sorted
            values = physics.readings(ts, traits, epoch_ms=start_ms, rng=rng)
            latency = rng.integers(15, 250, n)
            frame = static.with_columns(
                seq=pl.lit(first_seq + tick, dtype=pl.Int64),
                ts=pl.Series(ts),
                send=pl.Series(ts),
                received=pl.Series(ts + latency),
                temperature=pl.Series(values.temperature),
                humidity=pl.Series(values.humidity),
                light=pl.Series(values.light),
                battery=pl.Series(values.battery),
                smoke=pl.lit(False),
                intrusion=pl.lit(False),
                status=pl.lit(0, dtype=pl.UInt8),
            )
            for scenario in scenarios:
                frame = scenario.apply(frame, ctx)
            yield _round_readings(frame)
            tick += 1

    def kafka_records(
        self,
        start: dt.datetime,
        count: int,
        *,
        interval_s: float = 60.0,
        scenarios: Sequence[TickTransform] = (),
    ) -> Iterator[tuple[bytes, bytes]]:
        """``count`` Kafka records ``(key, value)`` in the gateway's output format
        (:mod:`workbench.events`), in event-time order, starting at ``start``.

        Events the gateway would reject (unprovisioned or de-provisioned devices)
        are left out, as the gateway would; everything else a scenario does
        (late, duplicate, faulty readings) is kept.
        """
        _, _, keys = self._record_parts
        left = count
        if left <= 0:
            return
        for frame in self.ticks(start, interval_s=interval_s, scenarios=scenarios):
            accepted = frame.filter(pl.col("status") == 0)
            if accepted.height > left:
                accepted = accepted.head(left)
            values = kafka_values(self, accepted).to_list()
            for device, value in zip(accepted["device"].to_list(), values, strict=True):
                yield keys[device], value
            left -= accepted.height
            if left <= 0:
                return


def _round_readings(frame: pl.DataFrame) -> pl.DataFrame:
    """Round readings to what devices report: HTTP devices 0.01 °C, 0.1 %, 0.1 lux;
    FBK1 devices deci-°C, per-mille and whole lux (their wire format)."""
    legacy = pl.col("protocol") == 1
    return frame.with_columns(
        temperature=pl.when(legacy)
        .then(pl.col("temperature").round(1))
        .otherwise(pl.col("temperature").round(2)),
        humidity=pl.col("humidity").round(1),
        light=pl.when(legacy).then(pl.col("light").round(0)).otherwise(pl.col("light").round(1)),
        battery=pl.col("battery").round(0),
    )

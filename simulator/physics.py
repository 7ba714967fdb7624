"""Plausible, deterministic building physics, computed for a whole tick at once.

Every function here takes numpy arrays (one element per event) and returns
arrays: the simulator never does per-event Python arithmetic. The model is
deliberately simple but has the shapes a dashboard should show:

* outdoor temperature: a seasonal cycle plus a daily cycle peaking at 15:00 local;
* occupancy: weekdays 08:00-18:00 with soft ramps, a trickle at weekends and nights;
* indoor temperature: the building's set point, pulled a little towards outdoors,
  warmed by occupants, plus a fixed per-device offset, a slow per-device drift
  (°C per day) and Gaussian noise;
* humidity: per-building base and per-device offset, lower when warmer, higher
  with people in the room;
* light: daylight through the room's windows plus artificial light when occupied;
* smoke-detector battery: slowly draining.

Randomness comes from the ``rng`` the caller passes (seeded per tick), so the
same seed and tick always produce the same readings.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

__all__ = [
    "DeviceTraits",
    "Readings",
    "local_hours",
    "occupancy",
    "outdoor_temperature",
    "readings",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

_MS_PER_DAY = 86_400_000
_MS_PER_HOUR = 3_600_000
# 1970-01-01 was a Thursday: day 0 -> weekday 3 (Monday = 0).
_EPOCH_WEEKDAY = 3


@dataclasses.dataclass(frozen=True)
class DeviceTraits:
    """Fixed per-device physical traits, gathered for the events of one tick."""

    setpoint: F64  # building's heating/cooling set point, °C
    utc_offset_h: F64  # building's local time offset from UTC, hours
    humidity_base: F64  # building's base relative humidity, %
    temp_offset: F64  # this device's calibration/placement offset, °C
    drift_per_day: F64  # this device's drift, °C per day since the fleet's epoch
    humidity_offset: F64  # %
    window: F64  # 0..1, how much daylight reaches the room
    battery_start: F64  # smoke detector battery at the fleet's epoch, %


@dataclasses.dataclass(frozen=True)
class Readings:
    """The physical readings of one tick (environment values for every event;
    the encoder keeps only the names each device type reports)."""

    temperature: F64
    humidity: F64
    light: F64
    battery: F64


def local_hours(ts_ms: I64, utc_offset_h: F64) -> F64:
    """Hours since the epoch in the building's local time (fractional)."""
    return ts_ms / _MS_PER_HOUR + utc_offset_h


def occupancy(hours: F64) -> F64:
    """0..1 share of a building's people present, from local hours since the epoch.

    >>> occupancy(np.array([12.0, 3.0, 3 * 24 + 12.0])).round(2).tolist()  # Thu noon, 3am, Sun noon
    [1.0, 0.05, 0.1]
    """
    day = np.floor(hours / 24.0)
    hour = hours - day * 24.0
    weekday = (day.astype(np.int64) + _EPOCH_WEEKDAY) % 7
    # Soft ramps 07:00-09:00 up and 17:00-19:00 down.
    up = np.clip(hour - 7.0, 0.0, 2.0) / 2.0
    down = np.clip(19.0 - hour, 0.0, 2.0) / 2.0
    workday = np.minimum(up, down)
    base = np.where(weekday < 5, workday, 0.1 * workday)
    return np.maximum(base, 0.05)


def outdoor_temperature(hours: F64) -> F64:
    """Outdoor °C: seasonal mean (coldest mid-January) plus a daily swing peaking at 15:00."""
    day_of_year = (hours / 24.0) % 365.25
    seasonal = 11.0 - 9.0 * np.cos(2.0 * np.pi * (day_of_year - 15.0) / 365.25)
    daily = 4.5 * np.sin(2.0 * np.pi * ((hours % 24.0) - 9.0) / 24.0)
    return np.asarray(seasonal + daily, dtype=np.float64)


def readings(
    ts_ms: I64, traits: DeviceTraits, *, epoch_ms: int, rng: np.random.Generator
) -> Readings:
    """Readings for events at ``ts_ms`` (one per element of ``traits``).

    ``epoch_ms`` is when the fleet was installed: drift and battery drain count from it.
    """
    n = ts_ms.shape[0]
    hours = local_hours(ts_ms, traits.utc_offset_h)
    occ = occupancy(hours)
    outdoor = outdoor_temperature(hours)
    days = np.maximum(ts_ms - epoch_ms, 0) / _MS_PER_DAY
    temperature = (
        traits.setpoint
        + 0.12 * (outdoor - traits.setpoint)
        + 1.6 * occ
        + traits.temp_offset
        + traits.drift_per_day * days
        + rng.normal(0.0, 0.15, n)
    )
    humidity = np.clip(
        traits.humidity_base
        + traits.humidity_offset
        - 0.8 * (temperature - traits.setpoint)
        + 4.0 * occ
        + rng.normal(0.0, 0.8, n),
        5.0,
        95.0,
    )
    hour = hours % 24.0
    daylight = 650.0 * np.clip(np.sin(np.pi * (hour - 6.0) / 12.0), 0.0, None) * traits.window
    artificial = np.where(occ > 0.3, 380.0, 0.0)
    light = np.clip(daylight + artificial + rng.normal(0.0, 6.0, n), 0.0, None)
    battery = np.clip(traits.battery_start - 0.02 * days, 0.0, 100.0)
    return Readings(temperature=temperature, humidity=humidity, light=light, battery=battery)

"""What the drills send and look at: their own devices (tenant ``t-drill``, buildings
``b-drill-…``, apart from the simulated fleet), the gateway's ``/metrics`` and the
lake's tables.

What the drill's devices send is logged in the simulator's truth format (:class:`Truth`),
so :meth:`~proving.scratch.ScratchStack.ledger` checks them with the fleet's events.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import polars as pl
from prometheus_client.parser import text_string_to_metric_families

from proving.scratch import ScratchStack
from workbench.config import Config

__all__ = [
    "Device",
    "RejectKey",
    "Truth",
    "accepted_total",
    "base_url",
    "event",
    "grew",
    "iso",
    "latency_counts",
    "outcome",
    "provision",
    "reason",
    "rejected_counts",
    "table",
]

_TENANT = "t-drill"
RejectKey = tuple[str, str, str]  # (channel, status, reason) of gateway_rejected_total


# --- the drill's own devices -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Device:
    """A device the drill provisioned itself (``key``: base64, as provisioning printed it)."""

    device_id: str
    key: str
    protocol: str

    @property
    def key_bytes(self) -> bytes:
        from workbench.registry.keys import key_bytes

        return key_bytes(self.key)

    def token(self, *, ttl_s: int = 3600, expiry: int | None = None) -> str:
        from workbench.registry.keys import sas_token

        return sas_token(self.device_id, self.key, ttl_s=ttl_s, expiry=expiry)


def provision(
    stack: ScratchStack,
    building: str,
    devices: dict[str, str],
    *,
    disable: tuple[str, ...] = (),
    deprovision: tuple[str, ...] = (),
) -> dict[str, Device]:
    """Provision ``devices`` (id -> protocol) in ``building`` of tenant ``t-drill``, disable
    or de-provision some, and wait until every gateway worker serves the result."""
    from workbench.registry import Registry
    from workbench.tenancy.principal import Principal

    reg = Registry(stack.config, principal=Principal.system("drill"))
    if _TENANT not in set(reg.tenants()["tenant_id"].to_list()):
        reg.add_tenant(_TENANT, name="Failure drills")
    reg.add_building(building, tenant=_TENANT, name=f"Drill building {building}")
    out = {}
    for device_id, protocol in devices.items():
        made = reg.provision(
            device_id, building=building, device_type="environment", protocol=protocol
        )
        out[device_id] = Device(device_id, made.key, protocol)
    for device_id in disable:
        reg.disable(device_id)
    for device_id in deprovision:
        reg.deprovision(device_id)
    _wait_registry(stack, reg.version("devices") or 0)
    return out


def _wait_registry(stack: ScratchStack, version: int, *, timeout_s: float = 60) -> None:
    """Wait until every gateway worker serves registry version ``version``."""
    deadline = time.monotonic() + timeout_s
    seen: object = None
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            health = httpx.get(f"{base_url(stack.config)}/healthz", timeout=5).json()
            seen = health.get("registry_version_all", health.get("registry_version"))
            if isinstance(seen, int) and seen >= version:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the gateway serves registry version {seen}, not {version}")


def base_url(config: Config) -> str:
    """The gateway's HTTP address."""
    return f"http://{config.host}:{config.gateway_port}"


def iso(ts: dt.datetime) -> str:
    """``ts`` as devices write it: UTC, milliseconds, ``Z``."""
    return ts.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event(seq: int, *, ts: dt.datetime | None = None, **readings: Any) -> dict[str, Any]:
    """One device event (now, 21.5 °C unless told otherwise)."""
    return {
        "ts": iso(ts or dt.datetime.now(dt.UTC)),
        "seq": seq,
        "readings": readings or {"temperature": 21.5},
    }


class Truth:
    """What the drill's devices sent and were told, in the simulator's truth-log format."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[str] = []
        self.accepted: set[tuple[str, int]] = set()  # distinct events answered 202 / OK

    def add(self, device_id: str, seq: int, outcome: str) -> None:
        self.lines.append(json.dumps({"device_id": device_id, "seq": seq, "outcome": outcome}))
        if outcome == "accepted":
            self.accepted.add((device_id, seq))

    def write(self) -> Path:
        self.path.write_text("".join(f"{line}\n" for line in self.lines))
        return self.path


def outcome(response: httpx.Response) -> str:
    """An answer as the simulator's truth log names it."""
    if response.status_code == 202:
        return "accepted"
    return f"rejected-{response.status_code} {reason(response)}".rstrip()


def reason(response: httpx.Response) -> str:
    """The ``reason`` of a problem+json answer (empty when there is none)."""
    try:
        doc = response.json()
    except ValueError:
        return ""
    return str(doc.get("reason", "")) if isinstance(doc, dict) else ""


# --- the gateway's /metrics ----------------------------------------------------------------


def _scrape(config: Config) -> list[tuple[str, dict[str, str], float]]:
    """The gateway's ``/metrics`` samples: (name, labels, value)."""
    text = httpx.get(f"{base_url(config)}/metrics", timeout=10).text
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def rejected_counts(config: Config) -> Counter[RejectKey]:
    """``gateway_rejected_total`` by (channel, status, reason)."""
    counts: Counter[RejectKey] = Counter()
    for name, labels, value in _scrape(config):
        if name == "gateway_rejected_total":
            counts[(labels["channel"], labels["status"], labels["reason"])] += int(value)
    return counts


def notes_sent(config: Config) -> int:
    """``gateway_rejection_notes_total{result="sent"}``: refusals of authenticated
    devices the gateway handed to the broker for their building's rejected-event rate."""
    return sum(
        int(value)
        for name, labels, value in _scrape(config)
        if name == "gateway_rejection_notes_total" and labels.get("result") == "sent"
    )


def accepted_total(config: Config) -> int:
    """``gateway_events_accepted_total`` over every channel."""
    return sum(
        int(value) for name, _, value in _scrape(config) if name == "gateway_events_accepted_total"
    )


def latency_counts(config: Config) -> Counter[float]:
    """``gateway_request_duration_seconds``: answers sent within each bucket's bound
    (seconds; ``inf`` counts every answer), over every channel."""
    counts: Counter[float] = Counter()
    for name, labels, value in _scrape(config):
        if name == "gateway_request_duration_seconds_bucket":
            counts[float(labels["le"])] += int(value)
    return counts


def grew(before: Counter[RejectKey], after: Counter[RejectKey]) -> Counter[RejectKey]:
    """The series that changed between two scrapes, by how much."""
    return Counter({k: after[k] - before[k] for k in after if after[k] != before[k]})


# --- reading the lake ---------------------------------------------------------------------


def table(stack: ScratchStack, name: str, columns: list[str]) -> pl.DataFrame:
    """``columns`` of the scratch lake's table ``name``."""
    from workbench.lake.tables import table_uri

    return pl.read_delta(table_uri(stack.config, name), columns=columns)

"""More drills: bad input, clock skew, a full disk (registered with :func:`drill`).

* ``bad-input-storm`` — while simulated devices send, the drill itself fires malformed,
  mistyped, oversized and forged requests at the gateway and garbage frames at the legacy
  TCP port, and checks each precise refusal, the ``/metrics`` counters and that the
  devices' events are stored exactly once.
* ``clock-skew`` — devices whose clocks are hours or days behind, or hours ahead: where
  each event lands (refused, stored late, stored on time) and that the rolling building
  view still follows the devices whose clocks are right.
* ``disk-full`` — the lake's file system fills up while devices send, then space comes
  back: nothing is lost or stored twice.

The drill's own devices live in tenant ``t-drill`` (buildings ``b-drill-…``), apart from
the simulated fleet; what they send is logged in the simulator's truth format, so
:meth:`~workbench.ops.scratch.ScratchStack.ledger` checks them with the fleet's events.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import errno
import json
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import polars as pl
from prometheus_client.parser import text_string_to_metric_families

from workbench.config import Config
from workbench.ops.drills import DrillReport, _finish, _load, drill
from workbench.ops.scratch import ScratchStack

__all__: list[str] = []  # the drills register themselves with @drill

_TENANT = "t-drill"
_RejectKey = tuple[str, str, str]  # (channel, status, reason) of gateway_rejected_total


# --- the drill's own devices -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Device:
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


def _provision(
    stack: ScratchStack,
    building: str,
    devices: dict[str, str],
    *,
    disable: tuple[str, ...] = (),
    deprovision: tuple[str, ...] = (),
) -> dict[str, _Device]:
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
        out[device_id] = _Device(device_id, made.key, protocol)
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
            health = httpx.get(f"{_base_url(stack.config)}/healthz", timeout=5).json()
            seen = health.get("registry_version_all", health.get("registry_version"))
            if isinstance(seen, int) and seen >= version:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the gateway serves registry version {seen}, not {version}")


def _base_url(config: Config) -> str:
    return f"http://{config.host}:{config.gateway_port}"


def _iso(ts: dt.datetime) -> str:
    return ts.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _event(seq: int, *, ts: dt.datetime | None = None, **readings: Any) -> dict[str, Any]:
    return {
        "ts": _iso(ts or dt.datetime.now(dt.UTC)),
        "seq": seq,
        "readings": readings or {"temperature": 21.5},
    }


class _Truth:
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


def _outcome(response: httpx.Response) -> str:
    """An answer as the simulator's truth log names it."""
    if response.status_code == 202:
        return "accepted"
    return f"rejected-{response.status_code} {_reason(response)}".rstrip()


def _reason(response: httpx.Response) -> str:
    try:
        doc = response.json()
    except ValueError:
        return ""
    return str(doc.get("reason", "")) if isinstance(doc, dict) else ""


# --- the gateway's /metrics ----------------------------------------------------------------


def _scrape(config: Config) -> list[tuple[str, dict[str, str], float]]:
    """The gateway's ``/metrics`` samples: (name, labels, value)."""
    text = httpx.get(f"{_base_url(config)}/metrics", timeout=10).text
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def _rejected_counts(config: Config) -> Counter[_RejectKey]:
    """``gateway_rejected_total`` by (channel, status, reason)."""
    counts: Counter[_RejectKey] = Counter()
    for name, labels, value in _scrape(config):
        if name == "gateway_rejected_total":
            counts[(labels["channel"], labels["status"], labels["reason"])] += int(value)
    return counts


def _accepted_total(config: Config) -> int:
    """``gateway_events_accepted_total`` over every channel."""
    return sum(
        int(value) for name, _, value in _scrape(config) if name == "gateway_events_accepted_total"
    )


def _grew(before: Counter[_RejectKey], after: Counter[_RejectKey]) -> Counter[_RejectKey]:
    return Counter({k: after[k] - before[k] for k in after if after[k] != before[k]})


# --- reading the lake ---------------------------------------------------------------------


def _table(stack: ScratchStack, name: str, columns: list[str]) -> pl.DataFrame:
    from workbench.lake.tables import table_uri

    return pl.read_delta(table_uri(stack.config, name), columns=columns)


# --- bad-input-storm ----------------------------------------------------------------------

_Body = bytes | Callable[[], Iterator[bytes]]  # a callable: sent chunked, no Content-Length


@dataclasses.dataclass(frozen=True)
class _HttpCase:
    """One bad request and the precise problem+json answer it must get."""

    name: str
    status: int
    reason: str
    body: _Body
    headers: dict[str, str]
    field: str | None = None  # a 422 must name this field in its ``errors``

    def send(self, client: httpx.Client) -> httpx.Response:
        content = self.body if isinstance(self.body, bytes) else self.body()
        return client.post("/v1/telemetry", headers=self.headers, content=content)

    def mismatch(self, response: httpx.Response) -> str | None:
        """Why the answer is not the expected one (None when it is)."""
        got = f"{response.status_code} {_reason(response) or '-'}"
        if response.status_code != self.status or _reason(response) != self.reason:
            return f"{self.name}: expected {self.status} {self.reason}, got {got}"
        if not response.headers.get("content-type", "").startswith("application/problem+json"):
            return f"{self.name}: {got} is not application/problem+json"
        doc = response.json()
        if doc.get("status") != self.status or not doc.get("detail"):
            return f"{self.name}: problem document {doc} lacks status or detail"
        if self.field is not None:
            fields = [e.get("field") for e in doc.get("errors") or []]
            if self.field not in fields:
                return f"{self.name}: expected an error on {self.field!r}, got {fields}"
        return None


@dataclasses.dataclass(frozen=True)
class _FrameCase:
    """Bytes sent on a fresh legacy TCP connection and the ``ERR`` lines they must get."""

    name: str
    data: bytes
    channel: str  # gateway_rejected_total's channel: the translator, or "unknown"
    answers: tuple[str, ...]  # e.g. ("ERR 400 malformed_frame",)
    closes: bool = False  # the adapter must close the connection after answering

    def send(self, config: Config) -> str | None:
        """Send; why the answers are not the expected ones (None when they are)."""
        with socket.create_connection((config.host, config.legacy_port), timeout=10) as sock:
            sock.sendall(self.data)
            reader = sock.makefile("rb")
            got = [reader.readline().decode("ascii", "replace").strip() for _ in self.answers]
            if got != list(self.answers):
                return f"{self.name}: expected {list(self.answers)}, got {got}"
            if self.closes:
                if reader.read(1) != b"":
                    return f"{self.name}: the connection stayed open"
            else:  # still in sync: a further frame gets its own answer
                sock.sendall(b"FBK1|x\n")
                if reader.readline().strip() != b"ERR 400 malformed_frame":
                    return f"{self.name}: the connection is out of sync afterwards"
        return None

    def expected(self) -> Counter[_RejectKey]:
        counts: Counter[_RejectKey] = Counter()
        for answer in self.answers:
            _, status, reason = answer.split(" ", 2)
            counts[(self.channel, status, reason)] += 1
        if not self.closes:
            counts[("fbk1", "400", "malformed_frame")] += 1  # the frame checking the sync
        return counts


def _http_cases(config: Config, dev: dict[str, _Device]) -> list[_HttpCase]:
    """Every kind of bad request DESIGN.md §6 names (statuses 400, 401, 403, 413, 415, 422)."""
    http, fbk1 = dev["storm-http"], dev["storm-fbk1"]
    json_type = {"Content-Type": "application/json"}
    auth = {**json_type, "Authorization": http.token()}
    now = dt.datetime.now(dt.UTC)
    good = _event(1)

    def doc(value: object) -> bytes:
        return json.dumps(value).encode()

    def event_without(name: str) -> bytes:
        return doc({k: v for k, v in good.items() if k != name})

    def forged(device_id: str) -> dict[str, str]:
        from workbench.registry.keys import sas_token

        rogue = base64.b64encode(secrets.token_bytes(32)).decode()
        return {**json_type, "Authorization": sas_token(device_id, rogue)}

    other_sr = http.token().replace("sr=storm-http", "sr=storm-fbk1")
    too_big = config.gateway_max_body_bytes + 1024
    tiny = {"ts": _iso(now), "seq": 1, "readings": {"light": 1}}
    over_batch = doc({"events": [tiny] * (config.gateway_max_batch + 1)})

    def chunked() -> Iterator[bytes]:
        yield b'{"events": ['
        for _ in range(too_big // 65536 + 1):
            yield b" " * 65536
        yield b"]}"

    c = _HttpCase
    return [
        # 400 malformed
        c("body not JSON", 400, "malformed", b"{this is not json", auth),
        c("truncated JSON", 400, "malformed", b'{"ts": "2026-11-27T05:3', auth),
        c("empty body", 400, "malformed", b"", auth),
        c("invalid UTF-8", 400, "malformed", b'{"ts": "\xff\xfe"}', auth),
        c("JSON nested 100,000 deep", 400, "malformed", b"[" * 100_000, auth),
        c("JSON array body", 400, "malformed", b"[1, 2, 3]", auth),
        c("JSON string body", 400, "malformed", b'"telemetry"', auth),
        c("empty batch", 400, "malformed", doc({"events": []}), auth),
        c("batch with extra keys", 400, "malformed", doc({"events": [good], "x": 1}), auth),
        c("events not a list", 400, "malformed", doc({"events": good}), auth),
        c("batch item not an object", 400, "malformed", doc({"events": [good, 7]}), auth),
        # 401 credentials
        c("no Authorization", 401, "missing_token", doc(good), json_type),
        c("Bearer token", 401, "malformed_token", doc(good), {**auth, "Authorization": "Bearer x"}),
        c(
            "SAS token without sig",
            401,
            "malformed_token",
            doc(good),
            {**auth, "Authorization": "SharedAccessSignature sr=storm-http&se=99999999999"},
        ),
        c(
            "SAS token with se not a time",
            401,
            "malformed_token",
            doc(good),
            {**auth, "Authorization": "SharedAccessSignature sr=storm-http&se=soon&sig=AAAA"},
        ),
        c("forged token (random key)", 401, "bad_signature", doc(good), forged("storm-http")),
        c(
            "another device's token (sr changed)",
            401,
            "bad_signature",
            doc(good),
            {**auth, "Authorization": other_sr},
        ),
        c(
            "expired token",
            401,
            "expired",
            doc(good),
            {**auth, "Authorization": http.token(expiry=int(time.time()) - 60)},
        ),
        # 403 admission
        c("unknown device", 403, "unknown_device", doc(good), forged("storm-nobody")),
        c(
            "disabled device",
            403,
            "disabled",
            doc(good),
            {**json_type, "Authorization": dev["storm-off"].token()},
        ),
        c(
            "de-provisioned device",
            403,
            "deprovisioned",
            doc(good),
            {**json_type, "Authorization": dev["storm-gone"].token()},
        ),
        c(
            "FBK1 device over HTTP",
            403,
            "protocol_mismatch",
            doc(good),
            {**json_type, "Authorization": fbk1.token()},
        ),
        c(
            "body names another device",
            403,
            "device_mismatch",
            doc({**good, "device_id": "storm-fbk1"}),
            auth,
        ),
        # 413, 415
        c(
            f"body of {too_big:,} bytes (Content-Length)",
            413,
            "too_large",
            b" " * too_big,
            auth,
        ),
        c(f"body of {too_big:,} bytes, chunked", 413, "too_large", chunked, auth),
        c(
            f"batch of {config.gateway_max_batch + 1:,} events",
            413,
            "too_large",
            over_batch,
            auth,
        ),
        c(
            "Content-Type text/plain",
            415,
            "unsupported_media_type",
            doc(good),
            {**auth, "Content-Type": "text/plain"},
        ),
        # 422 invalid events
        c("missing ts", 422, "invalid", event_without("ts"), auth, "ts"),
        c("missing seq", 422, "invalid", event_without("seq"), auth, "seq"),
        c("missing readings", 422, "invalid", event_without("readings"), auth, "readings"),
        c("unknown field", 422, "invalid", doc({**good, "temp": 1}), auth, "temp"),
        c("seq a string", 422, "invalid", doc({**good, "seq": "12"}), auth, "seq"),
        c("seq negative", 422, "invalid", doc({**good, "seq": -1}), auth, "seq"),
        c("seq a fraction", 422, "invalid", doc({**good, "seq": 1.5}), auth, "seq"),
        c("seq beyond 64 bits", 422, "invalid", doc({**good, "seq": 2**64}), auth, "seq"),
        c("ts not a time", 422, "invalid", doc({**good, "ts": "yesterday"}), auth, "ts"),
        c("ts a number", 422, "invalid", doc({**good, "ts": 1_700_000_000}), auth, "ts"),
        c(
            "ts without offset",
            422,
            "invalid",
            doc({**good, "ts": "2026-11-27T05:30:00"}),
            auth,
            "ts",
        ),
        c(
            "ts before 2000",
            422,
            "invalid",
            doc({**good, "ts": "1999-12-31T23:59:59Z"}),
            auth,
            "ts",
        ),
        c("readings empty", 422, "invalid", doc({**good, "readings": {}}), auth, "readings"),
        c("readings a list", 422, "invalid", doc({**good, "readings": [21.5]}), auth, "readings"),
        c(
            "temperature a string",
            422,
            "invalid",
            doc({**good, "readings": {"temperature": "hot"}}),
            auth,
            "readings.temperature",
        ),
        c(
            "temperature NaN",
            422,
            "invalid",
            doc({**good, "readings": {"temperature": float("nan")}}),
            auth,
            "readings.temperature",
        ),
        c(
            "smoke a number",
            422,
            "invalid",
            doc({**good, "readings": {"smoke": 1}}),
            auth,
            "readings.smoke",
        ),
        c(
            "33 readings",
            422,
            "invalid",
            doc({**good, "readings": {f"r{i}": i for i in range(33)}}),
            auth,
            "readings",
        ),
        c(
            "reading name with spaces",
            422,
            "invalid",
            doc({**good, "readings": {"bad name": 1}}),
            auth,
            "readings.bad name",
        ),
    ]


def _all_or_nothing(seqs: range) -> _HttpCase:
    """A batch whose one bad event refuses it whole (its good events must not be stored)."""
    events: list[dict[str, Any]] = [_event(s) for s in seqs]
    events[len(events) // 2]["readings"] = {"temperature": "warm"}
    return _HttpCase(
        "batch with one bad event",
        422,
        "invalid",
        json.dumps({"events": events}).encode(),
        {},  # set per sender: the device's token
        "readings.temperature",
    )


def _frame_cases(dev: dict[str, _Device]) -> list[_FrameCase]:
    """Garbage and forged frames for the legacy adapter (FBK1, BIN1, unknown protocols)."""
    from ingest_service.translators import bin1, fbk1

    http, legacy = dev["storm-http"], dev["storm-fbk1"]
    now_ms = int(time.time() * 1000)
    rogue = secrets.token_bytes(32)
    signed = fbk1.encode_frame(legacy.device_id, legacy.key_bytes, now_ms, 1, temperature=21.5)
    unsigned = signed.rsplit(b"|", 1)[0]
    f = _FrameCase
    return [
        f("FBK1 line of garbage", b"FBK1|garbage\n", "fbk1", ("ERR 400 malformed_frame",)),
        f(
            "FBK1 time not a number",
            unsigned.replace(str(now_ms).encode(), b"soon") + b"|00\n",
            "fbk1",
            ("ERR 400 malformed_frame",),
        ),
        f(
            "FBK1 signature not hex",
            unsigned + b"|not-hex\n",
            "fbk1",
            ("ERR 400 malformed_signature",),
        ),
        f(
            "FBK1 unknown reading",
            f"FBK1|storm-fbk1|{now_ms}|1|X=1|00\n".encode(),
            "fbk1",
            ("ERR 400 malformed_reading",),
        ),
        f("FBK1 not ASCII", b"FBK1|\xff\xfe|1\n", "fbk1", ("ERR 400 not_ascii",)),
        f("FBK1 line of 600 bytes", b"F" + b"A" * 600 + b"\n", "fbk1", ("ERR 413 line_too_long",)),
        f(
            "FBK1 line of 8 KiB without end",
            b"F" + b"A" * 8192,
            "fbk1",
            ("ERR 413 line_too_long",),
            closes=True,
        ),
        f(
            "FBK1 time beyond year 9999",
            fbk1.encode_frame(legacy.device_id, legacy.key_bytes, 10**15 - 1, 1, temperature=1),
            "fbk1",
            ("ERR 422 invalid_timestamp",),
        ),
        f(
            "FBK1 frame of an unknown device",
            fbk1.encode_frame("storm-nobody", rogue, now_ms, 1, temperature=21.5),
            "fbk1",
            ("ERR 403 unknown_device",),
        ),
        f(
            "FBK1 frame with a forged signature",
            fbk1.encode_frame(legacy.device_id, rogue, now_ms, 1, temperature=21.5),
            "fbk1",
            ("ERR 401 bad_signature",),
        ),
        f(
            "FBK1 frame of an HTTP device",
            fbk1.encode_frame(http.device_id, http.key_bytes, now_ms, 1, temperature=21.5),
            "fbk1",
            ("ERR 403 protocol_mismatch",),
        ),
        f(
            "FBK1 frame two hours ahead",
            fbk1.encode_frame(
                legacy.device_id, legacy.key_bytes, now_ms + 7_200_000, 1, temperature=21.5
            ),
            "fbk1",
            ("ERR 422 invalid",),
        ),
        f("BIN1 unknown version", b"\xb1\x09\x00\x10", "bin1", ("ERR 400 unknown_version",), True),
        f(
            "BIN1 body of 65,535 bytes",
            b"\xb1\x01\xff\xff",
            "bin1",
            ("ERR 413 frame_too_long",),
            True,
        ),
        f(
            "BIN1 frame with a forged signature",
            bin1.encode_frame(legacy.device_id, rogue, now_ms, 1, {"temperature": 21.5}),
            "bin1",
            ("ERR 401 bad_signature",),
        ),
        f(
            "unknown protocol (an HTTP request)",
            b"GET / HTTP/1.1\r\n\r\n",
            "unknown",
            ("ERR 400 unknown_protocol",),
            closes=True,
        ),
    ]


def _http_storm(config: Config, cases: list[_HttpCase], *, rounds: int, threads: int) -> list[str]:
    """Send every case ``rounds`` times from ``threads`` clients at once; the mismatches."""

    def one_round(_: int) -> list[str]:
        out = []
        with httpx.Client(base_url=_base_url(config), timeout=30) as client:
            for case in cases:
                try:
                    problem = case.mismatch(case.send(client))
                except httpx.HTTPError as exc:
                    problem = f"{case.name}: {type(exc).__name__}: {exc}"
                if problem:
                    out.append(problem)
        return out

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return [m for found in pool.map(one_round, range(rounds)) for m in found]


def _frame_storm(config: Config, cases: list[_FrameCase], *, rounds: int) -> list[str]:
    out = []
    for _ in range(rounds):
        for case in cases:
            try:
                problem = case.send(config)
            except OSError as exc:
                problem = f"{case.name}: {type(exc).__name__}: {exc}"
            if problem:
                out.append(problem)
    return out


def _not_http(config: Config) -> bytes:
    """What the HTTP port answers to bytes that are not HTTP at all (its status line)."""
    with socket.create_connection((config.host, config.gateway_port), timeout=10) as sock:
        sock.sendall(b"HELLO GARBAGE\r\n\r\n")
        return sock.makefile("rb").readline().strip()


def _passes_gateway(
    config: Config, dev: dict[str, _Device], truth: _Truth
) -> tuple[dict[tuple[str, int], str], list[str]]:
    """Events the gateway accepts but the processor must not store: readings out of the
    plausible range (HTTP and FBK1), and an event sent three times with the same ``seq``.
    Returns ``{(device_id, seq): expected telemetry_rejected reason}`` and what went wrong."""
    from ingest_service.translators import fbk1

    http, legacy = dev["storm-http"], dev["storm-fbk1"]
    expected = {
        (http.device_id, 101): "out_of_range: readings.temperature outside [-60, 120]",
        (http.device_id, 102): "out_of_range: readings.humidity outside [0, 100]",
        (http.device_id, 103): "out_of_range: readings.light outside [0, 200000]",
        (legacy.device_id, 101): "out_of_range: readings.temperature outside [-60, 120]",
    }
    bodies = [
        _event(101, temperature=500.0),
        _event(102, humidity=150.0),
        _event(103, light=-5.0),
        *[_event(200, temperature=21.0)] * 3,  # a replay: stored once, then duplicates
    ]
    problems = []
    headers = {"Content-Type": "application/json", "Authorization": http.token()}
    with httpx.Client(base_url=_base_url(config), timeout=30) as client:
        for body in bodies:
            response = client.post("/v1/telemetry", headers=headers, json=body)
            if response.status_code != 202:
                problems.append(f"seq {body['seq']}: {response.status_code} {_reason(response)}")
    truth.add(http.device_id, 200, "accepted")
    frame = fbk1.encode_frame(
        legacy.device_id, legacy.key_bytes, int(time.time() * 1000), 101, temperature=500.0
    )
    with socket.create_connection((config.host, config.legacy_port), timeout=10) as sock:
        sock.sendall(frame)
        answer = sock.makefile("rb").readline().strip()
    if answer != b"OK 101":
        problems.append(f"FBK1 seq 101: {answer!r}")
    return expected, problems


@drill(
    "bad-input-storm",
    "a storm of malformed, mistyped, oversized and forged requests and garbage legacy frames "
    "while devices send",
)
def _bad_input_storm(stack: ScratchStack, report: DrillReport) -> None:
    config = stack.config
    dev = _provision(
        stack,
        "b-drill-storm",
        {"storm-http": "http", "storm-fbk1": "fbk1", "storm-off": "http", "storm-gone": "http"},
        disable=("storm-off",),
        deprovision=("storm-gone",),
    )
    report.step(
        "provisioned drill devices storm-http, storm-fbk1, storm-off (disabled), "
        "storm-gone (de-provisioned)"
    )
    truth = _Truth(stack.home / "drill.truth.jsonl")
    run = _load(stack, report, seconds=45)
    workers = sorted(stack.workers("gateway"))
    before = _rejected_counts(config)
    http_cases = [
        *_http_cases(config, dev),
        dataclasses.replace(
            _all_or_nothing(range(1_000, 1_005)),
            headers={
                "Content-Type": "application/json",
                "Authorization": dev["storm-http"].token(),
            },
        ),
    ]
    frame_cases = _frame_cases(dev)
    rounds, frame_rounds, threads = 20, 10, 4
    started = time.monotonic()
    mismatches = _http_storm(config, http_cases, rounds=rounds, threads=threads)
    http_s = time.monotonic() - started
    mismatches += _frame_storm(config, frame_cases, rounds=frame_rounds)
    n_http, n_frames = rounds * len(http_cases), frame_rounds * len(frame_cases)
    report.step(
        f"sent {n_http:,} bad HTTP requests ({len(http_cases)} kinds x {rounds}, {threads} "
        f"clients at once, {n_http / http_s:,.0f}/s) and {n_frames:,} bad legacy frames "
        f"({len(frame_cases)} kinds x {frame_rounds}, FBK1, BIN1 and an unknown protocol)"
    )
    report.check(
        "every bad request and frame got its precise problem+json / ERR answer "
        f"({len(mismatches)} wrong"
        + (f": {'; '.join(sorted(set(mismatches))[:5])})" if mismatches else ")"),
        not mismatches,
    )
    status_line = _not_http(config)
    report.check(
        f"bytes that are not HTTP at all get {status_line.decode(errors='replace')!r} from the "
        "HTTP parser (plain text, before the application: not counted in /metrics)",
        status_line.startswith(b"HTTP/1.") and b" 400 " in status_line,
    )
    expected: Counter[_RejectKey] = Counter()
    for case in http_cases:
        expected[("http", str(case.status), case.reason)] += rounds
    for frame_case in frame_cases:
        for key, count in frame_case.expected().items():
            expected[key] += count * frame_rounds
    grew = _grew(before, _rejected_counts(config))
    wrong = {k: (grew[k], expected[k]) for k in set(grew) | set(expected) if grew[k] != expected[k]}
    report.check(
        f"gateway_rejected_total grew by exactly what was sent, in {len(expected)} "
        f"(channel, status, reason) series, {sum(expected.values()):,} in all"
        + (f"; differ (got, sent): {dict(sorted(wrong.items())[:6])}" if wrong else ""),
        not wrong,
    )
    out_of_range, problems = _passes_gateway(config, dev, truth)
    report.step(
        "sent 4 events with impossible readings (3 HTTP, 1 FBK1) and one event 3 times with "
        "the same seq: the gateway accepts them, the processor must not store them"
    )
    report.check(
        f"the gateway accepted those ({'; '.join(problems) or 'all 202 / OK'})", not problems
    )
    health = httpx.get(f"{_base_url(config)}/healthz", timeout=10)
    report.check(
        f"the gateway stayed healthy: /healthz {health.status_code}, workers "
        f"{sorted(stack.workers('gateway'))} (before the storm {workers})",
        health.status_code == 200 and sorted(stack.workers("gateway")) == workers,
    )
    _finish(stack, report, run, own_truth=truth.write(), own_accepted=len(truth.accepted))
    _check_dead_letters(stack, report, dev, out_of_range)


def _check_dead_letters(
    stack: ScratchStack,
    report: DrillReport,
    dev: dict[str, _Device],
    out_of_range: dict[tuple[str, int], str],
) -> None:
    ids = [d.device_id for d in dev.values()]
    keys = ["device_id", "seq"]
    deadline = time.monotonic() + 60
    while True:  # the rejected rows are committed before their batch's telemetry rows
        rejected = _table(stack, "telemetry_rejected", [*keys, "reason"]).filter(
            pl.col("device_id").is_in(ids)
        )
        if len(rejected) >= len(out_of_range) + 2 or time.monotonic() > deadline:
            break
        time.sleep(1)
    stored = _table(stack, "telemetry", keys).filter(pl.col("device_id").is_in(ids))
    got = {
        (r["device_id"], r["seq"]): r["reason"]
        for r in rejected.filter(pl.col("reason") != "duplicate").iter_rows(named=True)
    }
    report.check(
        f"impossible readings are in telemetry_rejected with their reason ({len(got)} of "
        f"{len(out_of_range)}: {sorted(set(got.values()))})",
        got == out_of_range,
    )
    dups = rejected.filter(pl.col("reason") == "duplicate")
    report.check(
        f"the event sent 3 times is stored once and dead-lettered twice as duplicate "
        f"(telemetry {stored.filter(pl.col('seq') == 200).height}, duplicate {dups.height})",
        stored.filter(pl.col("seq") == 200).height == 1
        and dups.select(keys).rows() == [("storm-http", 200)] * 2,
    )
    report.check(
        f"nothing else of the drill's devices reached telemetry (rows {stored.rows()}), "
        "not even the good events of the refused batch",
        stored.rows() == [("storm-http", 200)],
    )


# --- clock-skew ---------------------------------------------------------------------------

_ON_TIME_C, _LATE_C, _AHEAD_C = 20.0, 35.0, 25.0  # each clock's temperature, told apart


@dataclasses.dataclass
class _Skewed:
    """One drill device with a clock off by ``skew``, and what it was told."""

    device: _Device
    skew: dt.timedelta
    temperature: float
    answers: Counter[str] = dataclasses.field(default_factory=Counter)
    sent: list[int] = dataclasses.field(default_factory=list)

    @property
    def device_id(self) -> str:
        return self.device.device_id


def _send_skewed(
    config: Config, devices: list[_Skewed], truth: _Truth, *, seconds: float
) -> list[str]:
    """Every device sends one event a second for ``seconds``, stamped by its own clock
    (HTTP devices over HTTP, FBK1 devices over the legacy port); what did not answer."""
    from ingest_service.translators import fbk1

    errors: list[str] = []
    legacy = {
        d.device_id: socket.create_connection((config.host, config.legacy_port), timeout=10)
        for d in devices
        if d.device.protocol == "fbk1"
    }
    answers = {device_id: sock.makefile("rb") for device_id, sock in legacy.items()}
    try:
        with httpx.Client(base_url=_base_url(config), timeout=30) as client:
            end = time.monotonic() + seconds
            seq = 0
            while time.monotonic() < end:
                tick = time.monotonic()
                seq += 1
                for d in devices:
                    ts = dt.datetime.now(dt.UTC) + d.skew
                    if d.device.protocol == "http":
                        response = client.post(
                            "/v1/telemetry",
                            headers={"Authorization": d.device.token()},
                            json=_event(seq, ts=ts, temperature=d.temperature),
                        )
                        outcome = _outcome(response)
                        if response.status_code == 422:
                            fields = [e.get("field") for e in response.json().get("errors", [])]
                            outcome += f" {'/'.join(fields)}"
                    else:
                        sock = legacy[d.device_id]
                        sock.sendall(
                            fbk1.encode_frame(
                                d.device_id,
                                d.device.key_bytes,
                                int(ts.timestamp() * 1000),
                                seq,
                                temperature=d.temperature,
                            )
                        )
                        line = answers[d.device_id].readline().decode().strip()
                        # as the simulator logs legacy answers: ERR 422 invalid -> rejected-422 …
                        outcome = (
                            "accepted"
                            if line == f"OK {seq}"
                            else "rejected-" + " ".join(line.split(" ")[1:3])
                        )
                    d.answers[outcome] += 1
                    d.sent.append(seq)
                    truth.add(d.device_id, seq, outcome)
                time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    except (httpx.HTTPError, OSError) as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        for reader in answers.values():
            reader.close()
        for sock in legacy.values():
            sock.close()
    return errors


def _heartbeat(config: Config) -> dict[str, Any]:
    from ingest_service.processor.main import heartbeat_path

    try:
        beat: dict[str, Any] = json.loads(heartbeat_path(config).read_text())
        return beat
    except (OSError, ValueError):
        return {}


@drill(
    "clock-skew",
    "devices whose clocks run hours or days behind, or hours ahead, beside devices whose "
    "clocks are right",
)
def _clock_skew(stack: ScratchStack, report: DrillReport) -> None:
    config = stack.config
    ahead_limit = dt.timedelta(seconds=config.gateway_max_future_s)
    specs = {  # device -> (protocol, skew, temperature)
        "skew-ontime": ("http", dt.timedelta(0), _ON_TIME_C),
        "skew-behind-2h": ("http", -dt.timedelta(hours=2), _LATE_C),
        "skew-behind-3d": ("http", -dt.timedelta(days=3), _LATE_C),
        "skew-fbk1-behind-6h": ("fbk1", -dt.timedelta(hours=6), _LATE_C),
        "skew-ahead-2h": ("http", ahead_limit + dt.timedelta(hours=1), _AHEAD_C),
        "skew-fbk1-ahead-2h": ("fbk1", ahead_limit + dt.timedelta(hours=1), _AHEAD_C),
    }
    provisioned = _provision(stack, "b-drill-skew", {k: v[0] for k, v in specs.items()})
    fast = _provision(stack, "b-drill-fast", {"skew-ahead-5m": "http"})["skew-ahead-5m"]
    devices = [_Skewed(provisioned[k], skew, c) for k, (_, skew, c) in specs.items()]
    devices.append(_Skewed(fast, dt.timedelta(minutes=5), _AHEAD_C))
    report.step(
        "provisioned drill devices in b-drill-skew whose clocks are right, 2 h, 6 h (FBK1) and "
        f"3 days behind, and {ahead_limit + dt.timedelta(hours=1)} ahead (HTTP and FBK1; "
        f"WORKBENCH_GATEWAY_MAX_FUTURE is {config.gateway_max_future_s:.0f} s), and one in "
        "b-drill-fast 5 min ahead"
    )
    truth = _Truth(stack.home / "drill.truth.jsonl")
    run = _load(stack, report, seconds=45)
    before_rejected = _rejected_counts(config)
    late_before = int(_heartbeat(config).get("late", 0))
    started = dt.datetime.now(dt.UTC)
    errors = _send_skewed(config, devices, truth, seconds=25)
    by_id = {d.device_id: d for d in devices}
    report.step(
        "each drill device sent one event a second for 25 s, stamped by its own clock: "
        + "; ".join(f"{d.device_id} {dict(d.answers)}" for d in devices)
    )
    report.check(f"every request was answered ({'; '.join(errors) or 'yes'})", not errors)
    ahead = [by_id["skew-ahead-2h"], by_id["skew-fbk1-ahead-2h"]]
    report.check(
        "events beyond WORKBENCH_GATEWAY_MAX_FUTURE are refused: 422 invalid on ts over "
        "HTTP, ERR 422 invalid over FBK1",
        set(ahead[0].answers) == {"rejected-422 invalid ts"}
        and set(ahead[1].answers) == {"rejected-422 invalid"},
    )
    grew = _grew(before_rejected, _rejected_counts(config))
    refused = {
        ("http", "422", "invalid"): ahead[0].answers.total(),
        ("fbk1", "422", "invalid"): ahead[1].answers.total(),
    }
    report.check(
        f"gateway_rejected_total counted exactly those refusals ({dict(grew)})", grew == refused
    )
    accepted = [d for d in devices if d not in ahead]
    report.check(
        "every event of the clocks behind, right, or 5 min ahead was accepted",
        all(set(d.answers) == {"accepted"} for d in accepted),
    )
    _finish(stack, report, run, own_truth=truth.write(), own_accepted=len(truth.accepted))
    _check_where_skewed_land(stack, report, by_id, late_before, started)


def _check_where_skewed_land(
    stack: ScratchStack,
    report: DrillReport,
    by_id: dict[str, _Skewed],
    late_before: int,
    started: dt.datetime,
) -> None:
    config = stack.config
    behind = [d for d in by_id.values() if d.skew < -dt.timedelta(hours=1)]
    rows = _table(stack, "telemetry", ["device_id", "seq", "ts", "late", "event_date"])
    late = rows.filter(pl.col("late"))
    mine = late.filter(pl.col("device_id").is_in([d.device_id for d in behind]))
    expected_late = sum(len(d.sent) for d in behind)
    report.check(
        f"events hours or days late are stored, flagged late, never dropped ({mine.height} of "
        f"{expected_late}; by device {dict(Counter(mine['device_id'].to_list()))})",
        mine.height == expected_late,
    )
    three_days = by_id["skew-behind-3d"]
    dates = rows.filter(pl.col("device_id") == three_days.device_id)["event_date"].unique()
    want = (dt.datetime.now(dt.UTC) + three_days.skew).date()
    report.check(
        f"the 3-days-late events are in their own event_date partition "
        f"({', '.join(str(d) for d in dates.to_list())})",
        set(dates.to_list()) <= {want, want - dt.timedelta(days=1)},
    )
    others = late.filter(~pl.col("device_id").is_in([d.device_id for d in behind]))
    report.check(
        f"no event of a device with a right (or slightly fast) clock was counted late "
        f"({others.height}: {dict(Counter(others['device_id'].to_list()).most_common(3))})",
        others.height == 0,
    )
    beat = int(_heartbeat(config).get("late", 0)) - late_before
    report.check(
        f"the processor heartbeat's late counter grew by the late rows in telemetry "
        f"({beat} vs {late.height})",
        beat == late.height,
    )
    _check_state(stack, report, by_id, started)


def _check_state(
    stack: ScratchStack, report: DrillReport, by_id: dict[str, _Skewed], started: dt.datetime
) -> None:
    metrics = _table(
        stack, "building_metrics_1m", ["building_id", "window_start", "readings", "temperature_max"]
    ).filter(pl.col("building_id") == "b-drill-skew")
    old = metrics.filter(pl.col("window_start") < pl.lit(started - dt.timedelta(minutes=2)))
    hottest = metrics.select(pl.col("temperature_max").max()).item()
    report.check(
        f"late events updated no closed minute of b-drill-skew in building_metrics_1m "
        f"({old.height} old windows; temperature max {hottest} °C, the late clocks sent "
        f"{_LATE_C} °C)",
        old.height == 0 and hottest == _ON_TIME_C,
    )
    state = _table(
        stack,
        "building_state",
        ["building_id", "temperature_avg_5m", "readings_5m", "last_event_ts"],
    )
    skew = state.filter(pl.col("building_id") == "b-drill-skew").to_dicts()
    on_time = len(by_id["skew-ontime"].sent)
    row = skew[0] if skew else {}
    age = (dt.datetime.now(dt.UTC) - row["last_event_ts"]).total_seconds() if row else None
    report.check(
        f"b-drill-skew's rolling 5-minute view follows the device whose clock is right: "
        f"{row.get('readings_5m')} readings (it sent {on_time}), average "
        f"{row.get('temperature_avg_5m')} °C (its {_ON_TIME_C}), last event "
        f"{age if age is None else round(age)} s ago",
        bool(row)
        and row["readings_5m"] == on_time
        and row["temperature_avg_5m"] == _ON_TIME_C
        and age is not None
        and age < 120,
    )
    fast = state.filter(pl.col("building_id") == "b-drill-fast").to_dicts()
    if fast:
        ahead_s = (fast[0]["last_event_ts"] - dt.datetime.now(dt.UTC)).total_seconds()
        report.step(
            f"b-drill-fast (one device 5 min fast): its rolling view ends at that device's "
            f"clock, {ahead_s:.0f} s ahead of now (the view follows event time)"
        )
    fleet = state.filter(~pl.col("building_id").str.starts_with("b-drill"))
    stale = fleet.filter(
        pl.col("last_event_ts") < pl.lit(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2))
    )
    report.check(
        f"every simulated building's view is current ({fleet.height - stale.height} of "
        f"{fleet.height} buildings with an event in the last 2 minutes)",
        fleet.height > 0 and stale.height == 0,
    )


# --- disk-full ----------------------------------------------------------------------------

_LAKE_FS_MIB = 32  # the lake's own file system: ample for the drill's lake, quick to fill
_FULL_S = 40.0  # longer than the 30 s after which `workbench status` flags a silent processor


class _LakeFs:
    """A tmpfs of its own, mounted by the drill (root, or CAP_SYS_ADMIN) for the lake."""

    def __init__(self, where: Path) -> None:
        self.path = where
        self.filler = where / "drill-filler.bin"
        self.mounted = True

    @classmethod
    def mount(cls, size_mib: int) -> tuple[_LakeFs | None, str]:
        """A fresh tmpfs, or None and why not."""
        path = Path(tempfile.mkdtemp(prefix="workbench-drill-lakefs-"))
        if shutil.which("mount") is None:
            path.rmdir()
            return None, "no mount command"
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0700", "tmpfs", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            path.rmdir()
            why = result.stderr.strip() or f"mount exited with {result.returncode}"
            return None, why.splitlines()[-1]
        return cls(path), ""

    def fill(self) -> int:
        """Write zeros until the file system is full (ENOSPC); the bytes written."""
        written = 0
        with self.filler.open("wb", buffering=0) as f:
            for chunk in (1 << 20, 1 << 12):  # MiB by MiB, then the last pages
                block = bytes(chunk)
                while True:
                    try:
                        written += f.write(block) or 0
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
        return written

    @property
    def free(self) -> int:
        return shutil.disk_usage(self.path).free

    @property
    def total(self) -> int:
        return shutil.disk_usage(self.path).total

    def release(self) -> None:
        """Delete the filler: the space comes back."""
        self.filler.unlink(missing_ok=True)

    def close(self) -> None:
        """Delete the filler, unmount and remove the mount point."""
        self.release()
        if self.mounted:
            subprocess.run(["umount", str(self.path)], capture_output=True, check=False)
            self.mounted = False
            with contextlib.suppress(OSError):
                self.path.rmdir()


def _move_lake(stack: ScratchStack, lake: Path) -> None:
    """Point the scratch stack at another (empty) lake and restart its data path.

    The broker restarts too, hence a fresh consumer group: the embedded broker wedges a
    group for good when a member leaves while another joins, which stopping the
    processor :func:`~workbench.ops.drills.run_drill` just started (maybe still joining)
    would do.
    """
    stack.env["WORKBENCH_LAKE"] = str(lake)
    stack.config = Config.from_env(stack.env)
    stack.restart(["broker", "gateway", "processor"])


@dataclasses.dataclass
class _Sample:
    """The pipeline, seen once a second while the disk is full."""

    at: float
    stored: int
    accepted: int
    lag: int | None
    members: list[int]
    unhealthy: str | None  # why `workbench status` calls the processor unhealthy


def _observe(stack: ScratchStack, seconds: float) -> list[_Sample]:
    from workbench.exceptions import LagUnavailable
    from workbench.kafka import consumer_lag

    samples = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        tick = time.monotonic()
        try:
            lag: int | None = consumer_lag(stack.config, timeout_s=2).total
        except LagUnavailable:
            lag = None
        samples.append(
            _Sample(
                at=tick,
                stored=stack.stored().height,
                accepted=_accepted_total(stack.config),
                lag=lag,
                members=stack.workers("processor"),
                unhealthy=stack.healthy().get("processor"),
            )
        )
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    return samples


def _log_size(stack: ScratchStack, component: str) -> int:
    from workbench.stack.supervisor import log_path

    return log_path(stack.config, component).stat().st_size


def _log_since(stack: ScratchStack, component: str, offset: int) -> str:
    from workbench.stack.supervisor import log_path

    with log_path(stack.config, component).open("rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", "replace")


@drill("disk-full", "the lake's file system fills up while devices send, then space comes back")
def _disk_full(stack: ScratchStack, report: DrillReport) -> None:
    from workbench.stack import supervisor

    fs, why = _LakeFs.mount(_LAKE_FS_MIB)
    if fs is None:
        # Filling the file system the scratch home is on instead would also stop the
        # drill's own truth logs and the services' run state (tried: the simulator dies
        # first), and RLIMIT_FSIZE limits file sizes, not space: neither is this drill.
        report.check(
            f"a {_LAKE_FS_MIB} MiB tmpfs could be mounted for the lake ({why}; 'mount -t "
            "tmpfs' needs root or CAP_SYS_ADMIN)",
            False,
        )
        return
    try:
        _move_lake(stack, fs.path / "lake")
        report.step(
            f"mounted a {_LAKE_FS_MIB} MiB tmpfs at {fs.path} and restarted broker, gateway "
            f"and processor with WORKBENCH_LAKE={fs.path / 'lake'} (logs, run state and the "
            "in-memory broker stay on the home's file system; --keep does not keep this lake)"
        )
        _fill_and_free(stack, report, fs)
    finally:
        supervisor.down(stack.config, report=lambda line: None)  # nothing writes to it now
        fs.close()


def _fill_and_free(stack: ScratchStack, report: DrillReport, fs: _LakeFs) -> None:
    run = _load(stack, report, seconds=_FULL_S + 25)
    time.sleep(2)
    log_at = _log_size(stack, "processor")
    members = stack.workers("processor")
    used = fs.total - fs.free
    written = fs.fill()
    report.step(
        f"filled the file system ({used / (1 << 20):.1f} MiB used): wrote "
        f"{written / (1 << 20):.1f} MiB of zeros until ENOSPC, {fs.free:,} bytes free"
    )
    full = _observe(stack, _FULL_S)
    fs.release()
    span = full[-1].at - full[0].at
    report.step(f"deleted the filler after {span:.0f} s: {fs.free / (1 << 20):.1f} MiB free")
    report.step(
        "while full, every 5 s: telemetry rows "
        + ", ".join(f"{s.stored:,}" for s in full[::5])
        + "; consumer lag "
        + ", ".join(f"{s.lag:,}" if s.lag is not None else "?" for s in full[::5])
    )
    log = _log_since(stack, "processor", log_at)
    enospc = log.count("No space left on device")
    replaced = {pid for s in full for pid in s.members} - set(members)
    unhealthy = [s for s in full if s.unhealthy]
    report.check(
        f"while full the processor failed loudly and retried: {enospc} 'No space left on "
        f"device' in its log, its member replaced {len(replaced)} time(s), 'workbench "
        f"status' unhealthy in {len(unhealthy)} of {len(full)} checks"
        + (
            f" from {unhealthy[0].at - full[0].at:.0f} s on ({unhealthy[-1].unhealthy})"
            if unhealthy
            else ""
        ),
        enospc > 0 and bool(replaced) and bool(unhealthy),
    )
    accepted = full[-1].accepted - full[0].accepted
    report.check(
        f"while full the gateway kept accepting: {accepted:,} events in {span:.0f} s",
        accepted > 0,
    )
    lags = [s.lag for s in full if s.lag is not None]
    report.check(
        f"they waited in Kafka: consumer lag {lags[0] if lags else '?'} -> "
        f"{max(lags) if lags else '?'} while full",
        bool(lags) and max(lags) > lags[0],
    )
    back = time.monotonic()
    while stack.stored().height < full[-1].accepted and time.monotonic() - back < 120:
        time.sleep(0.5)
    report.step(
        f"space back: the processor caught up with what was accepted while full in "
        f"{time.monotonic() - back:.0f} s"
    )
    _finish(stack, report, run)
    _check_tables(stack, report)


def _check_tables(stack: ScratchStack, report: DrillReport) -> None:
    """Every table reads whole; files a failed write left behind are only counted."""
    from deltalake import DeltaTable

    from workbench.lake.tables import table_uri

    broken, orphans = [], 0
    names = ("telemetry", "telemetry_rejected", "building_metrics_1m", "building_state")
    for name in names:
        uri = table_uri(stack.config, name)
        try:
            table = DeltaTable(uri)
            table.to_pyarrow_table()
        except Exception as exc:  # any failure to read is what this check is about
            broken.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        referenced = {Path(f.removeprefix("file://")).resolve() for f in table.file_uris()}
        on_disk = {p.resolve() for p in Path(uri).rglob("*.parquet") if "_delta_log" not in p.parts}
        orphans += len(on_disk - referenced)
    report.check(
        "every table reads back whole after the failed writes "
        f"({'; '.join(broken) or ', '.join(names)}; {orphans} data file(s) of failed or "
        "replaced commits left for vacuum)",
        not broken,
    )

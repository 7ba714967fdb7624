"""The bad requests and frames of the ``bad-input-storm`` drill, each with the precise
answer it must get: malformed, mistyped, oversized and forged HTTP requests
(:func:`bad_requests`) and garbage legacy frames (:func:`bad_frames`).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import secrets
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from proving.drills import probes
from workbench.config import Config

# --- bad-input-storm ----------------------------------------------------------------------

__all__ = ["FrameCase", "HttpCase", "all_or_nothing", "bad_frames", "bad_requests"]

_Body = bytes | Callable[[], Iterator[bytes]]  # a callable: sent chunked, no Content-Length


@dataclasses.dataclass(frozen=True)
class HttpCase:
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
        got = f"{response.status_code} {probes.reason(response) or '-'}"
        if response.status_code != self.status or probes.reason(response) != self.reason:
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
class FrameCase:
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

    def expected(self) -> Counter[probes.RejectKey]:
        counts: Counter[probes.RejectKey] = Counter()
        for answer in self.answers:
            _, status, reason = answer.split(" ", 2)
            counts[(self.channel, status, reason)] += 1
        if not self.closes:
            counts[("fbk1", "400", "malformed_frame")] += 1  # the frame checking the sync
        return counts


def bad_requests(config: Config, dev: dict[str, probes.Device]) -> list[HttpCase]:
    """Every kind of bad request the gateway refuses (docs/gateway.md: statuses 400, 401, 403,
    413, 415, 422)."""
    http, fbk1 = dev["storm-http"], dev["storm-fbk1"]
    json_type = {"Content-Type": "application/json"}
    auth = {**json_type, "Authorization": http.token()}
    now = dt.datetime.now(dt.UTC)
    good = probes.event(1)

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
    tiny = {"ts": probes.iso(now), "seq": 1, "readings": {"light": 1}}
    over_batch = doc({"events": [tiny] * (config.gateway_max_batch + 1)})

    def chunked() -> Iterator[bytes]:
        yield b'{"events": ['
        for _ in range(too_big // 65536 + 1):
            yield b" " * 65536
        yield b"]}"

    c = HttpCase
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


def all_or_nothing(seqs: range) -> HttpCase:
    """A batch whose one bad event refuses it whole (its good events must not be stored)."""
    events: list[dict[str, Any]] = [probes.event(s) for s in seqs]
    events[len(events) // 2]["readings"] = {"temperature": "warm"}
    return HttpCase(
        "batch with one bad event",
        422,
        "invalid",
        json.dumps({"events": events}).encode(),
        {},  # set per sender: the device's token
        "readings.temperature",
    )


def bad_frames(dev: dict[str, probes.Device]) -> list[FrameCase]:
    """Garbage and forged frames for the legacy adapter (FBK1, BIN1, unknown protocols)."""
    from ingest_service.translators import bin1, fbk1

    http, legacy = dev["storm-http"], dev["storm-fbk1"]
    now_ms = int(time.time() * 1000)
    rogue = secrets.token_bytes(32)
    signed = fbk1.encode_frame(legacy.device_id, legacy.key_bytes, now_ms, 1, temperature=21.5)
    unsigned = signed.rsplit(b"|", 1)[0]
    f = FrameCase
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

"""The HTTP side of the gateway: ``POST /v1/telemetry``, ``/healthz``, ``/metrics``,
``/openapi.json``.

A batch is all-or-nothing: every event is validated before any is produced
and the answer is 202 only once the broker acknowledged all of them. If the
broker fails part-way the answer is 503 and some events may have been
stored; the device retries the whole batch and the processor drops the
duplicates by ``(device_id, seq)``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from typing import Any

import orjson
from aiohttp import web

from ingest_service.gateway.core import Gateway
from ingest_service.gateway.openapi import OPENAPI
from ingest_service.gateway.validation import Problem, validate_event

__all__ = ["GATEWAY_KEY", "make_app"]

GATEWAY_KEY: web.AppKey[Gateway] = web.AppKey("gateway", Gateway)
_JSON_TYPES = ("application/json",)


def _problem_response(problem: Problem) -> web.Response:
    headers = {}
    if problem.retry_after is not None:
        headers["Retry-After"] = str(problem.retry_after)
    return web.Response(
        status=problem.status,
        body=orjson.dumps(problem.body()),
        content_type="application/problem+json",
        headers=headers,
    )


def _parse_constant(name: str) -> float:
    return float(name)  # NaN/Infinity parse, then fail validation as non-finite (422)


def _loads(body: bytes) -> Any:
    """orjson for the common case; the standard library for what orjson refuses but the
    API answers precisely (NaN/Infinity and integers beyond 64 bits are 422, not 400)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body, parse_constant=_parse_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise Problem(400, "malformed", "the body is not valid JSON") from None


async def _telemetry(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY_KEY]
    started = time.perf_counter()
    try:
        accepted = await _accept(gw, request)
    except Problem as problem:
        gw.reject("http", problem)
        response = _problem_response(problem)
    else:
        gw.metrics.accepted.labels("http").inc(accepted)
        response = web.Response(
            status=202, body=b'{"accepted":%d}' % accepted, content_type="application/json"
        )
    gw.metrics.latency.labels("http").observe(time.perf_counter() - started)
    return response


async def _accept(gw: Gateway, request: web.Request) -> int:
    config = gw.config
    now = time.time()
    entry = gw.authenticate(request.headers.get("Authorization"), now=now)
    if request.content_type not in _JSON_TYPES:
        raise Problem(415, "unsupported_media_type", "send Content-Type: application/json")
    limit = config.gateway_max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise Problem(413, "too_large", f"the body is larger than {limit} bytes")
    try:
        # the whole body, however it is split into segments (read(n) would return a part)
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise Problem(413, "too_large", f"the body is larger than {limit} bytes") from None
    if len(body) > limit:
        raise Problem(413, "too_large", f"the body is larger than {limit} bytes")
    doc = _loads(body)
    if isinstance(doc, dict) and "events" in doc:
        if set(doc) != {"events"} or not isinstance(doc["events"], list):
            raise Problem(400, "malformed", 'a batch is {"events": [ ... ]} and nothing else')
        events: list[Any] = doc["events"]
        if not events:
            raise Problem(400, "malformed", "the batch holds no events")
        if len(events) > config.gateway_max_batch:
            raise Problem(
                413, "too_large", f"a batch holds at most {config.gateway_max_batch} events"
            )
    elif isinstance(doc, dict):
        events = [doc]
    else:
        raise Problem(400, "malformed", 'the body must be an event object or {"events": [...]}')
    received = dt.datetime.fromtimestamp(now, tz=dt.UTC)
    valid = []
    errors: list[dict[str, Any]] = []
    for index, event in enumerate(events):
        if isinstance(event, dict):
            claimed = event.get("device_id")
            if claimed is not None and claimed != entry.device_id:
                raise Problem(
                    403,
                    "device_mismatch",
                    f"event {index} names device {claimed!r}, the token is {entry.device_id!r}",
                )
        try:
            valid.append(
                validate_event(event, now=received, max_future_s=config.gateway_max_future_s)
            )
        except Problem as problem:
            if problem.status != 422:
                raise Problem(
                    problem.status, problem.reason, f"event {index}: {problem.detail}"
                ) from None
            errors.extend({"index": index, **e} for e in problem.errors or [])
    if errors:
        first = errors[0]
        raise Problem(
            422,
            "invalid",
            f"{len(errors)} invalid event(s), nothing was accepted; first: event "
            f"{first['index']}: {first['field']}: {first['detail']}",
            errors=errors[:100],
        )
    records = gw.records(entry, valid, received)
    await gw.producer.send_all(records)
    return len(records)


async def _healthz(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY_KEY]
    loaded = gw.devices.loaded.is_set()
    body = {
        "status": "ok" if loaded else "starting",
        "registry_version": gw.devices.version,
        "devices": len(gw.devices),
        "broker": "ok" if gw.producer.healthy else "unavailable",
        "inflight": gw.producer.inflight,
        "pid": os.getpid(),
    }
    if gw.worker is not None:  # one of several workers: also what all of them serve
        body["worker"] = gw.worker
        body["workers"] = gw.config.gateway_workers
        body["registry_version_all"] = gw.metrics.served_registry_version()
    return web.json_response(body, status=200 if loaded else 503)


async def _metrics(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY_KEY]
    gw.registry_changed()
    body = gw.metrics.render() + await gw.pipeline.render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


async def _close_pipeline(app: web.Application) -> None:
    await app[GATEWAY_KEY].pipeline.aclose()


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(OPENAPI)


@web.middleware
async def _around(request: web.Request, handler: Any) -> web.StreamResponse:
    """One middleware (each layer costs on every request):

    * every error, routing ones included, as problem+json;
    * count the requests being handled (the drain waits for them) and, while draining,
      close each connection after its answer so keep-alive clients move to another worker.
    """
    gw = request.app[GATEWAY_KEY]
    gw.http_inflight += 1
    try:
        response: web.StreamResponse = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
            exc.status, "malformed"
        )
        problem = Problem(exc.status, reason, exc.reason)
        gw.reject("http", problem)
        response = _problem_response(problem)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
    finally:
        gw.http_inflight -= 1
    if gw.draining:
        response.force_close()
    return response


def make_app(gateway: Gateway) -> web.Application:
    """The aiohttp application."""
    app = web.Application(
        middlewares=[_around],
        client_max_size=gateway.config.gateway_max_body_bytes + 1,
    )
    app[GATEWAY_KEY] = gateway
    app.router.add_post("/v1/telemetry", _telemetry)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/openapi.json", _openapi)
    app.on_cleanup.append(_close_pipeline)  # the lag reader's Kafka clients
    return app

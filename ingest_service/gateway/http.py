"""The HTTP side of the gateway: ``POST /v1/telemetry``, ``/healthz``, ``/metrics``,
``/openapi.json``.

A batch is all-or-nothing: every event is validated before any is produced
and the answer is 202 only once the broker acknowledged all of them. If the
broker fails part-way the answer is 503 and some events may have been
stored; the device retries the whole batch and the processor drops the
duplicates by ``(device_id, seq)``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import time
from typing import Any

import orjson
from aiohttp import web

from ingest_service.gateway.core import Gateway
from ingest_service.gateway.openapi import OPENAPI
from ingest_service.gateway.validation import Problem, validate_body
from workbench.registry.records import DeviceEntry

__all__ = ["GATEWAY_KEY", "make_app", "problem_response"]

logger = logging.getLogger(__name__)

GATEWAY_KEY: web.AppKey[Gateway] = web.AppKey("gateway", Gateway)
_JSON_TYPES = ("application/json",)


def problem_response(problem: Problem) -> web.Response:
    """``problem`` as an ``application/problem+json`` response."""
    headers = {}
    if problem.retry_after is not None:
        headers["Retry-After"] = str(problem.retry_after)
    return web.Response(
        status=problem.status,
        body=orjson.dumps(problem.body()),
        content_type="application/problem+json",
        headers=headers,
    )


async def _telemetry(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY_KEY]
    started = time.perf_counter()
    sender: list[DeviceEntry] = []  # the authenticated device, once known
    try:
        accepted = await _accept(gw, request, sender)
    except Problem as problem:
        gw.reject("http", problem, sender[0] if sender else None)
        response = problem_response(problem)
        if problem.status == 408:  # the rest of the body may still come: out of step
            response.force_close()
    else:
        gw.metrics.accepted.labels("http").inc(accepted)
        response = web.Response(
            status=202, body=b'{"accepted":%d}' % accepted, content_type="application/json"
        )
    gw.metrics.latency.labels("http").observe(time.perf_counter() - started)
    return response


async def _accept(gw: Gateway, request: web.Request, sender: list[DeviceEntry]) -> int:
    config = gw.config
    now = time.time()
    entry = await gw.authenticate(request.headers.get("Authorization"), now=now)
    sender.append(entry)
    if request.content_type not in _JSON_TYPES:
        raise Problem(415, "unsupported_media_type", "send Content-Type: application/json")
    limit = config.gateway_max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise Problem(413, "too_large", f"the body is larger than {limit} bytes")
    timeout = config.gateway_read_timeout
    try:
        # the whole body, however it is split into segments (read(n) would return a part);
        # a client that stalls half-way must not hold the connection (and its slot) forever
        async with asyncio.timeout(timeout):
            body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise Problem(413, "too_large", f"the body is larger than {limit} bytes") from None
    except TimeoutError:
        raise Problem(
            408,
            "read_timeout",
            f"the body did not arrive within {timeout:g} s (WORKBENCH_GATEWAY_READ_TIMEOUT)",
        ) from None
    if len(body) > limit:
        raise Problem(413, "too_large", f"the body is larger than {limit} bytes")
    received = dt.datetime.fromtimestamp(now, tz=dt.UTC)
    valid = validate_body(
        body,
        device_id=entry.device_id,
        now=received,
        max_future_s=config.gateway_max_future_s,
        max_batch=config.gateway_max_batch,
    )
    records = gw.records(entry, valid, received, protocol="http")
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

    * every error, routing ones and the gateway's own failures included, as problem+json;
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
        response = problem_response(problem)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
    except Exception:  # a bug: still a counted problem+json, never aiohttp's text page
        logger.exception("%s %s failed", request.method, request.path)
        problem = Problem(500, "internal_error", "the gateway failed; see its log")
        gw.reject("http", problem)
        response = problem_response(problem)
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

"""The registry's store goes away under a running gateway: the doors keep serving the last
known registry, say so (``/metrics``, ``workbench status``, a waiting command's error), and
apply what was committed meanwhile as soon as the store is back.

The outage is the lake's folder moved away under the gateway (what an unmounted volume
looks like), while an operator elsewhere still reaches the store (the same folder under
its new name) and commits: real processes, real sockets, real Delta, the real broker.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import re
from pathlib import Path

import pytest

from tests.ingest_service.gateway.conftest import (
    LiveGateway,
    live_gateway,
    post_event,
    wait_until,
)
from workbench.config import Config
from workbench.exceptions import RegistryNotApplied
from workbench.registry import Registry, sas_token
from workbench.stack.components import registered
from workbench.tenancy.principal import Principal

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _post(gw: LiveGateway, token: str) -> tuple[int, str]:
    """One event over a new connection: (status, reason)."""
    conn = http.client.HTTPConnection(gw.config.host, gw.config.gateway_port, timeout=10)
    try:
        body = json.dumps({"ts": "2026-12-06T09:00:00Z", "seq": 1, "readings": {"light": 1}})
        return post_event(conn, token, body)
    finally:
        conn.close()


def _metric(gw: LiveGateway, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", gw.metrics(), re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def _status_line(config: Config) -> str:
    (gateway,) = [c for c in registered() if c.name == "gateway"]
    assert gateway.describe is not None
    return str(gateway.describe(config))


def test_doors_serve_the_last_registry_while_its_store_is_down(kafka_config: Config):
    with live_gateway(kafka_config, WORKBENCH_GATEWAY_WORKERS="2") as gw:
        gw.provision("dev-2")
        gw.wait_for_registry()
        assert _post(gw, gw.token("dev-1")) == (202, "")
        assert _metric(gw, "gateway_registry_stale_seconds") == 0
        assert "registry" not in _status_line(gw.config)

        lake = Path(gw.config.lake)
        away = lake.with_name("lake-elsewhere")
        lake.rename(away)  # the gateway's store is gone
        try:
            # the operator still reaches the store; a revocation waits for the workers
            operator = Registry(
                dataclasses.replace(gw.config, lake=str(away), registry_apply_timeout=2.0),
                principal=Principal.system("test"),
            )
            wait_until(lambda: _metric(gw, "gateway_registry_read_errors_total") >= 2, 10)
            wait_until(lambda: _metric(gw, "gateway_registry_stale_seconds") > 0, 10)
            # each worker reports itself at its own next poll (one worker's two failed
            # reads satisfy the counter above: a loaded CI run saw "1 of 2" here)
            wait_until(
                lambda: "2 of 2 workers cannot read the registry since" in _status_line(gw.config),
                20,
            )
            line = _status_line(gw.config)
            assert "_delta_log folder is gone" in line, line

            # the last known registry still admits its devices, at every request
            for _ in range(6):
                assert _post(gw, gw.token("dev-1")) == (202, "")
            # a device the view does not know cannot be confirmed: retry, never a 403
            new_key = operator.provision("dev-new", building="b-1", device_type="smoke").key
            assert _post(gw, sas_token("dev-new", new_key)) == (503, "registry_unavailable")
            # a revocation is committed but not in force: the command says so, and why
            with pytest.raises(RegistryNotApplied) as refused:
                operator.disable("dev-2")
            assert "cannot read the registry since" in str(refused.value), refused.value
            assert _post(gw, gw.token("dev-2")) == (202, "")  # the last view, as documented
        finally:
            away.rename(lake)  # the store is back

        # what was committed meanwhile is applied at the next poll, by feed
        wait_until(lambda: _post(gw, gw.token("dev-2", ttl_s=601)) == (403, "disabled"), 10)
        gw.wait_for_registry()
        for n in range(6):  # every worker, whichever takes the connection
            assert _post(gw, gw.token("dev-2", ttl_s=602 + n)) == (403, "disabled")
            assert _post(gw, sas_token("dev-new", new_key, ttl_s=602 + n)) == (202, "")
        wait_until(lambda: _metric(gw, "gateway_registry_stale_seconds") == 0, 10)
        assert "registry" not in _status_line(gw.config)
        assert "gateway_registry_resyncs_total 0.0" in gw.metrics()
        log = (gw.config.home / "gateway.log").read_text()
        assert "registry readable again after" in log

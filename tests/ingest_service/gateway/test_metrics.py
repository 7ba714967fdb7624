"""The workers' summed metrics while a sibling worker is still creating its files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ingest_service.gateway.metrics import GatewayMetrics

# One worker's metrics, written in multiprocess mode (chosen when prometheus-client is
# imported, so in a process of its own): it serves registry version 7.
WORKER = """
from pathlib import Path
from ingest_service.gateway.metrics import GatewayMetrics
metrics = GatewayMetrics(multiprocess_dir=Path({folder!r}))
metrics.registry_version.set(7)
metrics.accepted.labels("http").inc(3)
"""


def test_a_sibling_workers_file_not_yet_sized_does_not_break_health_or_metrics(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "metrics"
    folder.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    subprocess.run([sys.executable, "-c", WORKER.format(folder=str(folder))], env=env, check=True)
    # what a starting worker's file is between its creation and its sizing
    (folder / f"gauge_livemin_{os.getpid() + 100000}.db").touch()

    metrics = GatewayMetrics(multiprocess_dir=folder)
    assert metrics.served_registry_version() == 7
    text = metrics.render().decode()
    assert 'gateway_events_accepted_total{channel="http"} 3.0' in text

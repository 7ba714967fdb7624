"""Fixtures of the simulator tests: a real gateway on free ports over the session broker."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from proving.processes import stop_process
from tests.conftest import isolated_env
from workbench.config import Config
from workbench.kafka import external_env


@contextlib.contextmanager
def gateway_process(env: dict[str, str], log_path: Path) -> Iterator[Config]:
    """Run ``python -m ingest_service gateway`` with ``env`` until the block ends."""
    config = Config.from_env(env)
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ingest_service", "gateway"], env=env, stdout=log, stderr=log
        )
        try:
            url = f"http://{config.host}:{config.gateway_port}/healthz"
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(url, timeout=1):
                        break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            "gateway did not start: " + log_path.read_text()
                        ) from None
                    time.sleep(0.2)
            yield config
        finally:
            stop_process(proc, timeout_s=15)


def gateway_env(home: Path, kafka: Config, **overrides: str) -> dict[str, str]:
    """An isolated environment whose gateway produces to ``kafka``'s broker and topic."""
    return isolated_env(
        home,
        **external_env(kafka),
        WORKBENCH_TOPIC=kafka.topic,
        WORKBENCH_REGISTRY_POLL="0.3",
        WORKBENCH_LOG_LEVEL="WARNING",
        **overrides,
    )


@pytest.fixture
def gateway_config(kafka_config: Config, tmp_path: Path) -> Iterator[Config]:
    """A real gateway for this test (own home, lake and topic)."""
    env = gateway_env(tmp_path / "gw-home", kafka_config)
    with gateway_process(env, tmp_path / "gateway.log") as config:
        yield config

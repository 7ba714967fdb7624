"""``workbench bench store-cost`` through the real command, small: the stack's requests to
a real S3 server (moto) pass the counter, and what it counted matches the bucket."""

from __future__ import annotations

import pytest

from tests.conftest import isolated_env
from tests.proving.bench.support import run_bench

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_counter_sees_every_object_the_stack_writes(tmp_path):
    env = isolated_env(tmp_path / "home")
    done, figures = run_bench(
        env, "store-cost", "--rate", "20", "--interval", "1", "--seconds", "14",
        "--warmup", "3", timeout=400,
    )  # fmt: skip
    telemetry = figures["telemetry"]
    assert figures["events"] > 0 and figures["telemetry_rows"] >= figures["events"]
    assert telemetry["data_objects"] > 0 and telemetry["log_objects"] > 0
    # every object of the table went in through the counter, one PUT each (no file is
    # big enough here for a multipart upload, and nothing was vacuumed yet)
    whole = figures["requests_whole_run"]
    assert whole["PUT telemetry"] >= telemetry["data_objects"] + telemetry["log_objects"]
    # the processor commits telemetry in the window, and lists its log to do so
    assert figures["requests"]["PUT telemetry"] > 0
    assert figures["requests"]["LIST telemetry"] > 0
    assert "per 1,000 events" in done.stdout
    assert figures["building_day_rows"] > 0

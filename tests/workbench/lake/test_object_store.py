"""The lake on a real S3 API (moto's server): commits are conditional puts, concurrent
writers never overwrite each other, and configurations that would are refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from proving.objstore import MotoS3
from tests.conftest import isolated_env, store_lake

pytestmark = pytest.mark.integration

# Appends one row per commit to the table in argv[1], argv[2] times, tagged argv[3], the
# way the workbench's own writers do: a writer that loses delta-rs's own retries to the
# others (it knows: CommitFailedError) reloads and tries again, so under a loaded machine
# the race lasts longer but still loses nothing.
APPENDER = """
import sys
import pyarrow as pa
from deltalake import write_deltalake
from workbench.lake.tables import retry_on_conflict
uri, count, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
for i in range(count):
    row = pa.table({"writer": [tag], "i": [i]})
    retry_on_conflict(lambda: write_deltalake(uri, row, mode="append"), what=tag)
"""


@pytest.mark.slow
def test_concurrent_writers_on_s3_lose_no_commit(object_store: MotoS3) -> None:
    import polars as pl
    from deltalake import DeltaTable

    prefix = store_lake(object_store)
    uri = f"{prefix}/race"
    DeltaTable.create(uri, pa.schema([("writer", pa.string()), ("i", pa.int64())]))
    env = isolated_env(Path("/nonexistent"))
    writers = [
        subprocess.Popen([sys.executable, "-c", APPENDER, uri, "20", tag], env=env)
        for tag in ("a", "b", "c")
    ]
    assert [w.wait(timeout=240) for w in writers] == [0, 0, 0]
    rows = pl.read_delta(uri)
    assert rows.height == 60
    assert rows.group_by("writer").len().sort("writer")["len"].to_list() == [20, 20, 20]
    # every append is its own log entry: none overwrote another's...
    assert DeltaTable(uri).version() == 60
    # ...because the store refused the losers of a race for one (412), and they retried
    raced = [
        line
        for line in object_store.log.read_text().splitlines()
        if f"{prefix.split('/', 3)[3]}/race/_delta_log/" in line and '" 412 ' in line
    ]
    assert raced, "no two writers raced for one log entry: the test proved nothing"


@pytest.mark.parametrize(
    "setting",
    [
        {"AWS_S3_ALLOW_UNSAFE_RENAME": "true"},
        {"AWS_S3_ALLOW_UNSAFE_RENAME": "1", "WORKBENCH_PROCESSORS": "3"},
        {"AWS_S3_LOCKING_PROVIDER": "dynamodb"},
    ],
)
def test_the_processor_refuses_an_s3_lake_without_safe_commits(tmp_path, setting):
    env = isolated_env(tmp_path / "home", WORKBENCH_LAKE="s3://wb-lake/lake", **setting)
    done = subprocess.run(
        [sys.executable, "-m", "ingest_service", "process"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("ingest_service process: error: AWS_S3_")
    assert "overwrite each other's commits" in lines[0]
    assert "conditional put, If-None-Match" in lines[0]


def test_unsafe_rename_is_no_concern_off_s3(tmp_path):
    from workbench.config import Config
    from workbench.lake.tables import check_commit_safety

    for lake in (str(tmp_path / "lake"), "az://c/lake", "gs://b/lake"):
        config = Config.from_env({"WORKBENCH_HOME": str(tmp_path), "WORKBENCH_LAKE": lake})
        check_commit_safety(config, {"AWS_S3_ALLOW_UNSAFE_RENAME": "true"})

"""``workbench lake promote``: a reading from ``extra`` to a column, with real Delta tables,
the real processor code path, the real CLI and the HiveQL engine."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from deltalake import DeltaTable

from ingest_service.processor.decode import RecordBatch
from ingest_service.processor.processor import Processor
from ingest_service.processor.windows import FixedClock
from tests.conftest import run_cli
from tests.ingest_service.processor.conftest import T0, encode, event
from workbench.config import Config
from workbench.lake import promote as promote_module
from workbench.lake.maintain import maintain
from workbench.lake.promote import backfill, promote
from workbench.query.engine import QuerySession
from workbench.registry.store import Registry
from workbench.tenancy.principal import Principal
from workbench.tenancy.users import UserStore

ADMIN = Principal.system("admin-ann")


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config.from_env(
        {"WORKBENCH_HOME": str(tmp_path / "home"), "WORKBENCH_LAKE": str(tmp_path / "lake")}
    )


def _env(config: Config, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKBENCH_")}
    env.update(WORKBENCH_HOME=str(config.home), WORKBENCH_LAKE=config.lake, **extra)
    return env


class Feed:
    """Hands events to a real Processor as if polled from partition 0."""

    def __init__(self, config: Config, clock: FixedClock) -> None:
        self.processor = Processor(config, clock=clock)
        self.processor.assign([0])
        self.offset = 0

    def send(self, events: list[dict[str, object]]) -> None:
        values = [encode(e) for e in events]
        offsets = list(range(self.offset, self.offset + len(values)))
        self.offset += len(values)
        self.processor.process(
            RecordBatch(values, [b"k"] * len(values), [0] * len(values), offsets)
        )


def _co2_events(seqs: range, *, day_offset: int = 0, co2: Any = None) -> list[dict[str, object]]:
    return [
        event(
            device=f"d{s % 7}",
            seq=s,
            ts=T0 - dt.timedelta(days=day_offset) + dt.timedelta(seconds=s),
            building=f"b-{s % 3}",
            readings={"temperature": 20.0, "co2": 400 + s if co2 is None else co2, "voc": s},
        )
        for s in seqs
    ]


def _telemetry(config: Config) -> pl.DataFrame:
    return pl.read_delta(f"{config.lake}/telemetry").sort("device_id", "seq")


def _extra_co2(frame: pl.DataFrame) -> list[object]:
    return [None if e is None else json.loads(e).get("co2") for e in frame["extra"]]


def test_promote_from_the_cli_while_a_processor_runs(config: Config) -> None:
    feed = Feed(config, FixedClock(T0 + dt.timedelta(minutes=10)))
    feed.send(_co2_events(range(0, 20)))
    before = _telemetry(config)
    assert "co2" not in before.columns
    assert _extra_co2(before) == [400 + s for s in before["seq"]]
    hive = QuerySession(config, Principal("ann", "analyst", "t-1"))  # a long-lived session
    assert "co2" not in [r[0] for r in hive.execute("DESCRIBE telemetry").rows]

    result = run_cli(_env(config), "lake", "promote", "co2", "--type", "double")

    assert result.returncode == 0, result.stderr
    assert "added column telemetry.co2 (double, nullable)" in result.stdout
    assert "next: running processors use the column from their next commit" in result.stdout
    assert "--backfill" in result.stdout
    last = DeltaTable(f"{config.lake}/telemetry").history(1)[0]
    assert last["operation"] == "ADD COLUMN"
    assert last["actor"].startswith("system:")
    assert last["workbench.operation"] == "promote co2 double"

    # the processor was started before the promotion and is not restarted
    feed.send(_co2_events(range(20, 40)))
    after = _telemetry(config)
    assert after.height == 40
    assert after.select("device_id", "seq").unique().height == 40
    new = after.filter(pl.col("seq") >= 20)
    assert new["co2"].to_list() == [400.0 + s for s in new["seq"]]
    assert _extra_co2(new) == [None] * 20  # no longer in extra...
    assert [json.loads(e)["voc"] for e in new["extra"]] == new["seq"].to_list()  # ...the rest is
    old = after.filter(pl.col("seq") < 20)
    assert old["co2"].null_count() == 20 and _extra_co2(old) == [400 + s for s in old["seq"]]

    described = {r[0]: r[1] for r in hive.execute("DESCRIBE telemetry").rows}
    assert described["co2"] == "double"
    rows = hive.execute(
        "SELECT count(co2), min(co2), max(co2) FROM telemetry WHERE co2 IS NOT NULL"
    ).rows
    assert rows == [(20, 420.0, 439.0)]
    hive.close()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["CO2"], 2, "invalid reading name 'CO2'"),
        (["co-2"], 2, "invalid reading name 'co-2'"),
        (["_co2"], 2, "invalid reading name '_co2'"),
        (["x" * 65], 2, "invalid reading name"),
        (["select"], 2, "'select' is a reserved word"),
        (["timestamp"], 2, "'timestamp' is a reserved word"),
        (["temperature"], 5, "telemetry already has a column 'temperature'"),
        (["extra"], 5, "telemetry already has a column 'extra'"),
        (["co2", "--type", "float"], 2, "invalid choice: 'float'"),
    ],
)
def test_bad_names_and_types_are_refused(
    config: Config, args: list[str], code: int, message: str
) -> None:
    result = run_cli(_env(config), "lake", "promote", *args)
    assert result.returncode == code, result.stdout + result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    table = DeltaTable(f"{config.lake}/telemetry") if Path(config.lake).exists() else None
    assert table is None or "ADD COLUMN" not in [h["operation"] for h in table.history()]


def test_promoting_twice_or_as_a_non_admin_is_refused(config: Config) -> None:
    registry = Registry(config, principal=ADMIN)
    registry.add_tenant("t-1")
    UserStore(config).add("ann", role="analyst", tenant="t-1", password="pw-ann-123", by=ADMIN)

    as_analyst = run_cli(
        _env(config, WORKBENCH_PASSWORD="pw-ann-123"), "lake", "promote", "co2", "--as", "ann"
    )
    assert as_analyst.returncode == 1
    assert "not authorized: ann (analyst) may not change the lake's schema" in as_analyst.stderr

    assert run_cli(_env(config), "lake", "promote", "co2", "--type", "bigint").returncode == 0
    again = run_cli(_env(config), "lake", "promote", "co2")
    assert again.returncode == 5
    assert "telemetry already has a column 'co2'" in again.stderr
    other_type = run_cli(_env(config), "lake", "promote", "co2", "--type", "double", "--backfill")
    assert other_type.returncode == 5
    assert "exists already, of type bigint" in other_type.stderr
    columns = DeltaTable(f"{config.lake}/telemetry").schema().fields
    assert [(f.name, f.type.type) for f in columns if f.name == "co2"] == [("co2", "long")]


def test_backfill_moves_old_values_partition_by_partition_and_keeps_the_rest(
    config: Config,
) -> None:
    feed = Feed(config, FixedClock(T0 + dt.timedelta(minutes=10)))
    feed.send(_co2_events(range(0, 30)))  # today
    feed.send(_co2_events(range(30, 50), day_offset=2))  # an older partition
    feed.send(_co2_events(range(50, 55), co2="high"))  # not a number: stays in extra
    feed.send([event(device="d-plain", seq=1)])  # no co2 at all
    before = _telemetry(config)

    done = promote(config, "co2", type="double", principal=ADMIN, backfill=True)

    assert done.version is not None and done.backfill is not None
    assert (done.backfill.partitions, done.backfill.moved, done.backfill.kept) == (2, 50, 5)
    after = _telemetry(config)
    unchanged = [c for c in before.columns if c != "extra"]
    assert after.select(unchanged).equals(before.select(unchanged))  # nothing else moved
    numeric = after.filter(pl.col("seq") < 50, pl.col("device_id") != "d-plain")
    assert numeric["co2"].to_list() == [400.0 + s for s in numeric["seq"]]
    assert numeric["extra"].to_list() == [
        json.dumps({"voc": s}).replace(" ", "") for s in numeric["seq"]
    ]
    text = after.filter(pl.col("seq") >= 50)
    assert text["co2"].null_count() == 5 and _extra_co2(text) == ["high"] * 5
    history = DeltaTable(f"{config.lake}/telemetry").history(3)
    assert [h.get("workbench.operation") for h in history] == [
        "backfill co2",
        "backfill co2",
        "promote co2 double",
    ]
    assert {h["actor"] for h in history} == {"admin-ann"}

    again = backfill(config, "co2", principal=ADMIN)  # idempotent: nothing left to move
    assert (again.moved, again.kept, again.commits) == (0, 5, 0)
    assert _telemetry(config).equals(after)
    # compaction keeps the promoted column
    maintain(config, days=3650, now=T0 + dt.timedelta(minutes=10))
    assert _telemetry(config).equals(after)


def _interfere(monkeypatch: pytest.MonkeyPatch, at_call: int, action: Any) -> list[int]:
    """Make the backfill's ``at_call``-th ``open_table`` run ``action`` right after loading
    the table: whatever ``action`` commits lands after the snapshot the backfill reads and
    merges from. Returns the list of calls made (its length is the count)."""
    real_open = promote_module.open_table
    calls: list[int] = []

    def open_table(cfg: Config, name: str) -> Any:
        table = real_open(cfg, name)
        calls.append(len(calls) + 1)
        if len(calls) == at_call:
            action()
        return table

    monkeypatch.setattr(promote_module, "open_table", open_table)
    return calls


# backfill() opens the table (1: its columns), _backfill (2: the partitions),
# _building_ranges (3) and then each MERGE attempt of each range (4, 5, ...)
_FIRST_MERGE = 4


def test_backfill_beside_appends_to_the_same_partition_commits_first_time(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FixedClock(T0 + dt.timedelta(minutes=10))
    feed = Feed(config, clock)
    feed.send(_co2_events(range(0, 60)))
    promote(config, "co2", type="double", principal=ADMIN)

    def append() -> None:
        clock.advance(5)
        feed.send(_co2_events(range(100, 110)))  # same partition; the processor uses co2

    calls = _interfere(monkeypatch, _FIRST_MERGE, append)
    done = backfill(config, "co2", principal=ADMIN)

    assert len(calls) == _FIRST_MERGE  # one MERGE attempt: the append did not conflict
    assert done.moved == 60
    stored = _telemetry(config)
    assert stored.height == 70 and stored.select("device_id", "seq").unique().height == 70
    assert stored["co2"].to_list() == [400.0 + s for s in stored["seq"]]
    assert _extra_co2(stored) == [None] * 70


def test_backfill_conflicting_with_compaction_is_redone(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workbench.lake.maintain import _rewrite_sorted

    feed = Feed(config, FixedClock(T0 + dt.timedelta(minutes=10)))
    for first in range(0, 60, 20):  # three commits: three files to compact
        feed.send(_co2_events(range(first, first + 20)))
    promote(config, "co2", type="double", principal=ADMIN)
    rewrites: list[tuple[int, int]] = []

    calls = _interfere(
        monkeypatch,
        _FIRST_MERGE,
        lambda: rewrites.append(_rewrite_sorted(config, T0.date().isoformat())),
    )
    done = backfill(config, "co2", principal=ADMIN)

    assert rewrites == [(3, 1)]  # compaction replaced the files the first MERGE read
    assert len(calls) == _FIRST_MERGE + 1  # so that MERGE conflicted and was redone
    assert done.moved == 60
    stored = _telemetry(config)
    assert stored.height == 60 and stored.select("device_id", "seq").unique().height == 60
    assert stored["co2"].to_list() == [400.0 + s for s in stored["seq"]]
    assert _extra_co2(stored) == [None] * 60
    assert len(DeltaTable(f"{config.lake}/telemetry").file_uris()) == 1

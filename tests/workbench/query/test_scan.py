"""Plain scans: which statements the DuckDB session hands to polars, and that their answers
are DuckDB's own, in the principal's scope, under the same caps."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pyarrow as pa
import pytest

from proving.sample import write_sample_lake
from tests.workbench.query.hiveserver2.lake import HiveLake
from workbench.exceptions import QueryFailed
from workbench.lake.tables import table_uri
from workbench.query.engine import QuerySession
from workbench.query.scan import plain_scan
from workbench.tenancy.principal import Principal

SCHEMA = pa.schema(
    [
        ("device_id", pa.string()),
        ("seq", pa.int64()),
        ("floor", pa.int32()),
        ("temperature", pa.float64()),
        ("ts", pa.timestamp("us", "UTC")),
        ("event_date", pa.date32()),
    ]
)
TABLES = {"telemetry": SCHEMA}


@pytest.mark.parametrize(
    ("sql", "columns", "where", "limit"),
    [
        ("SELECT * FROM telemetry", tuple(SCHEMA.names), [], None),
        ("SELECT seq, device_id FROM telemetry LIMIT 5", ("seq", "device_id"), [], 5),
        (
            "SELECT telemetry.seq FROM telemetry WHERE (device_id = 'd-1') AND floor >= 2",
            ("seq",),
            [("device_id", "eq", "d-1"), ("floor", "ge", 2)],
            None,
        ),
        (
            "SELECT seq FROM telemetry WHERE event_date <> '2026-11-20' AND 10 > seq LIMIT 0",
            ("seq",),
            [("event_date", "ne", dt.date(2026, 11, 20)), ("seq", "lt", 10)],
            0,
        ),
    ],
)
def test_plain_scans_are_recognised(sql, columns, where, limit):
    scan = plain_scan(sql, TABLES)
    assert scan is not None
    assert scan.table == "telemetry"
    assert scan.columns == columns
    assert [(c.column, c.op.__name__, c.value) for c in scan.where] == where
    assert scan.limit == limit


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT DISTINCT device_id FROM telemetry",
        "SELECT device_id FROM telemetry ORDER BY device_id",
        "SELECT device_id AS d FROM telemetry",
        "SELECT device_id, device_id FROM telemetry",
        "SELECT seq + 1 FROM telemetry",
        "SELECT count(*) FROM telemetry",
        "SELECT seq FROM telemetry GROUP BY seq",
        "SELECT seq FROM telemetry WHERE seq = 1 OR seq = 2",
        "SELECT seq FROM telemetry WHERE NOT seq = 1",
        "SELECT seq FROM telemetry WHERE seq = '1'",  # text against a number: casting rules
        "SELECT seq FROM telemetry WHERE device_id = 1",
        "SELECT seq FROM telemetry WHERE temperature > 20",  # floats: NaN ordering differs
        "SELECT seq FROM telemetry WHERE ts > '2026-11-20'",  # timestamps: casting rules
        "SELECT seq FROM telemetry WHERE event_date = '20261120'",
        "SELECT seq FROM telemetry WHERE event_date = '2026-02-30'",
        "SELECT seq FROM telemetry WHERE seq = -1",
        "SELECT seq FROM telemetry WHERE seq IS NULL",
        "SELECT seq FROM telemetry WHERE seq IN (1, 2)",
        "SELECT seq FROM telemetry WHERE seq = seq",
        "SELECT seq FROM telemetry LIMIT 5 OFFSET 5",
        "SELECT seq FROM telemetry t",
        "SELECT seq FROM default.telemetry",
        "SELECT seq FROM other",
        "SELECT nope FROM telemetry",
        "SELECT seq FROM telemetry, telemetry",
        "SELECT seq FROM telemetry JOIN telemetry USING (seq)",
        "SELECT seq FROM (SELECT seq FROM telemetry) x",
        "WITH x AS (SELECT seq FROM telemetry) SELECT seq FROM x",
        "SELECT seq FROM telemetry UNION ALL SELECT seq FROM telemetry",
        "SELECT seq FROM telemetry WINDOW w AS (ORDER BY seq)",
        "EXPLAIN SELECT seq FROM telemetry",
    ],
)
def test_anything_more_is_left_to_the_engine(sql):
    assert plain_scan(sql, TABLES) is None


# --- in a session, on a real lake ---------------------------------------------------------

_DAY = "2026-11-21"
STATEMENTS = [
    "SELECT * FROM telemetry",
    "SELECT device_id, seq, ts, temperature FROM telemetry WHERE building_id = 'b-0001'",
    f"SELECT * FROM telemetry WHERE building_id = 'b-0003' AND event_date = '{_DAY}'",
    "SELECT device_id, seq FROM telemetry WHERE floor >= 2 AND seq < 40",
    "SELECT building_id, room, smoke FROM telemetry WHERE device_type <> 'environment'",
]


def _sorted(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame.sort(frame.columns)


@pytest.mark.integration
@pytest.mark.parametrize("user", ["ann", "ops", "root"])
@pytest.mark.parametrize("sql", STATEMENTS)
def test_a_plain_scan_answers_as_the_engine_does_in_the_principals_scope(
    lake: HiveLake, user: str, sql: str
) -> None:
    principal = {
        "ann": Principal("ann", "analyst", "t-0001"),
        "ops": Principal("ops", "operator", "t-0001"),
        "root": Principal("root", "admin", None),
    }[user]
    with QuerySession(lake.config, principal) as session:
        fast = session.execute(sql).table
        # ORDER BY makes it more than a plain scan: DuckDB answers it, as before
        order = ", ".join(fast.column_names)
        engine = session.execute(f"{sql} ORDER BY {order}").table
    assert fast.schema == engine.schema
    assert fast.num_rows == engine.num_rows > 0
    assert _sorted(fast).equals(_sorted(engine))
    # and what the lake holds for that principal, read apart from both engines
    if sql == STATEMENTS[1]:
        lake_rows = pl.read_delta(table_uri(lake.config, "telemetry")).filter(
            pl.col("building_id") == "b-0001"
        )
        if principal.tenant_id is not None:
            lake_rows = lake_rows.filter(pl.col("tenant_id") == principal.tenant_id)
        assert fast.num_rows == lake_rows.height


@pytest.mark.integration
def test_a_plain_scan_keeps_the_row_cap(lake: HiveLake) -> None:
    ann = Principal("ann", "analyst", "t-0001")
    with QuerySession(lake.config, ann, max_rows=5) as session:
        with pytest.raises(QueryFailed) as info:
            session.execute("SELECT device_id FROM telemetry")
        assert info.value.message == "the result has more than 5 rows"
        assert session.execute("SELECT device_id FROM telemetry LIMIT 5").table.num_rows == 5
        assert session.execute("SELECT device_id FROM telemetry LIMIT 0").table.num_rows == 0


@pytest.mark.integration
def test_a_plain_scan_keeps_the_byte_cap(lake: HiveLake) -> None:
    ann = Principal("ann", "analyst", "t-0001")
    with QuerySession(lake.config, ann, max_bytes=1000) as session:
        with pytest.raises(QueryFailed) as info:
            session.execute("SELECT * FROM telemetry LIMIT 100")
        assert info.value.message == "the result is larger than 1000 bytes"


@pytest.mark.integration
def test_a_plain_scan_never_reaches_past_the_tenant(lake: HiveLake) -> None:
    sql = "SELECT device_id, tenant_id FROM telemetry WHERE building_id = 'b-0002'"
    with QuerySession(lake.config, Principal("ann", "analyst", "t-0001")) as session:
        assert session.execute(sql).table.num_rows == 0
        assert session.execute("SELECT tenant_id FROM telemetry").table.column(0).unique() == (
            pa.array(["t-0001"])
        )
    with QuerySession(lake.config, Principal("root", "admin", None)) as session:
        assert session.execute(sql).table.num_rows == 5000


@pytest.mark.integration
def test_a_plain_scan_past_the_timeout_is_stopped(lake: HiveLake) -> None:
    ann = Principal("ann", "analyst", "t-0001")
    with QuerySession(lake.config, ann, statement_timeout=0.0001) as session:
        # reading even this small table takes polars longer than 0.1 ms
        with pytest.raises(QueryFailed) as info:
            session.execute("SELECT * FROM telemetry")
        assert info.value.message == "the statement ran longer than 0.0001 s and was stopped"
    with QuerySession(lake.config, ann) as session:
        assert session.execute("SELECT seq FROM telemetry LIMIT 3").table.num_rows == 3


@pytest.mark.integration
def test_a_plain_scan_that_may_be_large_is_answered_under_the_byte_cap(lake: HiveLake) -> None:
    # its first rows say it would fill more than a quarter of the cap: DuckDB streams it
    ann = Principal("ann", "analyst", "t-0001")
    with QuerySession(lake.config, ann, max_bytes=300_000) as session:
        got = session.execute("SELECT device_id FROM telemetry").table
    expected = pl.read_delta(table_uri(lake.config, "telemetry")).filter(
        pl.col("tenant_id") == "t-0001"
    )
    assert got.nbytes <= 300_000
    assert sorted(got.column(0).to_pylist()) == sorted(expected["device_id"].to_list())


@pytest.mark.integration
def test_a_plain_scan_that_surely_fits_is_read_once_and_one_that_may_not_is_probed(
    lake: HiveLake, monkeypatch: pytest.MonkeyPatch
) -> None:
    ann = Principal("ann", "analyst", "t-0001")
    with QuerySession(lake.config, ann) as session:
        reads: list[int] = []
        read = session._read
        monkeypatch.setattr(
            session, "_read", lambda s, rows, d: reads.append(rows) or read(s, rows, d)
        )
        # a sample of one file says 2,000 rows of these columns fit the cap: one read
        got = session.execute("SELECT device_id, seq FROM telemetry LIMIT 2000").table
        assert got.num_rows == 2000 and reads == [2000]
        # the partition column too, which is in the files' paths, not in the files
        reads.clear()
        got = session.execute("SELECT * FROM telemetry LIMIT 2000").table
        assert got.num_rows == 2000 and "event_date" in got.column_names and reads == [2000]
        # under a tiny byte cap they might not: the first 1,000 rows are read, found too
        # wide for a quarter of the cap, and DuckDB answers (here: too large, refused)
        reads.clear()
        session.max_bytes = 40_000
        with pytest.raises(QueryFailed, match="larger than 40000 bytes"):
            session.execute("SELECT device_id, seq FROM telemetry LIMIT 2000")
        assert reads == [1000]


@pytest.mark.integration
def test_polars_types_are_the_same_rows_for_polars(lake: HiveLake) -> None:
    sql = "SELECT device_id, seq, ts FROM telemetry WHERE building_id = 'b-0001'"
    with QuerySession(lake.config, Principal("ann", "analyst", "t-0001")) as session:
        engine = session.execute(sql).table
        native = session.execute(sql, polars_types=True).table
    assert engine.schema.field("device_id").type == pa.string()
    assert native.schema.field("device_id").type == pa.string_view()
    assert native.num_rows == engine.num_rows > 0
    assert pl.from_arrow(native).equals(pl.from_arrow(engine))


@pytest.mark.integration
def test_a_plain_scan_counts_only_the_rows_of_the_files_it_may_match(lake: HiveLake) -> None:
    stored = pl.read_delta(table_uri(lake.config, "telemetry"))
    first = stored["event_date"].min()
    with QuerySession(lake.config, Principal("root", "admin", None)) as session:
        session.execute("SELECT seq FROM telemetry LIMIT 1")  # the table, read at its version
        schema = session._tables["telemetry"].schema
        assert schema is not None

        def reach(where: str) -> int:
            scan = plain_scan(f"SELECT seq FROM telemetry WHERE {where}", {"telemetry": schema[1]})
            assert scan is not None
            return session._rows_in_reach(scan)

        # one day of two: its partition's files, every row it holds and no more than them
        day = stored.filter(pl.col("event_date") == first).height
        assert 0 < day <= reach(f"event_date = '{first}'") < stored.height
        assert reach("event_date = '1999-01-01'") == 0
        assert reach(f"event_date >= '{first}'") == stored.height
        # by column statistics: no file holds a device past the last one
        assert reach("device_id > 'zzz'") == 0
        assert reach("device_id <> 'nobody'") == stored.height


@pytest.mark.integration
def test_what_a_table_keeps_of_its_statements_is_renewed_by_a_commit(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The files' add actions, a row's width and the scan itself are kept per table
    version: a commit between two runs of one statement is read, all of it."""
    from tests.conftest import isolated_env
    from workbench.config import Config

    config = Config.from_env(isolated_env(tmp_path))
    start = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
    write_sample_lake(config, events=3000, devices=20, days=0.5, start=start)
    sql = "SELECT device_id, seq FROM telemetry WHERE event_date = '2026-11-20'"
    with QuerySession(config, Principal.system()) as session:
        reach = session._rows_in_reach
        bounds: list[int] = []
        monkeypatch.setattr(session, "_rows_in_reach", lambda s: bounds.append(n := reach(s)) or n)
        assert session.execute(sql).table.num_rows == 3000
        assert session.execute(sql).table.num_rows == 3000
        write_sample_lake(config, events=2000, devices=20, days=0.5, start=start, seed=8)
        # the bound of the new version counts the new file: had the first been kept,
        # the read would have stopped at 3,000 rows
        assert session.execute(sql).table.num_rows == 5000
    assert bounds == [3000, 3000, 5000]

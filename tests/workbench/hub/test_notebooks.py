"""The team's notebooks run under papermill as a hub user, the way CI runs them: inside
the analyst's own server (their OS account, their kernel's environment), from the
read-only ``~/templates``, with the hub's token as the only credential. Their outputs
hold the analyst's tenant and nothing else.

Runs where the tests run (root): a hub that cannot spawn as another user fails here.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import nbformat
import polars as pl
import pytest

from proving.hub_session import HubSession
from workbench.lake.tables import table_uri

pytestmark = [pytest.mark.integration, pytest.mark.slow]

UNTIL = "2026-11-21T00:00:00+00:00"  # inside the session lake's two days
HOURS = 6.0

# what the spawner hands a server of the workbench (where the doors listen, who it is)
_SERVER_SETTINGS = {
    "WORKBENCH_HOST",
    "WORKBENCH_HIVE_PORT",
    "WORKBENCH_FLIGHT_PORT",
    "WORKBENCH_VOILA_PORT",
    "WORKBENCH_HUB_API_PORT",
    "WORKBENCH_USER",
}


def _papermill(notebook: str, out: str, **parameters: object) -> str:
    """Kernel code: papermill's own command line on a template, in the server's
    environment, as a cell of the analyst would run it (``!python -m papermill ...``)."""
    argv = ["-m", "papermill", f"templates/{notebook}", f"runs/{out}", "--cwd", "runs"]
    for name, value in parameters.items():
        argv += ["-p", name, str(value)]
    return (
        "import os, subprocess, sys\n"
        "os.makedirs('runs', exist_ok=True)\n"
        f"done = subprocess.run([sys.executable, *{argv!r}],\n"
        "                      capture_output=True, text=True)\n"
        "if done.returncode:\n"
        "    raise RuntimeError(done.stderr[-3000:])\n"
    )


def _outputs(session: HubSession, path: str) -> str:
    model = session.server_api("GET", f"/contents/{path}").json()
    book = nbformat.from_dict(model["content"])
    out = []
    for cell in book.cells:
        for output in cell.get("outputs", []):
            out.append(str(output.get("text", "")))
            out.extend(str(v) for v in output.get("data", {}).values())
            out.append(str(output.get("ename", "")))
    return "\n".join(out)


def test_team_notebooks_run_under_papermill_in_the_analysts_server(hub, hub_user):
    ann, password = hub_user("analyst", "t-0001")
    session = HubSession(hub.url, ann, password)
    assert session.login.status_code == 302, session.login.text
    session.spawn()  # fails the test (never skips) when it cannot spawn
    try:
        _run_and_check(hub, session)
    finally:
        session.stop()


def _run_and_check(hub, session: HubSession) -> None:
    ann = session.user
    kernel = session.kernel()
    try:
        # the server knows where the doors are and who it is: no lake, home or password
        settings = kernel.run(
            "import json, os\n"
            "print(json.dumps(sorted(k for k in os.environ if k.startswith('WORKBENCH_'))))"
        )
        assert set(json.loads(settings)) == _SERVER_SETTINGS
        kernel.run(
            _papermill("exploration.ipynb", "exploration.ipynb", hours=HOURS, until=UNTIL),
            timeout_s=300,
        )
        kernel.run(
            _papermill("hive_query_explorer.ipynb", "hive_query_explorer.ipynb"),
            timeout_s=300,
        )
    finally:
        kernel.close()

    lake = hub.config
    buildings = pl.read_delta(f"{lake.lake}/registry/buildings")
    mine = sorted(buildings.filter(pl.col("tenant_id") == "t-0001")["building_id"])
    others = sorted(buildings.filter(pl.col("tenant_id") != "t-0001")["building_id"])
    assert mine and others
    telemetry = pl.read_delta(table_uri(lake, "telemetry"))

    text = _outputs(session, "runs/exploration.ipynb")
    assert "Traceback" not in text, text[-3000:]
    assert f"acting as {ann} (hub login, through the doors); {len(mine)} building(s)" in text
    end = dt.datetime.fromisoformat(UNTIL)
    window = telemetry.filter(
        (pl.col("building_id") == mine[0])
        & (pl.col("ts") >= end - dt.timedelta(hours=HOURS))
        & (pl.col("ts") < end)
    )
    assert window.height > 0
    assert f"{window.height} events of {window['device_id'].n_unique()} devices in {mine[0]}" in (
        text
    )
    for other in others:
        assert other not in text

    text = _outputs(session, "runs/hive_query_explorer.ipynb")
    assert f"connected to {lake.host}:{lake.hive_port} as {ann}" in text
    downloaded = session.server_api(
        "GET", "/contents/runs/hive_results/hive_result.csv", params={"format": "text"}
    ).json()["content"]
    got = [(r["building_id"], int(r["events"])) for r in csv.DictReader(io.StringIO(downloaded))]
    expected = (
        telemetry.filter(pl.col("tenant_id") == "t-0001")
        .group_by("building_id", "event_date")
        .agg(pl.len().alias("events"))
        .sort("building_id", "event_date")
        .select("building_id", "events")
        .rows()
    )
    assert got == expected

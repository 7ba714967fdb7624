"""The Hive query explorer's state, without any UI: connection, saved examples, run, history,
chart and downloads. ``notebooks/hive_query_explorer.ipynb`` only wires widgets to it.

:func:`explorer_for` takes what the notebook's parameters leave open from the
environment: the host and port of the workbench's own HiveServer2
(``WORKBENCH_HOST``, ``WORKBENCH_HIVE_PORT``), the analyst's workbench user
(``WORKBENCH_USER``) and password (``WORKBENCH_PASSWORD``; in a notebook server of the
hub, the hub's token; else a prompt).

>>> state = ExplorerState("127.0.0.1", 1, "ann", "pw", connect=lambda: None)
>>> sorted(EXAMPLES)[:2]
['alarm counts per building', 'comfort-band violations']
>>> state.history
[]
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import polars as pl

from workbench.config import Config
from workbench.exceptions import InvalidInput, WorkbenchError

__all__ = ["EXAMPLES", "ExplorerState", "HistoryEntry", "explorer_for"]

EXAMPLES: dict[str, str] = {
    "daily averages per building": (
        "SELECT building_id, event_date, round(avg(temperature), 2) AS temperature_avg,\n"
        "       round(avg(humidity), 1) AS humidity_avg, count(*) AS events\n"
        "FROM telemetry\nGROUP BY building_id, event_date\nORDER BY building_id, event_date"
    ),
    "alarm counts per building": (
        "SELECT building_id,\n"
        "       sum(CASE WHEN smoke THEN 1 ELSE 0 END) AS smoke_alarms,\n"
        "       sum(CASE WHEN intrusion THEN 1 ELSE 0 END) AS intrusion_alarms\n"
        "FROM telemetry\nGROUP BY building_id\nORDER BY building_id"
    ),
    "silent devices": (
        "SELECT d.device_id, d.building_id, max(t.ts) AS last_seen\n"
        "FROM devices d LEFT JOIN telemetry t ON t.device_id = d.device_id\n"
        "WHERE d.status = 'provisioned'\n"
        "GROUP BY d.device_id, d.building_id\n"
        "HAVING max(t.ts) IS NULL\n"
        "    OR unix_timestamp(max(t.ts)) < unix_timestamp() - 15 * 60\n"
        "ORDER BY last_seen"
    ),
    "comfort-band violations": (
        "SELECT building_id, date_format(ts, 'yyyy-MM-dd HH:00') AS hour,\n"
        "       count(*) AS readings,\n"
        "       sum(CASE WHEN temperature < 20 OR temperature > 24 THEN 1 ELSE 0 END)\n"
        "         AS outside_20_24c\n"
        "FROM telemetry\nWHERE temperature IS NOT NULL\n"
        "GROUP BY building_id, date_format(ts, 'yyyy-MM-dd HH:00')\n"
        "HAVING sum(CASE WHEN temperature < 20 OR temperature > 24 THEN 1 ELSE 0 END) > 0\n"
        "ORDER BY outside_20_24c DESC\nLIMIT 50"
    ),
}


@dataclasses.dataclass(frozen=True)
class HistoryEntry:
    """One statement the explorer ran."""

    at: dt.datetime
    hiveql: str
    rows: int
    seconds: float
    error: str = ""


class ExplorerState:
    """One analyst's explorer: a pyhive connection (opened lazily), the last result and the
    history of this session."""

    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        password: str,
        *,
        connect: Callable[[], Any] | None = None,
        max_history: int = 50,
    ) -> None:
        self.host, self.port, self.user = host, port, user
        self._password = password
        self._connect = connect or self._pyhive
        self._conn: Any = None
        self.result: pl.DataFrame | None = None
        self.history: list[HistoryEntry] = []
        self.max_history = max_history

    def _pyhive(self) -> Any:
        from workbench.query.client import open_connection

        return open_connection(self.host, self.port, self.user, self._password)

    def connect(self) -> None:
        """Open the connection now (it is opened at the first :meth:`run` otherwise):
        a :class:`~workbench.exceptions.WorkbenchError` saying why it cannot be."""
        if self._conn is None:
            self._conn = self._connect()

    def run(self, hiveql: str) -> pl.DataFrame:
        """Run one statement; the result as a polars frame (also kept in :attr:`result`).

        Errors are recorded in the history and raised as ``RuntimeError`` with the
        server's message.
        """
        from pyhive.exc import OperationalError

        started = time.perf_counter()
        at = dt.datetime.now(dt.UTC)
        try:
            if self._conn is None:
                self._conn = self._connect()
            cursor = self._conn.cursor()
            cursor.arraysize = 10_000
            cursor.execute(hiveql)
            names = [d[0] for d in cursor.description or []]
            rows = cursor.fetchall() if names else []
            cursor.close()
        except (OperationalError, WorkbenchError) as exc:
            response = exc.args[0] if exc.args else None
            message = getattr(getattr(response, "status", None), "errorMessage", None) or str(exc)
            self._remember(HistoryEntry(at, hiveql, 0, time.perf_counter() - started, message))
            raise RuntimeError(message) from None
        frame = (
            pl.DataFrame({n: [r[i] for r in rows] for i, n in enumerate(names)}, strict=False)
            if names
            else pl.DataFrame()
        )
        self.result = frame
        self._remember(HistoryEntry(at, hiveql, frame.height, time.perf_counter() - started))
        return frame

    def _remember(self, entry: HistoryEntry) -> None:
        self.history.insert(0, entry)
        del self.history[self.max_history :]

    def history_frame(self) -> pl.DataFrame:
        """The history, newest first, as a table."""
        return pl.DataFrame(
            {
                "at": [h.at for h in self.history],
                "hiveql": [h.hiveql for h in self.history],
                "rows": [h.rows for h in self.history],
                "seconds": [round(h.seconds, 3) for h in self.history],
                "error": [h.error for h in self.history],
            },
            schema={
                "at": pl.Datetime("us", "UTC"),
                "hiveql": pl.String,
                "rows": pl.Int64,
                "seconds": pl.Float64,
                "error": pl.String,
            },
        )

    def chart_columns(self) -> tuple[str, list[str]] | None:
        """What a quick chart would plot: the first column as x and up to three numeric
        columns as y, or None when the result has nothing to plot."""
        frame = self.result
        if frame is None or frame.height == 0 or frame.width < 2:
            return None
        numeric = [c for c, t in frame.schema.items() if t.is_numeric()][:4]
        x = frame.columns[0]
        ys = [c for c in numeric if c != x][:3]
        return (x, ys) if ys else None

    def chart(self) -> Any:
        """A matplotlib figure of the result (see :meth:`chart_columns`), or None."""
        picked = self.chart_columns()
        if picked is None or self.result is None:
            return None
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        x, ys = picked
        frame = self.result.head(500)
        fig, ax = plt.subplots(figsize=(9, 3.5))
        labels = [str(v) for v in frame[x].to_list()]
        kind = "line" if frame.height > 30 else "bar"
        for i, y in enumerate(ys):
            values = frame[y].cast(pl.Float64).to_list()
            if kind == "bar":
                width = 0.8 / len(ys)
                ax.bar([p + i * width for p in range(len(labels))], values, width, label=y)
            else:
                ax.plot(range(len(labels)), values, label=y)
        step = max(1, len(labels) // 20)
        ax.set_xticks(range(0, len(labels), step), labels[::step], rotation=45, ha="right")
        ax.set_xlabel(x)
        ax.legend()
        fig.tight_layout()
        plt.close(fig)
        return fig

    def save(self, folder: Path, *, fmt: str = "csv", stem: str = "hive_result") -> Path:
        """Write the last result as CSV or Parquet under ``folder``; its path."""
        if self.result is None:
            raise RuntimeError("run a query first")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{stem}.{fmt}"
        if fmt == "csv":
            self.result.write_csv(path)
        elif fmt == "parquet":
            self.result.write_parquet(path)
        else:
            raise ValueError(f"unknown format {fmt!r}: csv or parquet")
        return path

    def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def explorer_for(
    config: Config,
    *,
    host: str | None = None,
    port: int | None = None,
    user: str | None = None,
    password: str | None = None,
    environ: Mapping[str, str] | None = None,
    ask: Callable[[str], str] = getpass.getpass,
) -> ExplorerState:
    """An explorer for the analyst: what is not given comes from ``config`` (host,
    ``WORKBENCH_HIVE_PORT``, ``WORKBENCH_USER``) and ``WORKBENCH_PASSWORD``; in a notebook
    server of the hub, from the hub's user and token (the door takes it for a password);
    else ``ask``.

    >>> cfg = Config.from_env({"WORKBENCH_HIVE_PORT": "10123", "WORKBENCH_USER": "ann"})
    >>> state = explorer_for(cfg, environ={"WORKBENCH_PASSWORD": "pw"})
    >>> state.host, state.port, state.user
    ('127.0.0.1', 10123, 'ann')
    >>> hub = {"JUPYTERHUB_USER": "ann", "JUPYTERHUB_API_TOKEN": "t0k"}
    >>> explorer_for(Config.from_env({}), environ=hub).user
    'ann'
    >>> explorer_for(Config.from_env({}), environ={})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    workbench.exceptions.InvalidInput: no workbench user to log in as; ...
    """
    env = os.environ if environ is None else environ
    hub_user, hub_token = env.get("JUPYTERHUB_USER"), env.get("JUPYTERHUB_API_TOKEN")
    name = user or config.notebook_user or hub_user
    if not name:
        raise InvalidInput(
            "no workbench user to log in as",
            hint="set WORKBENCH_USER to your user name, or run with -p user NAME",
        )
    if password is None:
        password = env.get("WORKBENCH_PASSWORD")
    if password is None and hub_token and name == hub_user:
        password = hub_token  # the hub's server of this very user: no password typed
    if password is None:
        try:
            password = ask(f"password for {name}: ")
        except Exception:  # no terminal to ask on (papermill, Voila)
            raise InvalidInput(
                f"no password for {name}",
                hint="set WORKBENCH_PASSWORD, or run with -p password ...",
            ) from None
    return ExplorerState(host or config.host, int(port or config.hive_port), name, password)

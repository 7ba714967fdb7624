"""``workbench report daily --building B --date D``: papermill → HTML."""

from __future__ import annotations

import argparse
from pathlib import Path

from workbench.cli import Verb, say, verb_group
from workbench.config import Config
from workbench.dashboards.data import DataStore
from workbench.dashboards.reports import run_daily_report
from workbench.tenancy.cli import add_principal_option, resolve_principal

__all__ = ["register"]


def _cmd_daily(config: Config, args: argparse.Namespace) -> int:
    principal = resolve_principal(config, args)
    DataStore(config, principal).building(args.building)  # one clear line when out of scope
    output = args.output or config.home / "reports"
    say(f"report: running the daily report of {args.building} for {args.date} …")
    path = run_daily_report(
        config,
        building=args.building,
        day=args.date,
        output_dir=Path(output),
        as_user=args.as_user or None,
    )
    print(path)
    return 0


def register(verb: Verb) -> None:
    """Add the ``report`` group."""
    sub = verb_group(verb, "report", "parameterized report notebooks run by papermill, as HTML")
    d = sub.add_parser(
        "daily",
        help="one building's day: comfort, alarms, completeness per device",
        description="Execute the daily_building_report.ipynb report notebook (installed with "
        "the workbench, or from $WORKBENCH_REPORTS_DIR) with papermill and convert it to "
        "HTML; prints the HTML's path.",
    )
    d.add_argument("--building", required=True, help="building id")
    d.add_argument("--date", required=True, help="the day (UTC), YYYY-MM-DD")
    d.add_argument(
        "--output",
        type=Path,
        default=None,
        help="folder for the .html and executed .ipynb (default $WORKBENCH_HOME/reports)",
    )
    add_principal_option(d)
    d.set_defaults(handler=_cmd_daily)

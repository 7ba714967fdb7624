"""``workbench lake maintain``: compaction, checkpoints and vacuum of the lake tables."""

from __future__ import annotations

import argparse
import json

from workbench.cli import ArgumentParser, Verb, print_table, say
from workbench.config import Config
from workbench.logs import configure_logging

__all__ = ["register"]


def _cmd_maintain(config: Config, args: argparse.Namespace) -> int:
    from workbench.lake.maintain import maintain

    configure_logging(config.log_level)
    say(f"maintaining the lake at {config.lake} (running processors keep writing)…")
    rows = maintain(config, days=args.days)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        header = ("TABLE", "VERSION", "FILES_REMOVED", "FILES_ADDED", "VACUUMED", "SECONDS")
        keys = ("table", "version", "files_removed", "files_added", "files_vacuumed", "seconds")
        print_table([[r[k] for k in keys] for r in rows], header=header)
    return 0


def register(verb: Verb) -> None:
    """Add the ``lake`` group."""
    p = verb("lake", None, "look after the Delta lake tables")
    sub = p.add_subparsers(dest="lake_command", metavar="COMMAND", parser_class=ArgumentParser)
    sub.required = True
    m = sub.add_parser(
        "maintain",
        help="compact (Z-order by building, time), checkpoint and vacuum every table",
        description="Compact recent telemetry partitions (Z-ordered by building_id, ts), "
        "bin-pack the small tables, write checkpoints and vacuum files replaced more than "
        "WORKBENCH_LAKE_RETENTION_HOURS ago. Safe while processors are writing.",
    )
    m.set_defaults(handler=_cmd_maintain)
    m.add_argument(
        "--days", type=int, default=2, help="telemetry partitions this recent are compacted"
    )
    m.add_argument("--json", action="store_true", help="machine-readable report")

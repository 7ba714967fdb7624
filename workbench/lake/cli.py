"""``workbench lake maintain`` (compaction, checkpoints, vacuum) and ``workbench lake
promote`` (a reading from ``extra`` to a column) on the lake tables."""

from __future__ import annotations

import argparse
import json

from workbench.cli import Verb, print_table, say, verb_group
from workbench.config import Config
from workbench.logs import configure_logging
from workbench.tenancy.cli import add_principal_option, resolve_principal

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


def _cmd_promote(config: Config, args: argparse.Namespace) -> int:
    from workbench.lake.promote import promote

    principal = resolve_principal(config, args)

    def progress(day: str, moved: int, kept: int) -> None:
        if moved or kept:
            say(f"  {day}: {moved} rows moved from extra, {kept} kept (not {args.type})")

    if args.backfill:
        say(f"promoting {args.reading} and backfilling telemetry (processors keep writing)…")
    done = promote(
        config,
        args.reading,
        type=args.type,
        principal=principal,
        backfill=args.backfill,
        on_partition=progress,
    )
    if args.json:
        print(json.dumps(done.to_json(), indent=2))
        return 0
    column = f"telemetry.{done.reading}"
    if done.version is None:
        print(f"{column} ({done.type}) exists already: backfill only")
    else:
        print(
            f"added column {column} ({done.type}, nullable) at table version {done.version}, "
            f"as {done.actor} (DeltaTable history names you)"
        )
    print(
        "next: running processors use the column from their next commit (within "
        f"WORKBENCH_COMMIT_INTERVAL = {config.commit_interval:g} s), without a restart: new "
        f"events' {done.reading} goes to the column, not to extra (values that are not "
        f"{done.type} stay in extra)"
    )
    print(f"HiveQL: DESCRIBE telemetry shows it; SELECT {done.reading} FROM telemetry works now")
    if done.backfill is None:
        print(
            f"rows stored before keep {done.reading} in extra and null in the column; "
            f"'workbench lake promote {done.reading} --type {done.type} --backfill' moves them"
        )
    else:
        b = done.backfill
        print(
            f"backfill: {b.moved} older rows moved from extra to the column in {b.commits} "
            f"commit(s) over {b.partitions} partition(s), {b.kept} kept in extra "
            f"(not {done.type}), {b.seconds:g} s"
        )
    return 0


def register(verb: Verb) -> None:
    """Add the ``lake`` group."""
    sub = verb_group(verb, "lake", "look after the Delta lake tables")
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

    from workbench.lake.promote import PROMOTE_TYPES

    pr = sub.add_parser(
        "promote",
        help="make a reading kept in telemetry.extra a typed column, while ingestion runs",
        description="Add READING to the telemetry table as a nullable column (admins only). "
        "Running processors pick it up at their next commit: new events' READING goes to "
        "the column instead of extra. Rows stored before keep it in extra unless "
        "--backfill moves it (one commit per partition, beside live ingestion; run again "
        "to resume). See docs/ingest.md, 'Schema evolution'.",
    )
    pr.set_defaults(handler=_cmd_promote)
    pr.add_argument("reading", metavar="READING", help="the reading's name, as devices send it")
    pr.add_argument(
        "--type",
        choices=list(PROMOTE_TYPES),
        default="double",
        help="the column's HiveQL type (default: double)",
    )
    pr.add_argument(
        "--backfill",
        action="store_true",
        help="also move the values older rows hold in extra to the column "
        "(on an existing promoted column: only that)",
    )
    pr.add_argument("--json", action="store_true", help="machine-readable report")
    add_principal_option(pr)

"""``maintenance-under-load``: the lake compacted, checkpointed and vacuumed in a tight
loop while devices send: no processor member crashes, nothing lost or stored twice.

Compaction rewrites the files a processor's appends sit beside, and a compaction commit
can make an append's snapshot stale (deltalake: "a concurrent transaction deleted data
this operation read"); the processor makes such an append again rather than ending.
The drill runs ``workbench lake maintain``'s library call back to back for
``WORKBENCH_DRILL_MAINTAIN_S`` seconds (15; the soak in docs/ingest.md ran 300) with
two processor members appending every 0.5 s, and counts maintenance runs, files
compacted and the members' crashes.
"""

from __future__ import annotations

import os
import time

from proving.drills import DrillReport, drill, steps
from proving.scratch import ScratchStack

__all__: list[str] = []  # the drills register themselves with @drill

_DEFAULT_S = 15.0


@drill(
    "maintenance-under-load",
    "compact, checkpoint and vacuum the lake back to back while devices send "
    "(WORKBENCH_DRILL_MAINTAIN_S seconds, 15)",
    WORKBENCH_PROCESSORS="2",
    WORKBENCH_MAINTAIN_INTERVAL="1000000",  # the drill's loop is the only maintenance
)
def _maintenance_under_load(stack: ScratchStack, report: DrillReport) -> None:
    from workbench.lake.maintain import last_maintenance, maintain
    from workbench.stack.pool import pool_state

    seconds = float(os.environ.get("WORKBENCH_DRILL_MAINTAIN_S", _DEFAULT_S))
    run = steps.start_load(stack, report, seconds=seconds + steps.MAX_LOAD_S)
    crashes_before = int((pool_state(stack.config, "processor") or {}).get("crashes", 0))
    runs = failures = removed = added = 0
    errors: list[str] = []
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        try:
            rows = maintain(stack.config, days=1)
        except Exception as exc:  # recorded and counted: the drill fails on any
            failures += 1
            errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
            continue
        runs += 1
        removed += sum(int(r.get("files_removed", 0)) for r in rows)
        added += sum(int(r.get("files_added", 0)) for r in rows)
    elapsed = time.monotonic() - began
    report.step(
        f"ran lake maintenance {runs} times in {elapsed:.0f}s while devices sent: "
        f"{removed:,} files compacted into {added:,}"
    )
    crashes = int((pool_state(stack.config, "processor") or {}).get("crashes", 0)) - crashes_before
    report.check(f"no processor member crashed ({crashes})", crashes == 0)
    report.check(
        f"every maintenance run succeeded ({failures} failed{': ' + errors[0] if errors else ''})",
        failures == 0 and runs > 0,
    )
    report.check(f"maintenance compacted files ({removed:,})", removed > 0)
    record = last_maintenance(stack.config) or {}
    report.check(
        f"the last run is on record for 'workbench status' ({record.get('outcome')})",
        record.get("outcome") == "ok",
    )
    report.figures.update(
        maintenance_s=round(elapsed, 1),
        maintenance_runs=runs,
        maintenance_failures=failures,
        files_compacted=removed,
        files_written=added,
        member_crashes=crashes,
    )
    steps.finish(stack, report, run)

"""Running a bench through the real ``workbench`` command, as the bench tests do."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import run_cli


def run_bench(
    env: dict[str, str], bench: str, *args: str, timeout: float = 120
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """``workbench bench BENCH ARGS`` in ``env``; asserts that it succeeded and appended its
    figures, under its name, to ``$WORKBENCH_HOME/bench/results.jsonl``. Returns the run
    (for what it printed) and those figures."""
    done = run_cli(env, "bench", bench, *args, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    results = Path(env["WORKBENCH_HOME"]) / "bench" / "results.jsonl"
    last = json.loads(results.read_text().splitlines()[-1])
    assert last["bench"] == bench
    figures: dict[str, Any] = last["figures"]
    return done, figures

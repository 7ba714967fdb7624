"""Shared by the dashboard notebooks' papermill tests: run a notebook against a lake made
by the real pipeline, in a kernel whose environment names that lake."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import papermill as pm

ROOT = Path(__file__).resolve().parents[2]
# the served pages and report notebooks, where the installed package keeps them
PACKAGED = Path(str(resources.files("workbench.dashboards") / "notebooks"))


def execute(notebook: Path, out: Path, env: dict[str, str], **parameters: object) -> None:
    """papermill with ``env`` as the kernel's environment (it inherits ours)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        pm.execute_notebook(
            str(notebook),
            str(out),
            parameters=parameters,
            cwd=str(out.parent),
            kernel_name="python3",
            progress_bar=False,
        )
    finally:
        os.environ.clear()
        os.environ.update(saved)

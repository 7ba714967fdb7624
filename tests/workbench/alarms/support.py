"""Running ``workbench`` in the test's own process: the command's ``main`` (its verbs come
from the installed entry points, as in the console script), without the seconds a
subprocess costs on a loaded machine."""

from __future__ import annotations

import dataclasses
import os

import pytest

from workbench.cli import main


@dataclasses.dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def workbench(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    *args: str,
) -> Ran:
    """``workbench ARGS`` with the workbench settings of ``env`` (and only those)."""
    for key in [k for k in os.environ if k.startswith(("WORKBENCH_", "KAFKA_"))]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith(("WORKBENCH_", "KAFKA_")):
            monkeypatch.setenv(key, value)
    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return Ran(code, out.out, out.err)

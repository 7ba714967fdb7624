"""Node.js tools the workbench runs, installed with npm beside the virtualenv.

One pinned version per tool under ``<virtualenv>/share/workbench/<tool>``, with a stamp
file that says which version finished installing (a half-done install has none, so the
next call installs again).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["NpmFailed", "installed_bin", "npm_install"]


class NpmFailed(Exception):
    """npm is missing or an install failed (the message says which and why)."""


def _root(package: str) -> Path:
    return Path(sys.prefix) / "share" / "workbench" / package


def installed_bin(package: str, version: str, command: str) -> Path | None:
    """``command`` of ``package`` at ``version`` when it is installed, else None."""
    root = _root(package)
    binary = root / "node_modules" / ".bin" / command
    return binary if binary.exists() and (root / f".installed-{version}").exists() else None


def npm_install(package: str, version: str, command: str) -> Path:
    """Install ``package@version`` (once) and return its ``command``; raises
    :class:`NpmFailed` with npm's last line of error output."""
    found = installed_bin(package, version, command)
    if found is not None:
        return found
    npm = shutil.which("npm")
    if npm is None:
        raise NpmFailed(f"{package} needs npm, which is not on PATH; install Node.js and npm")
    root = _root(package)
    root.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--prefix", str(root), f"{package}@{version}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise NpmFailed(f"npm install {package}@{version} failed: {last}")
    (root / f".installed-{version}").touch()
    found = installed_bin(package, version, command)
    if found is None:
        raise NpmFailed(f"npm installed {package}@{version} without its {command!r} command")
    return found

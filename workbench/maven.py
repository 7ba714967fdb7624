"""Jars pinned in a Maven pom and resolved with Maven: Apache Kafka's for the embedded
broker, Delta Lake's for the Spark engine.

Maven downloads only what its local repository lacks and keeps it, so a fetch after the
first works offline; the resolved class path is kept in the virtualenv's
``share/workbench`` and used as long as every jar it names is still there.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path

from workbench.exceptions import WorkbenchError

__all__ = ["classpath_file", "kept_classpath", "pom_property", "resolve_classpath"]

_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


def pom_property(pom: Path, name: str, error: type[WorkbenchError]) -> str:
    """The value of ``<properties><name>`` in ``pom`` (a pinned version)."""
    node = ET.parse(pom).getroot().find(f"m:properties/m:{name}", _NS)
    if node is None or not node.text:
        raise error(f"{pom} names no {name}", hint="reinstall the workbench")
    return node.text.strip()


def classpath_file(stem: str) -> Path:
    """Where the class path of ``stem`` (e.g. ``kafka-4.4.0``) is kept."""
    return Path(sys.prefix) / "share" / "workbench" / f"{stem}.classpath"


def kept_classpath(target: Path) -> list[str] | None:
    """The jars of the kept class path, None when there is none or a jar is gone."""
    if not target.is_file():
        return None
    jars = [jar for jar in target.read_text().strip().split(":") if jar]
    return jars if jars and all(Path(jar).is_file() for jar in jars) else None


def resolve_classpath(
    pom: Path,
    target: Path,
    *,
    what: str,
    error: type[WorkbenchError],
    fallback: str,
    extra: Sequence[str] = (),
    report: Callable[[str], None] = print,
) -> list[str]:
    """Resolve ``pom``'s jars with Maven (``extra``: more ``mvn`` arguments) and keep the
    class path in ``target``; its jars. ``what`` names them in messages, ``fallback`` is
    the user's way around a failure, and ``error`` the exception raised."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise error(
            f"Maven ('mvn') is not installed; it fetches {what}'s jars",
            hint=f"install Maven (e.g. 'apt-get install maven'), or {fallback}",
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    report(f"fetching {what} with Maven (cached after the first time) …")
    done = subprocess.run(
        [mvn, "--batch-mode", "--quiet", "-f", str(pom), "dependency:build-classpath",
         *extra, f"-Dmdep.outputFile={partial}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0 or not partial.is_file():
        lines = [ln for ln in (done.stdout + done.stderr).splitlines() if "ERROR" in ln]
        why = lines[0].strip() if lines else f"mvn exited {done.returncode}"
        raise error(
            f"cannot fetch {what} with Maven: {why[:300]}",
            hint=f"the first fetch needs Maven Central (later ones work offline); or {fallback}",
        )
    partial.replace(target)
    return target.read_text().strip().split(":")

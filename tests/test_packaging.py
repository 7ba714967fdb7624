"""Set-up files agree with each other: environment.yml installs what pyproject.toml declares."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _normalise(requirement: str) -> str:
    return requirement.replace(" ", "").lower()


def test_environment_yml_installs_exactly_the_pyproject_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = set(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared |= set(extra)
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_lists = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_lists) == 1, "environment.yml needs exactly one pip: section"
    assert {_normalise(r) for r in pip_lists[0]} == {_normalise(r) for r in declared}
    pythons = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert pythons == [f"python{project['requires-python']}"]


def test_ci_runs_make_test():
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_console_script_points_at_the_cli():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["workbench"] == "workbench.cli:run"


PACKAGES = ("workbench", "ingest_service", "simulator", "proving")
# Files that run only under an interpreter of their own, with what it has installed:
# the Quix Streams peer of `workbench bench ingest` runs in the virtualenv that bench
# builds (quixstreams pins a confluent-kafka older than the project's).
OWN_INTERPRETER = {"proving/bench/quix_app.py": {"quixstreams"}}


def _imported_top_level_modules() -> dict[str, str]:
    """Every module a product or proving file imports, by top-level name: a file that
    imports it (absolute imports only; relative ones stay inside the package)."""
    found: dict[str, str] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                where = str(path.relative_to(ROOT))
                for name in names:
                    if name.split(".")[0] in OWN_INTERPRETER.get(where, ()):
                        continue
                    found.setdefault(name.split(".")[0], where)
    return found


def _requirement_name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_every_imported_third_party_package_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_requirement_name(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        declared |= {_requirement_name(r) for r in extra}
    providers = importlib.metadata.packages_distributions()
    missing = {}
    for module, where in _imported_top_level_modules().items():
        if module in sys.stdlib_module_names or module in PACKAGES or module == "__future__":
            continue
        dists = {d.lower().replace("_", "-") for d in providers.get(module, [])}
        if not dists:
            missing[module] = f"no installed distribution provides it ({where})"
        elif not dists & declared:
            # a module that comes with a declared package (e.g. TCLIService with PyHive)
            # counts only when one of its providers is declared
            missing[module] = f"provided by {sorted(dists)}, none declared ({where})"
    assert missing == {}

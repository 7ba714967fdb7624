"""The house's layout: dependencies flow one way and no module imports itself round a cycle.

``proving`` (benchmarks, drills, soak, demo data) imports the product; ``ingest_service``
and ``simulator`` import the ``workbench`` library and not each other; ``workbench``
imports neither. The contracts are import-linter's, in ``pyproject.toml``
(``[tool.importlinter]``; ``make lint`` runs them too).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("workbench", "ingest_service", "simulator", "proving")


def test_import_contracts_hold():
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports_command; lint_imports_command()",
            "--no-cache",
            "--no-logo",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _cycles(graph: grimp.ImportGraph) -> set[frozenset[str]]:
    """The strongly connected components of more than one module: a module with every
    module it imports (directly or not) that also imports it."""
    found = set()
    for module in graph.modules:
        both = graph.find_upstream_modules(module) & graph.find_downstream_modules(module)
        if both:
            found.add(frozenset({module, *both}))
    return found


def test_no_import_cycles_between_modules():
    # imports under `if TYPE_CHECKING:` only name types: they never run, so they close no
    # cycle (import-linter's acyclic_siblings contract would also forbid cycles between
    # whole sub-packages, which is more than this asks)
    graph = grimp.build_graph(*PACKAGES, cache_dir=None, exclude_type_checking_imports=True)
    cycles = _cycles(graph)
    assert [sorted(c) for c in cycles] == [], "import cycles between modules"


def test_every_folder_of_code_is_a_package():
    """A folder without ``__init__.py`` is a namespace package: the import contracts do not
    see it and setuptools does not ship it."""
    missing = [
        str(folder.relative_to(ROOT))
        for package in PACKAGES
        for folder in [ROOT / package, *(ROOT / package).rglob("*")]
        if folder.is_dir()
        and folder.name != "__pycache__"
        and any(folder.glob("*.py"))
        and not (folder / "__init__.py").exists()
    ]
    assert missing == []


def test_the_cycle_finder_finds_cycles():
    graph = grimp.ImportGraph()
    for importer, imported in [("a", "b"), ("b", "c"), ("c", "a"), ("d", "a"), ("e", "f")]:
        graph.add_import(importer=importer, imported=imported)
    assert _cycles(graph) == {frozenset({"a", "b", "c"})}

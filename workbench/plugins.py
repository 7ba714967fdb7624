"""The one way to plug something into the workbench: Python entry points.

Every kind of plug-in is an entry-point group that any installed distribution may
add to in its ``pyproject.toml``; the workbench's own built-ins are declared the
same way as a third party's::

    [project.entry-points."workbench.translators"]
    fbk1 = "ingest_service.translators.fbk1:TRANSLATOR"

Groups (the value each entry point names):

================================  ===================================================
``workbench.cli``                 a module with ``register(verb)`` adding CLI verbs
``workbench.translators``         a legacy-protocol translator object
``workbench.scenarios``           a simulator scenario factory
``workbench.sim_targets``         a simulator target factory
``workbench.benches``             a ``workbench bench`` module
``workbench.drills``              a ``workbench drill`` module
``workbench.demo``                ``seed(config, *, devices) -> lines``: demo data for
                                  ``workbench up``, and what ``up`` prints about it
================================  ===================================================

:func:`load_all` loads a group in name order; where that order shows (the verbs of
``workbench --help``, the drills of ``workbench drill all``) the names start with a
number, e.g. ``10-stack``.

Names only (:func:`names`) cost no import: the device registry learns which
protocols are installed without importing the ingest service that translates them.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

from workbench.exceptions import WorkbenchError

__all__ = ["PluginError", "load", "load_all", "names"]


class PluginError(WorkbenchError):
    """An installed plug-in cannot be loaded."""


def _group(group: str) -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=group):
        # a distribution installed twice (e.g. editable and built) lists its entry points
        # twice; the same name from two distributions is a conflict worth naming
        seen = found.get(ep.name)
        if seen is not None and seen.value != ep.value:
            raise PluginError(
                f"two plug-ins named {ep.name!r} in {group}: {seen.value} and {ep.value}",
                hint="uninstall one of the distributions that provide them",
            )
        found[ep.name] = ep
    return found


def names(group: str) -> tuple[str, ...]:
    """The names registered in ``group``, sorted, without importing any of them."""
    return tuple(sorted(_group(group)))


def load(group: str, name: str) -> Any:
    """The object the entry point ``name`` of ``group`` names."""
    ep = _group(group).get(name)
    if ep is None:
        known = ", ".join(names(group)) or "none"
        raise PluginError(f"no {group} plug-in named {name!r}", hint=f"installed: {known}")
    try:
        return ep.load()
    except Exception as exc:
        dist = ep.dist.name if ep.dist is not None else "?"
        raise PluginError(
            f"plug-in {name!r} of {group} ({ep.value}, from {dist}) failed to load: "
            f"{type(exc).__name__}: {exc}",
            hint=f"reinstall or remove {dist}",
        ) from exc


def load_all(group: str) -> dict[str, Any]:
    """Every plug-in of ``group``, loaded, by name (sorted)."""
    return {name: load(group, name) for name in names(group)}

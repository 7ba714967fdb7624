"""Legacy protocol translators: one module per protocol, discovered by name.

See :mod:`ingest_service.translators.base` for the plug-in interface; every
module in this package that defines ``TRANSLATOR`` is loaded.
"""

from __future__ import annotations

import importlib
import pkgutil

from ingest_service.translators.base import FrameError, LegacyFrame, Translator

__all__ = ["FrameError", "LegacyFrame", "Translator", "load_translators"]


def load_translators() -> dict[str, Translator]:
    """Every translator in this package, by protocol name."""
    found: dict[str, Translator] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        translator = getattr(module, "TRANSLATOR", None)
        if isinstance(translator, Translator):
            found[translator.name] = translator
    firsts = [t.first_byte for t in found.values()]
    if len(set(firsts)) != len(firsts):
        raise RuntimeError(f"two translators claim the same first byte: {sorted(found)}")
    return found

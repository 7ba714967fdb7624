"""Legacy protocol translators: plug-ins of the ``workbench.translators`` entry-point group.

See :mod:`ingest_service.translators.base` for the interface. A protocol is one
module defining ``TRANSLATOR = MyTranslator()`` and one line in its distribution's
``pyproject.toml``; the built-ins are declared the same way::

    [project.entry-points."workbench.translators"]
    fbk1 = "ingest_service.translators.fbk1:TRANSLATOR"

>>> sorted(load_translators())
['bin1', 'fbk1']
"""

from __future__ import annotations

from ingest_service.translators.base import FrameError, LegacyFrame, Translator
from workbench import plugins

__all__ = ["GROUP", "FrameError", "LegacyFrame", "Translator", "load_translators"]

GROUP = "workbench.translators"
# the gateway's own door: a translator cannot take its name
_RESERVED = frozenset({"http"})


def load_translators() -> dict[str, Translator]:
    """Every installed translator, by protocol name; a conflict is a :class:`PluginError`.

    The adapter picks a frame's translator by its first byte, so two translators
    claiming the same byte could not both be served: that is refused here rather
    than one of them being silently shadowed.
    """
    found: dict[str, Translator] = {}
    by_first: dict[int, str] = {}
    for name, translator in plugins.load_all(GROUP).items():
        if not isinstance(translator, Translator):
            raise plugins.PluginError(
                f"translator plug-in {name!r} is a {type(translator).__name__}, "
                "not a Translator instance",
                hint="its entry point must name an instance, e.g. module:TRANSLATOR",
            )
        if translator.name != name or name in _RESERVED:
            raise plugins.PluginError(
                f"translator plug-in {name!r} calls its protocol {translator.name!r}",
                hint="the entry-point name must be the translator's name, and not 'http'",
            )
        other = by_first.setdefault(translator.first_byte, name)
        if other != name:
            raise plugins.PluginError(
                f"two translators claim the same first byte "
                f"0x{translator.first_byte:02x}: {other} and {name}",
                hint="uninstall one of them; the adapter tells protocols apart by that byte",
            )
        found[name] = translator
    return found

"""Alarms: rules per tenant, one stored lifecycle per alarm, and notifications.

The rules (:mod:`~workbench.alarms.rules`) are evaluated on the stream by the ingest
processor (:mod:`~workbench.alarms.evaluate`), which records what they raise and end in
the ``alarms`` lake table (:mod:`~workbench.alarms.store`); people list, acknowledge,
comment on and clear alarms through the same module (``workbench alarms``). The design
is in docs/alarms.md.
"""

from workbench.alarms.rules import Rule, RuleError, default_rules, parse_rules
from workbench.alarms.store import acknowledge, alarm, alarms, clear, comment

__all__ = [
    "Rule",
    "RuleError",
    "acknowledge",
    "alarm",
    "alarms",
    "clear",
    "comment",
    "default_rules",
    "parse_rules",
]

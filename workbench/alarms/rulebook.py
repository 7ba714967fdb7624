"""The ``alarm_rules`` lake table: each tenant's rule document, read and changed in a
principal's scope (only the tenant's operators and admins change it), and
:class:`RuleBook`, the processors' and the notifier's view of every tenant's rules, read
again when the table moves."""

from __future__ import annotations

import datetime as dt
import logging

import polars as pl

from workbench.alarms.contactpoints import ContactPoint, Silence
from workbench.alarms.rules import (
    DEFAULT_RULES,
    Document,
    Rule,
    RuleError,
    default_rules,
    parse_document,
)
from workbench.alarms.targets import WebhookRefused, check_target
from workbench.config import Config
from workbench.exceptions import AccessDenied, InvalidState
from workbench.lake import schemas
from workbench.lake.tables import (
    ALARM_RULES,
    ensure_tables,
    latest_table,
    open_table,
    retry_on_conflict,
)
from workbench.tenancy.principal import Principal

__all__ = ["RuleBook", "may_change_rules", "reset_rules", "rules_document", "set_rules"]

logger = logging.getLogger(__name__)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def may_change_rules(principal: Principal, tenant: str) -> None:
    if not principal.can_write(tenant):
        raise AccessDenied(
            f"not authorized: {principal.user} ({principal.role}) may not change the alarm "
            f"rules of tenant {tenant!r}",
            hint="rules are changed by the tenant's operators or an admin",
        )


def _rules_rows(config: Config) -> pl.DataFrame:
    table = open_table(config, ALARM_RULES)
    if table is None:
        return pl.DataFrame(schema=pl.from_arrow(schemas.ALARM_RULES.empty_table()).schema)  # type: ignore[union-attr]
    return pl.read_delta(table)


def rules_document(config: Config, tenant: str, *, principal: Principal) -> tuple[str, int]:
    """``tenant``'s rule document and its version (0: the shipped defaults)."""
    if not principal.is_admin and principal.tenant_id != tenant:
        raise AccessDenied(
            f"not authorized: {principal.user} may not read the rules of tenant {tenant!r}",
            hint="ask for your own tenant's rules",
        )
    rows = _rules_rows(config).filter(pl.col("tenant_id") == tenant)
    if not rows.height:
        return DEFAULT_RULES, 0
    return str(rows["document"][0]), int(rows["version"][0])


def set_rules(
    config: Config,
    tenant: str,
    text: str,
    *,
    source: str,
    principal: Principal,
    expect_version: int | None = None,
) -> tuple[Rule, ...]:
    """Validate ``text`` (refused whole with a :class:`RuleError` naming ``source``, the
    rule and the field) and make it ``tenant``'s rules; return them.

    ``expect_version``: the version ``text`` was edited from; a document changed since
    is not overwritten (:class:`~workbench.exceptions.InvalidState`), so an edit made of
    read, change, write never loses another one made meanwhile."""
    may_change_rules(principal, tenant)
    doc = parse_document(text, source=source)
    for i, hook in enumerate(doc.webhooks, start=1):
        try:
            check_target(hook.url, config.webhook_allow)
        except WebhookRefused as exc:
            raise RuleError(source, f"webhook #{i}", "url", exc.message) from None
    rules = doc.rules
    ensure_tables(config)

    def attempt() -> None:
        table = open_table(config, ALARM_RULES)
        assert table is not None
        current = pl.read_delta(table).filter(pl.col("tenant_id") == tenant)
        version = int(current["version"][0]) + 1 if current.height else 1
        if expect_version is not None and version != expect_version + 1:
            raise InvalidState(
                f"the alarm document of tenant {tenant!r} changed meanwhile (now version "
                f"{version - 1}, edited from {expect_version}); nothing was changed",
                hint="run the command again",
            )
        row = (
            pl.DataFrame(
                {
                    "tenant_id": [tenant],
                    "document": [text],
                    "version": [version],
                    "updated_by": [principal.user],
                    "updated_at": [_now()],
                }
            )
            .to_arrow()
            .cast(schemas.ALARM_RULES)
        )
        (
            table.merge(row, "t.tenant_id = s.tenant_id", source_alias="s", target_alias="t")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute()
        )

    retry_on_conflict(attempt, what="alarm_rules merge")
    return rules


def reset_rules(config: Config, tenant: str, *, principal: Principal) -> None:
    """Give ``tenant`` the shipped default rules again."""
    may_change_rules(principal, tenant)
    table = open_table(config, ALARM_RULES)
    if table is not None:
        retry_on_conflict(
            lambda: table.delete(f"tenant_id = '{tenant.replace(chr(39), chr(39) * 2)}'"),
            what="alarm_rules delete",
        )


class RuleBook:
    """Every tenant's rules as ``alarm_rules`` holds them (the defaults for a tenant without
    a row), brought up to date by :meth:`refresh`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.defaults = default_rules()
        self.by_tenant: dict[str, tuple[Rule, ...]] = {}
        self.docs: dict[str, Document] = {}
        self.version = -1

    def __call__(self, tenant: str) -> tuple[Rule, ...]:
        return self.by_tenant.get(tenant, self.defaults)

    def contacts(self, tenant: str) -> tuple[ContactPoint, ...]:
        """``tenant``'s contact points (none by default), in document order per channel."""
        doc = self.docs.get(tenant)
        return () if doc is None else doc.contacts

    def silences(self, tenant: str) -> tuple[Silence, ...]:
        """``tenant``'s silences (none by default)."""
        doc = self.docs.get(tenant)
        return () if doc is None else doc.silences

    @property
    def horizon_s(self) -> float:
        """The longest duration any rule watches."""
        every = [*self.defaults, *(r for rules in self.by_tenant.values() for r in rules)]
        return max((r.horizon_s for r in every), default=0.0)

    def refresh(self) -> bool:
        """Read the table again when it changed; True when it did."""
        table = latest_table(self.config, ALARM_RULES)
        if table is None:
            return False
        version = int(table.version())
        if version == self.version:
            return False
        rows = pl.read_delta(table)
        by_tenant, docs = {}, {}
        for tenant, document in rows.select("tenant_id", "document").iter_rows():
            try:
                doc = parse_document(document, source=f"alarm_rules[{tenant}]")
            except RuleError as exc:  # validated when stored; kept out if not
                logger.error("%s: keeping the default rules for %s", exc, tenant)
                continue
            by_tenant[tenant], docs[tenant] = doc.rules, doc
        self.by_tenant, self.docs, self.version = by_tenant, docs, version
        return True

"""The provisioning form's "Alarm rules" tab: a tenant's alarm document (rules, contact
points, silences; TOML, as ``workbench alarms rules set`` takes it) in a text area, with
Check (validate, change nothing) and Save.

Save writes only over the version that was loaded: a document another operator saved
meanwhile is not overwritten (the tab says so and keeps the text, to merge by hand).
Every refusal is the library's message, which names the rule (or contact point, or
silence) and the field.
"""

from __future__ import annotations

import contextlib
import html
from collections.abc import Callable

import ipywidgets as w

from workbench.alarms.rulebook import rules_document, set_rules
from workbench.alarms.rules import parse_document
from workbench.config import Config
from workbench.dashboards.views.drawing import error_html, html_widget
from workbench.exceptions import WorkbenchError
from workbench.tenancy.principal import Principal

__all__ = ["RulesEditor"]

SOURCE = "the form's document"  # how errors name the text being edited


class RulesEditor:
    """The tab's widgets; ``button`` and ``busy`` are the form's, so that every button of
    the form is disabled while one of these runs."""

    def __init__(
        self,
        config: Config,
        principal: Principal,
        button: Callable[[str, str, Callable[[], None]], w.Button],
        busy: Callable[[w.HTML], contextlib.AbstractContextManager[None]],
    ) -> None:
        self.config = config
        self.principal = principal
        self._busy = busy
        self.version = 0
        self.tenant = w.Text(
            description="Tenant", value=principal.tenant_id or "", placeholder="tenant id"
        )
        self.tenant.add_class("wb-rules-tenant")
        self.text = w.Textarea(rows=24, layout=w.Layout(width="100%"))
        self.text.add_class("wb-rules-text")
        self.load_button = button("Load", "wb-rules-load", self.load)
        self.check_button = button("Check", "wb-rules-check", self.check)
        self.save_button = button("Save", "wb-rules-save", self.save)
        self.out = html_widget("wb-rules-result")
        self.widget = w.VBox(
            [
                w.HTML(
                    "<p style='font-family:sans-serif'>Rules, contact points and silences "
                    "of the tenant, as <code>workbench alarms rules set</code> takes them "
                    "(see docs/alarms.md). Check validates without changing anything.</p>"
                ),
                *([w.HBox([self.tenant, self.load_button])] if principal.is_admin else []),
                self.text,
                w.HBox([self.check_button, self.save_button]),
                self.out,
            ]
        )
        if principal.tenant_id:
            self.load()

    def load(self) -> None:
        """The tenant's document as stored (the shipped defaults until one is saved)."""
        with self._busy(self.out):
            try:
                text, self.version = rules_document(
                    self.config, self.tenant.value.strip(), principal=self.principal
                )
            except WorkbenchError as exc:
                self.out.value = error_html(str(exc))
                return
            self.text.value = text
            self.out.value = _done(
                f"version {self.version} of tenant {self.tenant.value.strip()}'s document"
                + (" (the shipped defaults)" if self.version == 0 else "")
            )

    def check(self) -> None:
        with self._busy(self.out):
            try:
                doc = parse_document(self.text.value, source=SOURCE)
            except WorkbenchError as exc:
                self.out.value = error_html(str(exc))
                return
            self.out.value = _done(
                f"valid: {len(doc.rules)} rule(s), {len(doc.contacts)} contact point(s), "
                f"{len(doc.silences)} silence(s); not saved yet"
            )

    def save(self) -> None:
        tenant = self.tenant.value.strip()
        with self._busy(self.out):
            try:
                rules = set_rules(
                    self.config,
                    tenant,
                    self.text.value,
                    source=SOURCE,
                    principal=self.principal,
                    expect_version=self.version,
                )
            except WorkbenchError as exc:
                self.out.value = error_html(str(exc))
                return
            self.version += 1
            self.out.value = _done(
                f"saved as version {self.version} of tenant {tenant}'s document: "
                f"{len(rules)} rule(s); the processors apply it within seconds"
            )


def _done(text: str) -> str:
    return f"<div class='wb-done'>{html.escape(text)}</div>"

"""The provisioning view: forms that call
:class:`~workbench.dashboards.provisioning.ProvisioningActions` and show its answer
(provision, manage one device, buildings, import a CSV, search, the tenant's alarm
rules).

Every action takes a second or two (one registry commit): while it runs, every button
of the form is disabled, the previous answer is cleared and "working …" shows where the
answer will come. The values' limits are the registry's (one message for the CLI and
the form); after a device is provisioned the form shows its key and a ready-to-run
``curl`` that sends its first event, each with a copy button.
"""

from __future__ import annotations

import contextlib
import functools
import html
import itertools
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ipywidgets as w

from workbench.dashboards.provisioning import ProvisioningActions, first_event
from workbench.dashboards.views.drawing import STYLE, error_html, html_widget
from workbench.dashboards.views.formatting import html_table
from workbench.dashboards.views.rules_editor import RulesEditor
from workbench.exceptions import ImportRejected, WorkbenchError
from workbench.registry.records import FLOOR_RANGE, NAME_MAX, ROOM_MAX, parse_floor

_BUSY = "<div class='wb-busy' style='font-family:sans-serif;color:#555'>working …</div>"
_COPY_IDS = itertools.count(1)


def copyable_html(text: str, css: str) -> str:
    """``text`` in a ``<pre>`` with a Copy button beside it (the browser's clipboard; the
    text stays selectable for a manual copy where the clipboard is not allowed)."""
    ident = f"wb-copy-{next(_COPY_IDS)}"
    script = (
        f"var t=document.getElementById('{ident}').innerText;"
        "if(navigator.clipboard){navigator.clipboard.writeText(t);}"
        "else{var r=document.createRange();"
        f"r.selectNodeContents(document.getElementById('{ident}'));"
        "var s=window.getSelection();s.removeAllRanges();s.addRange(r);"
        "document.execCommand('copy');}"
        "this.innerText='Copied';"
    )
    return (
        "<div class='wb-copyable' style='display:flex;gap:8px;align-items:flex-start'>"
        f"<pre id='{ident}' class='{css}' style='white-space:pre-wrap;word-break:break-all;"
        f"margin:4px 0;flex:1'>{html.escape(text)}</pre>"
        f'<button class="wb-copy" type="button" onclick="{html.escape(script)}">Copy</button>'
        "</div>"
    )


__all__ = ["ProvisioningPanel"]


class ProvisioningPanel:
    """Provision, manage, add buildings, import and search, as the logged-in operator or
    admin."""

    def __init__(self, actions: ProvisioningActions) -> None:
        self.actions = actions
        self.message = html_widget("wb-message")
        self.buttons: list[w.Button] = []
        low, high = FLOOR_RANGE
        # provision
        self.device_id = w.Text(description="Device id", placeholder="e.g. dev-0042")
        self.device_id.add_class("wb-prov-device")
        self.building = w.Combobox(description="Building", ensure_option=False)
        self.building.add_class("wb-prov-building")
        self.device_type = w.Dropdown(
            options=["environment", "smoke", "intrusion"], description="Type"
        )
        self.floor = w.Text(description="Floor", placeholder=f"{low} to {high}, or empty")
        self.floor.add_class("wb-prov-floor")
        self.room = w.Text(description="Room", placeholder=f"at most {ROOM_MAX} characters")
        self.room.add_class("wb-prov-room")
        self.protocol = w.Dropdown(options=["http", "fbk1", "bin1"], description="Protocol")
        self.provision_button = self._button("Provision", "wb-prov-submit", self._provision)
        self.provision_out = html_widget("wb-prov-result")
        provision = w.VBox(
            [
                self.device_id,
                self.building,
                self.device_type,
                self.floor,
                self.room,
                self.protocol,
                self.provision_button,
                self.provision_out,
            ]
        )
        # manage one device
        self.manage_id = w.Text(description="Device id")
        self.manage_id.add_class("wb-manage-device")
        manage_buttons = []
        for label, action in (
            ("Disable", actions.disable),
            ("Enable", actions.enable),
            ("De-provision", actions.deprovision),
            ("Rotate key", actions.rotate_key),
        ):
            manage_buttons.append(
                self._button(
                    label,
                    f"wb-manage-{label.lower().replace(' ', '-')}",
                    functools.partial(self._manage, action, label),
                    style="",
                )
            )
        self.manage_out = html_widget("wb-manage-result")
        manage = w.VBox([self.manage_id, w.HBox(manage_buttons), self.manage_out])
        # buildings: add one, rename one
        self.new_building = w.Text(description="Building id", placeholder="e.g. b-0042")
        self.new_building.add_class("wb-building-id")
        self.new_building_name = w.Text(
            description="Name", placeholder=f"at most {NAME_MAX} characters"
        )
        self.new_building_name.add_class("wb-building-name")
        self.new_building_tenant = w.Text(description="Tenant", placeholder="tenant id")
        self.new_building_tenant.add_class("wb-building-tenant")
        self.add_building_button = self._button(
            "Add building", "wb-building-add", self._add_building
        )
        self.rename_choice = w.Dropdown(description="Building")
        self.rename_choice.add_class("wb-rename-building")
        self.rename_name = w.Text(description="New name", placeholder=f"at most {NAME_MAX}")
        self.rename_name.add_class("wb-rename-name")
        self.rename_button = self._button("Rename", "wb-building-rename", self._rename_building)
        self.buildings_out = html_widget("wb-buildings-result")
        admin = actions.principal.is_admin
        buildings_tab = w.VBox(
            [
                w.HTML("<b style='font-family:sans-serif'>Add a building</b>"),
                self.new_building,
                self.new_building_name,
                *([self.new_building_tenant] if admin else []),
                self.add_building_button,
                w.HTML("<b style='font-family:sans-serif'>Rename a building</b>"),
                self.rename_choice,
                self.rename_name,
                self.rename_button,
                self.buildings_out,
            ]
        )
        # import
        self.upload = w.FileUpload(accept=".csv", multiple=False, description="CSV file")
        self.upload.add_class("wb-import-file")
        self.import_button = self._button("Import", "wb-import-submit", self._import)
        self.progress = w.IntProgress(min=0, max=1, value=0, description="Progress")
        self.import_out = html_widget("wb-import-result")
        importing = w.VBox(
            [
                w.HTML(
                    "<p style='font-family:sans-serif'>Columns: <code>device_id,building_id,"
                    "device_type[,floor,room,protocol]</code>. All rows or none are applied; "
                    "every invalid row is listed.</p>"
                ),
                self.upload,
                self.import_button,
                self.progress,
                self.import_out,
            ]
        )
        # search
        self.query = w.Text(description="Search")
        self.query.add_class("wb-search-text")
        self.status = w.Dropdown(
            options=[("any", ""), *((s, s) for s in ("provisioned", "disabled", "deprovisioned"))],
            description="Status",
        )
        self.search_button = self._button("Search", "wb-search-submit", self._search, style="")
        self.search_out = html_widget("wb-search-result")
        search = w.VBox([w.HBox([self.query, self.status, self.search_button]), self.search_out])

        self.rules = RulesEditor(actions.config, actions.principal, self._button, self._busy)

        self.tabs = w.Tab(
            children=[provision, manage, buildings_tab, importing, search, self.rules.widget]
        )
        titles = ("Provision", "Manage", "Buildings", "Import CSV", "Search", "Alarm rules")
        for i, title in enumerate(titles):
            self.tabs.set_title(i, title)
        self.widget = w.VBox([w.HTML(STYLE), self.message, self.tabs])
        self._load_buildings()  # refuses non-operators
        self._search()

    def _button(
        self, label: str, css: str, handler: Callable[[], None], *, style: str = "primary"
    ) -> w.Button:
        button = w.Button(description=label, button_style=style)
        button.add_class(css)
        button.on_click(lambda _: handler())
        self.buttons.append(button)
        return button

    def _load_buildings(self) -> None:
        rows = list(self.actions.buildings().iter_rows(named=True))
        self.building.options = [r["building_id"] for r in rows]
        self.rename_choice.options = [
            (f"{r['name']} ({r['building_id']})", r["building_id"]) for r in rows
        ]

    @contextlib.contextmanager
    def _busy(self, out: w.HTML) -> Iterator[None]:
        """While an action runs: every button disabled, the last answers cleared and
        "working …" where this one's will show."""
        for button in self.buttons:
            button.disabled = True
        self.message.value = ""
        out.value = _BUSY
        try:
            yield
        finally:
            if out.value == _BUSY:  # an action that failed without saying so
                out.value = ""
            for button in self.buttons:
                button.disabled = False

    # --- handlers: call the library, show its answer ---------------------------------------

    def _provision(self) -> None:
        with self._busy(self.provision_out):
            try:
                floor = parse_floor(self.floor.value)
                new = self.actions.provision(
                    self.device_id.value,
                    building=self.building.value,
                    device_type=self.device_type.value,
                    floor=floor,
                    room=self.room.value,
                    protocol=self.protocol.value,
                )
            except WorkbenchError as exc:
                self.provision_out.value = error_html(str(exc))
                return
            device = new.device
            first = first_event(
                self.actions.config,
                device_id=device.device_id,
                key=new.key,
                device_type=device.device_type,
                protocol=device.protocol,
            )
            self.provision_out.value = (
                f"<div class='wb-done'>Provisioned <b class='wb-new-device'>"
                f"{html.escape(device.device_id)}</b> in {html.escape(device.building_id)}. "
                "Its key is shown this once — copy it to the device now:</div>"
                + copyable_html(new.key, "wb-new-key")
                + (
                    "<div class='wb-done'>Send its first event from a shell:</div>"
                    + copyable_html(first.curl, "wb-first-event")
                    + "<div class='wb-done'>or over MQTT:</div>"
                    + copyable_html(first.mqtt, "wb-first-mqtt")
                    if first.curl
                    else ""
                )
                + f"<p class='wb-first-event-note' style='font-family:sans-serif'>"
                f"{html.escape(first.note)}</p>"
            )
        self._search()

    def _manage(self, action: Callable[[str], Any], label: str) -> None:
        device_id = self.manage_id.value.strip()
        with self._busy(self.manage_out):
            try:
                result = action(device_id)
            except WorkbenchError as exc:
                self.manage_out.value = error_html(str(exc))
                return
            key = getattr(result, "key", None)
            device = getattr(result, "device", result)
            text = (
                f"<div class='wb-done'>{label}: <b>{html.escape(device_id)}</b> is now "
                f"<b class='wb-device-status'>{html.escape(device.status)}</b>"
                + ("; its new key is shown this once:" if key else "")
                + "</div>"
            )
            if key:
                text += copyable_html(key, "wb-new-key")
            self.manage_out.value = text
        self._search()

    def _add_building(self) -> None:
        with self._busy(self.buildings_out):
            building = self.new_building.value.strip()
            try:
                tenant = self.actions.add_building(
                    building,
                    name=self.new_building_name.value or None,
                    tenant=self.new_building_tenant.value.strip() or None,
                )
            except WorkbenchError as exc:
                self.buildings_out.value = error_html(str(exc))
                return
            self._load_buildings()
            self.building.value = building
            self.buildings_out.value = (
                f"<div class='wb-done'>Building <b class='wb-new-building'>"
                f"{html.escape(building)}</b> added to tenant {html.escape(tenant)}; "
                "provision its devices on the Provision tab.</div>"
            )

    def _rename_building(self) -> None:
        with self._busy(self.buildings_out):
            building = self.rename_choice.value or ""
            try:
                self.actions.rename_building(building, self.rename_name.value)
            except WorkbenchError as exc:
                self.buildings_out.value = error_html(str(exc))
                return
            self._load_buildings()
            self.rename_choice.value = building
            self.buildings_out.value = (
                f"<div class='wb-done'>Building {html.escape(building)} is now "
                f"<b class='wb-renamed'>{html.escape(self.rename_name.value.strip())}</b>.</div>"
            )

    def _import(self) -> None:
        with self._busy(self.import_out):
            self.progress.value = 0
            files = list(self.upload.value)
            if not files:
                self.import_out.value = error_html("choose a CSV file first")
                return
            upload = files[0]
            with tempfile.TemporaryDirectory(prefix="wb-import-") as tmp:
                path = Path(tmp) / "devices.csv"
                path.write_bytes(bytes(upload["content"]))
                self.import_out.value = f"importing {html.escape(str(upload['name']))} …"
                try:
                    result = self.actions.import_csv(path, progress=self._progress)
                except ImportRejected as exc:
                    self.import_out.value = _import_errors_html(exc)
                    return
                except WorkbenchError as exc:
                    self.import_out.value = error_html(str(exc))
                    return
            self.import_out.value = (
                f"<div class='wb-done'>Imported {result['rows']} row(s): "
                f"{result['inserted']} new, {result['updated']} updated.</div>"
            )
        self._search()

    def _progress(self, stage: str, done: int, total: int) -> None:
        self.progress.description = stage.capitalize()
        self.progress.max = max(total, 1)
        self.progress.value = min(done, self.progress.max)

    def _search(self) -> None:
        try:
            found = self.actions.search(self.query.value, status=self.status.value or None)
        except WorkbenchError as exc:
            self.search_out.value = error_html(str(exc))
            return
        self.search_out.value = f"<p>{found.height} device(s)</p>" + html_table(
            found.drop("tenant_id", "updated_by"), digits=2, limit=500
        )


def _import_errors_html(exc: ImportRejected, shown: int = 500) -> str:
    """Every invalid row of a rejected import (the first ``shown``), by line."""
    rows = "".join(
        f"<tr><td>{line}</td><td>{html.escape(msg)}</td></tr>" for line, msg in exc.errors[:shown]
    )
    more = f"<p>… and {len(exc.errors) - shown} more</p>" if len(exc.errors) > shown else ""
    lines = len({line for line, _ in exc.errors})
    return (
        error_html(f"{lines} invalid row(s); nothing was imported")
        + "<div class='wb-table wb-import-errors'><table><tr><th>line</th>"
        f"<th>error</th></tr>{rows}</table></div>{more}"
    )

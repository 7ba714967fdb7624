"""The provisioning form's widgets driven in the kernel (no browser): busy state, the
registry's limits and every invalid import row shown, buildings added and renamed, and
the first-event curl it shows accepted by a real gateway."""

from __future__ import annotations

import datetime as dt
import html
import re
import subprocess
from pathlib import Path

import pytest

from tests.ingest_service.gateway.conftest import live_gateway
from workbench.config import Config
from workbench.dashboards import ProvisioningActions
from workbench.dashboards.views.provisioning_panel import ProvisioningPanel
from workbench.registry import Registry
from workbench.tenancy import Principal

OPS = Principal("ops", "operator", "t-1")


@pytest.fixture
def config(tmp_path: Path) -> Config:
    config = Config.from_env({"WORKBENCH_HOME": str(tmp_path / "home")})
    admin = Registry(config, principal=Principal.system())
    for tenant, building in (("t-1", "b-1"), ("t-2", "b-2")):
        admin.add_tenant(tenant)
        admin.add_building(building, tenant=tenant)
    return config


def _text(widget_html: str) -> str:
    """What a reader sees: the tags dropped, white space collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", widget_html)).split()).replace(" .", ".")


def _pre(widget_html: str, css: str) -> str:
    found = re.search(rf"<pre id='[^']+' class='{css}'[^>]*>(.*?)</pre>", widget_html, re.S)
    assert found, widget_html
    return html.unescape(found.group(1))


def test_every_action_is_busy_while_it_runs_and_refuses_what_the_cli_refuses(config: Config):
    panel = ProvisioningPanel(ProvisioningActions(config, OPS))
    panel.message.value = "an old message"
    panel.provision_out.value = "the previous answer"
    seen = []
    real = panel.actions.provision

    def watching(*args, **kwargs):
        seen.append(
            ([b.disabled for b in panel.buttons], panel.provision_out.value, panel.message.value)
        )
        return real(*args, **kwargs)

    panel.actions.provision = watching  # type: ignore[method-assign]
    panel.device_id.value, panel.building.value, panel.room.value = "d-1", "b-1", "1.01"
    panel.floor.value = "99999999999999999999"
    panel.provision_button.click()
    assert "floor 99999999999999999999 is out of range: a floor is from -20 to 300" in _text(
        panel.provision_out.value
    )
    assert seen == []  # refused before the registry was asked
    assert not any(b.disabled for b in panel.buttons)
    panel.floor.value = "2"
    panel.room.value = "r" * 65
    panel.provision_button.click()
    assert "room is 65 characters long, at most 64" in _text(panel.provision_out.value)
    panel.room.value = "1.01"
    panel.provision_button.click()
    disabled, answer_meanwhile, message_meanwhile = seen[-1]
    assert all(disabled) and len(disabled) == len(panel.buttons) >= 9
    assert "working" in answer_meanwhile and message_meanwhile == ""
    assert not any(b.disabled for b in panel.buttons)
    assert "Provisioned d-1 in b-1" in _text(panel.provision_out.value)
    assert len(_pre(panel.provision_out.value, "wb-new-key")) == 44
    # the key, the curl, the mosquitto_pub
    assert panel.provision_out.value.count('class="wb-copy"') == 3


def test_buildings_are_added_and_renamed_in_the_form(config: Config):
    panel = ProvisioningPanel(ProvisioningActions(config, OPS))
    panel.new_building.value, panel.new_building_name.value = "b-3", "Quay House"
    panel.add_building_button.click()
    assert "Building b-3 added to tenant t-1" in _text(panel.buildings_out.value)
    assert panel.building.options == ("b-1", "b-3") and panel.building.value == "b-3"
    panel.rename_choice.value, panel.rename_name.value = "b-3", "n" * 5000
    panel.rename_button.click()
    assert "building name is 5,000 characters long, at most 100" in _text(panel.buildings_out.value)
    panel.rename_name.value = "Harbour House"
    panel.rename_button.click()
    assert ("Harbour House (b-3)", "b-3") in panel.rename_choice.options
    names = Registry(config, principal=OPS).buildings().select("building_id", "name").rows()
    assert names == [("b-1", "b-1"), ("b-3", "Harbour House")]  # b-2 is another tenant's


def test_an_import_in_the_form_lists_every_invalid_row(config: Config):
    panel = ProvisioningPanel(ProvisioningActions(config, OPS))
    content = (
        b"device_id,building_id,device_type,floor\n"
        b"d-1,b-1,smoke,99999999999999999999\n"
        b"d-2,b-2,smoke,1\n"  # another tenant's building
        b"d 3,b-1,toaster,1\n"
    )
    panel.upload.value = (
        {
            "name": "fleet.csv",
            "type": "text/csv",
            "size": len(content),
            "content": memoryview(content),
            "last_modified": dt.datetime.now(dt.UTC),
        },
    )
    panel.import_button.click()
    text = _text(panel.import_out.value)
    assert "3 invalid row(s); nothing was imported" in text
    for line, reason in (
        (2, "floor is out of range"),
        (3, "unknown building_id"),
        (4, "invalid device_id"),
        (4, "device_type must be one of"),
    ):
        assert re.search(rf"\b{line}\s+{reason}", text), (line, reason, text)


@pytest.mark.integration
def test_the_first_event_commands_the_form_shows_are_accepted_by_a_real_gateway(kafka_config):
    # one worker: what is tested is the command, and one worker starts in half the time
    with live_gateway(kafka_config, WORKBENCH_GATEWAY_WORKERS="1") as gateway:
        panel = ProvisioningPanel(ProvisioningActions(gateway.config, Principal.system()))
        panel.device_id.value, panel.building.value = "new-1", "b-1"
        panel.provision_button.click()
        curl = _pre(panel.provision_out.value, "wb-first-event")
        sent = subprocess.run(
            ["bash", "-c", curl], capture_output=True, text=True, timeout=30, check=False
        )
        # QoS 1: mosquitto_pub exits 0 only once the door's PUBACK said stored in Kafka
        mqtt = _pre(panel.provision_out.value, "wb-first-mqtt")
        assert "-p " + str(gateway.config.mqtt_port) in mqtt
        published = subprocess.run(
            ["bash", "-c", mqtt + " -d"], capture_output=True, text=True, timeout=30, check=False
        )
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.replace(" ", "") == '{"accepted":1}', sent.stdout
    assert published.returncode == 0, published.stdout + published.stderr
    assert "received PUBACK (Mid: 1, RC:0)" in published.stdout, published.stdout


_SERVER_ROOM = """
[[rule]]
name = "server-room-hot"
reading = "temperature"
above = 27
for = "10m"
severity = "major"
rooms = ["3.12"]
"""


def test_the_alarm_rules_tab_checks_saves_and_never_overwrites_a_newer_document(config: Config):
    from workbench.alarms.rulebook import rules_document, set_rules
    from workbench.alarms.rules import parse_document

    panel = ProvisioningPanel(ProvisioningActions(config, OPS))
    rules = panel.rules
    assert "Alarm rules" in [panel.tabs.get_title(i) for i in range(len(panel.tabs.children))]
    # an operator's own tenant, loaded at once: the shipped defaults, version 0
    assert "version 0 of tenant t-1's document (the shipped defaults)" in _text(rules.out.value)
    assert 'name = "smoke"' in rules.text.value
    defaults = rules.text.value
    n = len(parse_document(defaults, source="defaults").rules) + 1  # with server-room-hot

    # a mistake is named by rule and field, and nothing is saved
    rules.text.value = defaults + _SERVER_ROOM.replace("above = 27", 'above = "hot"')
    rules.check_button.click()
    assert f"rule 'server-room-hot' (#{n}), field 'above': expected a number, got 'hot'" in _text(
        rules.out.value
    )
    rules.save_button.click()
    assert "field 'above'" in _text(rules.out.value)
    assert rules_document(config, "t-1", principal=OPS)[1] == 0

    rules.text.value = defaults + _SERVER_ROOM
    rules.check_button.click()
    assert f"valid: {n} rule(s), 0 contact point(s), 0 silence(s); not saved yet" in _text(
        rules.out.value
    )
    assert rules_document(config, "t-1", principal=OPS)[1] == 0
    rules.save_button.click()
    assert f"saved as version 1 of tenant t-1's document: {n} rule(s)" in _text(rules.out.value)
    assert rules_document(config, "t-1", principal=OPS) == (defaults + _SERVER_ROOM, 1)

    # another operator saves meanwhile (the CLI's path): this tab's next save is refused
    other = Principal("olga", "operator", "t-1")
    set_rules(config, "t-1", defaults, source="cli.toml", principal=other, expect_version=1)
    rules.text.value = defaults + _SERVER_ROOM.replace("27", "28")
    rules.save_button.click()
    assert "changed meanwhile (now version 2, edited from 1); nothing was changed" in _text(
        rules.out.value
    )
    assert rules_document(config, "t-1", principal=OPS) == (defaults, 2)
    assert not any(b.disabled for b in panel.buttons)
    # an operator has no tenant field: the tab is their tenant's alone
    assert rules.tenant not in rules.widget.children


def test_an_admin_edits_any_tenants_rules_in_the_tab(config: Config):
    from workbench.alarms.rulebook import rules_document

    admin = Principal("root", "admin", None)
    panel = ProvisioningPanel(ProvisioningActions(config, admin))
    rules = panel.rules
    assert rules.text.value == ""  # no tenant of its own: nothing loaded yet
    rules.tenant.value = "t-2"
    rules.load_button.click()
    assert "version 0 of tenant t-2's document" in _text(rules.out.value)
    rules.text.value += _SERVER_ROOM
    rules.save_button.click()
    assert "saved as version 1 of tenant t-2's document" in _text(rules.out.value)
    assert rules_document(config, "t-2", principal=admin)[1] == 1
    assert rules_document(config, "t-1", principal=admin)[1] == 0

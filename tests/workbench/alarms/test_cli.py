"""``workbench alarms`` on a lake the processor wrote, as the users of the dashboards' lake
(tenants, viewers, operators); the command runs in this process (tests/workbench/alarms/
support.py)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from tests.workbench.alarms.support import workbench
from tests.workbench.dashboards.lake import USERS, make_lake

pytestmark = pytest.mark.integration


@pytest.fixture
def wb(monkeypatch, capsys):
    """``wb(lake, ARGS…)``: ``workbench alarms ARGS`` against the lake; ``wb(lake,
    user=U)(ARGS…)``: the same as user U (``--as``)."""

    def run(lake, *args: str, user: str | None = None):
        if not args:
            return lambda *more: run(lake, *more, user=user)
        env = dict(lake.env)
        if user:
            env["WORKBENCH_PASSWORD"] = USERS[user][2]
            args = (*args, "--as", user)
        return workbench(monkeypatch, capsys, env, "alarms", *args)

    return run


def test_alarms_verbs_and_rules_scoped_to_the_callers_tenant_and_buildings(tmp_path, wb):
    lake = make_lake(tmp_path / "home", minutes=3)
    lake.feed(lake.records(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30), 3, scenario="fire"))
    everything = json.loads(wb(lake, "list", "--json").stdout)
    smoke = [a for a in everything if a["rule"] == "smoke"]
    assert smoke and len({a["device_id"] for a in smoke}) == len(smoke)
    target = smoke[0]
    # a viewer sees exactly the alarms of their buildings; another tenant's viewer none
    for viewer, building in (("rita", "b-0001"), ("vera", "b-0002")):
        seen = json.loads(wb(lake, user=viewer)("list", "--json").stdout)
        assert sorted(a["alarm_id"] for a in seen) == sorted(
            a["alarm_id"] for a in everything if a["building_id"] == building
        )
    outsider = "vera" if target["tenant_id"] == "t-0001" else "rita"
    refused = wb(lake, user=outsider)("ack", target["alarm_id"])
    assert refused.returncode == 4 and "no alarm" in refused.stderr
    # an analyst of the tenant reads its alarms but acts on none, and is told so plainly
    ann = next(a for a in everything if a["tenant_id"] == "t-0001")
    for verb, said in (("ack", "acknowledge"), ("clear", "clear"), ("comment", "comment on")):
        extra = ("looked",) if verb == "comment" else ()
        denied = wb(lake, user="ann")(verb, ann["alarm_id"], *extra)
        assert f"not authorized: ann (analyst) may not {said} alarms" in denied.stderr, verb
    # acknowledged once, by whom; a second acknowledgement names the first
    actor = "ops" if target["tenant_id"] == "t-0001" else "root"
    assert wb(lake, user=actor)("ack", target["alarm_id"]).returncode == 0
    again = wb(lake, user=actor)("ack", target["alarm_id"])
    assert again.returncode == 5 and f"acknowledged already, by {actor}" in again.stderr
    doc = json.loads(wb(lake, "comment", target["alarm_id"], "crew on site", "--json").stdout)
    assert doc["acknowledged_by"] == actor
    assert [c["text"] for c in doc["comments"]] == ["crew on site"]
    assert [h["action"] for h in doc["history"]] == ["raised", "acknowledged", "commented"]
    text = wb(lake, "show", target["alarm_id"]).stdout
    assert f"acknowledged_by:  {actor}" in text

    # rules: validated before anything changes; viewers cannot change them (one lake for
    # both halves of this test: making one costs seconds)
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[[rule]]\nname = "rack"\nreading = "temperature"\nabove = "hot"\nseverity = "major"\n'
    )
    refused = wb(lake, user="ops")("rules", "set", str(bad))
    assert refused.returncode == 2
    assert f"{bad}: rule 'rack' (#1), field 'above': expected a number" in refused.stderr
    good = tmp_path / "good.toml"
    good.write_text(
        '[[rule]]\nname = "rack"\nreading = "temperature"\nabove = 27\nfor = "10m"\n'
        'severity = "major"\nrooms = ["3.12"]\n'
    )
    viewer = wb(lake, user="rita")("rules", "set", str(good))
    assert viewer.returncode == 1 and "may not change the alarm rules" in viewer.stderr
    shown = json.loads(wb(lake, "rules", "show", "--tenant", "t-0001", "--json").stdout)
    assert shown["version"] == 0  # the refused documents changed nothing
    assert wb(lake, user="ops")("rules", "set", str(good)).returncode == 0
    shown = json.loads(wb(lake, "rules", "show", "--tenant", "t-0001", "--json").stdout)
    assert shown["version"] == 1 and [r["name"] for r in shown["rules"]] == ["rack"]
    other = json.loads(wb(lake, user="vera")("rules", "show", "--json").stdout)
    assert other["version"] == 0  # t-0002 keeps the defaults

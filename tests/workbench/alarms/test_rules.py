"""Rule documents: the defaults, every key's validation, precise errors (pure logic)."""

from __future__ import annotations

import pytest

from workbench.alarms.rules import DEFAULT_RULES, RuleError, default_rules, parse_rules


def test_the_default_set_covers_smoke_intrusion_thresholds_and_silence():
    rules = {r.name: r for r in default_rules()}
    assert (rules["smoke"].kind, rules["smoke"].reading, rules["smoke"].severity) == (
        "flag",
        "smoke",
        "critical",
    )
    assert (rules["intrusion"].kind, rules["intrusion"].severity) == ("flag", "major")
    assert {(r.reading, r.kind) for r in rules.values() if r.kind in ("above", "below")} == {
        ("temperature", "above"),
        ("temperature", "below"),
        ("humidity", "above"),
        ("humidity", "below"),
    }
    assert all(r.for_s > 0 for r in rules.values() if r.kind in ("above", "below"))
    assert rules["silent"].kind == "silent" and rules["silent"].silent_for_s == 900
    rate = rules["rejecting"]
    assert (rate.kind, rate.threshold, rate.per_s, rate.for_s) == ("rejected_rate", 20, 60, 300)


def test_a_rejected_rate_rule_reads_back_the_same():
    text = (
        '[[rule]]\nname = "rejecting"\nkind = "rejected_rate"\nabove = 5\nper = "30s"\n'
        'for = "2m"\nseverity = "major"\nbuildings = ["b-1"]\n'
    )
    (rule,) = parse_rules(text, source="a.toml")
    assert (rule.kind, rule.threshold, rule.per_s, rule.for_s, rule.buildings) == (
        "rejected_rate",
        5.0,
        30.0,
        120.0,
        frozenset({"b-1"}),
    )
    assert rule.horizon_s == 150
    assert parse_rules(rule.to_toml(), source="b.toml") == (rule,)


def test_a_rule_written_back_reads_the_same():
    text = """
[[rule]]
name = "server-room-hot"
description = "the racks"
reading = "temperature"
above = 27.5
for = "90s"
severity = "major"
rooms = ["3.12"]
buildings = ["b-1", "b-2"]
device_types = ["environment"]
max_raises_per_hour = 2
enabled = false
"""
    (rule,) = parse_rules(text, source="a.toml")
    assert (rule.threshold, rule.for_s, rule.rooms, rule.enabled, rule.max_raises_per_hour) == (
        27.5,
        90.0,
        frozenset({"3.12"}),
        False,
        2,
    )
    assert parse_rules(rule.to_toml(), source="b.toml") == (rule,)
    assert parse_rules(DEFAULT_RULES, source="d") == default_rules()


@pytest.mark.parametrize(
    ("body", "rule", "field", "problem"),
    [
        ('name = "x"\nreading = "co2"\nseverity = "major"', "rule 'x' (#1)", "reading", "co2"),
        ('name = "x"\nreading = "smoke"', "rule 'x' (#1)", "severity", "missing"),
        ('name = "x"\nreading = "smoke"\nseverity = "loud"', "rule 'x' (#1)", "severity", "loud"),
        ('reading = "smoke"\nseverity = "major"', "rule #1", "name", "missing"),
        ('name = "Bad Name"\nreading = "smoke"\nseverity = "major"', "rule #1", "name", "Bad"),
        (
            'name = "x"\nreading = "temperature"\nabove = "hot"\nseverity = "major"',
            "rule 'x' (#1)",
            "above",
            "expected a number",
        ),
        (
            'name = "x"\nreading = "temperature"\nseverity = "major"',
            "rule 'x' (#1)",
            "above",
            "exactly one of above or below",
        ),
        (
            'name = "x"\nreading = "temperature"\nabove = 1\nbelow = 0\nseverity = "major"',
            "rule 'x' (#1)",
            "above",
            "exactly one",
        ),
        (
            'name = "x"\nreading = "smoke"\nabove = 1\nseverity = "major"',
            "rule 'x' (#1)",
            "above",
            "no threshold",
        ),
        (
            'name = "x"\nreading = "humidity"\nabove = 70\nfor = "ten minutes"\nseverity = "minor"',
            "rule 'x' (#1)",
            "for",
            "ten minutes",
        ),
        ('name = "x"\nsilent_for = "0m"\nseverity = "minor"', "rule 'x' (#1)", "silent_for", "0"),
        (
            'name = "x"\nsilent_for = "5m"\nreading = "smoke"\nseverity = "minor"',
            "rule 'x' (#1)",
            "reading",
            "silence rule",
        ),
        (
            'name = "x"\nsilent_for = "48h"\nseverity = "minor"',
            "rule 'x' (#1)",
            "silent_for",
            "24h",
        ),
        (
            'name = "x"\nreading = "smoke"\nseverity = "major"\ndevice_types = ["toaster"]',
            "rule 'x' (#1)",
            "device_types",
            "toaster",
        ),
        (
            'name = "x"\nreading = "smoke"\nseverity = "major"\nthreshold = 3',
            "rule 'x' (#1)",
            "threshold",
            "unknown key",
        ),
        (
            'name = "x"\nkind = "rejected_rate"\nseverity = "minor"\nper = "1m"',
            "rule 'x' (#1)",
            "above",
            "missing",
        ),
        (
            'name = "x"\nkind = "rejected_rate"\nseverity = "minor"\nabove = "many"',
            "rule 'x' (#1)",
            "above",
            "expected a number of events",
        ),
        (
            'name = "x"\nkind = "rejected_rate"\nseverity = "minor"\nabove = -1',
            "rule 'x' (#1)",
            "above",
            "0 or more",
        ),
        (
            'name = "x"\nkind = "rejected_rate"\nseverity = "minor"\nabove = 5\nper = "5s"',
            "rule 'x' (#1)",
            "per",
            "from 10s to 1h",
        ),
        (
            'name = "x"\nkind = "rejected_rate"\nseverity = "minor"\nabove = 5\nper = "soon"',
            "rule 'x' (#1)",
            "per",
            "soon",
        ),
        (
            'name = "x"\nkind = "rejected_rate"\nseverity = "minor"\nabove = 5\nfor = "90s"',
            "rule 'x' (#1)",
            "for",
            "whole number of 'per' windows (1m)",
        ),
        (
            'name = "x"\nkind = "rejected_rate"\nseverity = "minor"\nabove = 5\nreading = "smoke"',
            "rule 'x' (#1)",
            "reading",
            "takes no reading",
        ),
        (
            'name = "x"\nkind = "rejected_rate"\nseverity = "minor"\nabove = 5\nrooms = ["1.01"]',
            "rule 'x' (#1)",
            "rooms",
            "takes no rooms",
        ),
        ('name = "x"\nkind = "rate"\nseverity = "minor"', "rule 'x' (#1)", "kind", "'rate'"),
        (
            'name = "x"\nreading = "temperature"\nabove = 1\nper = "1m"\nseverity = "minor"',
            "rule 'x' (#1)",
            "per",
            "only a rejected_rate rule",
        ),
        (
            'name = "x"\nreading = "smoke"\nseverity = "major"\nmax_raises_per_hour = -1',
            "rule 'x' (#1)",
            "max_raises_per_hour",
            "from 0 (no limit) to 3600, got -1",
        ),
        (
            'name = "x"\nreading = "smoke"\nseverity = "major"\nmax_raises_per_hour = 2.5',
            "rule 'x' (#1)",
            "max_raises_per_hour",
            "whole number",
        ),
        (
            'name = "x"\nreading = "smoke"\nseverity = "major"\nenabled = "yes"',
            "rule 'x' (#1)",
            "enabled",
            "true or false",
        ),
    ],
)
def test_each_mistake_names_the_file_the_rule_and_the_field(body, rule, field, problem):
    text = '[[rule]]\nname = "ok"\nreading = "smoke"\nseverity = "major"\n\n[[rule]]\n' + body
    with pytest.raises(RuleError) as caught:
        parse_rules(text, source="acme.toml")
    err = caught.value
    rule = rule.replace("#1", "#2")
    assert (err.source, err.rule, err.field) == ("acme.toml", rule, field)
    assert problem in err.problem
    assert str(err).startswith(f"acme.toml: {rule}, field {field!r}: ")


def test_document_level_mistakes():
    with pytest.raises(RuleError, match=r"^x.toml: not valid TOML"):
        parse_rules("[[rule]\nname=", source="x.toml")
    with pytest.raises(RuleError, match=r"field 'rules': unknown top-level key"):
        parse_rules('[[rules]]\nname = "a"', source="x.toml")
    twice = '[[rule]]\nname = "a"\nreading = "smoke"\nseverity = "major"\n'
    with pytest.raises(RuleError, match=r"rule 'a' \(#2\), field 'name': used twice"):
        parse_rules(twice * 2, source="x.toml")
    assert parse_rules("", source="empty.toml") == ()

"""The registry verbs through the real `workbench` command."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import isolated_env, run_cli


def test_registry_verbs_end_to_end(tmp_path: Path):
    env = isolated_env(tmp_path / "home")
    assert run_cli(env, "tenants", "add", "t-1", "--name", "Acme").returncode == 0
    assert run_cli(env, "buildings", "add", "b-1", "--tenant", "t-1").returncode == 0
    missing = run_cli(env, "buildings", "add", "b-2", "--tenant", "t-9")
    assert missing.returncode == 4 and "tenants add t-9" in missing.stderr
    out = run_cli(
        env,
        "devices",
        "provision",
        "dev-1",
        "--building",
        "b-1",
        "--type",
        "smoke",
        "--floor",
        "2",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    device = json.loads(out.stdout)
    assert device["device_id"] == "dev-1" and device["status"] == "provisioned"
    dup = run_cli(env, "devices", "provision", "dev-1", "--building", "b-1", "--type", "smoke")
    assert dup.returncode == 5 and dup.stderr.count("\n") == 1
    token = run_cli(env, "devices", "token", "dev-1", "--key", device["key"], "--ttl", "60")
    assert token.stdout.startswith("SharedAccessSignature sr=dev-1&se=")
    assert run_cli(env, "devices", "disable", "dev-1").returncode == 0
    shown = json.loads(run_cli(env, "devices", "show", "dev-1", "--json").stdout)
    assert shown["status"] == "disabled" and shown["updated_by"].startswith("system:")
    csv = tmp_path / "fleet.csv"
    csv.write_text("device_id,building_id,device_type\nd-1,b-1,environment\nd-2,b-9,smoke\n")
    bad = run_cli(env, "devices", "import", str(csv))
    assert bad.returncode == 6 and f"{csv}:3: unknown building_id" in bad.stderr
    csv.write_text("device_id,building_id,device_type\nd-1,b-1,environment\nd-2,b-1,smoke\n")
    good = run_cli(env, "devices", "import", str(csv), "--json")
    assert json.loads(good.stdout) == {"rows": 2, "inserted": 2, "updated": 0}
    listed = json.loads(run_cli(env, "devices", "list", "--building", "b-1", "--json").stdout)
    assert [d["device_id"] for d in listed] == ["d-1", "d-2", "dev-1"]
    assert run_cli(env, "devices", "show", "nope").returncode == 4


def test_devices_list_pages_through_a_filtered_fleet(tmp_path: Path):
    env = isolated_env(tmp_path / "home")
    assert run_cli(env, "tenants", "add", "t-1").returncode == 0
    for building in ("b-1", "b-2"):
        assert run_cli(env, "buildings", "add", building, "--tenant", "t-1").returncode == 0
    csv = tmp_path / "fleet.csv"
    rows = [f"d-{n:02d},b-{1 + n % 2},environment" for n in range(30)]
    csv.write_text("device_id,building_id,device_type\n" + "\n".join(rows) + "\n")
    assert run_cli(env, "devices", "import", str(csv), "--quiet").returncode == 0
    for n in (1, 5, 9, 13, 17, 21):  # six of b-2's fifteen
        assert run_cli(env, "devices", "disable", f"d-{n:02d}").returncode == 0

    def page(*args: str) -> tuple[list[str], str]:
        done = run_cli(env, "devices", "list", "--building", "b-2", *args, "--json")
        assert done.returncode == 0, done.stderr
        return [d["device_id"] for d in json.loads(done.stdout)], done.stderr

    ids, note = page("--status", "provisioned", "--limit", "4")
    assert ids == ["d-03", "d-07", "d-11", "d-15"]
    assert "4 of 9 matching devices shown; next page: --after d-15" in note
    seen = list(ids)
    while "--after" in note:
        ids, note = page("--status", "provisioned", "--limit", "4", "--after", seen[-1])
        seen += ids
    disabled = [f"d-{n:02d}" for n in (1, 5, 9, 13, 17, 21)]
    assert seen == [f"d-{n:02d}" for n in range(1, 30, 2) if f"d-{n:02d}" not in disabled]
    assert "the last page of 9 matching devices" in note
    assert page("--status", "disabled", "--limit", "0")[0] == disabled
    bad = run_cli(env, "devices", "list", "--limit", "-1")
    assert bad.returncode == 2 and "expected at least 0 (0 = all)" in bad.stderr
    table = run_cli(env, "devices", "list", "--limit", "2")
    assert table.stdout.splitlines()[1].startswith("d-00") and len(table.stdout.splitlines()) == 3
    assert "2 of 30 matching devices shown; next page: --after d-01" in table.stderr

"""``python -m ingest_service`` runs the ingest services and nothing else: the HiveServer2
endpoint and the dashboards have entries of their own."""

from __future__ import annotations

from tests.conftest import run_module_help


def test_the_entry_runs_only_the_ingest_services(tmp_path):
    done = run_module_help("ingest_service", tmp_path)
    assert done.returncode == 0, done.stderr
    listed = done.stdout.split("SERVICE\n", 1)[1].split("\noptions:", 1)[0]
    assert [line.split()[0] for line in listed.splitlines() if line.strip()] == [
        "gateway",
        "process",
    ]
    assert "WORKBENCH_GATEWAY_PORT" in done.stdout  # the settings it reads

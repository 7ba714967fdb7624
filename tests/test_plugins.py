"""Plug-ins from distributions the workbench knows nothing about, added without editing it.

Each test installs a distribution the way pip lays one out (modules plus a
``<name>-<version>.dist-info/`` folder with ``METADATA`` and ``entry_points.txt``) in a
temporary folder and puts that folder on ``sys.path``, where ``importlib.metadata``
finds it, and on ``PYTHONPATH`` for the processes the test starts.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ingest_service.translators import load_translators
from simulator.scenarios import parse_scenarios, scenario_names
from tests.conftest import isolated_env, run_cli
from tests.ingest_service.gateway.conftest import live_gateway
from tests.ingest_service.gateway.test_http import consume
from workbench import plugins
from workbench.config import Config
from workbench.exceptions import InvalidInput, SimulatorError
from workbench.registry import Registry, protocols
from workbench.tenancy.principal import Principal

DOC = Path(__file__).parents[1] / "docs" / "plugins.md"


def documented(name: str) -> str:
    """The code block docs/plugins.md shows as ``name`` (the worked example)."""
    m = re.search(
        rf"<!-- plugin-example: {re.escape(name)} -->\n```\w+\n(.*?)```", DOC.read_text(), re.S
    )
    assert m, f"docs/plugins.md has no example {name}"
    return m.group(1)


def write_distribution(
    root: Path, dist: str, modules: dict[str, str], entry_points: dict[str, dict[str, str]]
) -> Path:
    """``root`` holding ``modules`` and the dist-info of ``dist`` declaring ``entry_points``."""
    root.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        (root / f"{module}.py").write_text(source)
    info = root / f"{dist.replace('-', '_')}-0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.0\n")
    lines: list[str] = []
    for group, points in entry_points.items():
        lines += [f"[{group}]", *(f"{k} = {v}" for k, v in points.items()), ""]
    (info / "entry_points.txt").write_text("\n".join(lines))
    return root


def kv1_distribution(root: Path) -> Path:
    """The worked example of docs/plugins.md, installed as the docs say."""
    entry = re.search(r'^kv1 = "(.+)"$', documented("pyproject.toml"), re.M)
    assert entry and entry.group(1) == "acme_kv1:TRANSLATOR"
    return write_distribution(
        root,
        "acme-kv1",
        {"acme_kv1": documented("acme_kv1.py")},
        {"workbench.translators": {"kv1": entry.group(1)}},
    )


@pytest.fixture
def on_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Path], None]]:
    """Put folders on ``sys.path`` for one test; forget the modules imported from them."""
    roots: list[Path] = []

    def add(root: Path) -> None:
        roots.append(root)
        monkeypatch.syspath_prepend(str(root))

    yield add
    for name, module in list(sys.modules.items()):
        origin = getattr(module, "__file__", None) or ""
        if any(origin.startswith(str(root)) for root in roots):
            del sys.modules[name]


def _registry(home: Path) -> Registry:
    registry = Registry(Config.from_env(isolated_env(home)), principal=Principal.system("test"))
    registry.add_tenant("t-1")
    registry.add_building("b-1", tenant="t-1")
    return registry


# --- translators -------------------------------------------------------------------------


def test_a_translator_from_another_distribution_is_installed_and_provisionable(
    tmp_path: Path, on_path: Callable[[Path], None]
) -> None:
    registry = _registry(tmp_path / "home")
    with pytest.raises(InvalidInput, match="invalid protocol 'kv1'"):
        registry.provision("th-1", building="b-1", device_type="environment", protocol="kv1")

    site = kv1_distribution(tmp_path / "site")
    on_path(site)
    assert plugins.names("workbench.translators") == ("bin1", "fbk1", "kv1")
    assert protocols() == ("http", "bin1", "fbk1", "kv1")
    assert load_translators()["kv1"].first_byte == ord("K")
    device = registry.provision("th-1", building="b-1", device_type="environment", protocol="kv1")
    assert device.device.protocol == "kv1"
    csv = tmp_path / "fleet.csv"
    csv.write_text("device_id,building_id,device_type,protocol\nth-2,b-1,environment,kv1\n")
    assert registry.import_csv(csv)["inserted"] == 1

    # the CLI, in its own process, sees it too
    env = isolated_env(tmp_path / "home", PYTHONPATH=str(site))
    done = run_cli(
        env, "devices", "provision", "th-3", "--building", "b-1", "--type", "environment",
        "--protocol", "kv1", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["protocol"] == "kv1"


@pytest.mark.integration
def test_a_real_gateway_translates_a_frame_of_a_plugin_protocol(
    kafka_config: Config, tmp_path: Path, on_path: Callable[[Path], None]
) -> None:
    site = kv1_distribution(tmp_path / "site")
    on_path(site)  # for the registry here; the gateway's processes get PYTHONPATH
    import acme_kv1

    with live_gateway(kafka_config, PYTHONPATH=str(site)) as gw:
        key = base64.b64decode(gw.provision("th-1", protocol="kv1", room="2.04"))
        gw.wait_for_registry()
        frame = acme_kv1.encode_frame("th-1", key, int(time.time() * 1000), 7, 21.5)
        with socket.create_connection((gw.config.host, gw.config.legacy_port), timeout=10) as s:
            s.sendall(frame)
            answer = s.makefile("rb").readline().decode().strip()
        assert answer == "OK 7"
        (event,) = consume(gw.config, 1)
        assert event["device_id"] == "th-1" and event["protocol"] == "kv1"
        assert event["readings"] == {"temperature": 21.5} and event["room"] == "2.04"
        assert 'gateway_legacy_frames_total{protocol="kv1",result="ok"} 1.0' in gw.metrics()


def test_translators_claiming_the_same_first_byte_are_refused(
    tmp_path: Path, on_path: Callable[[Path], None]
) -> None:
    clash = documented("acme_kv1.py").replace('"kv1"', '"fxx1"').replace('ord("K")', 'ord("F")')
    on_path(
        write_distribution(
            tmp_path / "site",
            "acme-fxx1",
            {"acme_fxx1": clash},
            {"workbench.translators": {"fxx1": "acme_fxx1:TRANSLATOR"}},
        )
    )
    with pytest.raises(plugins.PluginError, match="same first byte 0x46: fbk1 and fxx1"):
        load_translators()


def test_a_translator_must_be_named_like_its_entry_point(
    tmp_path: Path, on_path: Callable[[Path], None]
) -> None:
    on_path(
        write_distribution(
            tmp_path / "site",
            "acme-kv1",
            {"acme_kv1": documented("acme_kv1.py")},
            {"workbench.translators": {"kv2": "acme_kv1:TRANSLATOR"}},
        )
    )
    with pytest.raises(plugins.PluginError, match="'kv2' calls its protocol 'kv1'"):
        load_translators()


# --- simulator scenarios and targets -----------------------------------------------------

SIM_PLUGINS = '''
import json
import os

import polars as pl

from simulator.scenarios import Scenario
from simulator.targets.base import Target


class Frozen(Scenario):
    """Every sensor reads -40 °C."""

    name = "frozen"
    summary = "every sensor reads -40 °C"
    dashboard = "every building at -40 °C"

    def apply(self, frame, ctx):
        return frame.with_columns(temperature=pl.lit(-40.0))


class Collect(Target):
    """Appends each event's device and temperature to the file $WBTEST_SINK."""

    name = "collect"

    def __init__(self, fleet, config, options):
        super().__init__(fleet)
        self.path = os.environ["WBTEST_SINK"]

    def send(self, chunk):
        with open(self.path, "a") as out:
            for device, temperature in zip(chunk["device"], chunk["temperature"]):
                out.write(json.dumps([device, temperature]) + "\\n")
        self.stats.sent += chunk.height
        self.stats.accepted += chunk.height
        return pl.Series("outcome", ["accepted"] * chunk.height)
'''


def test_a_scenario_and_a_target_from_another_distribution_run_by_name(
    tmp_path: Path, on_path: Callable[[Path], None]
) -> None:
    site = write_distribution(
        tmp_path / "site",
        "wbtest-sim",
        {"wbtest_sim": SIM_PLUGINS},
        {
            "workbench.scenarios": {"frozen": "wbtest_sim:Frozen"},
            "workbench.sim_targets": {"collect": "wbtest_sim:Collect"},
        },
    )
    with pytest.raises(SimulatorError, match="unknown scenario 'frozen'"):
        parse_scenarios("frozen")
    on_path(site)
    assert "frozen" in scenario_names()
    assert [s.name for s in parse_scenarios("heatwave,frozen")] == ["heatwave", "frozen"]

    sink = tmp_path / "sink.jsonl"
    env = isolated_env(tmp_path / "home", PYTHONPATH=str(site), WBTEST_SINK=str(sink))

    def simulator(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "simulator", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    listed = simulator("scenarios", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "frozen" in {s["name"] for s in json.loads(listed.stdout)}
    ran = simulator(
        "run", "--devices", "20", "--interval", "10", "--duration", "30", "--speedup", "300",
        "--scenario", "frozen", "--target", "collect", "--json",
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    summary = json.loads(ran.stdout)
    assert summary["target"] == "collect" and summary["scenario"] == "frozen"
    events = [json.loads(line) for line in sink.read_text().splitlines()]
    assert summary["sent"] == len(events) == 20 * 3
    assert {t for _, t in events} == {-40.0}

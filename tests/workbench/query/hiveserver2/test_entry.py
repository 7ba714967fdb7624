"""How the endpoint is started: its own ``python -m`` entry, the stack component that runs
it, and the ``workbench`` command never loading the Thrift stack it needs."""

from __future__ import annotations

import socket
import subprocess
import sys

from tests.conftest import isolated_env
from workbench.config import Config
from workbench.exceptions import PortInUse, SparkUnavailable
from workbench.stack.base import UpOptions
from workbench.stack.components import registered


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_stack_starts_the_endpoint_through_its_own_entry(tmp_path):
    config = Config.from_env(isolated_env(tmp_path))
    commands = {
        c.name: c.command(config, UpOptions())
        for c in registered()
        if c.name == "hiveserver2" and c.command is not None
    }
    assert commands["hiveserver2"] == [sys.executable, "-m", "workbench.query.hiveserver2"]


def test_the_entry_lists_its_settings(tmp_path):
    done = _run(isolated_env(tmp_path), "-m", "workbench.query.hiveserver2", "--help")
    assert done.returncode == 0, done.stderr
    assert "WORKBENCH_HIVE_PORT" in done.stdout


def test_the_entry_reports_a_taken_port_in_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        env = isolated_env(tmp_path, WORKBENCH_HIVE_PORT=str(taken.getsockname()[1]))
        done = _run(env, "-m", "workbench.query.hiveserver2")
    assert done.returncode == PortInUse.exit_code
    assert done.stderr.startswith("hiveserver2: error: cannot listen on 127.0.0.1:")
    assert "Traceback" not in done.stderr


def test_the_workbench_command_does_not_load_the_thrift_stack(tmp_path):
    probe = (
        "import sys\n"
        "import workbench.cli, workbench.query, workbench.query.cli, workbench.stack.components\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('thrift', 'TCLIService')"
        " or m.startswith('workbench.query.hiveserver2')))\n"
    )
    done = _run(isolated_env(tmp_path), "-c", probe)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def _hive_health(config: Config) -> str | None:
    (component,) = [c for c in registered() if c.name == "hiveserver2"]
    assert component.health is not None
    return component.health(config)


def test_an_unreachable_spark_master_is_said_at_start_and_in_status(tmp_path):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: nothing answers there
        env = isolated_env(
            tmp_path,
            WORKBENCH_HIVE_ENGINE="spark",
            WORKBENCH_SPARK_MASTER=f"spark://127.0.0.1:{port}",
        )
        done = _run(env, "-m", "workbench.query.hiveserver2")
    assert done.returncode == SparkUnavailable.exit_code
    assert done.stderr.startswith(
        f"hiveserver2: error: the Spark master spark://127.0.0.1:{port} is not reachable"
    ), done.stderr
    assert "Traceback" not in done.stderr
    status = _hive_health(Config.from_env(env))
    assert status is not None and f"spark://127.0.0.1:{port} is not reachable" in status


def test_spark_without_pyspark_is_said_at_start(tmp_path):
    env = isolated_env(tmp_path, WORKBENCH_HIVE_ENGINE="spark")
    # pyspark made unimportable, as in an install without the [spark] extra
    probe = (
        "import sys; sys.modules['pyspark'] = None\n"
        "from workbench.query.hiveserver2.__main__ import main\n"
        "sys.exit(main([]))\n"
    )
    done = _run(env, "-c", probe)
    assert done.returncode == SparkUnavailable.exit_code
    assert "pyspark is not installed" in done.stderr
    assert "pip install 'workbench[spark]'" in done.stderr
    assert "pyspark is not installed" in (_hive_health(Config.from_env(env)) or "")

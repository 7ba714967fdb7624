"""A real analyst's kernel, spawned by the real hub as the analyst's own OS account, is
refused everything but the doors: the lake, $WORKBENCH_HOME, the user store, another
analyst's home, the broker's password and port. Through the HiveServer2 door, with the
hub's token for a password, it reads its own tenant's rows and nothing else; the hub
restarted while the analyst works leaves the kernel running; and disabling the analyst
stops the server and closes the door to the token.

Runs where the tests run (root): a hub that cannot spawn as another user fails here.
"""

from __future__ import annotations

import json
import textwrap
import time

import polars as pl
import psutil
import pytest
from pyhive import hive

from proving.hub_session import HubSession, KernelError
from workbench.hub.accounts import ensure_account, os_user_name
from workbench.hub.settings import SERVER_CHECK_S
from workbench.hub.spawner import templates_source
from workbench.lake.read import building_state
from workbench.lake.tables import table_uri
from workbench.secretfiles import secret_path
from workbench.stack import supervisor
from workbench.tenancy import Principal, UserStore

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_ATTEMPTS = """
import json, os, socket
results = {{}}

def attempt(name, fn):
    try:
        fn()
    except Exception as exc:
        kind = type(exc)
        results[name] = f"refused: {{kind.__module__}}.{{kind.__name__}}: {{exc}}"
    else:
        results[name] = "allowed"

def read_users_table():
    import polars as pl
    pl.read_delta({users!r})

def produce():
    # the broker's user name is no secret; its password is, and this kernel cannot read it
    import time
    from confluent_kafka import KafkaException, Producer
    errors, outcomes = [], []
    producer = Producer({{
        "bootstrap.servers": {bootstrap!r}, "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN", "sasl.username": "workbench",
        "sasl.password": "a-guess", "message.timeout.ms": 10000, "error_cb": errors.append,
    }})
    forged = b'{{"device_id": "forged"}}'
    producer.produce({topic!r}, forged, on_delivery=lambda e, m: outcomes.append(e))
    deadline = time.monotonic() + 12
    while not errors and not outcomes and time.monotonic() < deadline:
        producer.poll(0.2)
    if errors or not outcomes or outcomes[0] is not None:
        raise KafkaException((errors or outcomes or ["no answer"])[0])

attempt("read the lake", lambda: os.listdir({lake!r}))
attempt("read telemetry files", lambda: os.listdir({telemetry!r}))
attempt("list WORKBENCH_HOME", lambda: os.listdir({home!r}))
attempt("read the user store", read_users_table)
attempt("read the secrets", lambda: os.listdir({secrets!r}))
attempt("read the Kafka password", lambda: open({kafka_password!r}).read())
attempt("list another analyst's home", lambda: os.listdir({other_home!r}))
attempt("produce to Kafka", produce)
attempt("change a team template", lambda: open("templates/exploration.ipynb", "a").write(" "))
results["who"] = os.geteuid()
print(json.dumps(results))
"""


def _servers(session: HubSession) -> dict:
    return session.api("GET", f"/users/{session.user}").json().get("servers") or {}


def _processes_of(os_user: str) -> list[int]:
    return [p.pid for p in psutil.process_iter(["username"]) if p.info["username"] == os_user]


def test_analyst_kernel_reaches_only_its_tenant_and_outlives_a_hub_restart(hub, hub_user):
    ann, password = hub_user("analyst", "t-0001")
    bob, _ = hub_user("analyst", "t-0002")
    bob_home = ensure_account(hub.config, bob).pw_dir
    session = HubSession(hub.url, ann, password)
    assert session.login.status_code == 302, session.login.text
    server = session.spawn()  # fails the test (never skips) when it cannot spawn
    assert server["url"] == f"/user/{ann}/"
    hub_status = {s.name: s for s in supervisor.status(hub.config)}["hub"]
    assert hub_status.healthy, hub_status.detail
    assert f"of {hub.config.hub_max_servers} notebook servers running" in hub_status.detail
    assert ann in hub_status.detail
    assert hub_status.metrics is not None and hub_status.metrics["servers"] >= 1
    # the team's notebooks, read-only templates to copy
    listing = session.server_api("GET", "/contents/templates").json()
    names = {item["name"]: item["writable"] for item in listing["content"]}
    assert names == {path.name: False for path in templates_source().glob("*.ipynb")}
    kernel = session.kernel()
    try:
        lake = hub.config.lake
        code = _ATTEMPTS.format(
            lake=lake,
            telemetry=f"{lake}/telemetry",
            home=str(hub.config.home),
            users=f"{lake}/registry/users",
            secrets=str(hub.config.home / "secrets"),
            kafka_password=str(secret_path(hub.broker, "kafka-password")),
            other_home=bob_home,
            bootstrap=hub.broker.bootstrap_servers,
            topic=hub.broker.topic,
        )
        results = json.loads(kernel.run(code).strip().splitlines()[-1])
        assert results.pop("who") != 0
        assert set(results) == {
            "read the lake",
            "read telemetry files",
            "list WORKBENCH_HOME",
            "read the user store",
            "read the secrets",
            "read the Kafka password",
            "list another analyst's home",
            "produce to Kafka",
            "change a team template",
        }
        allowed = {name: outcome for name, outcome in results.items() if outcome == "allowed"}
        assert allowed == {}, results
        for name, outcome in results.items():
            # refused by the OS (file modes) or by the broker (SASL), not by a typo
            cause = "Authentication failed" if name == "produce to Kafka" else "PermissionError"
            assert cause in outcome, (name, outcome)

        # the door, as the logged-in analyst, with no password typed: t-0001's rows only
        rows = kernel.run(
            textwrap.dedent(
                """
                from workbench.hub.kernel import hive_connection
                cursor = hive_connection().cursor()
                cursor.execute(
                    "SELECT tenant_id, count(*) AS n FROM telemetry GROUP BY tenant_id"
                )
                print(json.dumps(cursor.fetchall()))
                """
            )
        )
        expected = (
            pl.read_delta(table_uri(hub.config, "telemetry"))
            .filter(pl.col("tenant_id") == "t-0001")
            .height
        )
        assert expected > 0
        assert json.loads(rows.strip()) == [["t-0001", expected]]

        # JupySQL's %%sql over pyhive's SQLAlchemy dialect, the same identity, polars out
        kernel.run(
            "%load_ext sql\n"
            "%config SqlMagic.autopolars = True\n"
            "%config SqlMagic.displaylimit = 0\n"
            "import sqlalchemy\n"
            "from workbench.hub.kernel import hive_url\n"
            "engine = sqlalchemy.create_engine(hive_url())\n"
            "%sql engine"
        )
        kernel.run("%%sql tenants <<\nSELECT tenant_id, count(*) AS n FROM telemetry GROUP BY 1")
        frame = kernel.run("print(type(tenants).__module__, json.dumps(tenants.rows()))")
        module, _, dumped = frame.strip().partition(" ")
        assert module.startswith("polars")
        assert json.loads(dumped) == [["t-0001", expected]]

        # bulk reads and the reading API through the Arrow Flight door: same identity,
        # same scope, no file of the lake opened by the kernel
        read = kernel.run(
            textwrap.dedent(
                """
                from workbench.hub.kernel import building_state, query, telemetry
                counts = query("SELECT tenant_id, count(*) AS n FROM telemetry GROUP BY 1")
                events = telemetry(columns=["tenant_id", "device_id", "ts"])
                states = building_state()
                # handed over in shared memory (the door runs as another OS user)
                with open("/proc/self/maps") as maps:
                    shared = "memfd:workbench-result" in maps.read()
                print(json.dumps([
                    counts.rows(), sorted(events["tenant_id"].unique()), events.height,
                    events["ts"].is_sorted(), sorted(states["tenant_id"].unique()),
                    states.height, shared,
                ]))
                """
            )
        )
        states = building_state(hub.config, principal=Principal("x", "analyst", "t-0001"))
        assert json.loads(read.strip()) == [
            [["t-0001", expected]],
            ["t-0001"],
            expected,
            True,
            ["t-0001"] if states.height else [],
            states.height,
            True,
        ]
        with pytest.raises(KernelError, match="Flight door refused"):
            kernel.run(
                textwrap.dedent(
                    f"""
                    import os
                    from workbench.query.flight import flight_read
                    flight_read(
                        "SELECT 1", host=os.environ["WORKBENCH_HOST"],
                        port=int(os.environ["WORKBENCH_FLIGHT_PORT"]), user={bob!r},
                        password=os.environ["JUPYTERHUB_API_TOKEN"],
                    )
                    """
                )
            )

        # the same token does not pass for another user's name
        with pytest.raises(KernelError, match="invalid user name or password"):
            kernel.run(
                textwrap.dedent(
                    f"""
                    import os
                    from pyhive import hive
                    hive.connect(
                        host=os.environ["WORKBENCH_HOST"],
                        port=int(os.environ["WORKBENCH_HIVE_PORT"]),
                        username={bob!r},
                        password=os.environ["JUPYTERHUB_API_TOKEN"],
                        auth="CUSTOM",
                    ).cursor().execute("SELECT 1")
                    """
                )
            )

        # the hub restarted while the analyst works: the same kernel, state and door
        kernel.run("import os\nbefore = os.getpid()")
        kernel.close()
        statuses = supervisor.rolling_restart(hub.config, ["hub"])
        assert {s.name: s.healthy for s in statuses}["hub"]
        kernel = session.kernel(kernel.id)  # the proxy restarted with the hub: reconnect
        assert kernel.run("print(before == os.getpid())").strip() == "True"
        again = kernel.run(
            "cursor = hive_connection().cursor()\n"
            "cursor.execute('SELECT DISTINCT tenant_id FROM telemetry')\n"
            "print(cursor.fetchall())"
        )
        assert again.strip() == "[('t-0001',)]"
        # something the analyst leaves running on its own, outside the server's reach
        kernel.run("import subprocess\nsubprocess.Popen(['sleep', '3600'], start_new_session=True)")
        kernel.close()

        # an admin disables the analyst: the hub stops the server within its check
        # interval, and the door no longer takes a hub token for that name
        UserStore(hub.config).disable(ann, by=Principal.system("test"))
        deadline = time.monotonic() + SERVER_CHECK_S * 3 + 30
        while time.monotonic() < deadline and _servers(session):
            time.sleep(0.5)
        assert _servers(session) == {}
        # nothing of the analyst's runs on: not the kernel, not the background sleep
        assert _processes_of(os_user_name(ann)) == []
        with pytest.raises(Exception, match="unknown or disabled"):
            hive.connect(
                host=hub.config.host,
                port=hub.config.hive_port,
                username=ann,
                password=session.token,
                auth="CUSTOM",
            )
    finally:
        kernel.close()
        session.stop()

"""Password guessing at full speed against every door that takes a password.

Each door (HiveServer2, the ``--as`` CLI option, the Voila login page) must refuse
further attempts after a few failures, for a back-off, even with the right password;
say so with one message that is the same for unknown and known users; and write every
refusal to the access log.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from pyhive import hive
from thrift.transport.TTransport import TTransportException

from tests.conftest import isolated_env, run_cli
from tests.workbench.query.hiveserver2.lake import USERS, HiveLake, make_lake, running_server
from workbench.config import Config
from workbench.exceptions import AuthenticationFailed
from workbench.registry import Registry
from workbench.tenancy import Principal, UserStore, access_log, authenticate

pytestmark = pytest.mark.integration

THROTTLED = re.compile(r"too many failed logins; try again in \d+ s")
WRONG = "invalid user name or password"
PASSWORD = "the-right-password-1"
# long enough that no refusal in a test can be due to the back-off ending mid-test
SLOW_BACKOFF = {"WORKBENCH_LOGIN_BACKOFF": "3600", "WORKBENCH_LOGIN_BACKOFF_MAX": "7200"}


def _throttled(config: Config, user: str, action: str) -> pl.DataFrame:
    log = access_log(config, principal=Principal.system())
    return log.filter(
        (pl.col("user") == user)
        & (pl.col("action") == action)
        & (pl.col("outcome") == "denied")
        & (pl.col("detail") == "throttled")
    )


# --- HiveServer2: real sockets, real pyhive clients -----------------------------------------


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> HiveLake:
    return make_lake(
        tmp_path_factory.mktemp("hive-probes") / "home",
        WORKBENCH_LOGIN_MAX_FAILURES="5",
        WORKBENCH_LOGIN_SOURCE_MAX_FAILURES="1000",
        **SLOW_BACKOFF,
    )


@pytest.fixture(scope="module")
def server(lake: HiveLake):
    with running_server(lake.config) as srv:
        yield srv


def _hive_login(server, user: str, password: str) -> str:
    """'' when the login succeeds, else the server's refusal."""
    try:
        conn = hive.connect(
            host="127.0.0.1", port=server.port, username=user, password=password, auth="CUSTOM"
        )
    except TTransportException as exc:
        return str(exc)
    conn.close()
    return ""


def test_hiveserver2_refuses_the_right_password_after_five_wrong_ones(server, lake):
    for n in range(5):
        assert WRONG in _hive_login(server, "ann", f"guess-{n}")
    refusal = _hive_login(server, "ann", USERS["ann"][2])
    assert THROTTLED.search(refusal), refusal
    assert _throttled(lake.config, "ann", "login:hive").height == 1
    # another user of the same address is not locked out by ann's failures
    assert _hive_login(server, "bob", USERS["bob"][2]) == ""


def test_hiveserver2_throttles_unknown_users_with_the_same_message(server, lake):
    for n in range(5):
        assert WRONG in _hive_login(server, "mallory", f"guess-{n}")
        assert WRONG in _hive_login(server, "ops", f"guess-{n}")
    unknown = _hive_login(server, "mallory", "guess-5")
    known = _hive_login(server, "ops", USERS["ops"][2])
    assert THROTTLED.search(unknown) and THROTTLED.search(known)
    assert re.sub(r"\d+", "N", unknown) == re.sub(r"\d+", "N", known)
    assert _throttled(lake.config, "mallory", "login:hive").height == 1


def test_hiveserver2_throttles_a_source_address_spraying_user_names(tmp_path):
    lake = make_lake(
        tmp_path / "home",
        WORKBENCH_LOGIN_MAX_FAILURES="1000",
        WORKBENCH_LOGIN_SOURCE_MAX_FAILURES="4",
        **SLOW_BACKOFF,
    )
    with running_server(lake.config) as srv:
        for n in range(4):
            assert WRONG in _hive_login(srv, f"user{n}", "password-guess")
        refusal = _hive_login(srv, "root", USERS["root"][2])
    assert THROTTLED.search(refusal), refusal
    assert _throttled(lake.config, "root", "login:hive").height == 1


# --- the CLI's --as: each attempt is its own process ----------------------------------------


def _home_with_user(home: Path, user: str, **overrides: str) -> dict[str, str]:
    env = isolated_env(home, **overrides)
    config = Config.from_env(env)
    admin = Principal.system("root")
    Registry(config, principal=admin).add_tenant("t-1")
    UserStore(config).add(user, role="operator", tenant="t-1", password=PASSWORD, by=admin)
    return env


def test_cli_refuses_the_right_password_after_five_wrong_ones(tmp_path):
    env = _home_with_user(
        tmp_path / "home", "olga", WORKBENCH_LOGIN_MAX_FAILURES="5", **SLOW_BACKOFF
    )
    for n in range(5):
        wrong = run_cli(
            {**env, "WORKBENCH_PASSWORD": f"guess-{n}"}, "tenants", "list", "--as", "olga"
        )
        assert wrong.returncode == 1 and WRONG in wrong.stderr, wrong.stderr
    right = run_cli({**env, "WORKBENCH_PASSWORD": PASSWORD}, "tenants", "list", "--as", "olga")
    assert right.returncode == 1
    assert THROTTLED.search(right.stderr), right.stderr
    assert _throttled(Config.from_env(env), "olga", "login:cli").height == 1


# --- the library: one state for every door of a process -------------------------------------


def test_library_refuses_unknown_and_known_users_alike_once_throttled(tmp_path):
    env = _home_with_user(
        tmp_path / "home", "anna", WORKBENCH_LOGIN_MAX_FAILURES="3", **SLOW_BACKOFF
    )
    config = Config.from_env(env)
    messages = {}
    for user in ("anna", "nobody"):
        for n in range(3):
            with pytest.raises(AuthenticationFailed, match=WRONG):
                authenticate(config, user, f"guess-{n}", door="test", source="10.0.0.1")
        with pytest.raises(AuthenticationFailed) as info:
            authenticate(config, user, PASSWORD, door="test", source="10.0.0.2")
        messages[user] = re.sub(r"\d+", "N", str(info.value))
    assert messages["anna"] == messages["nobody"]
    assert THROTTLED.search(str(info.value))


# --- the Voila login page -------------------------------------------------------------------


@pytest.fixture
def voila(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    env = _home_with_user(
        tmp_path / "home", "rita", WORKBENCH_LOGIN_MAX_FAILURES="5", **SLOW_BACKOFF
    )
    config = Config.from_env(env)
    log = tmp_path / "voila.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workbench.dashboards"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://{config.host}:{config.voila_port}"
    try:
        _wait_for(f"{url}/login", proc, log)
        yield url, env
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _wait_for(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    import requests

    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"voila exited: {log.read_text()[-3000:]}")
        try:
            requests.get(url, timeout=2)
            return
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} not up: {log.read_text()[-3000:]}") from None
            time.sleep(0.3)


@pytest.mark.slow
def test_voila_login_refuses_the_right_password_after_five_wrong_ones(voila):
    import requests

    url, env = voila
    session = requests.Session()
    session.get(f"{url}/login", timeout=30)
    xsrf = session.cookies["_xsrf"]

    def login(password: str) -> requests.Response:
        return session.post(
            f"{url}/login",
            data={"username": "rita", "password": password, "_xsrf": xsrf},
            allow_redirects=False,
            timeout=60,
        )

    for n in range(5):
        wrong = login(f"guess-{n}")
        assert wrong.status_code == 401 and WRONG in wrong.text
    right = login(PASSWORD)
    assert right.status_code == 429
    assert THROTTLED.search(right.text), right.text
    assert int(right.headers["Retry-After"]) > 0
    assert _throttled(Config.from_env(env), "rita", "login:voila").height == 1

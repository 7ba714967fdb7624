"""The login throttle: its logic with a fake clock, and its state file shared by processes."""

from __future__ import annotations

import doctest
import threading
from pathlib import Path

import pytest

import workbench.tenancy.throttle as throttle_module
from tests.workbench.tenancy.conftest import ADMIN, PASSWORD
from workbench.exceptions import AuthenticationFailed
from workbench.tenancy import UserStore, authenticate
from workbench.tenancy.throttle import Ledger, LoginThrottle, LoginThrottled, Policy

POLICY = Policy(user_limit=3, source_limit=5, backoff=10, backoff_max=60)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _admits(ledger: Ledger, user: str, source: str | None, now: float) -> float:
    return ledger.admit(POLICY.keys(user, source), now)


# --- pure logic -----------------------------------------------------------------------------


def test_the_limit_th_failure_locks_the_user_for_the_first_back_off():
    ledger = Ledger(POLICY, {})
    assert [_admits(ledger, "anna", None, t) for t in (0, 1, 2)] == [0.0, 0.0, 0.0]
    assert _admits(ledger, "anna", None, 3) == 9.0  # locked at t=2 for 10 s
    assert _admits(ledger, "bob", None, 3) == 0.0  # other users are not affected


def test_refused_attempts_count_nothing_and_each_later_failure_doubles_up_to_the_cap():
    ledger = Ledger(POLICY, {})
    now = 0.0
    for _ in range(3):
        assert _admits(ledger, "anna", None, now) == 0.0
    locks = []
    for _ in range(5):
        key = POLICY.keys("anna", None)[0].name
        until = ledger.entries[key].until
        locks.append(until - now)
        for probe in (now, (now + until) / 2, until - 0.001):  # refused while locked
            assert _admits(ledger, "anna", None, probe) > 0
        now = until
        assert _admits(ledger, "anna", None, now) == 0.0  # one attempt, then locked again
    assert locks == [10.0, 20.0, 40.0, 60.0, 60.0]


def test_the_source_limit_locks_every_user_name_from_that_address():
    ledger = Ledger(POLICY, {})
    for n in range(5):
        assert _admits(ledger, f"user{n}", "10.0.0.7", n) == 0.0
    assert _admits(ledger, "anna", "10.0.0.7", 5) == 9.0
    assert _admits(ledger, "anna", "10.0.0.8", 5) == 0.0


def test_failures_are_forgotten_after_twice_the_longest_back_off():
    ledger = Ledger(POLICY, {})
    for t in (0, 1, 2):
        _admits(ledger, "anna", None, t)
    assert _admits(ledger, "anna", None, 2 + 120) == 0.0  # 120 s after the last: still counted
    assert _admits(ledger, "anna", None, 2 + 120 + 0.5) > 0  # so the 4th failure locks again
    key = POLICY.keys("anna", None)[0].name
    last = ledger.entries[key].last
    assert _admits(ledger, "anna", None, last + 120.001) == 0.0  # forgotten: 1 failure again
    assert ledger.entries[key].failures == 1


def test_a_refund_restores_the_entry_or_takes_one_failure_back():
    ledger = Ledger(POLICY, {})
    keys = POLICY.keys("anna", "10.0.0.7")
    _admits(ledger, "anna", "10.0.0.7", 0)
    source = keys[1].name
    before = ledger.entries[source]
    _admits(ledger, "anna", "10.0.0.7", 1)
    charged = ledger.entries[source]
    ledger.refund(source, charged, before)
    assert ledger.entries[source] == before
    # with a failure counted in between, only one is taken back
    _admits(ledger, "anna", "10.0.0.7", 2)
    charged = ledger.entries[source]
    _admits(ledger, "bob", "10.0.0.7", 3)
    ledger.refund(source, charged, before)
    assert ledger.entries[source].failures == 2
    ledger.reset(keys[0].name)
    assert keys[0].name not in ledger.entries


def test_unknown_and_known_user_names_are_keyed_alike():
    known, unknown = POLICY.keys("anna", None)[0], POLICY.keys("x" * 10_000, None)[0]
    assert len(known.name) == len(unknown.name)
    assert known.limit == unknown.limit


def test_module_doctest():
    result = doctest.testmod(throttle_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# --- the state file -------------------------------------------------------------------------


def test_two_processes_share_the_state_file_which_is_owner_only(tmp_path: Path):
    clock = Clock()
    path = tmp_path / "home" / "login-throttle.sqlite"
    first, second = (
        LoginThrottle(path, POLICY, clock=clock),
        LoginThrottle(path, POLICY, clock=clock),
    )
    for throttle in (first, second, first):
        throttle.admit("anna", "local:op")
    with pytest.raises(LoginThrottled, match=r"too many failed logins; try again in 10 s") as info:
        second.admit("anna", "local:op")
    assert info.value.retry_after == 10
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    clock.now += 10
    admission = second.admit("anna", "local:op")
    second.succeeded(admission)  # the right password: anna starts over, the address does not
    first.admit("anna", "local:op")  # anna 1, the address 4
    first.admit("anna", "local:op")  # anna 2, the address 5: backed off
    with pytest.raises(LoginThrottled):
        first.admit("bob", "local:op")
    first.admit("anna", "local:other")  # anna 3: without the reset she would be backed off


def test_parallel_attempts_cannot_all_slip_past_one_check(tmp_path: Path):
    throttle = LoginThrottle(tmp_path / "t.sqlite", POLICY)
    admitted, refused = [], []
    start = threading.Barrier(12)

    def attempt() -> None:
        start.wait()
        try:
            admitted.append(throttle.admit("anna", None))
        except LoginThrottled:
            refused.append(1)

    threads = [threading.Thread(target=attempt) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (len(admitted), len(refused)) == (3, 9)


def test_an_unusable_state_file_refuses_logins_with_a_clear_error(tmp_path: Path, caplog):
    path = tmp_path / "login-throttle.sqlite"
    path.mkdir()  # not a file
    with pytest.raises(AuthenticationFailed, match="logins are unavailable"):
        LoginThrottle(path, POLICY).admit("anna", None)
    assert str(path) in caplog.text


# --- through authenticate() -----------------------------------------------------------------


def test_right_password_of_a_disabled_user_counts_no_failure(tenancy):
    users = UserStore(tenancy.config)
    users.add("dora", role="analyst", tenant="t-a", password=PASSWORD, by=ADMIN)
    users.disable("dora", by=ADMIN)
    for _ in range(tenancy.config.login_max_failures + 1):
        with pytest.raises(AuthenticationFailed, match="disabled"):
            authenticate(tenancy.config, "dora", PASSWORD)
    users.enable("dora", by=ADMIN)
    assert authenticate(tenancy.config, "dora", PASSWORD).user == "dora"


def test_a_success_clears_the_users_failures(tenancy):
    UserStore(tenancy.config).add("sam", role="analyst", tenant="t-a", password=PASSWORD, by=ADMIN)
    for _ in range(3):
        for _ in range(tenancy.config.login_max_failures - 1):
            with pytest.raises(AuthenticationFailed, match="invalid user name or password"):
                authenticate(tenancy.config, "sam", "not-the-password")
        assert authenticate(tenancy.config, "sam", PASSWORD).user == "sam"

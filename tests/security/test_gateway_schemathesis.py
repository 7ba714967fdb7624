"""Schemathesis against a real gateway's ``/openapi.json``: no generated request, valid or
deliberately invalid, gets a server error.

Bounded (a few dozen examples per operation and mode) so it runs in well under a minute.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.ingest_service.gateway.conftest import LiveGateway
from tests.security.gateway_support import gateway_fixture

pytestmark = pytest.mark.integration

_EXAMPLES = 40


gateway = gateway_fixture(
    "gateway-schemathesis", WORKBENCH_GATEWAY_WORKERS="1", WORKBENCH_GATEWAY_READ_TIMEOUT="3"
)


def _fuzz(
    operation: schemathesis.APIOperation,
    mode: GenerationMode,
    token: str | None,
    statuses: Counter[tuple[str, str, int]],
) -> None:
    """``_EXAMPLES`` generated cases of ``operation``, sent with ``token`` (None: with what
    the generator made of the header); fails on any 5xx answer."""

    @settings(
        max_examples=_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        if token is not None:  # a real device: its valid events get through
            case.headers = {**(case.headers or {}), "Authorization": token}
        response = case.call_and_validate(checks=[not_a_server_error], timeout=15)
        label = f"{mode.value}{'' if token else ', generated token'}"
        statuses[(case.path, label, response.status_code)] += 1

    run()


def test_schemathesis_finds_no_server_error(
    gateway: LiveGateway, record_property: Callable[[str, object], None]
):
    schema = schemathesis.openapi.from_url(f"{gateway.url}/openapi.json")
    schema.config.base_url = gateway.url
    token = gateway.token("dev-1", ttl_s=3600)
    statuses: Counter[tuple[str, str, int]] = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        _fuzz(operation, GenerationMode.POSITIVE, token, statuses)
        if operation.method.upper() == "POST":  # the only operation with inputs to break
            _fuzz(operation, GenerationMode.NEGATIVE, token, statuses)
            _fuzz(operation, GenerationMode.NEGATIVE, None, statuses)
    cases = sum(statuses.values())
    record_property("schemathesis_cases", cases)
    print(f"schemathesis generated {cases} cases: {sorted(statuses.items())}")
    assert cases >= _EXAMPLES  # the generator really ran
    assert all(status < 500 for (_, _, status) in statuses)
    posted = {status for (path, _, status) in statuses if path == "/v1/telemetry"}
    assert 202 in posted  # valid events got through
    assert any(400 <= status < 500 for status in posted)  # and invalid ones were refused

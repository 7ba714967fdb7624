"""SAS tokens at the gateway's HTTP door: parsing is total, lifetimes are capped.

Finding 8 of the security review: ``se=%C2%B2`` (a superscript two, which
``str.isdigit`` accepts and ``int`` refuses) made the gateway answer 500 text/plain,
uncounted; and a token valid for 3000 years was accepted.
"""

from __future__ import annotations

import base64
import time
import urllib.parse
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import isolated_env, run_cli
from tests.ingest_service.gateway.conftest import LiveGateway
from tests.security.gateway_support import (
    gateway_fixture,
    is_problem,
    post_bytes,
    raw_request,
    rejected,
)
from workbench.config import Config
from workbench.exceptions import InvalidToken
from workbench.registry.keys import (
    derive_device_key,
    parse_sas_token,
    sas_signature,
    sas_token,
    verify_sas_token,
)

pytestmark = pytest.mark.integration

_KEY = derive_device_key(b"m" * 32, "dev-1", 1)
_NOW = 1_900_000_000.0
_YEAR = 365 * 24 * 3600


# a short read timeout: a fuzzed header that leaves a body unfinished costs 2 s, not 15
gateway = gateway_fixture(
    "gateway-sas", WORKBENCH_GATEWAY_WORKERS="1", WORKBENCH_GATEWAY_READ_TIMEOUT="2"
)


def _fields(draw_text: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """``SharedAccessSignature`` followed by sr/se/sig-like fields of arbitrary text."""
    names = st.sampled_from(["sr", "se", "sig", "x", "", "se "])
    digits = st.text(st.characters(categories=["Nd", "No"]), min_size=1, max_size=14)
    value = st.one_of(draw_text, digits, draw_text.map(urllib.parse.quote))
    field = st.tuples(names, st.sampled_from(["=", "", "=="]), value).map("".join)
    return st.lists(field, max_size=5).map(lambda fs: "SharedAccessSignature " + "&".join(fs))


@settings(max_examples=400, deadline=None)
@given(header=st.one_of(st.text(), _fields(st.text())))
@example(header="SharedAccessSignature sr=dev-1&se=%C2%B2&sig=AAAA")
@example(header="SharedAccessSignature sr=dev-1&se=\u00b2&sig=AAAA")
@example(header="SharedAccessSignature sr=dev-1&se=\u0663\u0663&sig=AAAA")  # Arabic-Indic 3
@example(header="SharedAccessSignature sr=%ED%A0%80&se=1&sig=AAAA")  # a lone surrogate
@example(header="SharedAccessSignature sr=\udcff&se=1&sig=AAAA")
def test_parse_sas_token_refuses_any_text_with_invalid_token_only(header: str):
    try:
        token = parse_sas_token(header)
    except InvalidToken as exc:
        assert exc.message  # a precise detail for the 401
        return
    assert token.device_id and 0 <= token.expiry < 10**12
    assert verify_sas_token(token, base64.b64decode(_KEY), now=_NOW, max_ttl=_YEAR) in {
        None,
        "bad_signature",
        "expired",
        "lifetime_too_long",
    }


@pytest.mark.parametrize(
    "se", ["\u00b2", "%C2%B2", "\u0663", "\uff11", "1\u00b2", "+1", " 1", "-1"]
)
def test_only_ascii_digits_make_an_expiry(se: str):
    sig = urllib.parse.quote(base64.b64encode(b"s" * 32).decode(), safe="")
    with pytest.raises(InvalidToken, match="se is not a unix time"):
        parse_sas_token(f"SharedAccessSignature sr=dev-1&se={se}&sig={sig}")


def test_a_token_living_longer_than_the_cap_fails_verification():
    key = base64.b64decode(_KEY)
    long = parse_sas_token(sas_token("dev-1", _KEY, expiry=int(_NOW) + _YEAR + 1))
    assert verify_sas_token(long, key, now=_NOW, max_ttl=_YEAR) == "lifetime_too_long"
    assert verify_sas_token(long, key, now=_NOW, max_ttl=2 * _YEAR) is None
    fine = parse_sas_token(sas_token("dev-1", _KEY, expiry=int(_NOW) + _YEAR))
    assert verify_sas_token(fine, key, now=_NOW, max_ttl=_YEAR) is None
    assert Config.from_env({"WORKBENCH_SAS_MAX_TTL": "600"}).sas_max_ttl == 600
    assert Config.from_env({}).sas_max_ttl == _YEAR


def test_unicode_digit_expiry_is_a_counted_401_problem(gateway: LiveGateway):
    """Finding 8, as reported: ``se=%C2%B2`` must not be a 500."""
    sig = urllib.parse.quote(
        base64.b64encode(sas_signature(base64.b64decode(gateway.keys["dev-1"]), "dev-1", 2))
    )
    before = rejected(gateway, "http", 401, "malformed_token")
    for se in (b"%C2%B2", "\u00b2".encode()):
        answer = raw_request(
            gateway, post_bytes(b"SharedAccessSignature sr=dev-1&se=%b&sig=%b" % (se, sig.encode()))
        )
        assert answer.status == 401, answer
        assert is_problem(answer), answer
        doc = answer.json()
        assert doc["reason"] == "malformed_token"
        assert "se" in str(doc["detail"])
    assert rejected(gateway, "http", 401, "malformed_token") == before + 2


_BYTES_SEEN: list[int] = []


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    value=st.one_of(
        st.binary(max_size=200),
        _fields(st.text(max_size=40)).map(lambda t: t.encode("utf-8", "surrogateescape")),
    )
)
@example(value=b"SharedAccessSignature sr=dev-1&se=%C2%B2&sig=AAAA")
@example(value=b"SharedAccessSignature sr=dev-1&se=\xc2\xb2&sig=AAAA")
@example(value=b"SharedAccessSignature sr=\xff\xfe&se=1&sig=AAAA")
@example(value=b"SharedAccessSignature sr=dev-1&se=99999999999999999999&sig=AAAA")
@example(value=b"\x00")
@example(value=b"x\r\nContent-Length: 7")
def test_fuzzed_authorization_headers_never_get_a_server_error(gateway: LiveGateway, value: bytes):
    _BYTES_SEEN.append(len(value))
    answer = raw_request(gateway, post_bytes(value))
    assert answer.status < 500, (value, answer)
    assert is_problem(answer), (value, answer)


def test_fuzzing_reached_the_gateway():
    # the fuzz test above ran first (file order): its examples really went over the socket
    print(f"{len(_BYTES_SEEN)} fuzzed Authorization headers sent")
    assert len(_BYTES_SEEN) >= 50


def test_tokens_beyond_the_lifetime_cap_are_refused(gateway: LiveGateway):
    """Finding 8: a token valid for 3000 years was accepted."""
    now = int(time.time())
    event = {"ts": "2026-11-27T05:30:00Z", "seq": 1, "readings": {"temperature": 21.5}}
    before = rejected(gateway, "http", 401, "lifetime_too_long")
    for expiry in (now + 3000 * _YEAR, now + _YEAR + 3600):
        r = httpx.post(
            f"{gateway.url}/v1/telemetry",
            json=event,
            headers={"Authorization": gateway.token("dev-1", expiry=expiry)},
            timeout=15,
        )
        assert r.status_code == 401, r.text
        assert r.headers["Content-Type"].startswith("application/problem+json")
        assert r.json()["reason"] == "lifetime_too_long"
        assert "WORKBENCH_SAS_MAX_TTL" in r.json()["detail"]
    assert rejected(gateway, "http", 401, "lifetime_too_long") == before + 2
    ok = httpx.post(
        f"{gateway.url}/v1/telemetry",
        json=event,
        headers={"Authorization": gateway.token("dev-1", expiry=now + _YEAR - 3600)},
        timeout=15,
    )
    assert ok.status_code == 202, ok.text


def test_cli_refuses_negative_zero_and_over_cap_token_lifetimes(tmp_path: Path):
    env = isolated_env(tmp_path / "home")
    args = ("devices", "token", "dev-1", "--key", _KEY)
    for ttl in ("-5", "0", str(_YEAR + 1), str(3000 * _YEAR)):
        refused = run_cli(env, *args, "--ttl", ttl)
        assert refused.returncode == 2, (ttl, refused.stdout, refused.stderr)
        assert "--ttl" in refused.stderr and not refused.stdout
    assert run_cli(env, *args, "--ttl", str(_YEAR)).returncode == 0
    capped = {**env, "WORKBENCH_SAS_MAX_TTL": "600"}
    assert run_cli(capped, *args, "--ttl", "601").returncode == 2
    out = run_cli(capped, *args, "--ttl", "600")
    assert out.returncode == 0 and out.stdout.startswith("SharedAccessSignature sr=dev-1&se=")

"""MQTT over TLS on its own port: a real TLS client publishes and gets its PUBACK; plain
MQTT on the TLS port is refused; a certificate that cannot be loaded stops
the gateway at start with one line."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mqtt5
import pytest

from tests.conftest import fresh_topic, isolated_env
from tests.ingest_service.gateway.conftest import LiveGateway, live_gateway
from tests.ingest_service.gateway.test_mqtt import V5, V311, Client, _event, _stored, _topic
from workbench.config import Config

pytestmark = [pytest.mark.integration]


def _certificate(folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture(scope="module")
def tls_gateway(
    broker_config: Config, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveGateway, Path]]:
    folder = tmp_path_factory.mktemp("mqtt-tls")
    cert, key = _certificate(folder, "gateway")
    config = fresh_topic(broker_config, folder)
    with live_gateway(
        config, WORKBENCH_MQTT_TLS_CERT=str(cert), WORKBENCH_MQTT_TLS_KEY=str(key)
    ) as live:
        yield live, cert


def _tls_client(gw: LiveGateway, version: int, cafile: Path) -> Client:
    """The test client of test_mqtt, its socket wrapped in TLS that checks the gateway's
    certificate against ``cafile``."""
    client = Client.__new__(Client)
    client.version = version
    context = ssl.create_default_context(cafile=str(cafile))
    raw = socket.create_connection((gw.config.host, gw.config.mqtt_tls_port), timeout=20)
    client.sock = context.wrap_socket(raw, server_hostname=gw.config.host)
    return client


@pytest.mark.parametrize("version", [V5, V311])
def test_a_tls_client_publishes_and_gets_its_puback(
    tls_gateway: tuple[LiveGateway, Path], version: int
):
    gw, cert = tls_gateway
    device = f"mq-tls-{version}"
    gw.provision(device)
    gw.wait_for_registry()
    client = _tls_client(gw, version, cert)
    try:
        assert client.sock.version() in ("TLSv1.2", "TLSv1.3")  # type: ignore[attr-defined]
        assert client.connect(device, gw.token(device), device) == 0
        client.publish(_topic(device), _event(1), packet_id=21)
        assert client.puback() == (21, 0)
    finally:
        client.close()
    events = _stored(gw.config, device, wait_for=1)
    assert [(e["seq"], e["protocol"]) for e in events] == [(1, "mqtt")]
    # the plain port still serves plain MQTT next to it
    plain = Client(gw, version)
    try:
        assert plain.connect(device, gw.token(device), device) == 0
    finally:
        plain.close()


def test_plain_mqtt_on_the_tls_port_is_refused(
    tls_gateway: tuple[LiveGateway, Path], tmp_path: Path
):
    gw, _cert = tls_gateway
    connect = mqtt5.ConnectPacket("dev-1", username="dev-1", password=gw.token("dev-1").encode())
    with socket.create_connection((gw.config.host, gw.config.mqtt_tls_port), timeout=20) as plain:
        plain.sendall(connect.write())
        answer = b""
        while chunk := plain.recv(4096):  # until the door closes it
            answer += chunk
    assert not answer.startswith(b"\x20")  # no CONNACK: at most a TLS alert
    # a TLS client that does not trust the gateway's certificate gets no session either
    other, _ = _certificate(tmp_path, "other")
    with pytest.raises(ssl.SSLCertVerificationError):
        _tls_client(gw, V5, other)
    # and the door still serves TLS
    client = _tls_client(gw, V311, _cert)
    try:
        assert client.connect("dev-1", gw.token("dev-1"), "dev-1") == 0
    finally:
        client.close()


@pytest.mark.parametrize("setting", ["missing", "not_pem", "wrong_key"])
def test_a_bad_certificate_setting_stops_the_gateway_with_one_line(tmp_path: Path, setting: str):
    cert, key = _certificate(tmp_path, "good")
    _other_cert, other_key = _certificate(tmp_path, "other")
    (tmp_path / "notes.txt").write_text("not a certificate\n")
    cert_env, key_env, why = {
        "missing": (tmp_path / "nope.crt", key, "No such file or directory"),
        "not_pem": (tmp_path / "notes.txt", key, "not a PEM certificate chain"),
        "wrong_key": (cert, other_key, "KEY_VALUES_MISMATCH"),
    }[setting]
    env = isolated_env(
        tmp_path / "home",
        WORKBENCH_MQTT_TLS_CERT=str(cert_env),
        WORKBENCH_MQTT_TLS_KEY=str(key_env),
    )
    done = subprocess.run(
        [sys.executable, "-m", "ingest_service", "gateway"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("ingest_service gateway: error: WORKBENCH_MQTT_TLS_CERT=")
    assert why in lines[0]

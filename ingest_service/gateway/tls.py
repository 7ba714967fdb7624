"""MQTT over TLS: the server context of ``WORKBENCH_MQTT_TLS_CERT`` / ``_KEY``.

TLS is on when a certificate is set; the door then also listens on
``WORKBENCH_MQTT_TLS_PORT`` (8883, MQTT's TLS port), TLS 1.2 or newer, the handshake
done by the event loop within ``WORKBENCH_GATEWAY_READ_TIMEOUT``. A failed handshake —
plain MQTT on the TLS port, a client that rejects the certificate — closes the
connection before it counts as an MQTT connection. The context is built once in the
parent before any port is bound: a certificate that cannot be loaded stops the gateway
with one line.

>>> from workbench.config import Config
>>> server_context(Config.from_env({"WORKBENCH_HOME": "/tmp/wb"})) is None
True
"""

from __future__ import annotations

import ssl

from workbench.config import Config
from workbench.exceptions import ConfigError

__all__ = ["server_context"]


def _no_password() -> bytes:
    # an encrypted key would otherwise make OpenSSL prompt on the terminal of a service
    return b""


def server_context(config: Config) -> ssl.SSLContext | None:
    """The TLS context of the MQTT door, or None when no certificate is set.

    Raises :class:`ConfigError` (one line: the settings, why, what to do) when the
    certificate or key cannot be used.
    """
    cert, key = config.mqtt_tls_cert, config.mqtt_tls_key
    if not cert:
        if key:
            raise ConfigError(
                f"WORKBENCH_MQTT_TLS_KEY={key} is set but WORKBENCH_MQTT_TLS_CERT is empty",
                hint="set the certificate too, or unset the key",
            )
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key or None, password=_no_password)
    except ssl.SSLError as exc:
        why = "not a PEM certificate chain with its matching private key"
        raise _unusable(cert, key, f"{why}: {exc.reason}" if exc.reason else why) from None
    except OSError as exc:
        raise _unusable(cert, key, exc.strerror or str(exc)) from None
    return context


def _unusable(cert: str, key: str, why: str) -> ConfigError:
    settings = f"WORKBENCH_MQTT_TLS_CERT={cert}" + (
        f", WORKBENCH_MQTT_TLS_KEY={key}" if key else ""
    )
    return ConfigError(
        f"{settings}: cannot load the MQTT TLS certificate and key ({why})",
        hint="give a readable PEM certificate chain and its unencrypted PEM private key "
        "(in the same file, or in WORKBENCH_MQTT_TLS_KEY)",
    )

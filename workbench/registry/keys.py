"""Device keys and SAS tokens (DESIGN.md §6).

A device key is never stored. The lake holds only each device's
``key_version``; the key is derived as
``HMAC-SHA256(master, "<device_id>:<key_version>")`` from a master secret kept
outside the lake in ``$WORKBENCH_HOME/secrets/master.key`` (created 0600 on
first use). A copy of the lake therefore hands out no working key, rotating a
key is bumping its version, and the gateway derives the same keys from the
same secret.

>>> key = derive_device_key(b"m" * 32, "dev-1", 1)
>>> len(base64.b64decode(key))
32
>>> token = sas_token("dev-1", key, expiry=2_000_000_000)
>>> token.startswith("SharedAccessSignature sr=dev-1&se=2000000000&sig=")
True
>>> parse_sas_token(token).device_id
'dev-1'
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import time
import urllib.parse
from pathlib import Path

from workbench.config import Config
from workbench.exceptions import InvalidToken
from workbench.secretfiles import load_secret, secret_path

__all__ = [
    "SasToken",
    "derive_device_key",
    "key_bytes",
    "load_master_key",
    "master_key_path",
    "parse_sas_token",
    "sas_signature",
    "sas_token",
    "verify_sas_token",
]

_PREFIX = "SharedAccessSignature "
_MASTER_BYTES = 32


def master_key_path(config: Config) -> Path:
    """Where the master secret lives: under ``$WORKBENCH_HOME``, never in the lake."""
    return secret_path(config, "master.key")


def load_master_key(config: Config, *, create: bool = True) -> bytes:
    """The master secret; created (32 random bytes, mode 0600) on first use when ``create``."""
    return load_secret(
        master_key_path(config),
        what="master key",
        create=create,
        lost_hint="restore it from a backup, or copy it from the host that provisioned the "
        "devices; without it no device key can be derived",
    )


def derive_device_key(master: bytes, device_id: str, key_version: int) -> str:
    """The device's key (base64 text of 32 bytes) for ``key_version``."""
    digest = hmac.new(master, f"{device_id}:{key_version}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def key_bytes(key: str) -> bytes:
    """Decode a base64 device key, or raise InvalidToken."""
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidToken(
            "device key is not valid base64", hint="pass the key exactly as provisioning printed it"
        ) from None
    if not raw:
        raise InvalidToken("device key is empty", hint="pass the key provisioning printed")
    return raw


def sas_signature(key: bytes, device_id: str, expiry: int) -> bytes:
    """HMAC-SHA256(key, "<device_id>\\n<expiry>")."""
    return hmac.new(key, f"{device_id}\n{expiry}".encode(), hashlib.sha256).digest()


def sas_token(device_id: str, key: str, *, ttl_s: int = 3600, expiry: int | None = None) -> str:
    """The ``Authorization`` header value for ``device_id`` signed with its base64 ``key``."""
    se = int(time.time()) + ttl_s if expiry is None else expiry
    sig = base64.b64encode(sas_signature(key_bytes(key), device_id, se)).decode()
    return (
        f"{_PREFIX}sr={urllib.parse.quote(device_id, safe='')}&se={se}"
        f"&sig={urllib.parse.quote(sig, safe='')}"
    )


@dataclasses.dataclass(frozen=True)
class SasToken:
    """A parsed SAS token (not yet verified)."""

    device_id: str
    expiry: int
    signature: bytes


def parse_sas_token(header: str) -> SasToken:
    """Parse an ``Authorization`` header value; raise InvalidToken when it is not a SAS token."""
    if not header.startswith(_PREFIX):
        raise InvalidToken("Authorization is not a SharedAccessSignature token")
    fields: dict[str, str] = {}
    for part in header[len(_PREFIX) :].strip().split("&"):
        name, sep, value = part.partition("=")
        if not sep or name in fields:
            raise InvalidToken("malformed SharedAccessSignature token")
        fields[name] = urllib.parse.unquote(value)
    if set(fields) != {"sr", "se", "sig"}:
        raise InvalidToken("SharedAccessSignature token needs exactly sr, se and sig")
    if not fields["se"].isdigit() or len(fields["se"]) > 12:
        raise InvalidToken("SharedAccessSignature se is not a unix time")
    try:
        signature = base64.b64decode(fields["sig"], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidToken("SharedAccessSignature sig is not base64") from None
    if not fields["sr"]:
        raise InvalidToken("SharedAccessSignature sr is empty")
    return SasToken(fields["sr"], int(fields["se"]), signature)


def verify_sas_token(token: SasToken, key: bytes, *, now: float | None = None) -> str | None:
    """None when ``token`` is signed by ``key`` and unexpired, else ``"expired"`` or
    ``"bad_signature"``."""
    expected = sas_signature(key, token.device_id, token.expiry)
    if not hmac.compare_digest(expected, token.signature):
        return "bad_signature"
    if token.expiry <= (time.time() if now is None else now):
        return "expired"
    return None

"""Device keys and SAS tokens (docs/gateway.md, "Key storage" and "HTTP API").

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
import re
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
_FIELDS = ("sr", "se", "sig")
# ASCII digits only: str.isdigit() also takes "²" or "٣", which int() then refuses
_UNIX_TIME = re.compile(r"[0-9]{1,12}")
# the registry's device id rule (workbench.registry.store.valid_id)
_DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_SIG_BYTES = 32  # HMAC-SHA256


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
    """Parse an ``Authorization`` header value; raise InvalidToken when it is not a SAS token.

    Total: any text either parses or raises InvalidToken with a precise message.

    >>> parse_sas_token("SharedAccessSignature sr=dev-1&se=%C2%B2&sig=AAAA")
    Traceback (most recent call last):
    ...
    workbench.exceptions.InvalidToken: SharedAccessSignature se is not a unix time (ASCII digits)
    """
    if not header.startswith(_PREFIX):
        raise InvalidToken("Authorization is not a SharedAccessSignature token")
    fields: dict[str, str] = {}
    for part in header[len(_PREFIX) :].strip().split("&"):
        name, sep, value = part.partition("=")
        if not sep:
            raise InvalidToken(
                "malformed SharedAccessSignature token: each field is name=value, joined by &"
            )
        if name not in _FIELDS:
            raise InvalidToken(
                f"SharedAccessSignature token has an unknown field {name[:20]!r} "
                "(it holds sr, se and sig)"
            )
        if name in fields:
            raise InvalidToken(f"SharedAccessSignature token repeats its {name} field")
        fields[name] = urllib.parse.unquote(value)
    missing = [name for name in _FIELDS if name not in fields]
    if missing:
        raise InvalidToken(f"SharedAccessSignature token lacks {', '.join(missing)}")
    if not _UNIX_TIME.fullmatch(fields["se"]):
        raise InvalidToken("SharedAccessSignature se is not a unix time (ASCII digits)")
    if not _DEVICE_ID.fullmatch(fields["sr"]):
        raise InvalidToken(
            "SharedAccessSignature sr is not a device id (1-128 letters, digits, '.', '_', "
            "':' or '-')"
        )
    try:
        signature = base64.b64decode(fields["sig"], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidToken("SharedAccessSignature sig is not base64") from None
    if len(signature) != _SIG_BYTES:
        raise InvalidToken(
            f"SharedAccessSignature sig is {len(signature)} bytes, not {_SIG_BYTES} (HMAC-SHA256)"
        )
    return SasToken(fields["sr"], int(fields["se"]), signature)


def verify_sas_token(
    token: SasToken, key: bytes, *, now: float | None = None, max_ttl: float | None = None
) -> str | None:
    """None when ``token`` is signed by ``key``, unexpired and expires at most ``max_ttl``
    seconds from ``now``, else ``"bad_signature"``, ``"expired"`` or ``"lifetime_too_long"``."""
    expected = sas_signature(key, token.device_id, token.expiry)
    if not hmac.compare_digest(expected, token.signature):
        return "bad_signature"
    now = time.time() if now is None else now
    if token.expiry <= now:
        return "expired"
    if max_ttl is not None and token.expiry - now > max_ttl:
        return "lifetime_too_long"
    return None

"""Secrets kept as files under ``$WORKBENCH_HOME/secrets/`` (never in the lake).

One way to create and read them for every part: 32 random bytes, base64 text,
mode 0600 in a 0700 folder, written to a temporary file and linked into place
so that concurrent first users agree on one secret and never read a half-written
file.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import secrets
from pathlib import Path

from workbench.config import Config
from workbench.exceptions import MasterKeyError
from workbench.filemodes import private_dir

__all__ = ["SECRET_BYTES", "load_secret", "secret_path"]

SECRET_BYTES = 32


def secret_path(config: Config, name: str) -> Path:
    """``$WORKBENCH_HOME/secrets/<name>``."""
    return config.home / "secrets" / name


def load_secret(path: Path, *, what: str, lost_hint: str, create: bool = True) -> bytes:
    """The secret in ``path``, created on first use when ``create``.

    Raises :class:`MasterKeyError` naming ``what`` with ``lost_hint`` when the file is
    missing (and ``create`` is false), unreadable or malformed.
    """
    if not path.exists():
        if not create:
            raise MasterKeyError(f"{what} {path} does not exist", hint=lost_hint)
        _create(path)
    try:
        secret = base64.b64decode(path.read_text().strip(), validate=True)
    except (OSError, binascii.Error, ValueError) as exc:
        raise MasterKeyError(f"cannot read {what} {path} ({exc})", hint=lost_hint) from None
    if len(secret) != SECRET_BYTES:
        raise MasterKeyError(
            f"{what} {path} holds {len(secret)} bytes, expected {SECRET_BYTES}", hint=lost_hint
        )
    return secret


def _create(path: Path) -> None:
    private_dir(path.parent)  # the home too when this creates it, whatever the umask
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode() + "\n")
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):  # another process won: its secret is it
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

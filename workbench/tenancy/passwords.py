"""Password hashing: scrypt (memory-hard, salted, in the standard library).

Stored form: ``scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>`` so parameters can be
raised later without invalidating existing hashes.

>>> stored = hash_password("correct horse")
>>> verify_password("correct horse", stored), verify_password("wrong", stored)
(True, False)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

__all__ = ["DUMMY_HASH", "hash_password", "new_password", "verify_password"]

# 128·N·r = 16 MiB of memory per check: costly for a guesser at scale, unnoticed at one
# login (the cost of a check: docs/security.md, "Password hashing")
_N, _R, _P, _LEN = 2**14, 8, 1, 32


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """A salted scrypt hash of ``password`` in the stored form."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=_LEN)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored``; constant-time comparison."""
    try:
        scheme, n, r, p, salt_b64, digest_b64 = stored.split("$")
        if scheme != "scrypt":
            return False
        salt, expected = base64.b64decode(salt_b64), base64.b64decode(digest_b64)
        actual = hashlib.scrypt(
            password.encode(), salt=salt, n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


DUMMY_HASH = hash_password(secrets.token_urlsafe(16))
"""Checked against for unknown users, so that they cost the same time as a wrong password."""


def new_password() -> str:
    """A random password for generated accounts (demo users): 16 URL-safe characters."""
    return secrets.token_urlsafe(12)

"""More drills: bad input, clock skew, a full disk (registered with :func:`drill`)."""

from __future__ import annotations

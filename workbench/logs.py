"""Logging set-up for entry points (libraries only call ``logging.getLogger(__name__)``)."""

from __future__ import annotations

import logging

__all__ = ["configure_logging"]


def configure_logging(level: str = "INFO") -> None:
    """Log to stderr with timestamps; a no-op when handlers already exist."""
    root = logging.getLogger()
    if root.handlers:
        return
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)

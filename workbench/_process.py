"""Process exit without the interpreter's final teardown.

deltalake/pyarrow dataset scans leave native threads that can hit ``std::terminate``
while Python finalizes ("terminate called without an active exception", exit 134),
at random, after all work is done (delta-rs issue 2184, polars issue 24169).
Entry points therefore flush and leave with ``os._exit``: every file, Delta commit
and Kafka flush is complete by then; only the crash-prone teardown is skipped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import NoReturn

__all__ = ["hard_exit"]


def hard_exit(code: int) -> NoReturn:
    """Flush stdio and logging, then end the process with ``code``."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed or broken pipe
            stream.flush()
    logging.shutdown()
    os._exit(code)

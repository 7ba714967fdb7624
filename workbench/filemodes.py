"""Owner-only files: the workbench's home holds password hashes, keys, logs and the lake.

Entry points (the ``workbench`` command and each service's ``python -m`` entry) call
:func:`restrict_umask` first, so that every file and folder they and their children
(the stack's components, the broker) create is readable by its owner only, whatever
the shell's umask. Folders the library creates itself are made with
:func:`private_dir`, which also holds when the library runs in a process that did not
restrict its umask (a notebook kernel).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["OWNER_ONLY_UMASK", "private_dir", "restrict_umask", "write_json"]

OWNER_ONLY_UMASK = 0o077


def restrict_umask() -> int:
    """Clear group and other bits of everything this process creates from now on.

    Bits a stricter umask already clears stay cleared. Returns the previous umask.
    """
    previous = os.umask(OWNER_ONLY_UMASK)
    os.umask(previous | OWNER_ONLY_UMASK)
    return previous


def private_dir(path: Path) -> Path:
    """``path`` as a folder; what is missing of it (parents too) is created mode 0700.

    An existing folder keeps its mode: it may be shared on purpose, and only its
    owner can say so.
    """
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:  # a concurrent creator: its mode is its own business
            continue
        folder.chmod(0o700)  # exactly 0700, whatever the umask takes away from mkdir's mode
    return path


def write_json(path: Path, value: Any) -> None:
    """``value`` as JSON in ``path``, owner-only, written aside and renamed over it: a
    reader sees the old file or the new one, never half of one, and two processes that
    write the same file at once each rename a whole file of their own."""
    private_dir(path.parent)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(value, out)
    partial.replace(path)

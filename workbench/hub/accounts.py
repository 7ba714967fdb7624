"""One unprivileged OS account per workbench user who gets a notebook server.

The account is named ``wb-<user>`` (so a workbench user called ``root`` never becomes
the OS's root), has its own group, a home folder mode 0700 under
``WORKBENCH_HUB_HOMES`` and no login shell. The hub creates it before the first
spawn; :func:`remove_account` deletes it with its home.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import subprocess
from pathlib import Path

from workbench.config import Config
from workbench.exceptions import HubUnavailable, InvalidInput

__all__ = ["PREFIX", "ensure_account", "os_user_name", "remove_account"]

PREFIX = "wb-"

# what useradd accepts on every distribution (at most 32 characters)
_OS_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


def os_user_name(user: str) -> str:
    """The OS account of workbench user ``user``.

    >>> os_user_name("ann")
    'wb-ann'
    """
    name = PREFIX + user.lower()
    if not _OS_NAME.fullmatch(name):
        raise InvalidInput(
            f"workbench user {user!r} cannot have an OS account ({name!r} is not a valid one)",
            hint="notebook users need names of at most 29 lower-case letters, digits, '_' or '-'",
        )
    return name


def ensure_account(config: Config, user: str) -> pwd.struct_passwd:
    """The OS account of ``user``, created (with its home, mode 0700) when missing."""
    name = os_user_name(user)
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        home = Path(config.hub_homes) / name
        _run(
            ["useradd", "--create-home", "--home-dir", str(home), "--user-group",
             "--shell", "/usr/sbin/nologin", "--comment", f"workbench user {user}", name],
            what=f"create the OS account {name}",
        )  # fmt: skip
        entry = pwd.getpwnam(name)
    home = Path(entry.pw_dir)
    home.mkdir(mode=0o700, exist_ok=True)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    home.chmod(0o700)  # useradd follows HOME_MODE of login.defs, which may be 0755
    return entry


def remove_account(user: str) -> bool:
    """Delete the OS account of ``user`` and its home; False when there was none."""
    name = os_user_name(user)
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return False
    _run(["userdel", "--remove", name], what=f"remove the OS account {name}", ok=(0, 12))
    shutil.rmtree(entry.pw_dir, ignore_errors=True)
    try:
        grp.getgrnam(name)
    except KeyError:
        return True
    _run(["groupdel", name], what=f"remove the group {name}", ok=(0, 6))
    return True


def _run(argv: list[str], *, what: str, ok: tuple[int, ...] = (0,)) -> None:
    if shutil.which(argv[0]) is None:
        raise HubUnavailable(f"cannot {what}: {argv[0]} is not installed")
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    if done.returncode not in ok:
        raise HubUnavailable(
            f"cannot {what}: {argv[0]} exited with {done.returncode} ({done.stderr.strip()})"
        )

"""Each user's JupyterLab as that user's own OS account (JupyterHub's local spawner,
with the account named ``wb-<user>`` and created on first spawn).

The server gets no workbench setting that opens a file: only where the doors listen
(``WORKBENCH_HOST``, ``WORKBENCH_HIVE_PORT``, ...) and, from the hub, its API token,
which the doors accept in place of the user's password. The team's notebooks are
copied into ``~/templates`` read-only (owned by root) at every start.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import pwd
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from jupyterhub.spawner import LocalProcessSpawner, set_user_setuid

from workbench.config import Config
from workbench.exceptions import HubUnavailable, NotFound
from workbench.hub.accounts import ensure_account, os_user_name
from workbench.hub.failures import clear_spawn_failure, record_spawn_failure
from workbench.hub.runtime import jupyter_env

__all__ = ["TEMPLATES_DIR", "WorkbenchSpawner", "templates_source"]

TEMPLATES_DIR = "templates"

# what a user's server learns of the workbench: where the doors are, nothing on disk
_DOOR_SETTINGS = (
    "WORKBENCH_HOST",
    "WORKBENCH_HIVE_PORT",
    "WORKBENCH_FLIGHT_PORT",
    "WORKBENCH_VOILA_PORT",
    "WORKBENCH_HUB_API_PORT",
)


def templates_source() -> Path:
    """The team's notebooks: ``notebooks/`` of the checkout the workbench runs from."""
    return Path(__file__).resolve().parents[2] / "notebooks"


@functools.cache
def _hub_config() -> Config:
    """The hub process's settings, read once: every spawner polls every few seconds."""
    return Config.from_env()


class WorkbenchSpawner(LocalProcessSpawner):  # type: ignore[misc]
    """A local process as ``wb-<user>``, in that account's home."""

    _revoking = False

    def _config(self) -> Config:
        return _hub_config()

    @property
    def os_user(self) -> str:
        """The OS account the server runs as."""
        return os_user_name(self.user.name)

    def make_preexec_fn(self, name: str) -> Callable[[], None]:
        """Drop to the user's OS account (never the hub's root) before exec."""
        fn: Callable[[], None] = set_user_setuid(self.os_user)
        return fn

    def user_env(self, env: dict[str, str]) -> dict[str, str]:
        """``USER``, ``HOME`` and ``SHELL`` of the OS account."""
        entry = pwd.getpwnam(self.os_user)
        env.update(USER=self.os_user, HOME=entry.pw_dir, SHELL=entry.pw_shell)
        return env

    def get_env(self) -> dict[str, str]:
        """The hub's server variables plus where the workbench's doors listen."""
        env: dict[str, str] = super().get_env()
        config = self._config().env()
        env.update({name: config[name] for name in _DOOR_SETTINGS})
        env["WORKBENCH_USER"] = self.user.name
        env.update(jupyter_env())
        # JupySQL would report usage to its vendor: not from a tenant's kernel
        env["PLOOMBER_STATS_ENABLED"] = "false"
        return env

    def _may_run(self) -> bool:
        """Whether the user store still has this user active in a notebook role (an
        unreadable store is no revocation: the server keeps running)."""
        from workbench.hub.authenticator import NOTEBOOK_ROLES
        from workbench.tenancy import UserStore

        try:
            user = UserStore(self._config()).get(self.user.name)
        except NotFound:
            return False
        except Exception:
            self.log.exception("cannot read the user store to check %s", self.user.name)
            return True
        return user.status == "active" and user.role in NOTEBOOK_ROLES

    async def poll(self) -> int | None:
        """Running, or not; a server whose user was disabled (or removed, or made a
        viewer) is stopped here, within one ``poll_interval`` of the change."""
        status: int | None = await super().poll()
        if status is not None and self.pending == "spawn":
            # the hub polls a server that does not answer: it died while starting
            record_spawn_failure(
                self._config(),
                self.user.name,
                f"the server exited with status {status} while starting "
                "(its output is in 'workbench logs hub')",
            )
        if status is None and not self._revoking and not await asyncio.to_thread(self._may_run):
            self.log.warning("%s may no longer run a server: stopping it", self.user.name)
            self._revoking = True  # stop() polls too: that poll must not stop again
            try:
                await self.stop()
            finally:
                self._revoking = False
            return 1
        return status

    async def stop(self, now: bool = False) -> None:
        """Stop the server, then end every process left under the user's OS account:
        kernels orphaned by a server that had to be killed, and whatever the user
        started in the background. A stopped (or revoked) user runs nothing."""
        await super().stop(now)
        ended = await asyncio.to_thread(end_processes_of, self.os_user)
        if ended:
            self.log.warning("ended %d leftover process(es) of %s", ended, self.os_user)

    async def start(self) -> Any:
        """Create the OS account when missing, lay out the templates, then start; a
        failure is recorded for ``workbench status`` (and shown on the hub's page)."""
        config = self._config()
        try:
            if not await asyncio.to_thread(self._may_run):
                raise HubUnavailable(
                    f"{self.user.name} is disabled or not a notebook user", hint="ask an admin"
                )
            entry = ensure_account(config, self.user.name)
            _copy_templates(Path(entry.pw_dir))
            self.notebook_dir = entry.pw_dir
            started = await super().start()
        except Exception as exc:
            record_spawn_failure(config, self.user.name, str(exc) or type(exc).__name__)
            raise
        clear_spawn_failure(config, self.user.name)
        return started


def end_processes_of(os_user: str, *, grace_s: float = 3.0) -> int:
    """Terminate every process of ``os_user``, killing those still there after
    ``grace_s``; how many there were. The account is the user's alone (``wb-<user>``),
    so nothing of anyone else's is touched."""
    procs = [p for p in psutil.process_iter(["username"]) if p.info["username"] == os_user]
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=grace_s)
    return len(procs)


def _copy_templates(home: Path) -> None:
    """``home/templates``: the team's notebooks, readable by the user, changeable by root
    alone (the user copies one to work on it).

    Root writes into a folder the user owns, so every step goes through file descriptors
    and refuses links: whatever the user renames or links meanwhile, root writes only
    into the ``templates`` folder it has just created and holds open.
    """
    source = templates_source()
    if not source.is_dir():
        raise HubUnavailable(f"the team's notebooks are not at {source}")
    home_fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        try:
            old = os.stat(TEMPLATES_DIR, dir_fd=home_fd, follow_symlinks=False)
        except FileNotFoundError:
            old = None
        if old is not None and stat.S_ISDIR(old.st_mode) and old.st_uid == 0:
            shutil.rmtree(TEMPLATES_DIR, dir_fd=home_fd)  # link-safe: walks by descriptor
        elif old is not None:  # the user's own file, folder or link: moved aside, kept
            moved = f"{TEMPLATES_DIR}.moved-{os.getpid()}-{int(old.st_mtime)}"
            os.rename(TEMPLATES_DIR, moved, src_dir_fd=home_fd, dst_dir_fd=home_fd)
        os.mkdir(TEMPLATES_DIR, 0o700, dir_fd=home_fd)
        target_fd = os.open(
            TEMPLATES_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=home_fd
        )
    finally:
        os.close(home_fd)
    try:
        if os.fstat(target_fd).st_uid != 0:
            raise HubUnavailable(f"{home / TEMPLATES_DIR} was replaced while being made")
        for notebook in sorted(source.glob("*.ipynb")):
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            fd = os.open(notebook.name, flags, 0o444, dir_fd=target_fd)
            with os.fdopen(fd, "wb") as out:
                out.write(notebook.read_bytes())
                os.fchmod(out.fileno(), 0o444)  # the hub's umask took the others' bits
        os.fchmod(target_fd, 0o555)
    finally:
        os.close(target_fd)

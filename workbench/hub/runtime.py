"""The interpreter users' servers and kernels run with, and the proxy the hub routes through.

A server runs as its user's OS account, so its interpreter must be executable by
that account. A virtualenv's ``python`` is often a link into a folder only its owner
may enter (pyenv under ``/root``); then the hub prepares a thin virtualenv from a
system interpreter of the same version beside the project's virtualenv, whose
packages it loads from the project's (``WORKBENCH_HUB_PYTHON`` names another one).

configurable-http-proxy comes from the npm registry: ``python -m workbench.hub
install`` (``make hub-deps``) installs the pinned version beside the virtualenv.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

from workbench.config import Config
from workbench.exceptions import HubUnavailable
from workbench.npm import NpmFailed, installed_bin, npm_install

__all__ = [
    "PROXY_VERSION",
    "exposed_paths",
    "install_proxy",
    "jupyter_env",
    "others_can_run",
    "proxy_bin",
    "server_python",
]

PROXY_VERSION = "5.3.0"


def _tools_dir() -> Path:
    return Path(sys.prefix) / "share" / "workbench"


def proxy_bin() -> Path:
    """``configurable-http-proxy`` of :data:`PROXY_VERSION`; raises when not installed."""
    binary = installed_bin("configurable-http-proxy", PROXY_VERSION, "configurable-http-proxy")
    if binary is None:
        raise HubUnavailable(
            f"configurable-http-proxy {PROXY_VERSION} is not installed",
            hint="run 'make hub-deps' (python -m workbench.hub install; needs npm)",
        )
    return binary


def install_proxy() -> Path:
    """Install configurable-http-proxy with npm (once); its path."""
    try:
        return npm_install("configurable-http-proxy", PROXY_VERSION, "configurable-http-proxy")
    except NpmFailed as exc:
        raise HubUnavailable(str(exc), hint="install Node.js (>= 20) and npm") from None


def others_can_run(path: Path) -> bool:
    """Whether an unprivileged stranger can run ``path`` (links resolved): every folder
    on the way is searchable by others and the file executable by them."""
    real = path.resolve()
    for folder in real.parents:
        if not folder.stat().st_mode & 0o001:
            return False
    return bool(real.stat().st_mode & 0o001)


def _others_can_enter(path: Path) -> bool:
    """Whether others can reach ``path``: every folder on the way searchable by them and
    the path itself readable (a folder: listable) by them."""
    real = path.resolve()
    if not real.exists():
        return False
    if any(not folder.stat().st_mode & 0o001 for folder in real.parents):
        return False
    return bool(real.stat().st_mode & 0o004)


def exposed_paths(config: Config) -> list[Path]:
    """The workbench's private places (``$WORKBENCH_HOME``, its secrets, a lake on local
    disk and its registry) that another OS account could read; the hub refuses to start
    while there is one."""
    places = [config.home, config.home / "secrets"]
    if "://" not in config.lake:
        lake = Path(config.lake)
        places += [lake, lake / "registry", lake / "registry" / "users"]
    return [p for p in places if _others_can_enter(p)]


def jupyter_env() -> dict[str, str]:
    """Where the project's Jupyter server extensions (JupyterLab's among them), lab
    extensions, kernel specs and JupyterLab's assets are: Jupyter looks under its own
    interpreter's prefix, and the thin virtualenv of :func:`server_python` has none, so
    without these a server answers 404 at ``/lab``."""
    share, etc = Path(sys.prefix) / "share" / "jupyter", Path(sys.prefix) / "etc" / "jupyter"
    return {
        "JUPYTER_PATH": str(share),
        "JUPYTER_CONFIG_PATH": str(etc),
        "JUPYTERLAB_DIR": str(share / "lab"),
    }


def server_python(config: Config) -> str:
    """The interpreter of the users' servers (see the module's docstring)."""
    if config.hub_python:
        return config.hub_python
    if others_can_run(Path(sys.executable)):
        return sys.executable
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    base = next(
        (p for p in (Path("/usr/bin") / version, Path("/usr/local/bin") / version)
         if p.exists() and others_can_run(p)),
        None,
    )  # fmt: skip
    if base is None:
        raise HubUnavailable(
            f"{sys.executable} cannot be run by the users' OS accounts, and no system "
            f"{version} can",
            hint="install the system's python3 or set WORKBENCH_HUB_PYTHON to an "
            "interpreter with the workbench installed that every user may run",
        )
    thin = Path(sys.prefix) / "hub-python"
    python = thin / "bin" / "python"
    site = Path(sysconfig.get_paths()["purelib"])
    loader = f"import site; site.addsitedir({str(site)!r})\n"
    pth = thin / "lib" / version / "site-packages" / "workbench-venv.pth"
    if not (python.exists() and pth.exists() and pth.read_text() == loader):
        done = subprocess.run(
            [str(base), "-m", "venv", "--without-pip", "--clear", str(thin)],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if done.returncode != 0:
            raise HubUnavailable(f"cannot prepare {thin}: {done.stderr.strip()}")
        pth.write_text(loader)
        for path in [thin, *thin.rglob("*")]:  # made under the hub's owner-only umask
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | 0o055)
    return str(python)

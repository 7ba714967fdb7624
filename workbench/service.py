"""Running one headless service as its own process.

``workbench up`` starts each service as ``python -m <its package>``; every such entry
does the same before the service's own work, through :func:`run_service`: the umask
first (the lake, logs and secrets a service creates are its owner's alone), then the
configuration from the environment and logging. A
:class:`~workbench.exceptions.WorkbenchError` ends the process with one line on stderr
and the error's exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from workbench.config import Config, settings_help
from workbench.exceptions import WorkbenchError
from workbench.filemodes import restrict_umask
from workbench.logs import configure_logging

__all__ = ["run_service", "service_parser"]


def service_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The argument parser of a service entry: ``--help`` lists the settings it reads."""
    return argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def run_service(name: str, entry: Callable[[Config], int]) -> int:
    """Configure the process and run ``entry``; errors are reported as ``name: error: …``."""
    restrict_umask()
    try:
        config = Config.from_env()
        configure_logging(config.log_level)
        return entry(config)
    except WorkbenchError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130

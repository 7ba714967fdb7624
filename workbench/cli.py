"""The ``workbench`` command: a thin layer over the library.

Each verb is a function ``(config, args) -> exit code``. Failures the user can
fix are :class:`~workbench.exceptions.WorkbenchError` and print as one line on
stderr; nothing prints a traceback unless ``WORKBENCH_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import NoReturn, Protocol

from workbench._process import hard_exit
from workbench.config import Config, settings_help
from workbench.exceptions import WorkbenchError

__all__ = ["EXIT_USAGE", "VERB_MODULES", "ArgumentParser", "Handler", "Verb", "main", "run", "say"]

EXIT_USAGE = 2

# Each module defines ``register(verb: Verb) -> None`` and adds its verbs with it.
VERB_MODULES: tuple[str, ...] = (
    "workbench.stack.cli",
    "workbench.registry.cli",
    "workbench.tenancy.cli",
    "workbench.bench.cli",
    "workbench.lake.cli",
    "workbench.query.cli",
    "workbench.dashboards.cli",
    "workbench.ops.cli",
)

Handler = Callable[[Config, argparse.Namespace], int]


class Verb(Protocol):
    """Adds a sub-command; ``handler=None`` for a group that gets sub-commands of its own."""

    def __call__(
        self, name: str, handler: Handler | None, help: str
    ) -> argparse.ArgumentParser: ...


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line naming the fix, not a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def print_table(rows: Sequence[Sequence[object]], *, header: Sequence[str]) -> None:
    """Print ``rows`` under ``header`` as an aligned text table on stdout (None as ``-``)."""
    cells = [
        [str(c) for c in header],
        *[["-" if c is None else str(c) for c in r] for r in rows],
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def say(message: str) -> None:
    """Progress and errors go to stderr, data to stdout."""
    print(message, file=sys.stderr, flush=True)


# --- parser ------------------------------------------------------------------------------


def _parser(environ: dict[str, str] | None = None) -> argparse.ArgumentParser:
    try:
        pkg_version = version("smart-building-workbench")
    except PackageNotFoundError:  # running from a source tree
        pkg_version = "dev"
    epilog = settings_help(environ)
    formatter = argparse.RawDescriptionHelpFormatter
    parser = ArgumentParser(
        prog="workbench",
        description="Smart-building IoT analytics workbench: run the stack, manage the fleet, "
        "query the lake.",
        epilog=epilog,
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"workbench {pkg_version}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    sub.required = True

    def verb(name: str, handler: Handler | None, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name, help=help, description=help, epilog=epilog, formatter_class=formatter
        )
        if handler is not None:
            p.set_defaults(handler=handler)
        return p

    for module in VERB_MODULES:
        importlib.import_module(module).register(verb)
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every verb cleans up (a soak or a drill stops
    its scratch stack) before exiting."""


def _terminate(signum: int, frame: object) -> None:
    raise _Terminated()


def _unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    """A signal landing in a weakref callback or ``__del__`` raises where Python can only
    print and ignore the exception: deliver SIGTERM again, so it ends the verb."""
    if isinstance(unraisable.exc_value, _Terminated):
        # from another thread, once this hook has returned (a signal sent from here
        # would be handled inside the hook, and ignored again)
        timer = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM))
        timer.daemon = True
        timer.start()
        return
    sys.__unraisablehook__(unraisable)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``workbench`` console script."""
    debug = os.environ.get("WORKBENCH_DEBUG") == "1"
    parser = _parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.error(f"'{args.command}' needs a sub-command")
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
        sys.unraisablehook = _unraisable
    try:
        return handler(Config.from_env(), args)
    except WorkbenchError as exc:
        if debug:
            raise
        say(f"workbench: error: {exc}")
        return exc.exit_code
    except _Terminated:
        say("workbench: terminated")
        return 143
    except KeyboardInterrupt:
        say("workbench: interrupted")
        return 130
    except Exception as exc:
        if debug:
            raise
        say(
            f"workbench: internal error: {type(exc).__name__}: {exc} "
            "(rerun with WORKBENCH_DEBUG=1 for the traceback, and please report it)"
        )
        return 70


def run() -> NoReturn:
    """The console script: :func:`main`, then a hard exit (see :mod:`workbench._process`)."""
    hard_exit(main())


if __name__ == "__main__":
    run()

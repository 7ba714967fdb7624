"""The ``workbench`` command: a thin layer over the library.

Each verb is a function ``(config, args) -> exit code``. Failures the user can
fix are :class:`~workbench.exceptions.WorkbenchError` and print as one line on
stderr; nothing prints a traceback unless ``WORKBENCH_DEBUG=1``.

The verbs come from the modules the ``workbench.cli`` entry-point group names (the
workbench's own as well as a plug-in's, see :mod:`workbench.plugins`); each defines
``register(verb: Verb) -> None``. They are loaded in entry-point name order, which is
the order ``workbench --help`` lists them in: the names carry a number for it::

    [project.entry-points."workbench.cli"]
    10-stack = "workbench.stack.cli"
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import NoReturn, Protocol

from workbench import plugins
from workbench._process import hard_exit
from workbench.config import Config, settings_help
from workbench.exceptions import WorkbenchError
from workbench.filemodes import restrict_umask

__all__ = [
    "CLI_GROUP",
    "EXIT_USAGE",
    "ArgumentParser",
    "Handler",
    "Verb",
    "main",
    "run",
    "say",
    "subcommands",
    "verb_group",
]

EXIT_USAGE = 2

CLI_GROUP = "workbench.cli"

Handler = Callable[[Config, argparse.Namespace], int]


class Verb(Protocol):
    """Adds a sub-command; ``handler=None`` for a group that gets sub-commands of its own
    (:func:`verb_group` adds one)."""

    def __call__(
        self, name: str, handler: Handler | None, help: str
    ) -> argparse.ArgumentParser: ...


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line naming the fix, not a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def subcommands(
    parser: argparse.ArgumentParser, dest: str, metavar: str = "COMMAND"
) -> argparse._SubParsersAction[ArgumentParser]:
    """The sub-commands of ``parser`` (a group), named in ``args.<dest>``: one of them is
    required, and each is an :class:`ArgumentParser`, whose errors are one line."""
    return parser.add_subparsers(
        dest=dest, metavar=metavar, parser_class=ArgumentParser, required=True
    )


def verb_group(
    verb: Verb, name: str, help: str, metavar: str = "COMMAND"
) -> argparse._SubParsersAction[ArgumentParser]:
    """Add ``name`` as a group of sub-commands (``workbench NAME COMMAND``) and return them,
    to add each with ``add_parser``."""
    return subcommands(verb(name, None, help), f"{name}_command", metavar)


def whole_number(minimum: int, meaning: str = "") -> Callable[[str], int]:
    """An argparse ``type``: a whole number of at least ``minimum`` (``meaning`` says what
    the smallest one means, e.g. "0 = all")."""
    floor = f"at least {minimum}" + (f" ({meaning})" if meaning else "")

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {floor}, got {text!r}")
        return value

    return parse


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


_ENV_POINTER = (
    "Settings come from environment variables (WORKBENCH_HOME, the ports, Kafka, ...): "
    "'workbench help env' lists them with their current values."
)


def _parser(environ: dict[str, str] | None = None) -> argparse.ArgumentParser:
    try:
        pkg_version = version("smart-building-workbench")
    except PackageNotFoundError:  # running from a source tree
        pkg_version = "dev"
    formatter = argparse.RawDescriptionHelpFormatter
    parser = ArgumentParser(
        prog="workbench",
        description="Smart-building IoT analytics workbench: run the stack, manage the fleet, "
        "query the lake.",
        epilog=_ENV_POINTER,
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"workbench {pkg_version}")
    sub = subcommands(parser, "command")

    def verb(name: str, handler: Handler | None, help: str) -> argparse.ArgumentParser:
        # a sub-command's help is its own options; the environment is on 'workbench help env'
        p = sub.add_parser(name, help=help, description=help, formatter_class=formatter)
        if handler is not None:
            p.set_defaults(handler=handler)
        return p

    for module in plugins.load_all(CLI_GROUP).values():
        module.register(verb)
    _add_help(verb, parser, environ)
    return parser


def _add_help(verb: Verb, parser: argparse.ArgumentParser, environ: dict[str, str] | None) -> None:
    """``workbench help [env | COMMAND ...]``."""

    def show(config: Config, args: argparse.Namespace) -> int:
        topic = list(args.topic)
        if topic in (["env"], ["environment"]):
            print(settings_help(environ))
            return 0
        target = parser
        for word in topic:
            choices = _subcommand_choices(target)
            if word not in choices:
                known = ", ".join(["env", *choices]) if target is parser else ", ".join(choices)
                raise WorkbenchError(
                    f"no help on {' '.join(topic)!r}", hint=f"ask for one of: {known}"
                )
            target = choices[word]
        target.print_help()
        return 0

    p = verb("help", show, "help on a command, or on the environment: 'workbench help env'")
    p.add_argument(
        "topic", nargs="*", metavar="TOPIC", help="'env' (the settings), or a command, e.g. devices"
    )


def _subcommand_choices(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


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
    # before anything is created: the home holds password hashes, keys and the lake, and
    # the stack's components inherit this umask
    restrict_umask()
    debug = os.environ.get("WORKBENCH_DEBUG") == "1"
    try:
        parser = _parser()
    except WorkbenchError as exc:  # an installed plug-in that cannot be loaded
        if debug:
            raise
        say(f"workbench: error: {exc}")
        return exc.exit_code
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
    except BrokenPipeError:  # the reader went away (`workbench help env | head`): not an error
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
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

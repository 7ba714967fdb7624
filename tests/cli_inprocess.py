"""The real ``workbench`` command run in this process (``workbench.cli.main``): the same
parser, verbs and error handling as the console script, without a new interpreter per
call (a subprocess costs seconds on a loaded machine; these tests make many calls)."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys

from workbench.cli import main

__all__ = ["Result", "workbench"]


class Result:
    """Exit code, stdout and stderr of one call."""

    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def workbench(env: dict[str, str], *args: str) -> Result:
    """``workbench ARGS`` with ``env`` as the whole environment; what main() changes in the
    process (umask, SIGTERM handler, unraisable hook, environment) is put back."""
    saved_env = dict(os.environ)
    umask = os.umask(0o022)
    os.umask(umask)
    handler = signal.getsignal(signal.SIGTERM)
    hook = sys.unraisablehook
    out, err = io.StringIO(), io.StringIO()
    os.environ.clear()
    os.environ.update(env)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse: --help, usage errors
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        os.umask(umask)
        signal.signal(signal.SIGTERM, handler)
        sys.unraisablehook = hook
    return Result(code, out.getvalue(), err.getvalue())

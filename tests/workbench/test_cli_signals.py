"""SIGTERM ends a workbench verb through its clean-up, wherever the signal lands."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SNIPPET = textwrap.dedent(
    """
    import os, signal, sys, time, weakref
    from workbench import cli

    signal.signal(signal.SIGTERM, cli._terminate)
    sys.unraisablehook = cli._unraisable

    class Thing:
        pass

    def callback(_ref):
        os.kill(os.getpid(), signal.SIGTERM)  # delivered while this callback runs
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline:
            pass

    thing = Thing()
    ref = weakref.ref(thing, callback)
    try:
        del thing  # the callback runs here; an exception raised in it is only printed
        time.sleep(5)
        print("still running")
    except cli._Terminated:
        print("terminated")
    """
)


def test_a_sigterm_swallowed_by_a_weakref_callback_is_delivered_again():
    done = subprocess.run(
        [sys.executable, "-c", SNIPPET], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.strip() == "terminated", done.stdout + done.stderr

"""Ctrl-C while the ``fpsim`` command starts up: a one-line message and exit status 130.

Importing numpy, Numba and the command modules takes from a third of a second to several
seconds on a busy machine, and a KeyboardInterrupt raised in the middle of it would end the
command with a traceback of whatever module was loading. So when the process was started as the
command (``python -m fpsim`` or the ``fpsim`` script), ``import fpsim`` replaces Python's SIGINT
handler with one that writes ``fpsim: interrupted`` and exits with status 130 at once (nothing
has been recorded yet, so nothing needs cleaning up). :func:`fpsim.cli.main` puts Python's
handler back when it starts, and turns a later KeyboardInterrupt into the same message and
status; a running training loop has its own handler, which checkpoints first.
"""

from __future__ import annotations

import os
import signal
import sys

#: The exit status of an interrupted command (128 + SIGINT, what a shell reports).
EXIT_INTERRUPTED = 130
MESSAGE = "fpsim: interrupted"


def _exit_at_once(signum, frame):
    os.write(2, (MESSAGE + "\n").encode())
    os._exit(EXIT_INTERRUPTED)


def started_as_command() -> bool:
    """True when this process runs the ``fpsim`` command: the interpreter was started as
    ``python -m fpsim`` (not ``-m fpsim.validate`` or another module that imports fpsim), or
    ``sys.argv[0]`` is the path of the ``fpsim`` script."""
    if sys.argv and os.path.basename(sys.argv[0]) == "fpsim":
        return True
    args = iter(list(getattr(sys, "orig_argv", []))[1:])
    for arg in args:  # the interpreter's options, up to what it runs
        if arg in ("-X", "-W"):
            next(args, None)  # (their value)
        elif arg.startswith("-m"):
            return (arg[2:] or next(args, None)) == "fpsim"
        elif arg.startswith("-c") or not arg.startswith("-"):
            return False  # code or a script
    return False


def quiet_startup() -> None:
    """Install the start-up handler when the process runs the command and SIGINT still has
    Python's default handler (an embedding application's own handler is left alone)."""
    if not started_as_command() or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return
    try:
        signal.signal(signal.SIGINT, _exit_at_once)
    except ValueError:  # not the main thread
        pass


def end_startup() -> None:
    """Put Python's SIGINT handler (KeyboardInterrupt) back if the start-up handler is set."""
    if signal.getsignal(signal.SIGINT) is _exit_at_once:
        signal.signal(signal.SIGINT, signal.default_int_handler)

"""SIGTERM as an exception in the main thread, so a terminated run saves checkpoints/last and
shuts Ray down exactly as on Ctrl-C.

`ray.init` replaces the process's SIGTERM handler with abseil's failure handler, which prints a
C++ stack, arms a 3-second abort (exit 134 when shutdown takes longer) and then exits; the run
re-installs this one after `ray.init`.
"""

from __future__ import annotations

import signal
import threading


class Terminated(BaseException):
    """The process got SIGTERM (a BaseException, like KeyboardInterrupt: no `except Exception` eats it)."""


EXIT_SIGTERM, EXIT_SIGINT = 143, 130
"""Exit codes after SIGTERM and Ctrl-C (128 + the signal's number, as a shell reports them)."""


def _on_sigterm(signum, frame) -> None:
    signal.alarm(0)  # in case a handler that chained here armed an abort
    raise Terminated()


def install_sigterm() -> None:
    """Makes SIGTERM raise `Terminated` in the main thread (a no-op elsewhere: only it may set handlers)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)

"""Ctrl-C and SIGTERM during a sweep: remember the signal, interrupt, and check again at safe points.

Python drops an exception raised while a weakref callback or ``__del__`` runs, so the handler's
``KeyboardInterrupt`` can be lost; the flag it sets is checked at each report of a training loop and between trials
(:func:`check_stop`), so the interrupt still happens.
"""

from __future__ import annotations

import contextlib
import signal
import threading

STOP: dict = {"signal": None}  # the last stop signal received, until cleared


def on_stop_signal(signum, frame):
    STOP["signal"] = signum
    raise KeyboardInterrupt


def check_stop() -> None:
    if STOP["signal"] is not None:
        raise KeyboardInterrupt


@contextlib.contextmanager
def stop_signals():
    """Within the block, SIGINT and SIGTERM stop the sweep (in the main thread; elsewhere signals cannot be set)."""
    STOP["signal"] = None
    handled = (signal.SIGINT, signal.SIGTERM) if threading.current_thread() is threading.main_thread() else ()
    old = {sig: signal.signal(sig, on_stop_signal) for sig in handled}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)

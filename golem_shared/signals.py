"""Turning SIGINT and SIGTERM into an event, for the long-running commands of the ``golem-api`` CLI."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator

__all__ = ["stop_on_signals"]


@contextlib.contextmanager
def stop_on_signals(*signals: signal.Signals) -> Iterator[asyncio.Event]:
    """An event set by SIGINT or SIGTERM (or ``signals``) while the block runs in the running loop.

    Where the loop cannot take signal handlers (not the main thread, no signal support) the event is only
    set by whoever else holds it. The handlers are removed when the block ends.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed: list[signal.Signals] = []
    for sig in signals or (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signal support
            pass
    try:
        yield stop
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)

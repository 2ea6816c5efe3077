"""Stopping on SIGTERM and SIGINT: the one way every long-running command here hands a signal to its loop."""

from __future__ import annotations

import contextlib
import logging
import signal
from asyncio import AbstractEventLoop
from collections.abc import Callable

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def stop_on_signals(loop: AbstractEventLoop, callback: Callable[[], object]) -> Callable[[], None]:
    """Call `callback` in `loop` on SIGTERM or SIGINT; returns `undo`, which removes the handlers again.

    Where signals cannot be handled (a loop outside the main thread, a platform without them) nothing
    is installed and that is logged: the caller then stops by cancellation instead.
    """
    handled: list[signal.Signals] = []
    for sig in STOP_SIGNALS:
        try:
            loop.add_signal_handler(sig, callback)
        except (NotImplementedError, RuntimeError, ValueError) as exc:
            log.debug("signal not handled", extra={"signal": sig.name, "error": str(exc)})
            continue
        handled.append(sig)

    def undo() -> None:
        """Remove the handlers installed above (the default action applies again)."""
        for sig in handled:
            with contextlib.suppress(RuntimeError, ValueError):  # the loop may be closed by now
                loop.remove_signal_handler(sig)
        handled.clear()

    return undo

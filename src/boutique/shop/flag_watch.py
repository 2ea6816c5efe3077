"""Undo a flag's fault once the flag is off again, even when no request comes along to notice.

A fault that holds something (memory, a busy thread) is started by the call that finds its flag on;
a `FlagWatch` then polls the flag while the fault holds it and runs the release when the flag reads off,
so switching a flag off ends its fault within a second on an idle service too.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable

POLL_SECONDS = 1.0


class FlagWatch:
    """Calls `release` once `is_on()` reads false, checking every `every` seconds while armed."""

    def __init__(
        self, name: str, is_on: Callable[[], bool], release: Callable[[], None], every: float = POLL_SECONDS
    ) -> None:
        self.name = name
        self.is_on = is_on
        self.release = release
        self.every = every
        self._task: asyncio.Task[None] | None = None

    @property
    def armed(self) -> bool:
        """Whether the watch is polling now."""
        return self._task is not None and not self._task.done()

    def arm(self) -> None:
        """Start polling on the running event loop (idempotent); without one the next call must release."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._task is not None and not self._task.done() and self._task.get_loop() is loop:
            return
        # An empty context: the watch's own evaluations must not land on the span of the call that armed it.
        self._task = loop.create_task(
            self._watch(), name=f"flag watch {self.name}", context=contextvars.Context()
        )

    async def _watch(self) -> None:
        """Poll until the flag is off, then release once."""
        while True:
            await asyncio.sleep(self.every)
            if not self.is_on():
                self.release()
                return

"""A readers/closer gate: many queries at once, or one reopen of the database alone.

Reopening closes every connection, so it must wait until no query is running on one, and queries
arriving meanwhile wait for the new connections instead of failing on closed ones.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Gate:
    """Shared passage for queries, exclusive passage for a reopen (which goes ahead of new queries)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._inside = 0
        self._closing = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        """Hold while running a query on a connection."""
        with self._cond:
            while self._closing:
                self._cond.wait()
            self._inside += 1
        try:
            yield
        finally:
            with self._cond:
                self._inside -= 1
                if not self._inside:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold while closing and reopening connections: no query runs meanwhile."""
        with self._cond:
            while self._closing:
                self._cond.wait()
            self._closing = True
            while self._inside:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._closing = False
                self._cond.notify_all()

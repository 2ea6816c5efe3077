"""Receivers → processors → bounded queue → store, with the sender answered only once its items are stored.

Items are spans, log records or metric points (any `signals.Batch`; the capacity counts items of all).

`submit` refuses at once (`QueueFull`) when the spans waiting would exceed the capacity, so overload
answers 429 / RESOURCE_EXHAUSTED instead of growing memory; otherwise it resolves when the writer
thread has committed the batch, so a success reply means the items survive a `kill -9`. The writer
groups what is waiting, batches of one signal at a time, into one store append (group commit).

While the store is read-only (a full disk), `submit` refuses at once with `StoreFailed` and the writer
asks the store to `recover` every `probe_every` seconds; a store that cannot even be reopened is
`broken`, and `on_broken` tells the process to exit so that its supervisor restarts it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from boutique.observatory.processors import Processor
from boutique.observatory.signals import Batch
from boutique.observatory.store import Store
from boutique.observatory.store.base import StoreBroken

log = logging.getLogger(__name__)
FIGURES = ("accepted", "refused", "failed", "stored")  # what `Pipeline` counts, per signal and in total


class QueueFull(Exception):
    """The queue cannot take the batch now; the sender should retry later."""

    retry_after = 1  # seconds, for Retry-After


class StoreFailed(Exception):
    """The store could not write the batch; retryable."""

    retry_after = 5  # seconds, for Retry-After


class Pipeline:
    """The bounded queue and the writer thread in front of a store."""

    def __init__(
        self,
        store: Store,
        processors: Sequence[Processor] = (),
        capacity_spans: int = 100_000,
        group_spans: int = 20_000,
        retention_every: float = 30.0,
        probe_every: float = 1.0,
        on_broken: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.processors = list(processors)
        self.capacity_spans = capacity_spans
        self.group_spans = group_spans
        self.retention_every = retention_every
        self.probe_every = probe_every
        self.on_broken = on_broken
        self.broken: str | None = None  # why the store can no longer be used, once it cannot
        self._queue: deque[tuple[Batch, Future[int]]] = deque()
        self._queued_spans = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        # Items of every signal: accepted, refused (queue full), failed (a store error), stored; and by signal.
        self.accepted = self.refused = self.stored = self.failed = 0
        self.by_signal: dict[str, dict[str, int]] = {}

    @property
    def queued_spans(self) -> int:
        """Spans waiting for the writer."""
        return self._queued_spans

    def start(self) -> None:
        """Start the writer thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="observatory-writer", daemon=True)
            self._thread.start()

    def offer(self, batch: Batch) -> Future[int]:
        """Queue a batch; a future of the items stored, or `QueueFull` / `StoreFailed` (store read-only) at once."""
        future: Future[int] = Future()
        if len(batch) == 0:
            future.set_result(0)
            return future
        # Processors run here, on the sender's side, not on the writer thread: a store write is what
        # limits ingest, and the writer's core does nothing else then.
        for processor in self.processors:
            batch = processor.process(batch)
        count = len(batch)
        with self._cond:
            if self._stopping:
                raise StoreFailed("the observatory is shutting down")
            state = self.store.write_state()
            if self.broken or not state.writable:
                self._tally(batch, "failed", count)
                raise StoreFailed(f"the store is {'broken' if self.broken else state.summary}")
            # An empty queue takes any batch, so a batch above the capacity is slow, never impossible.
            if self._queued_spans and self._queued_spans + count > self.capacity_spans:
                self._tally(batch, "refused", count)
                raise QueueFull(f"{self._queued_spans} spans waiting (capacity {self.capacity_spans})")
            self._queue.append((batch, future))
            self._queued_spans += count
            self._tally(batch, "accepted", count)
            self._cond.notify()
        return future

    def _tally(self, batch: Batch, figure: str, items: int) -> None:
        """Add `items` to a figure (accepted, refused, failed, stored), in total and for the batch's signal."""
        setattr(self, figure, getattr(self, figure) + items)
        figures = self.by_signal.setdefault(batch.signal, dict.fromkeys(FIGURES, 0))
        figures[figure] += items

    async def submit(self, batch: Batch) -> int:
        """Queue a batch and wait until it is stored; the number of items stored."""
        return await asyncio.wrap_future(self.offer(batch))

    def _take(self, wait: float) -> list[tuple[Batch, Future[int]]]:
        """Wait up to `wait` s for batches and take up to `group_spans` items of them (at least one), all of
        the first one's signal; [] if none."""
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait(timeout=wait)
                if not self._queue:
                    return []
            taken: list[tuple[Batch, Future[int]]] = []
            spans = 0
            kind = type(self._queue[0][0])
            while (
                self._queue
                and type(self._queue[0][0]) is kind
                and (not taken or spans + len(self._queue[0][0]) <= self.group_spans)
            ):
                batch, future = self._queue.popleft()
                taken.append((batch, future))
                spans += len(batch)
            return taken

    def _release(self, taken: list[tuple[Batch, Future[int]]]) -> None:
        with self._cond:
            self._queued_spans -= sum(len(b) for b, _ in taken)

    def _run(self) -> None:
        last_retention = time.monotonic()
        while not self.broken:
            writable = self.store.write_state().writable
            taken = self._take(self.retention_every if writable else self.probe_every)
            if taken:
                self._write(taken)
            if not self.store.write_state().writable:
                self._recover()
            elif time.monotonic() - last_retention >= self.retention_every:
                last_retention = time.monotonic()
                try:
                    dropped = self.store.enforce_retention(int(time.time() * 1_000_000))
                    if dropped:
                        log.info("retention dropped spans", extra={"spans": dropped})
                except StoreBroken as exc:
                    self._break(str(exc))
                except Exception:
                    log.exception("retention failed")
            with self._cond:
                if self._stopping and not self._queue:
                    return
        self._fail_queued()

    def _recover(self) -> None:
        """Ask a read-only store to probe and recover; give up on a broken one."""
        try:
            self.store.recover()
        except StoreBroken as exc:
            self._break(str(exc))
        except Exception:
            log.exception("probing the store failed")

    def _break(self, reason: str) -> None:
        """The store cannot be used any more: refuse everything and tell the process."""
        log.critical("the store cannot be used any more", extra={"reason": reason})
        self.broken = reason
        if self.on_broken is not None:
            self.on_broken(reason)

    def _fail_queued(self) -> None:
        """Answer every waiting batch with `StoreFailed` (the store is broken)."""
        with self._cond:
            taken, self._queue = list(self._queue), deque()
            self._queued_spans = 0
        for batch, future in taken:
            self._tally(batch, "failed", len(batch))
            future.set_exception(StoreFailed(f"the store is broken: {self.broken}"))

    def _write(self, taken: list[tuple[Batch, Future[int]]]) -> None:
        """Process and store the taken batches as one append; settle their futures."""
        try:
            counts = [len(batch) for batch, _ in taken]
            combined = type(taken[0][0]).concat([batch for batch, _ in taken])
            self.store.append(combined)
        except Exception as exc:
            if isinstance(exc, StoreBroken):
                self._break(str(exc))
            elif self.store.write_state().writable:
                log.exception("storing spans failed")
            self._release(taken)
            for batch, future in taken:
                self._tally(batch, "failed", len(batch))
                future.set_exception(StoreFailed(f"the store could not write: {exc}"))
            return
        self._release(taken)
        self._tally(combined, "stored", len(combined))
        for (_, future), count in zip(taken, counts, strict=True):
            future.set_result(count)

    def stop(self, timeout: float = 30.0) -> None:
        """Store what is queued, then stop the writer."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

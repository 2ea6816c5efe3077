"""The ad service's feature-flag faults: failing calls, burning CPU, and long garbage-collection pauses.

`AdFaults.apply` runs at the start of every GetAds, inside its server span, so the span carries each
flag that fired and what it did (`app.cpu.burn_ms`, `app.gc.pause_ms`). Faults that hold something
(the burner thread, the large heap) are undone within a second of their flag going off, calls or not.
"""

from __future__ import annotations

import gc
import logging
import random
import threading
import time

from opentelemetry import trace

from boutique.mesh.flags import flags
from boutique.shop.errors import Reason, Unavailable
from boutique.shop.flag_watch import FlagWatch

log = logging.getLogger(__name__)

AD_FAILURE = "adFailure"
AD_HIGH_CPU = "adHighCpu"
AD_MANUAL_GC = "adManualGc"

FAILURE_RATE = 0.1  # adFailure: one call in ten fails
REQUEST_BURN_ROUNDS = 300_000  # adHighCpu: pure-Python work per call (tens of ms on an idle core)
BURNER_SLICE_ROUNDS = 20_000  # adHighCpu: the burner thread's work between checks of its stop event
HEAP_RECORDS = 300_000  # adManualGc: records in the heap each full collection walks (~100 MB)


def burn(rounds: int) -> int:
    """Spin the interpreter for `rounds` steps while holding the GIL; the result only keeps it honest."""
    total = 0
    for step in range(rounds):
        total = (total + step * step) % 1_000_003
    return total


class CpuBurner:
    """A daemon thread spinning in Python while started: the process's CPU climbs to a core, and every
    call waits for the interpreter lock behind it."""

    def __init__(self, slice_rounds: int = BURNER_SLICE_ROUNDS) -> None:
        self.slice_rounds = slice_rounds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """Whether the burner thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start burning (a no-op while already burning)."""
        if self.running:
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(self._stop,), name=f"{AD_HIGH_CPU} burner", daemon=True
        )
        self._thread.start()
        log.warning("%s: burning CPU in a background thread until the flag is off", AD_HIGH_CPU)

    def stop(self) -> None:
        """Stop burning; the thread ends after its current slice (a few milliseconds)."""
        if self.running:
            log.info("%s is off: the CPU burner stops", AD_HIGH_CPU)
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end (after `stop`)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            burn(self.slice_rounds)


def build_heap(records: int) -> list[dict[str, object]]:
    """Many small linked containers: what a full collection has to walk, object by object."""
    return [{"id": index, "tags": [index, "ad"]} for index in range(records)]


class GcPressure:
    """A large heap kept while the flag is on, and a full collection over it on every call."""

    def __init__(self, records: int = HEAP_RECORDS) -> None:
        self.records = records
        self._heap: list[dict[str, object]] | None = None

    @property
    def holding(self) -> bool:
        """Whether the heap is built."""
        return self._heap is not None

    def pause(self) -> float:
        """Run a full, stop-the-world collection (building the heap first if needed); its milliseconds."""
        if self._heap is None:
            self._heap = build_heap(self.records)
            log.warning(
                "%s: holding %d records for full collections on every call", AD_MANUAL_GC, self.records
            )
        started = time.perf_counter()
        gc.collect()
        return (time.perf_counter() - started) * 1000

    def release(self) -> None:
        """Drop the heap (reference counting frees it at once)."""
        if self._heap is not None:
            self._heap = None
            log.info("%s is off: the large heap is released", AD_MANUAL_GC)


class AdFaults:
    """Acts on the ad service's flags for the call being served."""

    def __init__(self, rng: random.Random | None = None, heap_records: int = HEAP_RECORDS) -> None:
        self.rng = rng or random.Random()
        self.burner = CpuBurner()
        self.heap = GcPressure(heap_records)
        self._burner_watch = FlagWatch(AD_HIGH_CPU, lambda: flags().boolean(AD_HIGH_CPU), self.burner.stop)
        self._heap_watch = FlagWatch(AD_MANUAL_GC, lambda: flags().boolean(AD_MANUAL_GC), self.heap.release)

    def apply(self) -> None:
        """Burn CPU, pause for a collection, or fail the call, as the flags say (inside the server span)."""
        span = trace.get_current_span()
        if flags().boolean(AD_HIGH_CPU):
            self.burner.start()
            self._burner_watch.arm()
            started = time.perf_counter()
            burn(REQUEST_BURN_ROUNDS)
            span.set_attribute("app.cpu.burn_ms", round((time.perf_counter() - started) * 1000, 3))
        else:
            self.burner.stop()
        if flags().boolean(AD_MANUAL_GC):
            self._heap_watch.arm()
            span.set_attribute("app.gc.pause_ms", round(self.heap.pause(), 3))
        else:
            self.heap.release()
        if flags().boolean(AD_FAILURE) and self.rng.random() < FAILURE_RATE:
            raise Unavailable(
                f"GetAds failed on purpose: the {AD_FAILURE} flag fails one call in ten",
                reason=Reason.FAULT_INJECTED,
                public_message="ads are unavailable right now",
                metadata={"flag": AD_FAILURE},
            )

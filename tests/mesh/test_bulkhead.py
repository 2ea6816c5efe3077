"""The bulkhead: a hard cap on calls in flight, released however the call ends."""

from __future__ import annotations

import asyncio
import threading

import pytest

from boutique.mesh.resilience import Bulkhead, BulkheadFullError


def test_cap_is_enforced_and_released_slots_are_reusable() -> None:
    bulkhead = Bulkhead(2, name="cart")
    first, second = bulkhead.acquire(), bulkhead.acquire()
    assert bulkhead.in_flight == 2
    with pytest.raises(BulkheadFullError) as info:
        bulkhead.acquire()
    assert info.value.name == "cart" and info.value.max_concurrent == 2
    assert bulkhead.rejected_count == 1
    first.release()
    first.release()  # a second release must not free a slot it does not hold
    assert bulkhead.in_flight == 1
    third = bulkhead.acquire()
    with pytest.raises(BulkheadFullError):
        bulkhead.acquire()
    second.release()
    third.release()
    assert bulkhead.in_flight == 0


def test_slot_is_released_when_the_block_raises() -> None:
    bulkhead = Bulkhead(1)
    with pytest.raises(ConnectionError), bulkhead.slot():
        assert bulkhead.in_flight == 1
        raise ConnectionError("dependency down")
    assert bulkhead.in_flight == 0
    with bulkhead.slot():
        pass
    assert bulkhead.in_flight == 0


async def test_concurrent_tasks_beyond_the_cap_are_rejected_and_cancellation_releases() -> None:
    bulkhead = Bulkhead(4)
    release = asyncio.Event()
    running = 0
    peak = 0

    async def call() -> str:
        nonlocal running, peak
        with bulkhead.slot():
            running += 1
            peak = max(peak, running)
            try:
                await release.wait()
            finally:
                running -= 1
        return "ok"

    tasks = [asyncio.create_task(call()) for _ in range(10)]
    await asyncio.sleep(0)
    assert bulkhead.in_flight == 4
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert peak == 4
    assert results.count("ok") == 4
    assert sum(isinstance(r, BulkheadFullError) for r in results) == 6

    release.clear()
    hung = [asyncio.create_task(call()) for _ in range(4)]
    await asyncio.sleep(0)
    assert bulkhead.in_flight == 4
    for task in hung:
        task.cancel()
    await asyncio.gather(*hung, return_exceptions=True)
    assert bulkhead.in_flight == 0


def test_cap_holds_across_threads() -> None:
    bulkhead = Bulkhead(3)
    guard = threading.Lock()
    holding = 0
    peak = 0

    def worker() -> None:
        nonlocal holding, peak
        for _ in range(3000):
            try:
                slot = bulkhead.acquire()
            except BulkheadFullError:
                continue
            with guard:
                holding += 1
                peak = max(peak, holding)
            with guard:
                holding -= 1
            slot.release()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 1 <= peak <= 3
    assert bulkhead.in_flight == 0


def test_rejects_a_zero_cap() -> None:
    with pytest.raises(ValueError):
        Bulkhead(0)

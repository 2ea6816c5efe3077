"""The outcome windows a closed breaker judges on, alone: the last N calls, and the last N seconds."""

from __future__ import annotations

from boutique.mesh.resilience import CountWindow, OutcomeWindow, TimeWindow


def test_count_window_keeps_the_last_n_calls_and_their_running_counts() -> None:
    window = CountWindow(3)
    assert window.totals(0.0) == (0, 0, 0)
    window.record(True, False, 0.0)
    window.record(False, True, 0.0)
    assert window.totals(0.0) == (2, 1, 1)
    window.record(True, True, 0.0)
    assert window.totals(0.0) == (3, 2, 2)
    window.record(False, False, 0.0)  # the first failure slides out
    assert window.totals(0.0) == (3, 1, 2)
    assert (window.failures, window.slow) == (1, 2)
    window.record(False, False, 0.0)
    window.record(False, False, 0.0)
    assert window.totals(0.0) == (3, 0, 0)
    assert (window.failures, window.slow) == (0, 0)


def test_count_window_ignores_time() -> None:
    window = CountWindow(2)
    window.record(True, False, 0.0)
    assert window.totals(1e9) == (1, 1, 0)


def test_count_window_clear_forgets_everything() -> None:
    window = CountWindow(5)
    for _ in range(5):
        window.record(True, True, 0.0)
    window.clear()
    assert window.totals(0.0) == (0, 0, 0) and (window.failures, window.slow) == (0, 0)
    window.record(False, False, 0.0)
    assert window.totals(0.0) == (1, 0, 0)


def test_time_window_counts_the_last_seconds_only() -> None:
    window = TimeWindow(10.0)
    window.record(True, False, 100.2)
    window.record(False, True, 100.9)
    window.record(False, False, 105.0)
    assert window.totals(105.5) == (3, 1, 1)
    assert window.totals(109.9) == (3, 1, 1)  # second 100 is still one of the last ten
    assert window.totals(110.0) == (1, 0, 0)  # second 100 has left
    assert window.totals(115.0) == (0, 0, 0)


def test_time_window_reuses_a_ring_slot_for_a_later_second() -> None:
    window = TimeWindow(4.0)
    for _ in range(3):
        window.record(True, False, 200.5)
    window.record(False, False, 204.5)  # the same slot as second 200, four seconds on
    assert window.totals(204.5) == (1, 0, 0), "the expired second's failures were kept"


def test_time_window_rounds_its_span_up_to_whole_seconds() -> None:
    window = TimeWindow(2.5)
    window.record(True, False, 10.0)
    assert window.totals(12.9) == (1, 1, 0)  # a three-second span
    assert window.totals(13.0) == (0, 0, 0)
    tiny = TimeWindow(0.1)  # never less than one second
    tiny.record(True, False, 10.5)
    assert tiny.totals(10.9) == (1, 1, 0)
    assert tiny.totals(11.0) == (0, 0, 0)


def test_time_window_clear_forgets_everything() -> None:
    window = TimeWindow(10.0)
    window.record(True, True, 50.0)
    window.record(True, True, 51.0)
    window.clear()
    assert window.totals(51.0) == (0, 0, 0)
    window.record(False, False, 51.0)
    assert window.totals(51.0) == (1, 0, 0)


def test_both_windows_agree_on_the_same_calls() -> None:
    windows: list[OutcomeWindow] = [CountWindow(100), TimeWindow(60.0)]
    outcomes = [(i % 3 == 0, i % 5 == 0) for i in range(40)]
    for window in windows:
        for at, (failed, slow) in enumerate(outcomes):
            window.record(failed, slow, 1000.0 + at / 10)
    expected = (40, sum(f for f, _ in outcomes), sum(s for _, s in outcomes))
    assert [window.totals(1004.0) for window in windows] == [expected, expected]

"""Balancing policies and outlier ejection, driven by a seeded rng and a logical clock."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from boutique.mesh.balancing import (
    POLICIES,
    Balancer,
    Endpoint,
    LeastRequest,
    NoEndpointError,
    OutlierDetector,
    PeakEwma,
    Random,
    RoundRobin,
    make_balancer,
)
from boutique.mesh.instance import Instance
from tests.support import ManualClock


def Clock(now: float = 1000.0) -> ManualClock:
    """A manual clock starting at 1000."""
    return ManualClock(now)


def instances(*ids: str, weights: dict[str, float] | None = None) -> list[Instance]:
    weights = weights or {}
    return [
        Instance(
            "svc",
            i,
            "127.0.0.1",
            {"grpc": 5000 + n},
            {"weight": str(weights[i])} if i in weights else {},
        )
        for n, i in enumerate(ids)
    ]


def balancer(
    name: str, *ids: str, detector: OutlierDetector | None = None, clock: ManualClock | None = None
) -> Balancer:
    b = make_balancer(name, random.Random(7), detector=detector, clock=clock)
    b.update(instances(*ids))
    return b


def by_id(b: Balancer, instance_id: str) -> Endpoint:
    return next(e for e in b.endpoints if e.id == instance_id)


def fail(b: Balancer, endpoint: Endpoint, times: int = 1) -> None:
    for _ in range(times):
        endpoint.on_start()
        b.report(endpoint, False, 0.01)


# ---- policies ---------------------------------------------------------------------------------


def test_make_balancer_knows_every_policy_and_lists_them_on_a_typo() -> None:
    kinds = {name: type(make_balancer(name)) for name in POLICIES}
    assert kinds == {
        "round_robin": RoundRobin,
        "random": Random,
        "least_request": LeastRequest,
        "peak_ewma": PeakEwma,
    }
    with pytest.raises(ValueError) as info:
        make_balancer("fastest")
    for name in POLICIES:
        assert name in str(info.value)


def test_round_robin_cycles_evenly() -> None:
    b = balancer("round_robin", "a", "b", "c")
    picks = [b.pick().id for _ in range(300)]
    assert Counter(picks) == {"a": 100, "b": 100, "c": 100}
    for start in range(0, 300, 3):
        assert sorted(picks[start : start + 3]) == ["a", "b", "c"]


def test_round_robin_is_weighted_and_interleaved() -> None:
    b = make_balancer("round_robin", random.Random(1))
    b.update(instances("heavy", "light", weights={"heavy": 3}))
    picks = [b.pick().id for _ in range(400)]
    assert Counter(picks) == {"heavy": 300, "light": 100}
    assert "light" in picks[:4]  # spread through the cycle, not three heavies then one light in bursts of 300


def test_random_is_roughly_uniform() -> None:
    b = balancer("random", "a", "b", "c", "d")
    counts = Counter(b.pick().id for _ in range(10_000))
    assert set(counts) == {"a", "b", "c", "d"}
    for count in counts.values():
        assert 2200 < count < 2800


def test_random_respects_weight() -> None:
    b = make_balancer("random", random.Random(3))
    b.update(instances("heavy", "light", weights={"heavy": 3}))
    counts = Counter(b.pick().id for _ in range(10_000))
    assert 7000 < counts["heavy"] < 8000


def test_least_request_prefers_the_idle_instance() -> None:
    b = balancer("least_request", "busy", "idle")
    by_id(b, "busy").outstanding = 3
    assert {b.pick().id for _ in range(100)} == {"idle"}
    b = balancer("least_request", "a", "b", "c")
    by_id(b, "a").outstanding = 4
    by_id(b, "c").outstanding = 4
    counts = Counter(b.pick().id for _ in range(3000))
    assert counts["b"] > 1800  # chosen whenever it is one of the two sampled: 2/3 of the time


def test_least_request_balances_in_flight_load_as_requests_pile_up() -> None:
    b = balancer("least_request", "a", "b", "c", "d")
    for _ in range(400):
        b.pick().on_start()
    loads = [e.outstanding for e in b.endpoints]
    assert sum(loads) == 400
    assert max(loads) - min(loads) <= 4


def test_least_request_compares_outstanding_per_weight() -> None:
    b = make_balancer("least_request", random.Random(5))
    b.update(instances("big", "small", weights={"big": 4}))
    by_id(b, "big").outstanding = 2  # (2+1)/4 = 0.75 per unit of weight
    by_id(b, "small").outstanding = 1  # (1+1)/1 = 2: fewer requests, but more loaded for its size
    assert {b.pick().id for _ in range(50)} == {"big"}
    by_id(b, "big").outstanding = 9  # 10/4 = 2.5 > 2
    assert {b.pick().id for _ in range(50)} == {"small"}


def simulate(b: Balancer, clock: ManualClock, latencies: dict[str, float], requests: int) -> Counter[str]:
    """Sequential requests: pick, run for the instance's latency, report."""
    counts: Counter[str] = Counter()
    for _ in range(requests):
        endpoint = b.pick()
        endpoint.on_start()
        clock.advance(latencies[endpoint.id])
        b.report(endpoint, True, latencies[endpoint.id])
        counts[endpoint.id] += 1
    return counts


def test_peak_ewma_moves_traffic_away_from_a_slow_instance() -> None:
    clock = Clock()
    b = balancer("peak_ewma", "fast1", "fast2", "slow", clock=clock)
    latencies = {"fast1": 0.01, "fast2": 0.012, "slow": 0.5}
    counts = simulate(b, clock, latencies, 3000)
    assert counts["slow"] < 30  # round robin would send it 1000
    assert (
        counts["fast1"] > counts["fast2"] > 800
    )  # fast2 is a little slower: it loses every pairing with fast1


def test_peak_ewma_probes_a_slow_instance_again_as_its_estimate_decays() -> None:
    clock = Clock()
    b = balancer("peak_ewma", "fast1", "fast2", "slow", clock=clock)
    latencies = {"fast1": 0.01, "fast2": 0.01, "slow": 0.5}
    simulate(b, clock, latencies, 200)
    later = simulate(b, clock, latencies, 20_000)  # 200 s of logical time
    assert 2 <= later["slow"] < 100


def test_peak_ewma_tries_a_new_instance_without_flooding_it() -> None:
    clock = Clock()
    b = balancer("peak_ewma", "a", "b", clock=clock)
    simulate(b, clock, {"a": 0.05, "b": 0.05}, 50)
    b.update(instances("a", "b", "new"))
    new = by_id(b, "new")
    first = next(e for e in (b.pick() for _ in range(50)) if e is new)
    first.on_start()  # its first request is still in flight
    counts = simulate(b, clock, {"a": 0.05, "b": 0.05, "new": 0.05}, 200)
    assert counts["new"] == 0
    clock.advance(0.01)
    b.report(new, True, 0.01)  # it turns out fast
    counts = simulate(b, clock, {"a": 0.05, "b": 0.05, "new": 0.01}, 200)
    assert counts["new"] > 100


def test_endpoint_ewma_is_peak_sensitive_and_failures_never_make_it_look_faster() -> None:
    endpoint = Endpoint(instances("a")[0])
    endpoint.on_start()
    endpoint.on_finish(True, 0.1, 0.0)
    endpoint.on_start()
    endpoint.on_finish(True, 0.9, 1.0)
    assert endpoint.latency(1.0) == pytest.approx(0.9)  # a spike counts in full at once
    endpoint.on_start()
    endpoint.on_finish(True, 0.1, 11.0)  # one decay period later: 0.9/e + 0.1(1 - 1/e)
    assert endpoint.ewma == pytest.approx(0.9 * 0.36788 + 0.1 * 0.63212, rel=1e-3)
    before = endpoint.ewma
    endpoint.on_start()
    endpoint.on_finish(False, 0.001, 12.0)
    assert endpoint.ewma == before and endpoint.consecutive_failures == 1
    assert endpoint.outstanding == 0
    endpoint.on_finish(True, 0.1, 13.0)  # an unmatched finish never drives the count negative
    assert endpoint.outstanding == 0


@pytest.mark.parametrize("name", POLICIES)
def test_exclude_gives_a_different_instance(name: str) -> None:
    b = balancer(name, "a", "b", "c")
    for _ in range(100):
        first = b.pick()
        second = b.pick(exclude=[first.id])
        assert second.id != first.id
        third = b.pick(exclude={first.id, second.id})
        assert third.id not in {first.id, second.id}


@pytest.mark.parametrize("name", POLICIES)
def test_all_excluded_still_picks(name: str) -> None:
    b = balancer(name, "a", "b")
    assert b.pick(exclude=("a", "b")).id in {"a", "b"}
    single = balancer(name, "only")
    assert single.pick(exclude=["only"]).id == "only"


@pytest.mark.parametrize("name", POLICIES)
def test_empty_raises_no_endpoint_error(name: str) -> None:
    b = make_balancer(name, random.Random(0))
    with pytest.raises(NoEndpointError):
        b.pick()
    b.update(instances("a"))
    b.update([])
    with pytest.raises(NoEndpointError):
        b.pick()


@pytest.mark.parametrize("name", POLICIES)
def test_update_keeps_surviving_state_and_lets_departed_requests_finish(name: str) -> None:
    clock = Clock()
    detector = OutlierDetector(clock=clock)
    b = balancer(name, "a", "b", "c", detector=detector)
    a, b_endpoint = by_id(b, "a"), by_id(b, "b")
    a.on_start()
    a.on_start()
    fail(b, a, 2)
    b_endpoint.on_start()
    b.update(instances("a", "c", "d", weights={"a": 5}))
    assert [e.id for e in b.endpoints] == ["a", "c", "d"]
    assert by_id(b, "a") is a
    assert a.outstanding == 2 and a.consecutive_failures == 2
    assert a.weight == 5  # the new Instance replaces the old one
    assert by_id(b, "d").outstanding == 0
    assert all(b.pick().id != "b" for _ in range(100))
    b.report(b_endpoint, False, 0.1)  # the departed endpoint's in-flight request ends
    assert b_endpoint.outstanding == 0 and b_endpoint.consecutive_failures == 1
    fail(b, b_endpoint, 5)
    assert not b_endpoint.ejected and detector.ejections_total == 0  # no longer a member: never ejected


# ---- outlier ejection ------------------------------------------------------------------------


def ejecting(*ids: str, **options: float) -> tuple[Balancer, OutlierDetector, Clock, list[tuple[str, str]]]:
    clock = Clock()
    events: list[tuple[str, str]] = []
    detector = OutlierDetector(clock=clock, on_event=lambda kind, e: events.append((kind, e.id)), **options)  # type: ignore[arg-type]
    return balancer("round_robin", *ids, detector=detector, clock=clock), detector, clock, events


def test_ejection_after_three_failures_and_return_after_the_base_time() -> None:
    b, detector, clock, events = ejecting("a", "b", "c")
    a = by_id(b, "a")
    fail(b, a, 2)
    assert not a.is_ejected(clock.now)
    assert "a" in {b.pick().id for _ in range(3)}
    fail(b, a)
    assert a.is_ejected(clock.now) and a.times_ejected == 1
    assert a.ejected_until == pytest.approx(clock.now + 1.0)
    assert events == [("ejected", "a")] and detector.ejections_total == 1
    clock.advance(0.99)
    assert all(b.pick().id != "a" for _ in range(30))
    clock.advance(0.01)
    assert "a" in {b.pick().id for _ in range(3)}
    assert events == [("ejected", "a"), ("returned", "a")]
    assert a.consecutive_failures == 0


def test_second_ejection_lasts_twice_as_long_and_the_time_is_capped() -> None:
    b, detector, clock, events = ejecting("a", "b")
    a = by_id(b, "a")
    durations = []
    for _ in range(40):
        fail(b, a, 3)
        assert a.is_ejected(clock.now)
        durations.append(a.ejected_until - clock.now)
        clock.advance(a.ejected_until - clock.now)
        b.pick()  # notices the return
    assert durations[:3] == pytest.approx([1.0, 2.0, 3.0])
    assert max(durations) == pytest.approx(30.0)
    assert durations[-1] == pytest.approx(30.0)
    assert detector.ejections_total == 40 and a.times_ejected == 40
    assert events.count(("ejected", "a")) == 40 and events.count(("returned", "a")) == 40


def test_second_ejection_holds_the_endpoint_out_for_the_doubled_time() -> None:
    b, _, clock, _ = ejecting("a", "b", "c")
    a = by_id(b, "a")
    fail(b, a, 3)
    clock.advance(1.0)
    b.pick()
    fail(b, a, 3)
    clock.advance(1.99)
    assert all(b.pick().id != "a" for _ in range(20))
    clock.advance(0.01)
    assert "a" in {b.pick().id for _ in range(3)}


def test_a_long_healthy_spell_forgives_earlier_ejections() -> None:
    b, _, clock, _ = ejecting("a", "b")
    a = by_id(b, "a")
    for _ in range(3):
        fail(b, a, 3)
        clock.advance(a.ejected_until - clock.now)
        b.pick()
    clock.advance(65.0)  # two full max_ejection periods healthy
    fail(b, a, 3)
    assert a.ejected_until - clock.now == pytest.approx(2.0)


@pytest.mark.parametrize(("size", "most"), [(2, 1), (3, 1), (4, 2), (1, 0)])
def test_never_more_than_half_are_ejected(size: int, most: int) -> None:
    ids = [f"i{n}" for n in range(size)]
    b, detector, clock, events = ejecting(*ids)
    for _ in range(3):
        for endpoint in b.endpoints:
            fail(b, endpoint, 3)
    assert detector.ejected_count(b.endpoints, clock.now) == most
    assert detector.ejections_total == most and len(events) == most
    assert detector.ejections_skipped > 0
    held = {e.id for e in b.endpoints if e.is_ejected(clock.now)}
    assert {b.pick().id for _ in range(20)} == set(ids) - held


def test_a_skipped_ejection_happens_once_there_is_room() -> None:
    b, _, clock, events = ejecting("a", "b")
    a, other = by_id(b, "a"), by_id(b, "b")
    fail(b, a, 3)
    fail(b, other, 3)
    assert not other.is_ejected(clock.now)
    clock.advance(1.0)
    b.pick()  # a returns
    fail(b, other)
    assert other.is_ejected(clock.now)
    assert events == [("ejected", "a"), ("returned", "a"), ("ejected", "b")]


def test_success_resets_the_failure_count() -> None:
    b, detector, clock, _ = ejecting("a", "b", "c")
    a = by_id(b, "a")
    fail(b, a, 2)
    a.on_start()
    b.report(a, True, 0.01)
    assert a.consecutive_failures == 0
    fail(b, a, 2)
    assert not a.is_ejected(clock.now) and detector.ejections_total == 0
    fail(b, a)
    assert a.is_ejected(clock.now)


def test_all_ejected_or_excluded_still_picks() -> None:
    b, _, clock, _ = ejecting("a", "b", max_ejected_fraction=1.0)
    for endpoint in b.endpoints:
        fail(b, endpoint, 3)
    assert all(e.is_ejected(clock.now) for e in b.endpoints)
    assert b.pick().id in {"a", "b"}
    assert b.pick(exclude=["a"]).id == "b"  # among the ejected, still honour the exclusion
    b2, _, _, _ = ejecting("a", "b")
    fail(b2, by_id(b2, "a"), 3)
    assert b2.pick(exclude=["b"]).id == "b"  # the excluded but live one beats the ejected one


def test_failures_while_ejected_do_not_extend_the_ejection() -> None:
    b, detector, _, _ = ejecting("a", "b", "c")
    a = by_id(b, "a")
    for _ in range(3):
        a.on_start()  # three requests in flight when things go wrong
    for _ in range(3):
        b.report(a, False, 0.2)
    until = a.ejected_until
    fail(b, a, 4)  # stragglers finishing while it is held out
    assert a.ejected_until == until and detector.ejections_total == 1


def test_event_callback_errors_do_not_break_picks() -> None:
    clock = Clock()

    def explode(kind: str, endpoint: Endpoint) -> None:
        raise RuntimeError("observer bug")

    detector = OutlierDetector(clock=clock, on_event=explode)
    b = balancer("least_request", "a", "b", detector=detector, clock=clock)
    fail(b, by_id(b, "a"), 3)
    clock.advance(1.0)
    assert b.pick().id in {"a", "b"}
    assert not by_id(b, "a").ejected


def test_detector_rejects_nonsense_settings() -> None:
    for options in (
        {"consecutive_failures": 0},
        {"base_ejection": 0.0},
        {"base_ejection": 5.0, "max_ejection": 1.0},
        {"max_ejected_fraction": 1.5},
    ):
        with pytest.raises(ValueError):
            OutlierDetector(**options)  # type: ignore[arg-type]

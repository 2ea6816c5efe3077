"""The evidence checks scenarios are made of: each asks the observatory (or the shop) one question.

Every factory returns a `Check` whose probe answers a `Verdict`; the runner asks it again until it
passes or time runs out, since spans reach the observatory a few seconds after the work they describe.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from boutique.run.scenarios.evidence import OPEN_STATES, Evidence, is_error, memory_bytes, spans_of, tag
from boutique.run.scenarios.model import Check, Verdict

FLAG_KEY = "feature_flag.key"


def _count(spans: list[dict[str, Any]], what: str) -> str:
    traces = len({span["traceID"] for span in spans})
    return f"{len(spans)} {what} in {traces} trace{'s' if traces != 1 else ''}"


def flagged_spans(service: str, flag: str, errors: bool = False) -> Check:
    """Spans of `service` record the evaluation of `flag` (and, with `errors`, end in error)."""
    name = f"{service} spans carry {FLAG_KEY}={flag}" + (" and end in error" if errors else "")

    async def probe(evidence: Evidence) -> Verdict:
        found = await evidence.need_observatory().traces(
            service, {FLAG_KEY: flag}, evidence.start_us, evidence.end_us, errors=errors
        )
        spans = [
            span
            for trace in found
            for span in spans_of(trace, service)
            if tag(span, FLAG_KEY) == flag and (is_error(span) or not errors)
        ]
        return Verdict(bool(spans), _count(spans, "spans") if spans else "none found")

    return Check(name, probe)


def span_attribute(
    service: str, key: str, wanted: Callable[[Any], bool], describe: str, tags: dict[str, str] | None = None
) -> Check:
    """Some span of `service` (among those matching `tags`) has attribute `key` meeting `wanted`."""

    async def probe(evidence: Evidence) -> Verdict:
        found = await evidence.need_observatory().traces(
            service, tags, evidence.start_us, evidence.end_us, limit=50
        )
        values = [tag(span, key) for trace in found for span in spans_of(trace, service)]
        present = [value for value in values if value is not None]
        good = [value for value in present if wanted(value)]
        if not present:
            return Verdict(False, f"no {service} span has {key}")
        return Verdict(bool(good), f"{len(good)} of {len(present)} spans, largest {max(present, key=_order)}")

    return Check(f"{service} spans have {key} {describe}", probe)


def _order(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else 0.0


def slow_traces(service: str, min_duration: str, tags: dict[str, str] | None = None) -> Check:
    """Traces through `service` (with a span matching `tags`) lasting at least `min_duration`."""
    condition = f" with {', '.join(f'{k}={v}' for k, v in (tags or {}).items())}" if tags else ""

    async def probe(evidence: Evidence) -> Verdict:
        found = await evidence.need_observatory().traces(
            service, tags, evidence.start_us, evidence.end_us, min_duration=min_duration
        )
        return Verdict(bool(found), f"{len(found)} traces" + ("" if len(found) < 20 else " or more"))

    return Check(f"{service} traces{condition} last {min_duration} or more", probe)


def error_rate(service: str) -> Check:
    """The service's RED error rate (its server spans) is above zero during the run."""

    async def probe(evidence: Evidence) -> Verdict:
        rates = await evidence.need_observatory().red("errors", service, evidence.start_us, evidence.end_us)
        peak = max(rates, default=0.0)
        return Verdict(peak > 0, f"peak error rate {100 * peak:.0f}%")

    return Check(f"the RED error rate of {service} rose above 0", probe)


def latency_at_least(service: str, milliseconds: float, quantile: float = 0.95) -> Check:
    """The service's RED latency quantile reached `milliseconds` during the run."""

    async def probe(evidence: Evidence) -> Verdict:
        values = await evidence.need_observatory().red(
            "latencies", service, evidence.start_us, evidence.end_us, quantile
        )
        peak = max(values, default=0.0)
        return Verdict(peak >= milliseconds, f"peak p{quantile * 100:.0f} {peak:.0f} ms")

    return Check(f"the RED p{quantile * 100:.0f} latency of {service} reached {milliseconds:.0f} ms", probe)


def served_spans(service: str) -> Check:
    """The observatory holds server spans of `service` from the run (its admitted requests)."""

    async def probe(evidence: Evidence) -> Verdict:
        rates = await evidence.need_observatory().red("calls", service, evidence.start_us, evidence.end_us)
        peak = max(rates, default=0.0)
        return Verdict(peak > 0, f"peak {peak:.1f} requests/s")

    return Check(f"the RED request rate of {service} shows the requests it admitted", probe)


def profile_hot(service: str, function: str, kind: str, at_least: float) -> Check:
    """A function named like `function` holds at least `at_least` of `service`'s `kind` profile (cpu,
    wall or tasks) over the run: the flame graph shows the cause."""

    async def probe(evidence: Evidence) -> Verdict:
        share, name = await evidence.need_observatory().profile_share(
            service, function, kind, evidence.start_us, evidence.end_us
        )
        found = f"{name}: {share:.0%} of the {kind} profile" if name else f"no frame named like {function}"
        return Verdict(share >= at_least, found)

    return Check(f"{service}'s {kind} profile spends {at_least:.0%} or more in {function}", probe)


def breaker_opened(caller: str, dependency: str) -> Check:
    """The Mesh page showed the breaker `caller` keeps for `dependency` open (or half-open)."""

    async def probe(evidence: Evidence) -> Verdict:
        states = _states(evidence, caller, dependency)
        opened = [state for _, state in states if state in OPEN_STATES]
        return Verdict(bool(opened), _state_story(states))

    return Check(f"the breaker {caller}->{dependency} opened (/api/mesh)", probe)


def breaker_closed_again(caller: str, dependency: str) -> Check:
    """After opening, the breaker `caller` keeps for `dependency` closed again: the dependency recovered."""

    async def probe(evidence: Evidence) -> Verdict:
        states = _states(evidence, caller, dependency)
        first_open = next((at for at, state in states if state in OPEN_STATES), None)
        closed = first_open is not None and any(at > first_open and state == "CLOSED" for at, state in states)
        return Verdict(closed, _state_story(states))

    return Check(f"the breaker {caller}->{dependency} closed again (/api/mesh)", probe)


def _states(evidence: Evidence, caller: str, dependency: str) -> list[tuple[float, str]]:
    if evidence.timeline is None:
        return []
    return evidence.timeline.breaker_states(caller, dependency)


def _state_story(states: list[tuple[float, str]]) -> str:
    """The breaker's states in order, repeats folded: CLOSED -> OPEN -> HALF_OPEN -> CLOSED."""
    story: list[str] = []
    for _, state in states:
        if not story or story[-1] != state:
            story.append(state)
    return " -> ".join(story) if story else "no breaker seen"


def memory_grew(service: str, at_least_mb: float) -> Check:
    """The Mesh snapshot's memory of some `service` instance grew by `at_least_mb` during the run."""

    async def probe(evidence: Evidence) -> Verdict:
        by_instance: dict[str, list[float]] = {}
        if evidence.timeline is not None:
            for _, process in evidence.timeline.processes(service):
                value = memory_bytes(process)
                if value is not None:
                    by_instance.setdefault(str(process.get("id")), []).append(value)
        if not by_instance:
            return Verdict(False, "no memory figure in /api/mesh")
        growth = {name: (values[-1] - values[0]) / 2**20 for name, values in by_instance.items()}
        name = max(growth, key=lambda k: growth[k])
        first = by_instance[name][0] / 2**20
        last = by_instance[name][-1] / 2**20
        return Verdict(growth[name] >= at_least_mb, f"{name}: {first:.0f} MB -> {last:.0f} MB")

    return Check(f"the memory of {service} grew by {at_least_mb:g} MB or more (/api/mesh)", probe)


def pages_served(page: str, at_least: float) -> Check:
    """The shoppers got `page` without a server error at least this share of the time."""

    async def probe(evidence: Evidence) -> Verdict:
        total, failed = evidence.tally.of(page)
        share = (total - failed) / total if total else 0.0
        return Verdict(total > 0 and share >= at_least, f"{total - failed} of {total} {page} pages")

    return Check(f"shoppers still got {at_least:.0%} of {page} pages", probe)


def orders_shown(outcome: str) -> Check:
    """Some shopper was shown this checkout outcome (placed, failed or unknown)."""

    async def probe(evidence: Evidence) -> Verdict:
        shown = evidence.tally.orders
        seen = ", ".join(f"{n} {o}" for o, n in sorted(shown.items())) or "no checkouts"
        return Verdict(shown[outcome] > 0, seen)

    return Check(f"shoppers were shown orders {outcome}", probe)


def shed_pages() -> Check:
    """Shoppers got 503 pages carrying the shed marker, and the frontend's limiter counted them."""

    async def probe(evidence: Evidence) -> Verdict:
        limiter = evidence.limiters.shed()
        seen = f"{evidence.tally.shed} shed pages seen, the limiters counted {limiter}"
        return Verdict(evidence.tally.shed > 0 and limiter > 0, seen)

    return Check("the frontend shed the excess: 503 with x-boutique-shed, counted by its limiter", probe)


def restarted(service: str) -> Check:
    """The instance the scenario killed was restarted by the supervisor and serves again."""

    async def probe(evidence: Evidence) -> Verdict:
        killed = evidence.notes.get("killed")
        if not killed:
            return Verdict(False, "nothing was killed")
        now = evidence.target.refreshed()
        process = next((p for p in now.processes if p.instance == killed["instance"]), None)
        if process is None:
            return Verdict(False, f"{killed['instance']} is gone from up.json")
        again = process.restarts > killed["restarts"] and process.state == "SERVING"
        seen = f"{process.instance}: pid {killed['pid']} -> {process.pid}, {process.state}"
        return Verdict(again, seen + f", restarts {killed['restarts']} -> {process.restarts}")

    return Check(f"the supervisor restarted the killed {service} instance", probe)


def replaced_in_mesh(service: str) -> Check:
    """The Mesh page shows the killed instance back under a new pid."""

    async def probe(evidence: Evidence) -> Verdict:
        killed = evidence.notes.get("killed")
        if not killed or evidence.timeline is None:
            return Verdict(False, "nothing was killed" if not killed else "no Mesh stream")
        pids = [
            str(process.get("pid"))
            for _, process in evidence.timeline.processes(service)
            if process.get("id") == killed["instance"]
        ]
        story = " -> ".join(dict.fromkeys(pids)) or "never listed"
        return Verdict(str(killed["pid"]) in pids and pids[-1] != str(killed["pid"]), f"pids {story}")

    return Check(f"/api/mesh lists the killed {service} instance again under a new pid", probe)


def other_replica_served(service: str) -> Check:
    """From the kill until its instance served again, the other instances of `service` took its calls."""

    async def probe(evidence: Evidence) -> Verdict:
        killed = evidence.notes.get("killed")
        if not killed:
            return Verdict(False, "nothing was killed")
        if killed["replicas"] < 2:
            return Verdict(True, f"{service} runs one instance: the restart is the evidence", skipped=True)
        observatory = evidence.need_observatory()
        kill, instance = killed["at_us"], killed["instance"]
        again = [
            span["startTime"]
            for trace in await observatory.traces(
                service, None, kill + 100_000, kill + 10_000_000, limit=1000, instance=instance
            )
            for span in spans_of(trace, service)
            if span["instance"] == instance and span["startTime"] > kill + 100_000
        ]
        if not again:
            return Verdict(False, f"{instance} served nothing in the 10 s after the kill")
        back = min(again)
        found = await observatory.traces(service, None, kill, back, limit=200)
        others = [
            span
            for trace in found
            for span in spans_of(trace, service)
            if kill <= span["startTime"] < back and span["instance"] != instance
        ]
        seen = f"{instance} served nothing for {(back - kill) / 1e6:.1f}s; other instances served {len(others)} calls"
        return Verdict(bool(others), seen)

    return Check(f"other {service} instances served while the killed one was away", probe)


def with_replicas(check: Check) -> Check:
    """`check`, skipped when the killed service ran a single instance (nothing could take over)."""

    async def probe(evidence: Evidence) -> Verdict:
        killed = evidence.notes.get("killed")
        if killed and killed["replicas"] < 2:
            return Verdict(True, "one instance: nothing could take over", skipped=True)
        return await check.probe(evidence)

    return Check(check.name, probe)

"""Trace context across hops: inject the formats OTEL_PROPAGATORS names, accept W3C and B3 alike.

A trace started by a browser, the load generator or a Zipkin-instrumented client must continue through
every hop whatever header it arrived with, so extraction always understands W3C `traceparent` /
`baggage`, B3 single (`b3`) and B3 multi (`X-B3-TraceId`, …); outgoing calls carry only what
OTEL_PROPAGATORS lists (default `tracecontext,baggage`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from opentelemetry import propagate
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.b3 import B3MultiFormat, B3SingleFormat
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger(__name__)

KNOWN: dict[str, type[TextMapPropagator]] = {
    "tracecontext": TraceContextTextMapPropagator,
    "baggage": W3CBaggagePropagator,
    "b3": B3SingleFormat,
    "b3multi": B3MultiFormat,
}
ALWAYS_ACCEPTED = ("b3multi", "b3", "baggage", "tracecontext")  # later ones win when several are present


def configured_names(value: str = "") -> list[str]:
    """The propagator names OTEL_PROPAGATORS lists (default tracecontext,baggage); unknown ones are skipped."""
    names = [n.strip().lower() for n in value.split(",") if n.strip()] or ["tracecontext", "baggage"]
    if names == ["none"]:
        return []
    known = [n for n in names if n in KNOWN]
    for unknown in sorted(set(names) - set(known)):
        log.warning("unknown propagator ignored", extra={"propagator": unknown, "known": sorted(KNOWN)})
    return known


class AcceptingPropagator(TextMapPropagator):
    """Injects the configured formats; extracts every known one, the configured formats winning."""

    def __init__(self, inject: Sequence[str]) -> None:
        self._inject = CompositePropagator([KNOWN[n]() for n in inject])
        order = [n for n in ALWAYS_ACCEPTED if n not in inject] + list(inject)
        self._extract = CompositePropagator([KNOWN[n]() for n in order])

    def extract(
        self, carrier: CarrierT, context: Context | None = None, getter: Getter[CarrierT] = default_getter
    ) -> Context:
        """The context of whichever known headers the carrier holds."""
        return self._extract.extract(carrier, context, getter)

    def inject(
        self, carrier: CarrierT, context: Context | None = None, setter: Setter[CarrierT] = default_setter
    ) -> None:
        """Write the configured headers for the current (or given) context."""
        self._inject.inject(carrier, context, setter)

    @property
    def fields(self) -> set[str]:
        """The header names this propagator writes."""
        return set(self._inject.fields)


def install_propagators(value: str = "") -> AcceptingPropagator:
    """Make the accepting propagator the process-wide one; `value` is OTEL_PROPAGATORS' text."""
    propagator = AcceptingPropagator(configured_names(value))
    propagate.set_global_textmap(propagator)
    return propagator


def outgoing_headers() -> list[tuple[str, str]]:
    """The trace headers for an outgoing call made in the current context (gRPC metadata pairs)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return list(carrier.items())

"""The load generator's log as JSON lines, the way every other process of the shop logs.

`boutique serve loadgen` (how `boutique up`, a container or a pod runs it) asks for this with
LOADGEN_LOG_FORMAT=json: Locust's own log lines become JSON lines, and its stats table, made for a
terminal, gives way to one `load` line every few seconds with the figures a log pipeline can chart
(shoppers, requests, failures, shed requests, requests per second, median and 95th percentile), plus a
last one with the totals when the run ends. `boutique load` in a terminal keeps Locust's live table.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import gevent
from locust import events
from locust.env import Environment

from boutique.mesh.logs import configure_logging
from boutique.shop.loadgen.runner import LOG_FORMAT_VARIABLE
from boutique.shop.loadgen.shed import SHED

STATS_EVERY = 5.0  # seconds between two `load` lines

log = logging.getLogger("boutique.shop.loadgen")


def wanted(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the run asked for JSON lines (LOADGEN_LOG_FORMAT=json)."""
    return (os.environ if environ is None else environ).get(LOG_FORMAT_VARIABLE, "").strip().lower() == "json"


def figures(environment: Environment) -> dict[str, Any]:
    """The run's figures so far: shoppers, requests, failures, shed requests, rate and latency."""
    stats = environment.stats
    total = stats.total
    shed = sum(entry.num_requests for entry in stats.entries.values() if entry.method == SHED)
    runner = environment.runner
    return {
        "users": runner.user_count if runner is not None else 0,
        "requests": total.num_requests - shed,
        "failures": total.num_failures,
        "shed": shed,
        "rps": round(total.current_rps, 1),
        "p50_ms": total.get_current_response_time_percentile(0.5) or 0,
        "p95_ms": total.get_current_response_time_percentile(0.95) or 0,
    }


def install(instance: str) -> None:
    """Send every log line of this process to the JSON log and silence Locust's terminal table."""
    configure_logging("loadgen", instance)
    table = logging.getLogger("locust.stats_logger")
    table.handlers[:] = [logging.NullHandler()]
    table.propagate = False

    @events.init.add_listener
    def _report(environment: Environment, **_kwargs: Any) -> None:
        def every_few_seconds() -> None:
            while True:
                gevent.sleep(STATS_EVERY)
                log.info("load", extra=figures(environment))

        gevent.spawn(every_few_seconds)

    @events.quitting.add_listener
    def _totals(environment: Environment, **_kwargs: Any) -> None:
        total = environment.stats.total
        log.info(
            "load finished",
            extra={
                **figures(environment),
                "rps": round(total.total_rps, 1),
                "p50_ms": total.get_response_time_percentile(0.5) or 0,
                "p95_ms": total.get_response_time_percentile(0.95) or 0,
            },
        )

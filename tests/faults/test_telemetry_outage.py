"""A 60-second outage of the telemetry backend loses no trace and no profile: every process queues and
delivers later."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx

from tests.e2e.harness import eventually, start_up
from tests.faults.traffic import Shoppers, Visit, browsing
from tests.observatory.process import start_observatory

OUTAGE = 60.0


def stored(query_url: str, visit: Visit) -> list[dict] | None:
    """The spans stored under the visit's trace id, or None while there are none."""
    response = httpx.get(f"{query_url}/api/traces/{visit.trace_id}", timeout=5)
    if response.status_code != 200:
        return None
    return response.json()["data"][0]["spans"]


def missing_parents(spans: list[dict], root: str) -> list[str]:
    """Spans whose parent is neither in the trace nor the caller's own (never exported) span."""
    ids = {s["spanID"] for s in spans} | {root}
    return [
        s["operationName"]
        for s in spans
        for ref in s["references"]
        if ref["refType"] == "CHILD_OF" and ref["spanID"] not in ids
    ]


def main_thread_wall_seconds(query_url: str, service: str, start: float, end: float) -> float:
    """Seconds of wall-clock samples of `service`'s main thread stored between two Unix times."""
    params = {
        "service": service,
        "type": "wall",
        "thread": "MainThread",
        "start": int(start * 1e6),
        "end": int(end * 1e6),
    }
    response = httpx.get(f"{query_url}/api/profiles", params=params, timeout=10)
    response.raise_for_status()
    return int(response.json()["data"]["total"]) / 1e9


def test_traces_made_during_a_60_second_backend_outage_are_all_stored_complete(tmp_path: Path) -> None:
    observatory = start_observatory(tmp_path / "observatory")
    ports = observatory.ports
    endpoint = f"http://127.0.0.1:{ports['otlp_grpc']}"
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    up = start_up(tmp_path / "shop", "--no-observatory", env=env)
    try:
        shoppers = Shoppers(up.url, browsing, count=2, pause=0.3).start()
        time.sleep(4)
        observatory.stop(signal.SIGKILL)
        down_at = time.time()
        time.sleep(OUTAGE)
        up_at = time.time()
        observatory = start_observatory(
            tmp_path / "observatory",
            "--otlp-grpc-port", str(ports["otlp_grpc"]), "--otlp-http-port", str(ports["otlp_http"]),
            "--zipkin-port", str(ports["zipkin"]), "--port", str(ports["query"]),
        )  # fmt: skip
        visits = shoppers.stop()
        # The traces of the 3 s before the kill sat in the processes' batches when it came.
        during = [v for v in visits if down_at - 3 <= v.at <= up_at and v.status == 200]
        assert len(during) >= 100, f"too little traffic during the outage: {len(during)}"

        def all_arrived() -> bool:
            return sum(stored(observatory.query_url, v) is not None for v in during[-20:]) == 20

        eventually(all_arrived, "the newest traces delivered", timeout=90, every=1.0)
        time.sleep(6)  # one more export round for the last batches of every process
        found = {v.trace_id: stored(observatory.query_url, v) for v in during}
        complete = [
            v
            for v in during
            if (spans := found[v.trace_id])
            and not missing_parents(spans, v.root_span)
            and len({s["processID"] for s in spans}) >= 2  # the frontend and the services it called
        ]
        share = len(complete) / len(during)
        print(f"{len(complete)} of {len(during)} traces made during the outage stored complete ({share:.1%})")
        assert share >= 0.99
        # Profiles wait in their own queue: the frontend's main thread was sampled all through the outage.
        inside = (down_at + 2, up_at - 2)  # whole seconds inside it (rows are kept per second)
        wanted = 0.9 * (inside[1] - inside[0])

        def profiles_arrived() -> bool:
            return main_thread_wall_seconds(observatory.query_url, "frontend", *inside) >= wanted

        eventually(profiles_arrived, f"{wanted:.0f} s of the frontend's wall samples", timeout=30, every=1.0)
    finally:
        up.stop()
        observatory.stop()

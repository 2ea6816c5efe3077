"""Tail sampling on a disk that fills up: the pending journal refuses what it cannot sync (503, retry later),
kept spans wait for the store to take writes again, and once space is back nothing acknowledged is missing."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx

from tests.observatory.process import start_observatory
from tests.observatory.sampling_traffic import (
    PROTOBUF,
    Ids,
    SpanSpec,
    now_us,
    request,
    stored_spans,
    wait_decided,
)


def test_a_full_disk_refuses_new_spans_and_keeps_every_acknowledged_one(small_disk: Path) -> None:
    running = start_observatory(small_disk / "data", "--sample-errors", "--sample-decision-wait", "1s")
    ids = Ids(91)
    acknowledged: dict[bytes, tuple[set[str], bool]] = {}
    url = f"http://127.0.0.1:{running.ports['otlp_http']}/v1/traces"

    def export(client: httpx.Client) -> int:
        """Send five traces of two spans (every third failing); note them when acknowledged."""
        spans = []
        for _ in range(5):
            trace, failed = ids.trace(), ids.rng.random() < 1 / 3
            start = now_us()
            spans += [
                SpanSpec(trace, ids.span(), "web", start_us=start + i, error=failed and i == 1)
                for i in range(2)
            ]
        answer = client.post(url, content=request(spans), headers=PROTOBUF)
        if answer.status_code == 200:
            for spec in spans:
                span_ids, failed = acknowledged.setdefault(spec.trace_id, (set(), False))
                span_ids.add(spec.span_id.hex())
                acknowledged[spec.trace_id] = (span_ids, failed or spec.error)
        return answer.status_code

    try:
        with httpx.Client(timeout=30) as client:
            for _ in range(10):
                assert export(client) == 200
            filler = small_disk / "filler"
            with filler.open("wb") as out:
                stat = os.statvfs(small_disk)
                os.posix_fallocate(out.fileno(), 0, stat.f_bavail * stat.f_frsize)
            refusals = [export(client) for _ in range(5)]
            print(f"with the disk full the exports were answered {refusals}")
            assert set(refusals) == {503}
            filler.unlink()
            deadline = time.monotonic() + 60
            while export(client) != 200:
                assert time.monotonic() < deadline, running.text()[-3000:]
                time.sleep(0.2)
            for _ in range(10):
                assert export(client) == 200
            figures = wait_decided(client, running.query_url, len(acknowledged))
            for trace_id, (span_ids, failed) in acknowledged.items():
                found = {s["spanID"] for s in stored_spans(client, running.query_url, trace_id)}
                assert found == (span_ids if failed else set()), trace_id.hex()
    finally:
        running.stop()
    print(f"{len(acknowledged)} traces acknowledged; sampling {figures['traces']} {figures['spans']}")

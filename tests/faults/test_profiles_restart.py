"""kill -9 of the observatory while profiles stream in over OTLP/gRPC, OTLP/HTTP and Pyroscope's `/ingest`.

An export answered with success is acknowledged: its samples were committed before the answer. After
the kill, the observatory started again on the same data directory must come up and hold every
acknowledged export's samples, each export told apart by a frame only it has.
"""

from __future__ import annotations

import itertools
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx

from boutique.observatory.store.duckdb_store import DuckDBStore
from tests.observatory.process import ObservatoryProcess, start_observatory
from tests.observatory.profile_builders import Dictionary, export_request

EXPORT = "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export"
STACKS_PER_EXPORT = 40
ACKNOWLEDGED_BEFORE_KILL = 300


def otlp_body(marker: str) -> bytes:
    """A cpu profile of STACKS_PER_EXPORT stacks, each ending in a frame named by `marker`."""
    d = Dictionary()
    samples = [
        d.sample(
            [("main", "app/run.py", 1), (f"step{n}", "app/steps.py", n + 1), (marker, "app/x.py", 1)],
            [10_000_000],
            [time.time_ns()],
        )
        for n in range(STACKS_PER_EXPORT)
    ]
    profile = d.profile("cpu", samples, time.time_ns())
    return export_request(d, [profile], "otlp", "otlp-1").SerializeToString()


def folded_body(marker: str) -> bytes:
    lines = (f"main (app/run.py:1);step{n} (app/steps.py:{n + 1});{marker} (app/x.py:1) 1" for n in range(40))
    return "\n".join(lines).encode()


class Sender(threading.Thread):
    """Sends exports (each with its own marker frame) until stopped or refused; the acknowledged markers."""

    def __init__(self, name: str, send: Callable[[str], bool]) -> None:
        super().__init__(daemon=True, name=f"sender-{name}")
        self.prefix, self.send = name, send
        self.acknowledged: list[str] = []
        self.stopping = threading.Event()
        self.failure = ""

    def run(self) -> None:
        for n in itertools.count():
            if self.stopping.is_set():
                return
            marker = f"{self.prefix}_{n}"
            try:
                if not self.send(marker):
                    return
            except Exception as exc:  # the observatory is gone mid-export: not acknowledged
                self.failure = f"{type(exc).__name__}: {exc}"
                return
            self.acknowledged.append(marker)


def senders_for(observatory: ObservatoryProcess) -> list[Sender]:
    http = httpx.Client(timeout=5)
    channel = grpc.insecure_channel(f"127.0.0.1:{observatory.ports['otlp_grpc']}")
    export = channel.unary_unary(EXPORT)
    otlp_url = f"http://127.0.0.1:{observatory.ports['otlp_http']}/v1development/profiles"
    ingest_url = f"{observatory.query_url}/ingest"

    def over_grpc(marker: str) -> bool:
        export(otlp_body(marker), timeout=5)
        return True

    def over_http(marker: str) -> bool:
        answer = http.post(
            otlp_url, content=otlp_body(marker), headers={"Content-Type": "application/x-protobuf"}
        )
        return answer.status_code == 200

    def over_ingest(marker: str) -> bool:
        params = {"name": "pyro.cpu", "from": str(int(time.time()))}
        return http.post(ingest_url, params=params, content=folded_body(marker)).status_code == 200

    return [Sender("grpc", over_grpc), Sender("http", over_http), Sender("ingest", over_ingest)]


def stored_markers(data: Path) -> dict[str, int]:
    """Samples stored per marker frame (the leaf of every stack sent)."""
    store = DuckDBStore(data / "observatory.duckdb")
    try:
        rows = store.read(
            lambda cursor: cursor.execute(
                """
                SELECT split_part(s.frames[-1], ' ', 1) AS marker, count(*)
                FROM profile_samples p JOIN profile_stacks s USING (stack_id) GROUP BY marker
                """
            ).fetchall()
        )
    finally:
        store.close()
    return {marker: count for marker, count in rows}


def test_kill_9_loses_no_acknowledged_profile(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = start_observatory(data)
    senders = senders_for(first)
    for sender in senders:
        sender.start()
    try:
        deadline = time.monotonic() + 90
        while sum(len(s.acknowledged) for s in senders) < ACKNOWLEDGED_BEFORE_KILL or not all(
            s.acknowledged for s in senders
        ):
            assert time.monotonic() < deadline, [(s.prefix, len(s.acknowledged), s.failure) for s in senders]
            time.sleep(0.01)
    finally:
        assert first.stop(signal.SIGKILL) == -signal.SIGKILL  # while the senders are mid-export
        for sender in senders:
            sender.stopping.set()
            sender.join(60)
    acknowledged = [marker for s in senders for marker in s.acknowledged]
    print(
        f"{len(acknowledged)} exports acknowledged before the kill: {[len(s.acknowledged) for s in senders]}"
    )

    second = start_observatory(data)  # comes up on the killed one's files
    try:
        status = httpx.get(f"{second.query_url}/api/status", timeout=10).json()
        assert status["health"]["status"] == "SERVING"
    finally:
        assert second.stop() == 0, second.text()[-2000:]
    stored = stored_markers(data)
    missing = [marker for marker in acknowledged if stored.get(marker) != STACKS_PER_EXPORT]
    assert not missing, f"{len(missing)} acknowledged exports lost or cut, e.g. {missing[:5]}"
    print(f"{len(stored)} exports stored ({len(stored) - len(acknowledged)} more than acknowledged)")

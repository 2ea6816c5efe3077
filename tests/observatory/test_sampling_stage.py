"""The tail-sampling stage in-process over a real Pipeline and DuckDBStore: journal, hold, replay, limits."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from boutique.observatory.model import SpanBatch
from boutique.observatory.pipeline import Pipeline
from boutique.observatory.processors.redact import CardRedactor
from boutique.observatory.receivers.otlp_proto import decode
from boutique.observatory.sampling import TailSampler, drain_journal, journal_directory, parse
from boutique.observatory.sampling import batches as batch_bytes
from boutique.observatory.sampling.journal import Journal
from boutique.observatory.sampling.policies import Traces, build, predicate_bits
from boutique.observatory.sampling.predicates import AttributeTest
from boutique.observatory.store.duckdb_store import DuckDBStore
from tests.observatory.sampling_traffic import Ids, SpanSpec, now_us, request

ERRORS = {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}


def traces(
    ids: Ids, count: int, spans: int = 3, error_every: int = 0, **extra: object
) -> list[list[SpanSpec]]:
    """`count` traces of `spans` spans over two services; every `error_every`-th one fails."""
    out = []
    start = now_us()
    for number in range(count):
        trace = ids.trace()
        failing = bool(error_every) and number % error_every == 0
        out.append(
            [
                SpanSpec(
                    trace,
                    ids.span(),
                    ("web", "db")[i % 2],
                    start_us=start + i,
                    error=failing and i == 0,
                    **extra,
                )  # type: ignore[arg-type]
                for i in range(spans)
            ]
        )
    return out


def batch_of(spans: list[SpanSpec]) -> SpanBatch:
    """The spans as the receiver turns them into a batch."""
    return decode(request(spans))


def flat(groups: list[list[SpanSpec]]) -> list[SpanSpec]:
    return [s for g in groups for s in g]


class Rig:
    """A store, a sampler over it and a pipeline writing to the sampler, in `folder`."""

    def __init__(
        self,
        folder: Path,
        config: dict[str, object],
        store: DuckDBStore | None = None,
        memory_bytes: int = 1 << 26,
    ) -> None:
        self.store = store or DuckDBStore(folder / "observatory.duckdb", threads=1)
        directory = journal_directory(self.store.path)
        self.sampler = TailSampler(self.store, parse(config), directory, tick=0.02, memory_bytes=memory_bytes)
        self.sampler.start()
        self.pipeline = Pipeline(self.sampler, [CardRedactor()])
        self.pipeline.start()

    def send(self, spans: list[SpanSpec]) -> None:
        """Offer one request's spans and wait until they are acknowledged."""
        assert self.pipeline.offer(batch_of(spans)).result(10) == len(spans)

    def stored(self, trace: list[SpanSpec]) -> set[str]:
        """Span ids (hex) the store holds of a trace."""
        found = self.store.traces([trace[0].trace_id])
        return {s.span_id for s in found[0]} if found else set()

    def abandon(self) -> None:
        """Stop deciding without settling or closing anything: what a crash leaves (for the next rig)."""
        self.pipeline.stop()
        with self.sampler._lock:
            self.sampler._stopping = True
            self.sampler._lock.notify_all()
        assert self.sampler._thread is not None
        self.sampler._thread.join(5)

    def close(self) -> None:
        self.pipeline.stop()
        self.sampler.stop()
        self.store.close()


def journal_files(folder: Path) -> list[str]:
    directory = journal_directory(folder / "observatory.duckdb")
    return sorted(os.listdir(directory)) if directory.exists() else []


def test_a_batch_survives_bytes_and_cutting(tmp_path: Path) -> None:
    ids = Ids(1)
    spans = flat(traces(ids, 5, attributes={"k": "v" * 300}))
    batch = batch_of(spans)
    again = batch_bytes.decode(b"".join(batch_bytes.encode(batch)))
    for name in SpanBatch.__slots__:  # type: ignore[attr-defined]
        left, right = getattr(batch, name), getattr(again, name)
        assert np.array_equal(left, right) if isinstance(left, np.ndarray) else left == right, name
    mask = np.arange(batch.size) % 3 == 1
    cut = batch_bytes.take(batch, mask)
    assert [cut.body_at(i) for i in range(cut.size)] == [batch.body_at(i) for i in np.flatnonzero(mask)]
    assert [cut.span_id_at(i) for i in range(cut.size)] == [batch.span_id_at(i) for i in np.flatnonzero(mask)]
    assert [cut.service_at(i) for i in range(cut.size)] == [batch.service_at(i) for i in np.flatnonzero(mask)]
    with pytest.raises(ValueError):
        batch_bytes.decode(b"".join(batch_bytes.encode(batch))[:-1])


def test_a_journal_read_stops_at_a_torn_or_damaged_record(tmp_path: Path) -> None:
    ids = Ids(2)
    journal = Journal(tmp_path / "j")
    journal.begin()
    batches = [batch_of(flat(traces(ids, 2))) for _ in range(3)]
    number = journal.append(batches[0]).number
    journal.append(batches[1])
    path = journal.path(number)
    whole = path.stat().st_size
    journal.append(batches[2])
    journal.pin(number)  # as the sampler does while its spans wait: closing keeps the file
    journal.close()
    assert [b.size for _, b in Journal(tmp_path / "j").read(number)] == [6, 6, 6]
    with open(path, "r+b") as file:  # a crash in the middle of the third write
        file.truncate(whole + 40)
    assert [b.size for _, b in Journal(tmp_path / "j").read(number)] == [6, 6]
    with open(path, "r+b") as file:  # a flipped byte in the second record's payload
        file.seek(whole - 100)
        byte = file.read(1)
        file.seek(whole - 100)
        file.write(bytes([byte[0] ^ 0xFF]))
    assert [b.size for _, b in Journal(tmp_path / "j").read(number)] == [6]


@pytest.mark.parametrize("memory_bytes", [1 << 26, 0], ids=["held in memory", "read back from the journal"])
def test_kept_traces_are_stored_and_settled_journals_deleted(tmp_path: Path, memory_bytes: int) -> None:
    rig = Rig(tmp_path, {"decision_wait": "0.1s", "policies": [ERRORS]}, memory_bytes=memory_bytes)
    ids = Ids(3)
    sent = traces(ids, 20, error_every=4)
    try:
        for trace in sent:
            rig.send(trace)
        rig.sampler.flush()
        for number, trace in enumerate(sent):
            assert rig.stored(trace) == ({s.span_id.hex() for s in trace} if number % 4 == 0 else set())
        figures = rig.sampler.snapshot()
        assert figures["traces"]["kept"] == 5 and figures["traces"]["dropped"] == 15
        assert figures["spans"]["stored"] == 15 and figures["spans"]["held"] == 0
        assert figures["journal"]["bytes_in_memory"] == 0 and figures["journal"]["batches_waiting"] == 0
    finally:
        rig.close()
    assert journal_files(tmp_path) == []


def test_redaction_happens_before_the_journal(tmp_path: Path) -> None:
    rig = Rig(tmp_path, {"decision_wait": "60s", "policies": [ERRORS]})
    card = "4111 1111 1111 1111"
    try:
        rig.send(flat(traces(Ids(4), 3, attributes={"payment.card": card})))
        files = journal_files(tmp_path)
        data = (journal_directory(rig.store.path) / files[0]).read_bytes()
        assert card.encode() not in data and b"1111" in data
    finally:
        rig.close()


def test_late_spans_follow_the_decision_while_it_is_cached(tmp_path: Path) -> None:
    config = {"decision_wait": "1h", "decision_cache": {"sampled_cache_size": 10}, "policies": [ERRORS]}
    rig = Rig(tmp_path, config)
    ids = Ids(5)
    kept, dropped = traces(ids, 1, error_every=1)[0], traces(ids, 1)[0]
    try:
        rig.send(kept + dropped)
        rig.sampler.flush()
        late_kept = SpanSpec(kept[0].trace_id, ids.span(), "late", start_us=now_us())
        late_dropped = SpanSpec(dropped[0].trace_id, ids.span(), "late", start_us=now_us(), error=True)
        rig.send([late_kept, late_dropped])
        rig.sampler.flush()
        assert rig.stored(kept) == {s.span_id.hex() for s in [*kept, late_kept]}
        assert rig.stored(dropped) == set()
        figures = rig.sampler.snapshot()
        assert (figures["spans"]["late_kept"], figures["spans"]["late_dropped"]) == (1, 1)
        # Once the cache has forgotten a decision, the trace's next spans are a trace of their own.
        rig.send(flat(traces(ids, 40, error_every=1)))
        rig.sampler.flush()
        later = SpanSpec(kept[0].trace_id, ids.span(), "later", start_us=now_us())
        rig.send([later])
        assert rig.sampler.snapshot()["traces"]["held"] == 1
    finally:
        rig.close()


def test_above_num_traces_the_oldest_are_decided_early(tmp_path: Path) -> None:
    rig = Rig(tmp_path, {"decision_wait": "1h", "num_traces": 10, "policies": [ERRORS]})
    ids = Ids(6)
    sent = traces(ids, 50, error_every=5)
    try:
        for trace in sent:
            rig.send(trace)
        deadline = threading.Event()
        for _ in range(200):
            figures = rig.sampler.snapshot()
            if figures["traces"]["held"] <= 10 and figures["spans"]["stored"] == figures["spans"]["kept"] > 0:
                break
            deadline.wait(0.05)
        assert figures["traces"]["held"] <= 10
        assert (
            figures["traces"]["decided_early"]
            == figures["traces"]["kept"] + figures["traces"]["dropped"]
            >= 40
        )
        assert rig.stored(sent[0]) and not rig.stored(sent[1])  # the oldest went first, by the policies
    finally:
        rig.close()


def test_a_restart_stores_what_was_kept_once_and_decides_the_rest_again(tmp_path: Path) -> None:
    config = {"decision_wait": "1h", "policies": [ERRORS]}
    first = Rig(tmp_path, config)
    ids = Ids(7)
    decided, waiting = traces(ids, 8, error_every=2), traces(ids, 8, error_every=2)
    for trace in decided:
        first.send(trace)
    first.sampler.flush()  # half kept and stored, half dropped; their journal file is still pinned...
    for trace in waiting:
        first.send(trace)  # ...by these, acknowledged and waiting when the process dies
    first.abandon()
    second = Rig(tmp_path, {"decision_wait": "0.1s", "policies": [ERRORS]}, store=first.store)
    try:
        figures = second.sampler.snapshot()
        assert figures["spans"]["replayed"] == 24 + 12  # all waiting spans, and the dropped ones again
        second.sampler.flush()
        for number, trace in enumerate(decided + waiting):
            assert rig_spans(second, trace) == (
                sorted(s.span_id.hex() for s in trace) if number % 2 == 0 else []
            )
    finally:
        second.close()
    assert journal_files(tmp_path) == []


def rig_spans(rig: Rig, trace: list[SpanSpec]) -> list[str]:
    """Every stored span id of a trace, duplicates included, sorted."""
    found = rig.store.traces([trace[0].trace_id])
    return sorted(s.span_id for s in found[0]) if found else []


def test_with_sampling_off_a_left_journal_is_stored(tmp_path: Path) -> None:
    first = Rig(tmp_path, {"decision_wait": "1h", "policies": [ERRORS]})
    ids = Ids(8)
    sent = traces(ids, 6)
    kept = traces(ids, 2, error_every=1)
    for trace in kept:
        first.send(trace)
    first.sampler.flush()
    for trace in sent:
        first.send(trace)
    first.abandon()
    assert drain_journal(first.store, journal_directory(first.store.path)) == 18
    try:
        for trace in sent + kept:
            assert rig_spans(first, trace) == sorted(s.span_id.hex() for s in trace)
    finally:
        first.store.close()
    assert journal_files(tmp_path) == []


def _encoded_attribute(key: str, value: AnyValue, value_first: bool) -> bytes:
    """A `Span.attributes` entry (field 9), with the KeyValue's fields in either order."""
    pair = KeyValue(key=key, value=value).SerializeToString()
    if value_first:
        key_part = KeyValue(key=key).SerializeToString()
        pair = pair[len(key_part) :] + key_part
    return b"\x4a" + bytes([len(pair)]) + pair


def test_attribute_tests_answer_as_decoding_every_span_would(tmp_path: Path) -> None:
    ids = Ids(9)
    shapes = [
        {"attributes": {"tier": "gold"}},
        {"attributes": {"tier": "silver"}},
        {"attributes": {"tier": "gold" * 40}},  # a value longer than 127 bytes
        {"attributes": {"tier": 7}},
        {"attributes": {"other": "gold", "tier2": "gold"}},
        {"attributes": {"tier": ["gold"]}},
        {"attributes": {"nested": {"tier": "gold"}}},
        {"event_attributes": {"tier": "gold"}},
        {"attributes": {"x": "\n\x04tiergold"}},
    ]
    spans = [SpanSpec(ids.trace(), ids.span(), "web", start_us=now_us(), **shape) for shape in shapes]  # type: ignore[arg-type]
    batch = batch_of(spans)
    # A span whose attribute is written value first (legal protobuf, unusual): decoded whole.
    odd = Span.FromString(batch.body_at(1))
    odd_bytes = odd.SerializeToString() + _encoded_attribute("tier", AnyValue(string_value="gold!"), True)
    batch.body = batch.body[: batch.body_offsets[1]] + odd_bytes + batch.body[batch.body_offsets[2] :]
    batch.body_offsets = np.concatenate(
        ([0], np.cumsum([len(batch.body_at(0)), len(odd_bytes), *np.diff(batch.body_offsets)[2:]]))
    ).astype(np.int64)

    def by_decoding(test: AttributeTest) -> list[bool]:
        return [
            any(
                p.key == test.key and test.test(_value(p.value))
                for p in Span.FromString(batch.body_at(i)).attributes
            )
            for i in range(batch.size)
        ]

    tests = [
        AttributeTest("tier", lambda v: v == "gold", ["gold"]),
        AttributeTest("tier", lambda v: isinstance(v, str) and v.startswith("gold")),
        AttributeTest("tier", lambda v: isinstance(v, int) and v > 5),
        AttributeTest("service.name", lambda v: v == "web", ["web"]),
    ]
    for test in tests:
        expected = by_decoding(test) if test.key != "service.name" else [True] * batch.size
        assert test.spans(batch).tolist() == expected, test.key


def _value(value: AnyValue) -> object:
    from boutique.observatory.otlp.values import from_any

    return from_any(value)


def test_and_asks_each_sub_policy_only_about_what_the_ones_before_kept() -> None:
    entry = {
        "name": "gold-capped",
        "type": "and",
        "and": {
            "and_sub_policy": [
                {
                    "name": "gold",
                    "type": "string_attribute",
                    "string_attribute": {"key": "tier", "values": ["gold"]},
                },
                {"name": "cap", "type": "rate_limiting", "rate_limiting": {"spans_per_second": 20}},
            ]
        },
    }
    policy = build(entry, "policies[0]")
    _, bits = predicate_bits([policy])
    second = 1_700_000_000_000_000
    traces = Traces(
        ids=[bytes([n]) * 16 for n in range(4)],
        spans=np.array([10, 10, 10, 10]),
        min_start_us=np.full(4, second),
        max_end_us=np.full(4, second + 5),
        flags=np.array([0, 0, 1, 1], dtype=np.uint64),  # only the last two hold tier=gold
        bits=bits,
    )
    # The cap's 20 spans go to the two gold traces, not to the first two the filter refused.
    assert policy.decide(traces).keep.tolist() == [False, False, True, True]


def test_a_summary_line_is_logged_each_period(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = DuckDBStore(tmp_path / "observatory.duckdb", threads=1)
    sampler = TailSampler(
        store,
        parse({"decision_wait": "0s", "policies": [ERRORS]}),
        journal_directory(store.path),
        tick=0.02,
        log_every=0.1,
    )
    sampler.start()
    try:
        with caplog.at_level("INFO", logger="boutique.observatory.sampling.stage"):
            sampler.append(batch_of(flat(traces(Ids(10), 4, error_every=2))))
            for _ in range(100):
                if any(r.getMessage() == "tail sampling" for r in caplog.records):
                    break
                threading.Event().wait(0.05)
        line = next(r for r in caplog.records if r.getMessage() == "tail sampling")
        assert (line.kept_traces, line.dropped_traces, line.kept_spans) == (2, 2, 6)  # type: ignore[attr-defined]
        assert line.policies == {"errors": "2 kept, 2 dropped"}  # type: ignore[attr-defined]
    finally:
        sampler.stop()
        store.close()

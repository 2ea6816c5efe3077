"""Tail sampling in the observatory's pipeline: hold each trace for `decision_wait`, then keep it by policies.

Where it sits: the `Pipeline` writes to a `TailSampler` instead of the store. Receivers, redaction
(in `Pipeline.offer`), the bounded queue and the group commit are unchanged; what the writer thread
"stores" is a span batch appended to the sampler's journal. Logs, metric points and every query go
straight to the store underneath.

Why nothing acknowledged is lost: a sender is answered once its batch is stored, and with sampling on
that means written and `fdatasync`ed to the pending journal (`journal`), already redacted. The batch
is then held in memory (`hold`) by trace. A decider thread takes, each tick, the traces first seen
`decision_wait` ago (or the oldest ones early while more than `num_traces` are held), asks the policies,
and appends the kept traces' spans to the store. A journal file is deleted only once every span in it
is decided and the kept ones committed. So at any crash each acknowledged span is in the store, or in a
journal file, or both.

Memory: per held trace a few numbers (`num_traces` bounds how many: past it the oldest are decided
early), and the waiting batches' span bodies up to `memory_bytes`; batches beyond that are read back
from the journal when spans of them are kept. The journal on disk holds about what arrives during a
decision wait, plus one file (`journal.Journal.rotate_bytes`).

Restart: the journal files a crash (or a stop) left are read back first. Spans already in the store
are skipped; a trace with spans in the store was kept, so its other spans are kept too; every other
trace is held again with a fresh wait and decided anew by the policies (deterministic ones decide as
before, and spans sent again by senders that got no answer can still join). With sampling off, the
observatory stores whatever journals it finds (`drain_journal`), so turning sampling off loses nothing.

Decisions: a trace is kept when any policy keeps it, unless an inverted attribute policy matched it
(the Collector's rule: that match drops the trace whatever the others say). Spans of a trace already
decided follow the decision while the trace is in the decision cache (`decision_cache` sizes). Spans
are decoded only for attribute policies, and only spans whose bytes hold the key.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import numpy as np

from boutique.observatory.model import Span, SpanBatch
from boutique.observatory.sampling import policies
from boutique.observatory.sampling.batches import take
from boutique.observatory.sampling.config import SamplingConfig
from boutique.observatory.sampling.hold import Chunk, Hold
from boutique.observatory.sampling.journal import Journal, Place
from boutique.observatory.sampling.stats import Counts, Stats
from boutique.observatory.signals import Batch
from boutique.observatory.store import Store
from boutique.observatory.store.arrow import trace_keys
from boutique.observatory.store.base import Dependency, RedPoint, StoreReadOnly, TraceQuery, WriteState
from boutique.observatory.store.disk import failure_reason, probe_write

log = logging.getLogger(__name__)
T = TypeVar("T")

COMMIT_SPANS = 20_000  # kept spans per store append
MEMORY_BYTES = 64 << 20  # span bodies held in memory; beyond, waiting batches are read back from the journal
LOG_EVERY = 60.0  # seconds between summary lines
_LOOKUP_KEYS = 2000  # trace keys per query when looking for spans already stored


def journal_directory(database: Path) -> Path:
    """Where the pending journal of the store at `database` lives: beside it."""
    return database.with_name(database.name + ".sampling")


class TailSampler:
    """The tail-sampling stage: the pipeline's store while sampling is on (see module docstring).

    Build it over the real store and hand it to `Pipeline` in the store's place; `start` before the
    pipeline (it reads back what the journal holds), `stop` after it. `flush` decides everything held now.
    """

    def __init__(
        self,
        store: Store,
        config: SamplingConfig,
        directory: Path,
        tick: float | None = None,
        commit_spans: int = COMMIT_SPANS,
        log_every: float = LOG_EVERY,
        memory_bytes: int = MEMORY_BYTES,
    ) -> None:
        self.store = store
        self.config = config
        self.policies = config.build()
        self.predicates, self.bits = policies.predicate_bits(self.policies)
        self.tick = tick if tick is not None else min(1.0, max(0.05, config.decision_wait / 10))
        self.commit_spans = commit_spans
        self.log_every = log_every
        self.memory_bytes = memory_bytes
        self.journal = Journal(directory, rotate_seconds=max(1.0, config.decision_wait))
        expected = int(2 * config.expected_new_traces_per_sec * config.decision_wait)  # traces held, roughly
        capacity = max(1024, min(config.num_traces, expected))
        self.hold = Hold(config.sampled_cache_size, config.non_sampled_cache_size, capacity)
        self.counts = Stats({p.name: Counts() for p in self.policies})
        self._lock = threading.Condition()  # the hold and the stats
        self._round_lock = threading.Lock()  # one decision round (and its store commit) at a time
        self._pending: list[tuple[Chunk, np.ndarray]] = []  # kept spans of the last round, not yet stored
        self._pending_upto = 0  # serials below this are decided and in `_pending` or the store
        self._store_failing = False
        self._journal_error: WriteState | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._logged = self.counts.copy()
        self._last_log = time.monotonic()

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Read back what the journal holds (see module docstring), then start deciding."""
        found = [record for number in self.journal.numbers() for record in self.journal.read(number)]
        self.journal.begin()
        if found:
            self._replay(found)
        self.journal.remove_unpinned()
        self._thread = threading.Thread(target=self._run, name="observatory-sampler", daemon=True)
        self._thread.start()

    def _replay(self, found: list[tuple[Place, SpanBatch]]) -> None:
        """Hold again what the journal holds, but spans already stored; traces with stored spans were kept."""
        stored, kept = already_stored(self.store, [batch for _, batch in found])
        replayed = 0
        with self._lock:
            self.hold.remember_kept(sorted(kept))
            for place, batch in found:
                batch = _without(batch, stored)
                if batch.size:  # kept in memory: it may differ from its record now
                    replayed += batch.size
                    self._hold(batch, place, time.monotonic())
            self.counts.replayed_spans += replayed
        log.info(
            "tail sampling read back its journal",
            extra={"spans": replayed, "already_stored": len(stored), "kept_traces_found": len(kept)},
        )

    def stop(self, timeout: float = 30.0) -> None:
        """Stop deciding (the round under way is committed); what is undecided stays in the journal."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._round_lock:
            if self._pending:
                self._commit()
        self.journal.close()

    def flush(self) -> None:
        """Decide every held trace now and store the kept ones (a benchmark's or a test's end)."""
        self._decide(math.inf)

    # ---- the pipeline's store ----------------------------------------------------------------

    def append(self, batch: Batch) -> None:
        """Spans: journal (synced) and hold them; any other signal: the store."""
        if not isinstance(batch, SpanBatch):
            self.store.append(batch)
            return
        if not batch.size:
            return
        if self._journal_error is not None:
            raise StoreReadOnly(f"the sampling journal cannot be written: {self._journal_error.error}")
        flags = self._flags(batch)
        try:
            place = self.journal.append(batch)
        except OSError as exc:
            self._journal_error = WriteState(
                writable=False,
                reason=f"sampling journal: {failure_reason(str(exc))}",
                error=str(exc),
                since=time.time(),
            )
            raise StoreReadOnly(f"the sampling journal cannot be written: {exc}") from exc
        with self._lock:
            self.counts.journaled_spans += batch.size
            in_memory = self.hold.held_bytes + len(batch.body) <= self.memory_bytes
            self._hold(batch, place, time.monotonic(), flags, in_memory)
            if self.hold.held_traces > self.config.num_traces:
                self._lock.notify()

    def _flags(self, batch: SpanBatch) -> np.ndarray:
        """Each span's predicate bits."""
        flags = np.zeros(batch.size, dtype=np.uint64)
        for bit, predicate in enumerate(self.predicates):
            flags |= predicate.spans(batch).astype(np.uint64) << np.uint64(bit)
        return flags

    def _hold(
        self,
        batch: SpanBatch,
        place: Place,
        now: float,
        flags: np.ndarray | None = None,
        in_memory: bool = True,
    ) -> None:
        """Add a journaled batch to the hold (lock held) and pin its file while it waits."""
        flags = self._flags(batch) if flags is None else flags
        added = self.hold.add(batch, flags, place, now, in_memory)
        self.counts.late_kept_spans += added.late_kept
        self.counts.late_dropped_spans += added.late_dropped
        if added.chunk is not None:
            self.journal.pin(place.number)

    def write_state(self) -> WriteState:
        """The store's, or read-only while the journal cannot be written."""
        state = self.store.write_state()
        return state if not state.writable or self._journal_error is None else self._journal_error

    def recover(self) -> WriteState:
        """Probe the store, and the journal's directory after a failed journal write."""
        if not self.store.write_state().writable:
            self.store.recover()
        if self._journal_error is not None:
            try:
                probe_write(self.journal.directory)
            except OSError:
                pass
            else:
                log.info("the sampling journal takes writes again")
                self._journal_error = None
        return self.write_state()

    def enforce_retention(self, now_us: int) -> int:
        """The store's retention."""
        return self.store.enforce_retention(now_us)

    def close(self) -> None:
        """Stop the stage and close the store."""
        self.stop()
        self.store.close()

    # ---- queries: the store's ------------------------------------------------------------------

    def read(self, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """The store's."""
        return self.store.read(work)

    def services(self) -> list[str]:
        """The store's."""
        return self.store.services()

    def operations(self, service: str | None, span_kind: int | None = None) -> list[tuple[str, int]]:
        """The store's."""
        return self.store.operations(service, span_kind)

    def find_traces(self, query: TraceQuery) -> list[bytes]:
        """The store's."""
        return self.store.find_traces(query)

    def search(self, query: TraceQuery) -> list[list[Span]]:
        """The store's."""
        return self.store.search(query)

    def traces(self, trace_ids: Sequence[bytes]) -> list[list[Span]]:
        """The store's."""
        return self.store.traces(trace_ids)

    def dependencies(self, start_us: int, end_us: int) -> list[Dependency]:
        """The store's."""
        return self.store.dependencies(start_us, end_us)

    def red(self, *args: Any, **kwargs: Any) -> list[RedPoint]:
        """The store's (`Store.red`, whose arguments it takes)."""
        return self.store.red(*args, **kwargs)

    def stats(self) -> dict[str, int]:
        """The store's."""
        return self.store.stats()

    # ---- deciding ----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._stopping:
                    return
                if self._store_failing or self.hold.held_traces <= self.config.num_traces:
                    self._lock.wait(self.tick)  # (above num_traces, decide early at once)
                if self._stopping:
                    return
            try:
                self._decide(time.monotonic())
            except Exception:
                log.exception("a tail-sampling round failed")
                time.sleep(self.tick)
            if time.monotonic() - self._last_log >= self.log_every:
                self._log_minute()

    def _decide(self, now: float) -> None:
        """One round: commit what a failed round left, then decide the due traces and store the kept ones."""
        with self._round_lock:
            if self._pending and not self._commit():
                return
            with self._lock:
                if math.isinf(now):
                    count, early = self.hold.held_traces, 0
                else:
                    count, early = self.hold.due(now, self.config.decision_wait, self.config.num_traces)
                if not count and not self.hold.late_waiting:
                    return
                traces = self.hold.oldest(count)
                traces.bits = self.bits
                keep = self._evaluate(traces)
                self._pending = self.hold.decide(count, keep)
                self._pending_upto = self.hold.base
                self.counts.decided.add(keep, traces.spans)
                self.counts.early_traces += early
            self._commit()

    def _evaluate(self, traces: policies.Traces) -> np.ndarray:
        """Every policy's verdict (counted per policy); the final keep of each trace."""
        keep = np.zeros(len(traces), dtype=bool)
        veto = np.zeros(len(traces), dtype=bool)
        for policy in self.policies:
            verdict = policy.decide(traces)
            self.counts.policies[policy.name].add(verdict.keep, traces.spans)
            keep |= verdict.keep
            if verdict.veto is not None:
                veto |= verdict.veto
        return keep & ~veto

    def _commit(self) -> bool:
        """Append the pending kept spans to the store; then release what is settled. Whether all went."""
        while self._pending:
            count, spans = 0, 0
            while count < len(self._pending):
                more = int(np.count_nonzero(self._pending[count][1]))
                if count and spans + more > self.commit_spans:
                    break
                spans += more
                count += 1
            try:
                parts = [self._kept(chunk, chosen) for chunk, chosen in self._pending[:count]]
                self.store.append(SpanBatch.concat(parts))
            except Exception as exc:
                if not self._store_failing:
                    log.warning(
                        "kept spans cannot be stored now: they wait in the journal", extra={"error": str(exc)}
                    )
                self._store_failing = True
                return False
            self._store_failing = False
            del self._pending[:count]
            with self._lock:
                self.counts.stored_spans += spans
        with self._lock:
            released = self.hold.release(self._pending_upto)
        for chunk in released:
            self.journal.unpin(chunk.place.number)
        return True

    def _kept(self, chunk: Chunk, chosen: np.ndarray) -> SpanBatch:
        """The chosen spans of a waiting batch, from memory or read back from its journal record.

        A record that no longer reads back as written (the disk damaged it) cannot be stored: said once,
        and skipped so that the rest goes on (an `OSError` is raised, and retried, like a store failure).
        """
        if chunk.batch is not None:
            return take(chunk.batch, chosen)
        try:
            return take(self.journal.read_at(chunk.place), chosen)
        except ValueError as exc:
            log.error(
                "a journaled batch is damaged: its kept spans cannot be stored",
                extra={"journal": chunk.place.number, "offset": chunk.place.offset, "error": str(exc)},
            )
            return SpanBatch()

    def _log_minute(self) -> None:
        with self._lock:
            now = self.counts.copy()
            held = self.hold.held_traces
        if now.busy_since(self._logged):
            log.info("tail sampling", extra={**now.since(self._logged), "held_traces": held})
        self._logged, self._last_log = now, time.monotonic()

    # ---- figures -----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """What /api/sampling answers."""
        with self._lock:
            stats = self.counts.copy()
            held_traces, held_spans = self.hold.held_traces, self.hold.held_spans
            batches, in_memory = len(self.hold.chunks), self.hold.held_bytes
        files, size = self.journal.bytes_on_disk()
        described = self.config.describe()
        return {
            "enabled": True,
            "decision_wait_seconds": self.config.decision_wait,
            "num_traces": self.config.num_traces,
            "traces": {
                "kept": stats.decided.kept_traces,
                "dropped": stats.decided.dropped_traces,
                "held": held_traces,
                "decided_early": stats.early_traces,
            },
            "spans": {
                "kept": stats.decided.kept_spans,
                "dropped": stats.decided.dropped_spans,
                "held": held_spans,
                "late_kept": stats.late_kept_spans,
                "late_dropped": stats.late_dropped_spans,
                "journaled": stats.journaled_spans,
                "replayed": stats.replayed_spans,
                "stored": stats.stored_spans,
            },
            "policies": [{**entry, **vars(stats.policies[entry["name"]])} for entry in described],
            "journal": {
                "files": files,
                "bytes": size,
                "batches_waiting": batches,
                "bytes_in_memory": in_memory,
            },
        }


def _without(batch: SpanBatch, stored: set[tuple[bytes, bytes]]) -> SpanBatch:
    """The batch without the spans already in the store."""
    if not stored:
        return batch
    mask = np.fromiter(
        ((batch.trace_id_at(i), batch.span_id_at(i)) not in stored for i in range(batch.size)),
        dtype=bool,
        count=batch.size,
    )
    return take(batch, mask)


def already_stored(store: Store, found: Sequence[SpanBatch]) -> tuple[set[tuple[bytes, bytes]], set[bytes]]:
    """(trace id, span id) of the spans of these batches already in the store, and the traces they are of."""
    keys = np.unique(
        np.concatenate([trace_keys(b.trace_id) for b in found if b.size] or [np.zeros(0, np.uint64)])
    )

    def lookup(cursor: duckdb.DuckDBPyConnection) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        for start in range(0, len(keys), _LOOKUP_KEYS):
            part = keys[start : start + _LOOKUP_KEYS].tolist()
            rows += cursor.execute(
                "SELECT trace_id, span_id FROM spans WHERE trace_key = ANY(?::UBIGINT[])", [part]
            ).fetchall()
        return rows

    try:
        rows = store.read(lookup) if len(keys) else []
    except Exception as exc:  # an unreadable store: replay everything (duplicates rather than losses)
        log.warning("could not look for journaled spans in the store", extra={"error": str(exc)})
        rows = []
    stored = {(bytes(trace_id), bytes(span_id)) for trace_id, span_id in rows}
    return stored, {trace_id for trace_id, _ in stored}


def drain_journal(store: Store, directory: Path) -> int:
    """With sampling off: store every span a journal left that is not stored yet, then delete it; spans stored."""
    journal = Journal(directory)
    numbers = journal.numbers()
    if not numbers:
        return 0
    found = [batch for number in numbers for _, batch in journal.read(number)]
    stored, _ = already_stored(store, found) if found else (set(), set())
    left = [b for b in (_without(batch, stored) for batch in found) if b.size]
    count = 0
    try:
        for start in range(0, len(left), 32):
            part = SpanBatch.concat(left[start : start + 32])
            store.append(part)
            count += part.size
    except Exception as exc:
        log.warning(
            "the spans a tail-sampling journal holds cannot be stored now: it is kept for the next start",
            extra={"journal": str(directory), "error": str(exc)},
        )
        return count
    journal.remove_unpinned()
    log.info(
        "stored the spans a tail-sampling journal held (sampling is off)",
        extra={"spans": count, "journal": str(directory)},
    )
    return count

"""The traces waiting for their decision: per-trace figures in columns and the journaled batches that hold their spans.

Each trace seen for the first time gets the next serial number. Decisions are taken oldest first (by
the time a trace was first seen, which grows with its serial), so the decided traces are always the
serials below `base`: a batch (`Chunk`) can go once every serial in it is below the serial up to which
decisions have been committed, and no per-trace list of batches is needed. A trace's figures (first
seen, span count, earliest start, latest end, predicate bits) live in numpy columns at `serial -
origin`. Spans of a trace already decided (found in the decision cache) follow that decision at once:
marked `LATE_KEPT` (stored with the next round) or `LATE_DROPPED`.

Not thread-safe: the stage calls it under its lock.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass

import numpy as np

from boutique.observatory.model import SpanBatch
from boutique.observatory.sampling.batches import group_by_trace
from boutique.observatory.sampling.journal import Place
from boutique.observatory.sampling.policies import Traces

LATE_KEPT, LATE_DROPPED = -1, -2
_NONE = -3  # a trace not held


@dataclass(slots=True)
class Chunk:
    """One journaled batch while any of its spans waits (for a decision, or for the store)."""

    batch: SpanBatch | None  # None when only the journal holds it (read back when spans of it are kept)
    serials: np.ndarray  # int64 per span: its trace's serial, or LATE_KEPT / LATE_DROPPED
    place: Place  # its record in the journal
    min_serial: int  # of its held traces (a large number when none)
    max_serial: int  # of its held traces (-1 when none)
    late: bool  # holds LATE_KEPT spans not yet taken into a round


@dataclass(slots=True)
class Added:
    """What adding a batch did."""

    chunk: Chunk | None  # None when no span of it waits for anything
    new_traces: int
    late_kept: int
    late_dropped: int


class DecisionCache:
    """Trace ids recently decided one way, newest kept (bounded; evicted in bulk, oldest first)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.ids: dict[bytes, None] = {}

    def add(self, ids: list[bytes]) -> None:
        """Remember these ids."""
        if not self.size:
            return
        self.ids.update(dict.fromkeys(ids))
        if len(self.ids) > self.size + self.size // 4 + 16:
            self.ids = dict.fromkeys(itertools.islice(self.ids, len(self.ids) - self.size, None))

    def __contains__(self, trace_id: bytes) -> bool:
        return trace_id in self.ids


class Hold:
    """Held traces and their batches (see module docstring)."""

    def __init__(self, kept_cache: int, dropped_cache: int, capacity: int = 1024) -> None:
        self.index: dict[bytes, int] = {}  # held trace id → serial
        self.ids: list[bytes] = []  # ids of serials base, base + 1, …
        self.base = 0  # the oldest undecided serial
        self.next = 0  # the serial the next new trace gets
        self.origin = 0  # the serial at row 0 of the columns
        self.first_seen = np.zeros(capacity, dtype=np.float64)
        self.spans = np.zeros(capacity, dtype=np.int64)
        self.min_start_us = np.zeros(capacity, dtype=np.int64)
        self.max_end_us = np.zeros(capacity, dtype=np.int64)
        self.flags = np.zeros(capacity, dtype=np.uint64)
        self.chunks: list[Chunk] = []
        self.kept = DecisionCache(kept_cache)
        self.dropped = DecisionCache(dropped_cache)
        self.held_spans = 0
        self.held_bytes = 0  # span bodies of the chunks held

    @property
    def held_traces(self) -> int:
        """Traces waiting for a decision."""
        return self.next - self.base

    @property
    def late_waiting(self) -> bool:
        """Whether some late spans of kept traces wait for the next round."""
        return any(chunk.late for chunk in self.chunks)

    def _room(self, adding: int) -> None:
        """Make the columns hold `adding` more rows after the live ones (moving them to row 0, growing)."""
        capacity = len(self.spans)
        if self.next + adding - self.origin <= capacity:
            return
        live = self.next - self.base
        size = capacity
        while live + adding > size // 2:
            size *= 2
        start = self.base - self.origin
        for name in ("first_seen", "spans", "min_start_us", "max_end_us", "flags"):
            column = getattr(self, name)
            moved = np.zeros(size, dtype=column.dtype)
            moved[:live] = column[start : start + live]
            setattr(self, name, moved)
        self.origin = self.base

    def add(
        self, batch: SpanBatch, span_flags: np.ndarray, place: Place, now: float, in_memory: bool = True
    ) -> Added:
        """Join a batch's spans to their held traces, start new ones, and follow decisions already taken.

        Unless `in_memory`, the batch is not kept: only its journal record holds it.
        """
        groups = group_by_trace(batch, span_flags)
        ids = groups.ids
        serials = [_NONE if s is None else s for s in map(self.index.get, ids)]
        new_ids: list[bytes] = []
        new_groups: list[int] = []
        first_new = self.next
        for group in [g for g, s in enumerate(serials) if s == _NONE]:
            trace_id = ids[group]
            if trace_id in self.kept:
                serials[group] = LATE_KEPT
            elif trace_id in self.dropped:
                serials[group] = LATE_DROPPED
            else:
                serials[group] = first_new + len(new_ids)
                new_ids.append(trace_id)
                new_groups.append(group)
        group_serials = np.array(serials, dtype=np.int64)
        if new_ids:
            self._room(len(new_ids))
            rows = slice(first_new - self.origin, first_new - self.origin + len(new_ids))
            self.first_seen[rows] = now
            self.spans[rows] = groups.spans[new_groups]
            self.min_start_us[rows] = groups.min_start_us[new_groups]
            self.max_end_us[rows] = groups.max_end_us[new_groups]
            self.flags[rows] = groups.flags[new_groups]
            self.index.update(zip(new_ids, range(first_new, first_new + len(new_ids)), strict=True))
            self.ids.extend(new_ids)
            self.next += len(new_ids)
        joined = (group_serials >= 0) & (group_serials < first_new)
        if joined.any():
            rows_joined = group_serials[joined] - self.origin
            self.spans[rows_joined] += groups.spans[joined]
            np.minimum.at(self.min_start_us, rows_joined, groups.min_start_us[joined])
            np.maximum.at(self.max_end_us, rows_joined, groups.max_end_us[joined])
            self.flags[rows_joined] |= groups.flags[joined]
        span_serials = group_serials[groups.span_group]
        late_kept = int(np.count_nonzero(span_serials == LATE_KEPT))
        late_dropped = int(np.count_nonzero(span_serials == LATE_DROPPED))
        held = span_serials[span_serials >= 0]
        self.held_spans += len(held)
        chunk = None
        if len(held) or late_kept:
            chunk = Chunk(
                batch=batch if in_memory else None,
                serials=span_serials,
                place=place,
                min_serial=int(held.min()) if len(held) else 1 << 62,
                max_serial=int(held.max()) if len(held) else -1,
                late=bool(late_kept),
            )
            self.chunks.append(chunk)
            if in_memory:
                self.held_bytes += len(batch.body)
        return Added(chunk, len(new_ids), late_kept, late_dropped)

    def due(self, now: float, wait: float, limit: int) -> tuple[int, int]:
        """(traces to decide now, of which early): those first seen `wait` ago, or more while above `limit`."""
        live = slice(self.base - self.origin, self.next - self.origin)
        waited = int(np.searchsorted(self.first_seen[live], now - wait, side="right"))
        over = self.held_traces - limit
        return max(waited, over), max(0, over - waited)

    def oldest(self, count: int) -> Traces:
        """The `count` oldest held traces, for the policies (`bits` left for the caller)."""
        rows = slice(self.base - self.origin, self.base - self.origin + count)
        return Traces(
            ids=self.ids[:count],
            spans=self.spans[rows],
            min_start_us=self.min_start_us[rows],
            max_end_us=self.max_end_us[rows],
            flags=self.flags[rows],
            bits={},
        )

    def decide(self, count: int, keep: np.ndarray) -> list[tuple[Chunk, np.ndarray]]:
        """Settle the `count` oldest traces (`keep` for each): which spans of which batches to store
        (theirs that are kept, and the late spans of kept traces)."""
        low, high = self.base, self.base + count
        cuts = []
        for chunk in self.chunks:
            ours = chunk.max_serial >= low and chunk.min_serial < high
            if not (ours or chunk.late):
                continue
            serials = chunk.serials
            chosen = serials == LATE_KEPT if chunk.late else np.zeros(len(serials), dtype=bool)
            if ours:
                inside = (serials >= low) & (serials < high)
                chosen |= inside & keep[np.where(inside, serials - low, 0)]
            chunk.late = False
            if chosen.any():
                cuts.append((chunk, chosen))
        decided = self.ids[:count]
        del self.ids[:count]
        deque(map(self.index.pop, decided), maxlen=0)
        self.kept.add([t for t, k in zip(decided, keep.tolist(), strict=True) if k])
        self.dropped.add([t for t, k in zip(decided, keep.tolist(), strict=True) if not k])
        rows = slice(low - self.origin, high - self.origin)
        self.held_spans -= int(self.spans[rows].sum())
        self.base = high
        return cuts

    def remember_kept(self, trace_ids: list[bytes]) -> None:
        """Treat these traces as kept (found in the store after a restart): their spans follow, whatever
        the cache's size (they are only the traces of the journal read back)."""
        self.kept.ids.update(dict.fromkeys(trace_ids))

    def release(self, committed: int) -> list[Chunk]:
        """Drop the chunks whose every span is decided below serial `committed` and stored; those dropped."""
        done: list[Chunk] = []
        left: list[Chunk] = []
        for chunk in self.chunks:
            (done if chunk.max_serial < committed and not chunk.late else left).append(chunk)
        self.chunks = left
        self.held_bytes -= sum(len(c.batch.body) for c in done if c.batch is not None)
        return done

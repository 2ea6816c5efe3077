"""The critical path of a trace: the chain of work that set its end-to-end duration.

Starting at the root span, the walk goes backwards from the span's end: the child that finished
last before the current point is on the path, the parent's own time after that child is on the path,
the walk recurses into the child, and the point moves to the child's start; then the next child that
finished before that point, and so on until the span's start. Children are clamped to their parent's
window (clock skew, or asynchronous children that outlive their parent), children starting at or after
the current point are ignored, and a trace without a single root is measured from its longest root.
Cycles and repeated span ids are skipped rather than followed. The walk uses an explicit stack, so a
trace ten thousand spans deep is fine.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol


class Timed(Protocol):
    """What the walk needs of a span (`boutique.observatory.model.Span` has it)."""

    @property
    def span_id(self) -> str: ...

    @property
    def parent_id(self) -> str: ...

    @property
    def start_us(self) -> int: ...

    @property
    def end_us(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of one span's own time on the critical path, in the trace's absolute µs."""

    span_id: str
    start_us: int
    end_us: int


@dataclass(slots=True)
class _Frame:
    """One span being walked: its clamped window, the current point and its children by end, latest first."""

    span_id: str
    start_us: int
    point: int
    children: list[Timed]
    next_child: int = 0


def unique_spans(spans: Iterable[Timed]) -> dict[str, Timed]:
    """Spans by id, the first of each repeated id kept."""
    by_id: dict[str, Timed] = {}
    for span in spans:
        by_id.setdefault(span.span_id, span)
    return by_id


def roots(by_id: dict[str, Timed]) -> list[Timed]:
    """Spans without a parent in the trace, earliest first (the earliest span when a cycle leaves none)."""
    found = [
        s for s in by_id.values() if not s.parent_id or s.parent_id not in by_id or s.parent_id == s.span_id
    ]
    if not found and by_id:
        found = [min(by_id.values(), key=lambda s: (s.start_us, s.span_id))]
    return sorted(found, key=lambda s: (s.start_us, s.span_id))


def main_root(candidates: Sequence[Timed]) -> Timed | None:
    """The longest root (the earliest among equals): the one whose duration the trace reports."""
    if not candidates:
        return None
    return min(candidates, key=lambda s: (-(s.end_us - s.start_us), s.start_us, s.span_id))


def _children(by_id: dict[str, Timed]) -> dict[str, list[Timed]]:
    """Each span's children, latest end first (longer first among equal ends, then by id)."""
    children: dict[str, list[Timed]] = {}
    for span in by_id.values():
        if span.parent_id and span.parent_id != span.span_id and span.parent_id in by_id:
            children.setdefault(span.parent_id, []).append(span)
    for kids in children.values():
        kids.sort(key=lambda s: (-s.end_us, s.start_us, s.span_id))
    return children


def critical_path(spans: Iterable[Timed]) -> list[Segment]:
    """The critical path's segments in time order; adjacent pieces of one span are merged.

    A trace whose root lasts no time at all has that root alone as its path.
    """
    by_id = unique_spans(spans)
    root = main_root(roots(by_id))
    if root is None:
        return []
    children = _children(by_id)
    visited = {root.span_id}
    backwards: list[Segment] = []
    stack = [_Frame(root.span_id, root.start_us, root.end_us, children.get(root.span_id, []))]
    while stack:
        frame = stack[-1]
        chosen = None
        while frame.next_child < len(frame.children):
            child = frame.children[frame.next_child]
            frame.next_child += 1
            if child.span_id in visited:
                continue  # a cycle, or a span reached twice
            if child.start_us < frame.point and child.end_us > frame.start_us:
                chosen = child
                break
        if chosen is None:
            backwards.append(Segment(frame.span_id, frame.start_us, frame.point))
            stack.pop()
            continue
        visited.add(chosen.span_id)
        child_end = min(chosen.end_us, frame.point)
        child_start = max(chosen.start_us, frame.start_us)
        backwards.append(Segment(frame.span_id, child_end, frame.point))
        frame.point = child_start
        stack.append(_Frame(chosen.span_id, child_start, child_end, children.get(chosen.span_id, [])))
    return _merged(reversed(backwards)) or [Segment(root.span_id, root.start_us, root.end_us)]


def _merged(segments: Iterable[Segment]) -> list[Segment]:
    """Drop empty segments and join touching segments of the same span."""
    out: list[Segment] = []
    for segment in segments:
        if segment.end_us <= segment.start_us:
            continue
        if out and out[-1].span_id == segment.span_id and out[-1].end_us == segment.start_us:
            out[-1] = Segment(segment.span_id, out[-1].start_us, segment.end_us)
        else:
            out.append(segment)
    return out

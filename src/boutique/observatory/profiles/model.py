"""Profile samples as the pipeline carries them: a `ProfileBatch` of columns and the stacks they name.

A row is a count of samples (its `value`, in the row's `unit`) of one stack, one thread and one span,
taken in one short stretch of time (the sampler aggregates a second at most); its stack is a tuple of
frame labels, root first, kept once per batch under a 64-bit id (`stack_id`) that is the same for the same
frames everywhere, so the store keeps each stack once however often it is sampled.

A frame label is `qualname (file:line)` — the shape py-spy and Pyroscope's Python clients send — where
`line` is the line the frame was running; `function_label` drops the line, so a flame graph can merge
a function's lines into one frame.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Self

from boutique.observatory.logs.model import LogResource as ProfileResource
from boutique.observatory.signals import join_rows

__all__ = ["ProfileBatch", "ProfileResource", "frame_label", "function_label", "stack_id"]

# What our sampler sends (cpu, wall, and where asyncio tasks wait); others (alloc_space, ...) are stored as sent.
PROFILE_TYPES = ("cpu", "wall", "tasks")
NANOSECONDS = "nanoseconds"
_LINE = re.compile(r"^(.*) \((.*):(\d+)\)$")


def frame_label(qualname: str, file: str, line: int) -> str:
    """One frame as stored and shown: `qualname (file:line)`."""
    return f"{qualname} ({file}:{line})"


def function_label(label: str) -> str:
    """A frame label without its line (`qualname (file)`), so that a function's lines merge; others as is."""
    found = _LINE.match(label)
    return f"{found.group(1)} ({found.group(2)})" if found else label


def stack_id(frames: Sequence[str]) -> int:
    """The 64-bit id of a stack (frames root first): the same frames always give the same id."""
    digest = hashlib.blake2b("\n".join(frames).encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


@dataclass
class ProfileBatch:
    """Profile samples decoded from one request (or joined for one commit): a `signals.Batch`."""

    signal: ClassVar[str] = "profiles"

    time_us: list[int] = field(default_factory=list)  # when the row's first sample was taken
    type: list[str] = field(default_factory=list)  # "cpu", "wall", or as a Pyroscope client names it
    unit: list[str] = field(default_factory=list)  # "nanoseconds", "samples", "bytes", ...
    value: list[int] = field(default_factory=list)  # the samples' total, in `unit`
    stack_id: list[int] = field(default_factory=list)  # a key of `stacks`
    thread: list[str] = field(default_factory=list)  # the thread's name ("" when unknown)
    labels: list[str] = field(default_factory=list)  # JSON object text: other sample attributes / tags
    trace_id: list[bytes] = field(default_factory=list)  # 16 bytes, or b"" for a sample outside any span
    span_id: list[bytes] = field(default_factory=list)  # 8 bytes, or b""
    resource_index: list[int] = field(default_factory=list)  # into `resources`
    resources: list[ProfileResource] = field(default_factory=list)
    stacks: dict[int, tuple[str, ...]] = field(default_factory=dict)  # stack id -> frames, root first
    rejected: int = 0  # profiles of the request refused (OTLP partial success)
    rejection: str = ""

    def __len__(self) -> int:
        return len(self.time_us)

    def add_stack(self, frames: Sequence[str]) -> int:
        """Keep a stack (root first) in the batch; its id."""
        key = stack_id(frames)
        self.stacks.setdefault(key, tuple(frames))
        return key

    @classmethod
    def concat(cls, batches: Sequence[Self]) -> Self:
        """One batch of all these rows (resources renumbered, stacks merged, rejections summed)."""
        joined = join_rows(cls(), batches, COLUMNS)
        for batch in batches:
            joined.stacks.update(batch.stacks)
        return joined


COLUMNS = (  # a batch's per-row columns besides resource_index
    "time_us",
    "type",
    "unit",
    "value",
    "stack_id",
    "thread",
    "labels",
    "trace_id",
    "span_id",
)

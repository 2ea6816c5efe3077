"""Collapsed ("folded") stacks, the text format of Brendan Gregg's flame graph scripts, py-spy and Pyroscope.

One stack a line, frames root first and joined by ";", then a space and the number of samples:
`main;handle;parse 12`. A frame may hold spaces (`parse (app/x.py:3)`), so the count is what follows
the last space. Pyroscope's "lines" format is the same without counts: each line is one sample. Blank
lines are skipped; a stack repeated in a body is summed. Anything else (no count, a count that is not
a whole number or is negative, an empty frame, a stack deeper than `decode.MAX_FRAMES`, text that is
not UTF-8) refuses the whole body, naming the line it is on.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

# The module, not its names: `decode` imports the receivers package, which imports this module.
from boutique.observatory.profiles import decode
from boutique.observatory.receivers.otlp_proto import PayloadError

Stacks = dict[tuple[str, ...], int]  # frames root first -> samples


def parse_folded(data: bytes) -> Stacks:
    """Samples per stack of a folded body; `PayloadError` naming the first bad line."""
    stacks: Stacks = {}
    for number, line in _lines(data):
        stack, space, count = line.rpartition(" ")
        if not space or not stack.strip():
            raise PayloadError(f"folded line {number}: no sample count after the stack: {line[:80]!r}")
        text = count.strip()
        if text.startswith("-") and text[1:].isdigit():
            raise PayloadError(f"folded line {number}: the sample count {text} is negative")
        if not (text.isascii() and text.isdigit()):
            raise PayloadError(f"folded line {number}: the sample count {text[:20]!r} is not a whole number")
        _add(stacks, _frames(stack.rstrip(), number), int(text), number)
    return stacks


def parse_lines(data: bytes) -> Stacks:
    """Samples per stack of a "lines" body (one sample a line, no counts); `PayloadError` as above."""
    stacks: Stacks = {}
    for number, line in _lines(data):
        _add(stacks, _frames(line.strip(), number), 1, number)
    return stacks


def to_folded(stacks: Mapping[tuple[str, ...], int]) -> str:
    """Folded text of samples per stack, one line a stack in sorted order (what `parse_folded` reads)."""
    return "".join(f"{';'.join(frames)} {count}\n" for frames, count in sorted(stacks.items()))


def _lines(data: bytes) -> Iterator[tuple[int, str]]:
    """(line number, text) of each non-blank line; `PayloadError` when the body is not UTF-8 text."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"the folded body is not UTF-8 text: {exc}") from None
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            yield number, line


def _frames(stack: str, number: int) -> tuple[str, ...]:
    frames = tuple(stack.split(";"))
    if len(frames) > decode.MAX_FRAMES:
        raise PayloadError(f"folded line {number}: the stack is deeper than {decode.MAX_FRAMES} frames")
    if any(not frame.strip() for frame in frames):
        raise PayloadError(f"folded line {number}: the stack has an empty frame: {stack[:80]!r}")
    return frames


def _add(stacks: Stacks, frames: tuple[str, ...], count: int, number: int) -> None:
    total = stacks.get(frames, 0) + count
    if total > decode.MAX_VALUE:
        raise PayloadError(f"folded line {number}: the sample count {count} is too large")
    stacks[frames] = total

"""Span bodies in append-only segment files beside the database, addressed by (segment, offset, length).

An append writes a batch's concatenated bodies with one write and syncs the file before the rows that
point into it are committed, so a committed row always finds its bytes after a crash. Bytes written
but never committed (a crash between the sync and the commit) lie past the last byte any row points
at: the next open cuts them off and appends go on from there. A segment is rotated once it passes
`rotate_bytes` and removed whole once no row points into it. Reads open the file for the moment they
need it, so removing a segment never races a reader holding a descriptor.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SUFFIX = ".seg"


def segment_name(number: int) -> str:
    """The file name of segment `number`."""
    return f"{number:06d}{SUFFIX}"


def sync_directory(directory: Path) -> None:
    """Make a created or renamed entry of the directory durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_for_append(path: Path) -> tuple[int, bool]:
    """A write descriptor of `path` (created when missing) and whether it was created."""
    created = not path.exists()
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644), created


def write_synced(
    fd: int, buffers: Sequence[bytes | memoryview], offset: int, directory: Path, created: bool
) -> None:
    """Write `buffers` at `offset` of `fd` and sync them, and the file's entry in `directory` if it is new.

    On `OSError` the file is cut back to `offset` (as far as it can be) before the error is raised.
    """
    total = sum(memoryview(buffer).nbytes for buffer in buffers)
    try:
        written = os.pwritev(fd, buffers, offset)
        if written < total:  # a short write: finish it from a joined copy
            rest = b"".join(bytes(buffer) for buffer in buffers)[written:]
            while rest:
                count = os.pwrite(fd, rest, offset + written)
                rest, written = rest[count:], written + count
        os.fdatasync(fd)
        if created:
            sync_directory(directory)
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, offset)
        raise


@dataclass(frozen=True)
class Body:
    """A span body read back: its bytes, or None and why it could not be read."""

    data: bytes | None
    problem: str = ""


class Segments:
    """The segment files of one store (see module docstring); appends come from one writer thread."""

    def __init__(self, directory: Path, rotate_bytes: int) -> None:
        self.directory = directory
        self.rotate_bytes = rotate_bytes
        self.current = 1  # the segment appends go to
        self.end = 0  # where the next append starts in it
        self._fd: int | None = None

    # ---- files -------------------------------------------------------------------------------

    def path(self, number: int) -> Path:
        return self.directory / segment_name(number)

    def numbers(self) -> list[int]:
        """Numbers of the segment files present, ascending."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            stem = name.removesuffix(SUFFIX)
            if name.endswith(SUFFIX) and stem.isdigit():
                found.append(int(stem))
        return sorted(found)

    def sizes(self) -> dict[int, int]:
        """Bytes on disk of each segment file present."""
        out = {}
        for number in self.numbers():
            with contextlib.suppress(FileNotFoundError):
                out[number] = self.path(number).stat().st_size
        return out

    def total_bytes(self) -> int:
        """Bytes of all segment files (what retention's size limit counts beside the database)."""
        return sum(self.sizes().values())

    # ---- appending ---------------------------------------------------------------------------

    def resume(self, newest_referenced: int | None, referenced_end: int, writable: bool) -> None:
        """Continue after the last byte any stored row points at; cut off what lies beyond when writable.

        `newest_referenced` is the highest segment a row points into and `referenced_end` the end of the
        furthest body in it. A newer file than that holds no committed row: appends go on in it from 0.
        """
        self.close()
        present = self.numbers()
        newest = max([*present, newest_referenced or 0, 1])
        end = referenced_end if newest == newest_referenced else 0
        self.current, self.end = newest, end
        path = self.path(newest)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = 0
            if end:
                log.warning("a span segment is missing", extra={"segment": str(path)})
        if size > end and writable:
            try:
                os.truncate(path, end)
            except OSError as exc:  # a read-only or full disk: the tail is overwritten by the next append
                log.warning(
                    "could not cut an unfinished append", extra={"segment": str(path), "error": str(exc)}
                )
            else:
                log.info(
                    "cut an append never committed off a span segment",
                    extra={"segment": str(path), "bytes": size - end},
                )
        elif 0 < size < end:
            log.warning(
                "a span segment is shorter than its stored spans say",
                extra={"segment": str(path), "bytes": size, "expected": end},
            )

    def place(self) -> tuple[int, int]:
        """(segment, offset) the next append's first byte goes to, moving on to a new segment when full."""
        if self.end >= self.rotate_bytes:
            self.close()
            self.current, self.end = self.current + 1, 0
        return self.current, self.end

    def write(self, data: bytes) -> tuple[int, int]:
        """Write `data` at `place()` and sync it; (segment, offset) of its first byte.

        Call `advance` once rows pointing into it were committed or may have been; after an `OSError`
        the partial write is cut off and the same place is written again next time.
        """
        self.place()
        created = False
        if self._fd is None:
            if not self.directory.is_dir():
                self.directory.mkdir(parents=True, exist_ok=True)
                sync_directory(self.directory.parent)
            self._fd, created = open_for_append(self.path(self.current))
        fd = self._fd
        try:
            write_synced(fd, [data], self.end, self.directory, created)
        except OSError:
            self.close()
            raise
        return self.current, self.end

    def advance(self, length: int) -> None:
        """Move the append position past `length` bytes written by `write` (never reused afterwards)."""
        self.end += length

    def close(self) -> None:
        """Close the file appends go to (reopened by the next append)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    # ---- reading and removing ----------------------------------------------------------------

    def read(self, places: Sequence[tuple[int, int, int]]) -> list[Body]:
        """The bodies at (segment, offset, length), in order; a missing or short file gives None and why."""
        out: list[Body | None] = [None] * len(places)
        by_segment: dict[int, list[int]] = {}
        for index, (segment, _, _) in enumerate(places):
            by_segment.setdefault(segment, []).append(index)
        for segment, indexes in by_segment.items():
            name = segment_name(segment)
            try:
                fd = os.open(self.path(segment), os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                for index in indexes:
                    out[index] = Body(None, f"span body unreadable: segment {name}: {exc.strerror}")
                continue
            try:
                for index in indexes:
                    _, offset, length = places[index]
                    data = os.pread(fd, length, offset)
                    out[index] = (
                        Body(data)
                        if len(data) == length
                        else Body(
                            None, f"span body missing: segment {name} ends before byte {offset + length}"
                        )
                    )
            except OSError as exc:
                for index in indexes:
                    if out[index] is None:
                        out[index] = Body(None, f"span body unreadable: segment {name}: {exc.strerror}")
            finally:
                os.close(fd)
        return [body or Body(None, "span body unreadable") for body in out]

    def remove_unreferenced(self, referenced: Iterable[int]) -> int:
        """Delete every segment no row points into, except the one appends go to; bytes freed."""
        keep = {*referenced, self.current}
        freed = 0
        for number in self.numbers():
            if number in keep:
                continue
            path = self.path(number)
            try:
                size = path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                continue
            freed += size
        return freed

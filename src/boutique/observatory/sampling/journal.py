"""The pending journal: span batches held for a sampling decision, on disk before their sender is answered.

Files `000001.journal`, … in one directory, each a run of records: a 16-byte header (magic, payload
length, CRC-32 of the payload) and the payload (`batches.encode`). An append writes one record and
syncs the file (`fdatasync`) before it returns, so a batch acknowledged after it survives `kill -9`. A
record cut short or damaged by a crash was never acknowledged: reading stops there, and appends always
go to a new file after a restart. The current file is rotated once it passes `rotate_bytes` or has been
written to for `rotate_seconds`; a file is deleted once it is not current and nothing pins it (the
sampler pins a file while any span read from it waits for a decision or a store commit).
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from boutique.observatory.model import SpanBatch
from boutique.observatory.sampling import batches
from boutique.observatory.store.segments import open_for_append, write_synced

log = logging.getLogger(__name__)

SUFFIX = ".journal"
_RECORD = struct.Struct("<4sQI")  # magic, payload length, CRC-32 of the payload
_MAGIC = b"BTSJ"


@dataclass(frozen=True)
class Place:
    """Where one record lies: its file, the offset of its header, and its length with the header."""

    number: int
    offset: int
    length: int


class Journal:
    """The journal files of one directory; appends come from one thread, pins and unpins from any."""

    def __init__(self, directory: Path, rotate_bytes: int = 32 << 20, rotate_seconds: float = 10.0) -> None:
        self.directory = directory
        self.rotate_bytes = rotate_bytes
        self.rotate_seconds = rotate_seconds
        self.current = 0  # the file appends go to; 0 until `begin`
        self._fd: int | None = None
        self._end = 0  # bytes in the current file
        self._opened = 0.0  # when the current file got its first record
        self._pins: dict[int, int] = {}
        self._lock = threading.Lock()
        self.appended_bytes = 0

    def path(self, number: int) -> Path:
        """The file of journal `number`."""
        return self.directory / f"{number:06d}{SUFFIX}"

    def numbers(self) -> list[int]:
        """Journal files present, oldest first."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        stems = (name.removesuffix(SUFFIX) for name in names if name.endswith(SUFFIX))
        return sorted(int(stem) for stem in stems if stem.isdigit())

    def bytes_on_disk(self) -> tuple[int, int]:
        """(files, bytes) of the journal now."""
        files = total = 0
        for number in self.numbers():
            with contextlib.suppress(FileNotFoundError):
                total += self.path(number).stat().st_size
                files += 1
        return files, total

    # ---- reading (at start) -------------------------------------------------------------------

    def read(self, number: int) -> Iterator[tuple[Place, SpanBatch]]:
        """The records of one file, in order, up to the end or the first record a crash cut or damaged."""
        path = self.path(number)
        try:
            data = path.read_bytes()
        except OSError as exc:
            log.warning("a sampling journal cannot be read", extra={"journal": str(path), "error": str(exc)})
            return
        position = 0
        while position < len(data):
            problem = ""
            if len(data) - position < _RECORD.size:
                problem = "a record header cut short"
            else:
                magic, length, crc = _RECORD.unpack_from(data, position)
                start, end = position + _RECORD.size, position + _RECORD.size + length
                if magic != _MAGIC:
                    problem = "no record where one should start"
                elif end > len(data):
                    problem = "a record cut short"
                elif zlib.crc32(memoryview(data)[start:end]) != crc:
                    problem = "a record whose checksum does not match"
            if not problem:
                try:
                    batch = batches.decode(data[start:end])
                except ValueError as exc:
                    problem = f"a record that does not decode: {exc}"
            if problem:
                log.warning(
                    "a sampling journal ends in an unfinished write (never acknowledged): the rest is skipped",
                    extra={"journal": str(path), "offset": position, "problem": problem},
                )
                return
            yield Place(number, position, end - position), batch
            position = end

    # ---- appending ----------------------------------------------------------------------------

    def begin(self) -> None:
        """Start appending in a new file after every existing one."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self.current = max([0, *self.numbers(), *self._pins]) + 1
            self._end = 0

    def append(self, batch: SpanBatch) -> Place:
        """Write one batch as a record and sync it; where it went.

        After an `OSError` the partial record is cut off and the next append starts where it began.
        """
        if not self.current:
            raise RuntimeError("Journal.begin was not called")
        self._maybe_rotate()
        parts = batches.encode(batch)
        crc = 0
        length = 0
        for part in parts:
            crc = zlib.crc32(part, crc)
            length += memoryview(part).nbytes
        buffers: list[bytes | memoryview] = [_RECORD.pack(_MAGIC, length, crc), *parts]
        total = _RECORD.size + length
        created = False
        if self._fd is None:
            self._fd, created = open_for_append(self.path(self.current))
        fd = self._fd
        try:
            write_synced(fd, buffers, self._end, self.directory, created)
        except OSError:
            self._close_fd()
            raise
        if not self._end:
            self._opened = time.monotonic()
        place = Place(self.current, self._end, total)
        self._end += total
        self.appended_bytes += total
        return place

    def read_at(self, place: Place) -> SpanBatch:
        """The batch of one record written by `append` (while its file is pinned); `ValueError` if damaged."""
        fd = os.open(self.path(place.number), os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.pread(fd, place.length, place.offset)
        finally:
            os.close(fd)
        if len(data) != place.length:
            raise ValueError(f"journal {place.number} ends before its record at {place.offset}")
        magic, length, crc = _RECORD.unpack_from(data)
        payload = memoryview(data)[_RECORD.size :]
        if magic != _MAGIC or length != len(payload) or zlib.crc32(payload) != crc:
            raise ValueError(f"journal {place.number}: the record at {place.offset} is damaged")
        return batches.decode(bytes(payload))

    def _maybe_rotate(self) -> None:
        if not self._end:
            return
        if self._end < self.rotate_bytes and time.monotonic() - self._opened < self.rotate_seconds:
            return
        self._close_fd()
        with self._lock:
            finished = self.current
            self.current += 1
            self._end = 0
            if not self._pins.get(finished):
                self._remove(finished)

    def _close_fd(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    # ---- pins ---------------------------------------------------------------------------------

    def pin(self, number: int) -> None:
        """Keep file `number` while something read from it waits."""
        with self._lock:
            self._pins[number] = self._pins.get(number, 0) + 1

    def unpin(self, number: int) -> None:
        """Release one pin; a file neither pinned nor current is deleted."""
        with self._lock:
            left = self._pins.get(number, 0) - 1
            if left > 0:
                self._pins[number] = left
                return
            self._pins.pop(number, None)
            if number != self.current:
                self._remove(number)

    def remove_unpinned(self) -> None:
        """Delete every file that is neither pinned nor current (after reading them at start)."""
        with self._lock:
            for number in self.numbers():
                if number != self.current and not self._pins.get(number):
                    self._remove(number)

    def _remove(self, number: int) -> None:
        try:
            self.path(number).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning(
                "a sampling journal could not be deleted", extra={"journal": number, "error": str(exc)}
            )

    def close(self) -> None:
        """Close the current file; it stays for the next start while anything read from it is pinned."""
        self._close_fd()
        with self._lock:
            if self.current and not self._pins.get(self.current):
                self._remove(self.current)

"""What a storage error means for writing (disk full, read-only file system, an invalidated database),
and a probe that asks the file system whether it takes writes again."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import duckdb

PROBE_NAME = ".write-probe"
PROBE_BYTES = 64 * 1024
_REASONS = (
    ("No space left on device", "disk full"),
    ("Disk quota exceeded", "disk full"),
    ("Read-only file system", "read-only file system"),
)


def is_invalidated(exc: BaseException) -> bool:
    """Whether DuckDB has given up on the database instance: only a reopen makes it usable again."""
    return isinstance(exc, duckdb.FatalException) or "database has been invalidated" in str(exc)


def is_write_failure(exc: BaseException) -> bool:
    """Whether the error is the storage refusing a write (rather than bad data or a bug)."""
    text = str(exc)
    if is_invalidated(exc) or any(words in text for words, _ in _REASONS):
        return True
    if isinstance(exc, duckdb.TransactionException):
        return "Failed to commit" in text
    return isinstance(exc, duckdb.IOException)


def failure_reason(text: str) -> str:
    """A short reason for an error text: `disk full`, `read-only file system` or `write failed`."""
    for words, reason in _REASONS:
        if words in text:
            return reason
    return "write failed"


def free_bytes(directory: Path) -> int:
    """Bytes this process may still write in the directory's file system."""
    return shutil.disk_usage(directory).free


def probe_write(directory: Path) -> None:
    """Write, sync and remove a small file in the directory; `OSError` when the file system refuses."""
    probe = directory / PROBE_NAME
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            block = memoryview(b"\0" * PROBE_BYTES)
            while block:  # a nearly full disk writes short before it refuses
                block = block[os.write(fd, block) :]
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        probe.unlink(missing_ok=True)

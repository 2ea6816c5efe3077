"""SQLite files for the shop's durable records (payment's charge ledger, checkout's order journal)."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_database(path: Path | str, schema: str) -> sqlite3.Connection:
    """A connection in autocommit mode with WAL and full fsync, the schema applied.

    WAL lets replicas of a service on one machine share the file; `synchronous=FULL` puts every commit
    on disk before the caller is answered. ":memory:" gives a database that dies with the process.
    """
    name = str(path)
    if name != ":memory:":
        Path(name).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(name, timeout=10.0, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(schema)
    return db

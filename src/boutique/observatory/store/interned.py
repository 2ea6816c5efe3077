"""Resources and instrumentation scopes stored once each in a side table, spans carrying their ids.

A batch names a few distinct resources and scopes however many spans it holds; storing each once and
an id per span saves the store copying and checkpointing the same bytes on every row. Each is keyed
by a content hash (BLAKE2b, 16 bytes); ids are cached in memory both ways, and a miss (a cache
cleared when full, a reader racing the commit that added an id) is answered by the table itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np

CACHE_LIMIT = 1 << 16  # entries kept per table; a client inventing resources cannot grow memory past it


def digest(body: bytes) -> bytes:
    """The content hash a stored resource or scope is found by."""
    return hashlib.blake2b(body, digest_size=16).digest()


@dataclass
class Interned:
    """One side table: `resources` (with service and instance) or `scopes` (see module docstring).

    Ids are handed out by the writer thread alone; readers only look ids up.
    """

    table: str
    extra: tuple[str, ...] = ()  # columns beside id, digest, body
    _ids: dict[bytes, int] = field(default_factory=dict)  # digest → id
    _bodies: dict[int, bytes] = field(default_factory=dict)  # id → body
    _next: int = 1

    def schema(self) -> str:
        """CREATE TABLE for the side table."""
        extra = "".join(f", {name} VARCHAR NOT NULL" for name in self.extra)
        return (
            f"CREATE TABLE IF NOT EXISTS {self.table} "
            f"(id UINTEGER NOT NULL, digest BLOB NOT NULL, body BLOB NOT NULL{extra});"
        )

    def load(self, con: duckdb.DuckDBPyConnection) -> None:
        """Fill the caches from the table (at open) and continue ids after the highest stored."""
        self._ids.clear()
        self._bodies.clear()
        rows = con.execute(
            f"SELECT id, digest, body FROM {self.table} ORDER BY id DESC LIMIT ?", [CACHE_LIMIT]
        )
        for number, key, body in rows.fetchall():
            self._ids[bytes(key)] = int(number)
            self._bodies[int(number)] = bytes(body)
        top = con.execute(f"SELECT max(id) FROM {self.table}").fetchall()[0][0]
        self._next = int(top or 0) + 1

    def ids(
        self, con: duckdb.DuckDBPyConnection, bodies: Sequence[bytes], extras: Sequence[tuple[str, ...]] = ()
    ) -> tuple[np.ndarray, list[tuple[Any, ...]]]:
        """The id of each body, and the rows to insert for those not stored yet (in the same commit)."""
        keys = [digest(body) for body in bodies]
        missing = [key for key in dict.fromkeys(keys) if key not in self._ids]
        found: dict[bytes, int] = {}
        if missing:
            marks = ", ".join("?" for _ in missing)
            rows = con.execute(f"SELECT digest, id FROM {self.table} WHERE digest IN ({marks})", missing)
            found = {bytes(key): int(number) for key, number in rows.fetchall()}
        ids = np.empty(len(bodies), dtype=np.uint32)
        new: list[tuple[Any, ...]] = []
        fresh: dict[bytes, int] = {}
        for index, (key, body) in enumerate(zip(keys, bodies, strict=True)):
            number = self._ids.get(key) or found.get(key) or fresh.get(key)
            if number is None:
                number = fresh[key] = self._next
                self._next += 1
                new.append((number, key, body, *(extras[index] if extras else ())))
            ids[index] = number
        for key, number in found.items():
            self._remember(key, number, None)
        return ids, new

    def insert(self, con: duckdb.DuckDBPyConnection, rows: list[tuple[Any, ...]]) -> None:
        """Store new rows (inside the transaction that stores the spans using them)."""
        if rows:
            marks = ", ".join("?" for _ in rows[0])
            con.executemany(f"INSERT INTO {self.table} VALUES ({marks})", rows)

    def committed(self, rows: list[tuple[Any, ...]]) -> None:
        """Cache rows once their commit succeeded (a failed one hands their ids out again never)."""
        for number, key, body, *_ in rows:
            self._remember(key, number, body)

    def _remember(self, key: bytes, number: int, body: bytes | None) -> None:
        if len(self._ids) >= CACHE_LIMIT:
            self._ids.clear()
            self._bodies.clear()
        self._ids[key] = number
        if body is not None:
            self._bodies[number] = body

    def bodies(self, con: duckdb.DuckDBPyConnection, ids: Iterable[int]) -> dict[int, bytes]:
        """The stored bytes of each id (b"" for an id the table lacks); for readers, on their cursor."""
        wanted = set(ids)
        out = {number: body for number in wanted if (body := self._bodies.get(number)) is not None}
        missing = sorted(wanted - out.keys())
        if missing:
            marks = ", ".join("?" for _ in missing)
            rows = con.execute(f"SELECT id, body FROM {self.table} WHERE id IN ({marks})", missing).fetchall()
            for number, body in rows:
                out[int(number)] = bytes(body)
                if len(self._bodies) < CACHE_LIMIT:
                    self._bodies[int(number)] = out[int(number)]
            for number in missing:
                out.setdefault(number, b"")
        return out

    def prune(self, con: duckdb.DuckDBPyConnection, column: str) -> int:
        """Delete the rows no span points at any more (after retention); rows deleted."""
        gone = con.execute(
            f"DELETE FROM {self.table} WHERE id NOT IN (SELECT DISTINCT {column} FROM spans) "
            "RETURNING id, digest"
        ).fetchall()
        for number, key in gone:
            self._bodies.pop(int(number), None)
            self._ids.pop(bytes(key), None)
        return len(gone)

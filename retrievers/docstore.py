"""The SQLite docstore: ids, texts, JSON metadata and the raw vectors, nothing pickled.

The working copy is a private temporary SQLite database (SQLite keeps up to
`CACHE_MB` of it in memory and the rest in a temp file it deletes on close), so raw
vectors and texts do not have to fit in RAM. `load` and `save_to` copy it page by
page with SQLite's online backup API, so a saved file is always a complete,
consistent database. Row ids (`rid`) are the int64 ids the vector index uses; they
come from AUTOINCREMENT and are never reused, so a stale index entry can never point
at a newer document.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ctxzip.retrievers.filters import Condition, to_sql

SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    rid INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    vector BLOB NOT NULL
);
"""
_CHUNK = 900  # stay under SQLite's bound-parameter limit
CACHE_MB = 64


@dataclass(frozen=True)
class Row:
    rid: int
    id: str
    text: str
    metadata: dict[str, Any]


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


class DocStore:
    """Thread-safe: every call takes the store's own lock."""

    def __init__(self, conn: sqlite3.Connection, dim: int) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self.dim = dim
        # A scratch copy: durability comes from `save_to`, so skip the journal.
        self._conn.execute(f"PRAGMA cache_size=-{CACHE_MB * 1024}")
        self._conn.execute("PRAGMA journal_mode=MEMORY")
        self._conn.execute("PRAGMA synchronous=OFF")
        self._conn.executescript(SCHEMA)

    @staticmethod
    def _scratch() -> sqlite3.Connection:
        return sqlite3.connect("", check_same_thread=False)  # "" = private temp database

    @classmethod
    def new(cls, dim: int) -> DocStore:
        return cls(cls._scratch(), dim)

    @classmethod
    def load(cls, path: str, dim: int) -> DocStore:
        """Copy a saved docstore into a scratch copy (the file is only read)."""
        src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            conn = cls._scratch()
            src.backup(conn)
        finally:
            src.close()
        return cls(conn, dim)

    def save_to(self, path: str) -> None:
        """Write a complete copy to `path` (a new file) and fsync it."""
        dst = sqlite3.connect(path)
        try:
            with self._lock:
                self._conn.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- writes -----------------------------------------------------------------------
    def insert(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        metadatas: Sequence[dict[str, Any]],
        vectors: np.ndarray,
    ) -> list[int]:
        """Insert new rows in one transaction; returns their rids."""
        vecs = np.ascontiguousarray(vectors, dtype="<f4")
        rows = [
            (i, t, json.dumps(m, ensure_ascii=False, sort_keys=True), vecs[n].tobytes())
            for n, (i, t, m) in enumerate(zip(ids, texts, metadatas, strict=True))
        ]
        with self._lock, self._conn:
            # AUTOINCREMENT hands out seq+1, seq+2, ... inside one locked transaction.
            seq = self._conn.execute(
                "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name='docs'), 0)"
            ).fetchone()[0]
            self._conn.executemany(
                "INSERT INTO docs (id, text, metadata, vector) VALUES (?,?,?,?)", rows
            )
            rids = list(range(int(seq) + 1, int(seq) + 1 + len(rows)))
            last = self._conn.execute("SELECT MAX(rid) FROM docs").fetchone()[0]
            if rows and last != rids[-1]:
                raise RuntimeError("docstore row ids are out of sequence")
        return rids

    def delete(self, ids: Sequence[str]) -> list[int]:
        """Delete rows by id; returns the rids that existed."""
        found = list(self.rids_for(ids).values())
        with self._lock, self._conn:
            for part in _chunks(found):
                self._conn.execute(
                    f"DELETE FROM docs WHERE rid IN ({','.join('?' * len(part))})", part
                )
        return found

    # -- reads ------------------------------------------------------------------------
    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM docs").fetchone()[0])

    def rids_for(self, ids: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        with self._lock:
            for part in _chunks(list(ids)):
                q = f"SELECT id, rid FROM docs WHERE id IN ({','.join('?' * len(part))})"
                out.update(self._conn.execute(q, part).fetchall())
        return out

    def rows_by_ids(self, ids: Sequence[str]) -> dict[str, Row]:
        return {r.id: r for r in self._rows("id", list(ids))}

    def rows_by_rids(self, rids: Sequence[int]) -> dict[int, Row]:
        return {r.rid: r for r in self._rows("rid", [int(r) for r in rids])}

    def _rows(self, column: str, keys: list[Any]) -> list[Row]:
        out: list[Row] = []
        with self._lock:
            for part in _chunks(keys):
                q = (
                    f"SELECT rid, id, text, metadata FROM docs "
                    f"WHERE {column} IN ({','.join('?' * len(part))})"
                )
                out.extend(
                    Row(rid, i, t, json.loads(m)) for rid, i, t, m in self._conn.execute(q, part)
                )
        return out

    def vectors(self, column: str, keys: Sequence[Any]) -> dict[Any, np.ndarray]:
        """Stored vectors keyed by `column` value ("id" or "rid")."""
        out: dict[Any, np.ndarray] = {}
        with self._lock:
            for part in _chunks(list(keys)):
                q = f"SELECT {column}, vector FROM docs WHERE {column} IN ({','.join('?' * len(part))})"
                for key, blob in self._conn.execute(q, part):
                    out[key] = np.frombuffer(blob, dtype="<f4")
        return out

    def filter_rids(self, conditions: list[Condition]) -> np.ndarray:
        where, params = to_sql(conditions)
        with self._lock:
            rows = self._conn.execute(f"SELECT rid FROM docs WHERE {where}", params).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def all_rids(self) -> list[int]:
        with self._lock:
            return [r[0] for r in self._conn.execute("SELECT rid FROM docs")]

    def filter_ids(self, conditions: list[Condition]) -> list[str]:
        where, params = to_sql(conditions)
        with self._lock:
            return [r[0] for r in self._conn.execute(f"SELECT id FROM docs WHERE {where}", params)]

    def iter_vectors(self, batch: int = 10_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(rids, vectors) in rid order, in batches (for index rebuilds and training)."""
        last = 0
        while True:
            with self._lock:
                rows = self._conn.execute(
                    "SELECT rid, vector FROM docs WHERE rid > ? ORDER BY rid LIMIT ?", (last, batch)
                ).fetchall()
            if not rows:
                return
            rids = np.array([r[0] for r in rows], dtype=np.int64)
            vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), -1)
            yield rids, vecs
            last = int(rids[-1])

    def corpus(self) -> tuple[list[str], list[str]]:
        """All (ids, texts), in rid order (for BM25)."""
        with self._lock:
            rows = self._conn.execute("SELECT id, text FROM docs ORDER BY rid").fetchall()
        return [r[0] for r in rows], [r[1] for r in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

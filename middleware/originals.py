"""The originals store: what compression left out, by marker key, in one SQLite file.

Plain text rows only (no pickle), each with the time it was last written. Rows older
than `ttl_s` are not served and are deleted on the next write; when the stored text
passes `max_bytes`, the oldest rows go first. Safe to share between threads.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Mapping
from pathlib import Path

KEY = re.compile(r"[0-9a-f]{12}")


class OriginalsStore:
    """Marker key -> original text, with a TTL and a size cap."""

    def __init__(self, path: str | Path = ":memory:", ttl_s: float = 86400.0,
                 max_bytes: int = 256 * 1024 * 1024) -> None:  # fmt: skip
        if ttl_s <= 0 or max_bytes <= 0:
            raise ValueError("ttl_s and max_bytes must be > 0")
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS originals (key TEXT PRIMARY KEY, text TEXT NOT NULL, "
            "size INTEGER NOT NULL, written REAL NOT NULL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS originals_written ON originals(written)")

    def put(self, originals: Mapping[str, str]) -> None:
        """Store (or refresh) originals by key, then drop expired and over-cap rows."""
        if not originals:
            return
        now = time.time()
        rows = [(k, t, len(t.encode("utf-8", "surrogatepass")), now) for k, t in originals.items()]
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO originals (key, text, size, written) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET written = excluded.written",
                rows,
            )
            self._db.execute("DELETE FROM originals WHERE written < ?", (now - self.ttl_s,))
            total = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM originals").fetchone()[0]
            if total > self.max_bytes:
                excess = total - self.max_bytes
                cursor = self._db.execute("SELECT key, size FROM originals ORDER BY written, key")
                doomed = []
                for key, size in cursor:
                    if excess <= 0:
                        break
                    doomed.append((key,))
                    excess -= size
                self._db.executemany("DELETE FROM originals WHERE key = ?", doomed)
            self._db.execute("COMMIT")

    def get(self, key: str) -> str | None:
        """The original for `key`, or None when unknown or expired."""
        if not KEY.fullmatch(key):
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT text, written FROM originals WHERE key = ?", (key,)
            ).fetchone()
        if row is None or row[1] < time.time() - self.ttl_s:
            return None
        return str(row[0])

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM originals").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

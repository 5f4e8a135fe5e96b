"""An append-only JSONL cache, so an interrupted sweep resumes where it stopped.

Each line is one finished unit of work (a compression or an answer) under a key
that hashes everything it depends on; a torn last line from a crash is ignored.
Plain JSON only (no pickle), readable with any tool.
"""

from __future__ import annotations

import glob
import hashlib
import json
from pathlib import Path
from typing import Any


def key_of(*parts: Any) -> str:
    """A stable hash of JSON-serialisable parts."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def file_stamps(options: dict[str, Any]) -> list[list[Any]]:
    """Size and mtime of the files that option values name (a checkpoint folder, a projector
    prefix such as `runs/xrag/best` for `best.safetensors`), so replacing a file at the same
    path is a new key, not a stale hit."""
    stamps: list[list[Any]] = []
    for key in sorted(options):
        value = options[key]
        if not isinstance(value, str) or not value or "\n" in value:
            continue
        base = Path(value)
        if not base.name:  # "/", ".": not a file an option names
            continue
        try:
            for path in [base, *sorted(base.parent.glob(glob.escape(base.name) + ".*"))]:
                for f in sorted(path.iterdir()) if path.is_dir() else [path]:
                    if f.is_file():
                        st = f.stat()
                        stamps.append([key, str(f), st.st_size, st.st_mtime_ns])
        except OSError:  # unreadable: the key still names the path
            continue
    return stamps


class JsonlCache:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._data: dict[str, dict[str, Any]] = {}
        if path.exists():
            with path.open(encoding="utf-8") as fh:
                for line in fh:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut short by an interruption
                    if isinstance(record, dict) and "key" in record:
                        self._data[record["key"]] = record
        path.parent.mkdir(parents=True, exist_ok=True)
        torn = path.exists() and path.stat().st_size and not path.read_bytes().endswith(b"\n")
        self._fh = path.open("a", encoding="utf-8")
        if torn:  # start the next record on a fresh line
            self._fh.write("\n")

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> dict[str, Any] | None:
        return self._data.get(key)

    def put(self, key: str, value: dict[str, Any]) -> None:
        record = {"key": key, **value}
        self._data[key] = record
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()

"""Crash-safe saves: each save writes a new generation folder, then swaps the manifest.

Layout of a store folder::

    manifest.json          which generation is current, model, dim, index, counts, sha256s
    gen-000007/index.faiss the FAISS index (faiss.write_index)
    gen-000007/docs.sqlite the docstore (SQLite backup API)

A save writes `.tmp-gen-000008-<pid>/`, fsyncs every file and the folder, renames it
to `gen-000008`, then writes `manifest.json.tmp`, fsyncs it and renames it over
`manifest.json` (atomic on POSIX), and fsyncs the folder. A process killed at any
point leaves the old manifest pointing at a complete old generation; leftovers are
removed by the next save. Nothing is pickled.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ctxzip.retrievers.errors import StoreCorruptError, StoreMismatchError

MANIFEST = "manifest.json"
FORMAT = "ctxzip-store"
FORMAT_VERSION = 1

try:
    import fcntl
except ImportError:  # Windows: saves still atomic, just not guarded across processes
    fcntl = None  # type: ignore[assignment]


def fsync_path(path: str | Path) -> None:
    """fsync a file or a folder (so a rename inside it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on folders
        pass
    finally:
        os.close(fd)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive advisory lock, so two processes never save into one folder at once."""
    if fcntl is None:
        yield
        return
    with open(folder / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"no store at {folder} (missing {MANIFEST})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StoreCorruptError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise StoreMismatchError(f"{path} is not a ctxzip store manifest")
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise StoreMismatchError(
            f"{path} has format version {version!r}; this ctxzip reads up to {FORMAT_VERSION}"
        )
    return data


def verified_file(folder: Path, manifest: dict[str, Any], name: str) -> Path:
    """The path of a generation file after checking its size and sha256 against the manifest."""
    entry = manifest.get("files", {}).get(name)
    if not isinstance(entry, dict) or "path" not in entry:
        raise StoreCorruptError(f"manifest lists no {name!r} file")
    path = (folder / entry["path"]).resolve()
    if folder.resolve() not in path.parents:
        raise StoreCorruptError(f"manifest path {entry['path']!r} leaves the store folder")
    if not path.exists():
        raise StoreCorruptError(f"{path} is missing")
    if path.stat().st_size != entry.get("bytes") or sha256_file(path) != entry.get("sha256"):
        raise StoreCorruptError(f"{path} does not match its checksum in the manifest")
    return path


def new_generation(folder: Path, manifest: dict[str, Any] | None) -> tuple[int, Path]:
    """The next generation number and a fresh temporary folder to write it in."""
    current = int(manifest.get("generation", 0)) if manifest else 0
    existing = [int(p.name[4:]) for p in folder.glob("gen-*") if p.name[4:].isdigit()]
    number = max([current, *existing]) + 1
    tmp = folder / f".tmp-gen-{number:06d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return number, tmp


def commit_generation(
    folder: Path, tmp: Path, number: int, manifest: dict[str, Any], files: dict[str, str]
) -> dict[str, Any]:
    """fsync, rename the generation into place, then swap the manifest; returns it."""
    name = f"gen-{number:06d}"
    entries = {}
    for key, filename in files.items():
        path = tmp / filename
        fsync_path(path)
        entries[key] = {
            "path": f"{name}/{filename}",
            "bytes": path.stat().st_size,
            "sha256": sha256_file(path),
        }
    fsync_path(tmp)
    final = folder / name
    os.rename(tmp, final)
    fsync_path(folder)
    manifest = {
        **manifest,
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "generation": number,
        "files": entries,
    }
    write_json_atomic(folder / MANIFEST, manifest)
    return manifest


def remove_old_generations(folder: Path, keep: int) -> None:
    """Drop generations other than `keep`, and temporary folders of dead saves."""
    for path in folder.iterdir():
        if path.name.startswith("gen-") and path.name != f"gen-{keep:06d}":
            shutil.rmtree(path, ignore_errors=True)
        elif path.name.startswith(".tmp-gen-") or path.name.startswith(MANIFEST + ".tmp-"):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(
                missing_ok=True
            )

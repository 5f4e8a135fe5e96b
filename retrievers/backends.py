"""Pick a backend by configuration: the FAISS store (default) or Qdrant."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ctxzip.errors import InputError
from ctxzip.retrievers.base import BaseStore
from ctxzip.retrievers.persist import MANIFEST, read_manifest

BACKENDS = ("faiss", "qdrant")


def open_store(
    path: str | Path | None = None, backend: str | None = None, **options: Any
) -> BaseStore:
    """Load the store saved at `path`, or create a new one with `options`.

    With an existing folder the manifest decides the backend (and model); otherwise
    `backend` does: "faiss" (default) takes `FaissStore` options, "qdrant" takes
    `QdrantStore` options (`url`, `api_key`, `collection`, ...).
    """
    folder = Path(path) if path is not None else None
    if folder is not None and (folder / MANIFEST).exists():
        kind = read_manifest(folder).get("backend", "faiss")
        if backend is not None and backend != kind:
            raise InputError(f"{folder} holds a {kind!r} store, not {backend!r}")
        load_options = {k: v for k, v in options.items() if k in _LOAD_OPTIONS[kind]}
        return _backend_class(kind).load(folder, **load_options)
    kind = backend or "faiss"
    store = _backend_class(kind)(**options)
    if folder is not None:
        store.path = folder
    return store


_LOAD_OPTIONS = {
    "faiss": {"model", "device", "batch_size"},
    "qdrant": {"model", "device", "batch_size", "url", "api_key", "client"},
}


def _backend_class(kind: str) -> Any:
    if kind == "faiss":
        from ctxzip.retrievers.store import FaissStore

        return FaissStore
    if kind == "qdrant":
        from ctxzip.retrievers.qdrant_backend import QdrantStore

        return QdrantStore
    raise InputError(f"unknown store backend {kind!r}; use one of {BACKENDS}")

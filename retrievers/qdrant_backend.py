"""The store interface over Qdrant, for collections that outgrow one machine.

    store = QdrantStore(url="http://qdrant:6333", api_key=..., collection="docs")
    store = QdrantStore()          # embedded in-process mode (tests, notebooks)

Same calls, same filters, same hybrid search as `FaissStore`; Qdrant holds the
vectors and payloads (`doc_id`, `text`, `metadata`), point ids are UUIDv5 of the
document id. `save(folder)` writes only a manifest (backend, URL, collection, model,
dimension), never the API key, so `open_store(folder)` reconnects. Qdrant's embedded
*on-disk* mode (`path=`) pickles its points, so this backend does not offer it: use
the embedded in-memory mode for tests and a server for data you keep.
With the cosine metric Qdrant stores normalised vectors, so `get_vectors` returns them
normalised (all-MiniLM-L6-v2 vectors already are).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ctxzip.errors import InputError
from ctxzip.retrievers.base import BaseStore, Document
from ctxzip.retrievers.embeddings import Embedder
from ctxzip.retrievers.errors import StoreError, StoreMismatchError
from ctxzip.retrievers.filters import Condition
from ctxzip.retrievers.persist import (
    MANIFEST,
    folder_lock,
    read_manifest,
    write_json_atomic,
)
from ctxzip.retrievers.store import _embedder

_NAMESPACE = uuid.UUID("8a7c1e0e-4f7b-4c36-9d55-2f1c6b0c7a11")
_BATCH = 256


def point_id(doc_id: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, doc_id))


def to_qdrant_filter(conditions: list[Condition]) -> Any:
    """The same semantics as `filters.matches`: a missing key never matches."""
    from qdrant_client import models

    if not conditions:
        return None
    must: list[Any] = []
    must_not: list[Any] = []
    for c in conditions:
        key = f"metadata.{c.key}"
        if c.op in ("$eq", "$ne"):
            if isinstance(c.value, float) and not c.value.is_integer():
                cond = models.FieldCondition(key=key, range=models.Range(gte=c.value, lte=c.value))
            else:
                value = int(c.value) if isinstance(c.value, float) else c.value
                cond = models.FieldCondition(key=key, match=models.MatchValue(value=value))
            (must if c.op == "$eq" else must_not).append(cond)
        elif c.op in ("$in", "$nin"):
            values = list(c.value)
            if any(isinstance(v, float) for v in values):
                raise InputError(f"{c.op} on {c.key!r}: Qdrant matches strings and integers only")
            if c.op == "$in":
                must.append(models.FieldCondition(key=key, match=models.MatchAny(any=values)))
            else:
                must.append(
                    models.FieldCondition(key=key, match=models.MatchExcept(**{"except": values}))
                )
        else:
            if isinstance(c.value, str):
                raise InputError(f"{c.op} on {c.key!r}: Qdrant compares numbers only")
            bound = {"$gt": "gt", "$gte": "gte", "$lt": "lt", "$lte": "lte"}[c.op]
            must.append(models.FieldCondition(key=key, range=models.Range(**{bound: c.value})))
        if c.op in ("$ne", "$nin"):
            must_not.append(models.IsEmptyCondition(is_empty=models.PayloadField(key=key)))
    return models.Filter(must=must or None, must_not=must_not or None)


class QdrantStore(BaseStore):
    backend = "qdrant"

    def __init__(
        self,
        model: str | Embedder | None = None,
        metric: str = "cosine",
        dim: int | None = None,
        url: str | None = None,
        api_key: str | None = None,
        collection: str = "ctxzip",
        client: Any = None,
        device: str = "auto",
        batch_size: int = 64,
        **client_options: Any,
    ) -> None:
        """Connect to `url` (a server or cluster), or run Qdrant in-process in memory."""
        super().__init__()
        from qdrant_client import QdrantClient

        if metric not in ("cosine", "ip"):
            raise InputError(f"metric must be 'cosine' or 'ip', got {metric!r}")
        if "path" in client_options:
            raise InputError("Qdrant's on-disk embedded mode pickles its data; use a server (url=)")
        self.embedder = _embedder(model, device, batch_size)
        self.metric = metric
        self.url = url
        self.collection = collection
        self.client = client or (
            QdrantClient(url=url, api_key=api_key, **client_options)
            if url
            else QdrantClient(location=":memory:")
        )
        self._dim = dim or self.embedder.dim
        self._write_lock = threading.Lock()
        self.path: Path | None = None
        self._ensure_collection()

    def _ensure_collection(self) -> None:
        from qdrant_client import models

        distance = models.Distance.COSINE if self.metric == "cosine" else models.Distance.DOT
        if self.client.collection_exists(self.collection):
            params = self.client.get_collection(self.collection).config.params.vectors
            if not isinstance(params, models.VectorParams):
                raise StoreMismatchError(
                    f"Qdrant collection {self.collection!r} has named vectors; ctxzip needs "
                    "one unnamed vector per point"
                )
            if params.size != self._dim or params.distance != distance:
                raise StoreMismatchError(
                    f"Qdrant collection {self.collection!r} holds {params.size}-d "
                    f"{params.distance} vectors, not {self._dim}-d {distance}"
                )
            return
        self.client.create_collection(
            self.collection, vectors_config=models.VectorParams(size=self._dim, distance=distance)
        )

    @property
    def dim(self) -> int:
        return self._dim

    def __len__(self) -> int:
        return int(self.client.count(self.collection, exact=True).count)

    # -- primitives ---------------------------------------------------------------------------
    def _insert(self, docs: list[Document], vectors: np.ndarray, replace: bool) -> None:
        from qdrant_client import models

        with self._write_lock:
            if not replace:
                existing = self.client.retrieve(
                    self.collection, [point_id(d.id) for d in docs], with_payload=["doc_id"]
                )
                if existing:
                    first = _payload(existing[0])["doc_id"]
                    raise StoreError(
                        f"id {first!r} already exists (use upsert_texts to replace it)"
                    )
            for start in range(0, len(docs), _BATCH):
                part = docs[start : start + _BATCH]
                self.client.upsert(
                    self.collection,
                    wait=True,
                    points=[
                        models.PointStruct(
                            id=point_id(d.id),
                            vector=vectors[start + n].tolist(),
                            payload={"doc_id": d.id, "text": d.text, "metadata": d.metadata},
                        )
                        for n, d in enumerate(part)
                    ],
                )

    def _remove(self, ids: list[str]) -> int:
        from qdrant_client import models

        with self._write_lock:
            found = self.client.retrieve(
                self.collection, [point_id(i) for i in ids], with_payload=False
            )
            if found:
                self.client.delete(
                    self.collection,
                    wait=True,
                    points_selector=models.PointIdsList(points=[p.id for p in found]),
                )
        return len(found)

    def _records(self, ids: Sequence[str], vectors: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for start in range(0, len(ids), _BATCH):
            part = [point_id(i) for i in ids[start : start + _BATCH]]
            for rec in self.client.retrieve(
                self.collection, part, with_payload=True, with_vectors=vectors
            ):
                out[_payload(rec)["doc_id"]] = rec
        return out

    def _fetch(self, ids: list[str]) -> dict[str, Document]:
        return {i: _doc(_payload(r)) for i, r in self._records(ids).items()}

    def get_vectors(self, ids: Sequence[str]) -> np.ndarray:
        if isinstance(ids, str):
            ids = [ids]
        found = self._records(list(ids), vectors=True)
        out = np.empty((len(ids), self._dim), dtype=np.float32)
        for n, doc_id in enumerate(ids):
            if doc_id not in found:
                raise KeyError(doc_id)
            out[n] = found[doc_id].vector
        return out

    def _vector_search(
        self,
        vector: np.ndarray,
        k: int,
        conditions: list[Condition],
        ef_search: int | None = None,
        **_: Any,
    ) -> list[tuple[Document, float]]:
        from qdrant_client import models

        params = models.SearchParams(hnsw_ef=ef_search) if ef_search else None
        res = self.client.query_points(
            self.collection,
            query=vector.astype(np.float32).tolist(),
            limit=k,
            query_filter=to_qdrant_filter(conditions),
            search_params=params,
            with_payload=True,
        )
        return [(_doc(_payload(p)), float(p.score)) for p in res.points]

    def _scroll(self, conditions: list[Condition], fields: list[str]) -> list[dict[str, Any]]:
        flt = to_qdrant_filter(conditions)
        out: list[dict[str, Any]] = []
        offset: Any = None
        while True:
            records, offset = self.client.scroll(
                self.collection, scroll_filter=flt, limit=1000, offset=offset, with_payload=fields
            )
            out.extend(_payload(r) for r in records)
            if offset is None:
                return out

    def _ids_where(self, conditions: list[Condition]) -> list[str]:
        return [p["doc_id"] for p in self._scroll(conditions, ["doc_id"])]

    def _corpus(self) -> tuple[list[str], list[str]]:
        payloads = self._scroll([], ["doc_id", "text"])
        return [p["doc_id"] for p in payloads], [p["text"] for p in payloads]

    # -- configuration on disk ----------------------------------------------------------------
    def save(self, path: str | Path | None = None) -> Path:
        """Write a manifest that reconnects to this collection (the data lives in Qdrant)."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise StoreError("pass save(path)")
        if not self.url:
            raise StoreError(
                "an in-memory Qdrant store cannot be saved; connect to a server (url=)"
            )
        target.mkdir(parents=True, exist_ok=True)
        from ctxzip import __version__
        from ctxzip.retrievers.persist import FORMAT, FORMAT_VERSION

        with folder_lock(target):
            write_json_atomic(
                target / MANIFEST,
                {
                    "format": FORMAT,
                    "format_version": FORMAT_VERSION,
                    "backend": self.backend,
                    "url": self.url,
                    "collection": self.collection,
                    "embedding_model": self.embedder.model_id,
                    "dim": self._dim,
                    "metric": self.metric,
                    "counts": {"documents": len(self)},
                    "ctxzip_version": __version__,
                    "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
            )
        self.path = target
        return target

    @classmethod
    def load(
        cls,
        path: str | Path,
        model: str | Embedder | None = None,
        device: str = "auto",
        batch_size: int = 64,
        url: str | None = None,
        api_key: str | None = None,
        client: Any = None,
    ) -> QdrantStore:
        manifest = read_manifest(Path(path))
        stored = manifest.get("embedding_model")
        embedder = _embedder(model if model is not None else stored, device, batch_size)
        if embedder.model_id != stored:
            raise StoreMismatchError(f"{path} was built with {stored!r}, not {embedder.model_id!r}")
        store = cls(
            model=embedder,
            metric=manifest.get("metric", "cosine"),
            dim=manifest["dim"],
            url=url or manifest.get("url"),
            api_key=api_key,
            collection=manifest.get("collection", "ctxzip"),
            client=client,
        )
        store.path = Path(path)
        return store

    def close(self) -> None:
        self.client.close()


def _doc(payload: dict[str, Any]) -> Document:
    return Document(payload["doc_id"], payload["text"], payload.get("metadata") or {})


def _payload(point: Any) -> dict[str, Any]:
    """A point's payload; ctxzip writes one on every point, so a missing one is a foreign point."""
    payload = point.payload
    if not isinstance(payload, dict):
        raise StoreError(f"Qdrant point {point.id!r} has no payload (not written by ctxzip)")
    return payload

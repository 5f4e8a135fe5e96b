"""The default store: a FAISS index and a SQLite docstore, saved with a JSON manifest.

    from ctxzip.retrievers import Store
    store = Store(index="hnsw")                      # all-MiniLM-L6-v2, cosine
    store.add_texts(["..."], metadatas=[{"lang": "en"}], ids=["a"])
    store.search("question", k=4, filter={"lang": "en"}, score_threshold=0.3)
    store.save("my-store");  Store.load("my-store")

Work happens in a scratch copy; `save` writes a new generation and swaps the manifest
atomically (see `persist`). The docstore keeps each document's raw vector, which is
what `get_vectors` returns and what index rebuilds (HNSW compaction, IVF-PQ training)
read, so no index type ever needs to reconstruct vectors.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from ctxzip.errors import InputError
from ctxzip.retrievers.base import BaseStore, Document
from ctxzip.retrievers.docstore import DocStore
from ctxzip.retrievers.embeddings import (
    DEFAULT_MODEL,
    STATIC_PREFIX,
    Embedder,
    SentenceTransformerEmbedder,
    StaticEmbedder,
)
from ctxzip.retrievers.errors import StoreCorruptError, StoreError, StoreMismatchError
from ctxzip.retrievers.faiss_index import FaissIndex, IndexSpec, prepare
from ctxzip.retrievers.filters import Condition
from ctxzip.retrievers.persist import (
    MANIFEST,
    commit_generation,
    folder_lock,
    new_generation,
    read_manifest,
    remove_old_generations,
    verified_file,
)
from ctxzip.retrievers.rwlock import RWLock

INDEX_FILE = "index.faiss"
DOCSTORE_FILE = "docs.sqlite"


def _embedder(model: str | Embedder | None, device: str, batch_size: int) -> Embedder:
    if isinstance(model, str) and model.startswith(STATIC_PREFIX):
        return StaticEmbedder(model[len(STATIC_PREFIX) :])
    if model is None or isinstance(model, str):
        return SentenceTransformerEmbedder(
            model or DEFAULT_MODEL, device=device, batch_size=batch_size
        )
    if not isinstance(model, Embedder):
        raise InputError("model must be a model id or an object with model_id, dim and embed()")
    return model


class FaissStore(BaseStore):
    """FAISS (Flat / HNSW / IVF-PQ; cosine or inner product) + SQLite, no pickle."""

    backend = "faiss"

    def __init__(
        self,
        model: str | Embedder | None = None,
        index: str | IndexSpec = "flat",
        metric: str = "cosine",
        dim: int | None = None,
        device: str = "auto",
        batch_size: int = 64,
        **index_options: Any,
    ) -> None:
        """A new, empty store (saved only by `save`). `dim` defaults to the model's (loading it)."""
        super().__init__()
        self.embedder = _embedder(model, device, batch_size)
        spec = (
            index
            if isinstance(index, IndexSpec)
            else IndexSpec(kind=index, metric=metric, **index_options)
        )
        self._setup(dim or self.embedder.dim, spec)
        self._docs = DocStore.new(self._dim)
        self._index = FaissIndex(self._dim, spec)
        self.path: Path | None = None
        self._manifest: dict[str, Any] | None = None

    def _setup(self, dim: int, spec: IndexSpec) -> None:
        if dim < 1:
            raise InputError(f"dim must be positive, got {dim}")
        self._dim = dim
        self.spec = spec
        self.metric = spec.metric
        self._lock = RWLock()

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def index_type(self) -> str:
        return self.spec.kind

    def __len__(self) -> int:
        return self._docs.count()

    def __repr__(self) -> str:
        return (
            f"FaissStore({len(self)} docs, {self.spec.kind}, {self.metric}, "
            f"{self.embedder.model_id}, {self._dim}-d)"
        )

    # -- primitives -------------------------------------------------------------------------
    def _insert(self, docs: list[Document], vectors: np.ndarray, replace: bool) -> None:
        ids = [d.id for d in docs]
        normalized = prepare(vectors, self.metric == "cosine")
        with self._lock.write():
            existing = self._docs.rids_for(ids)
            if existing and not replace:
                first = next(iter(existing))
                raise StoreError(f"id {first!r} already exists (use upsert_texts to replace it)")
            if existing:
                self._index.remove(self._docs.delete(list(existing)))
            rids = self._docs.insert(
                ids, [d.text for d in docs], [d.metadata for d in docs], vectors
            )
            self._index.add(np.asarray(rids, dtype=np.int64), normalized)
            self._maintain()

    def _maintain(self) -> None:
        """Train IVF-PQ once enough vectors exist; compact HNSW once tombstones pile up."""
        staging = self.spec.kind == "ivfpq" and not self._index.trained
        if (staging and self._index.wants_training(self._index.ntotal)) or (
            self._index.should_compact()
        ):
            self._index.rebuild(self._docs.iter_vectors(), self.metric == "cosine")

    def _remove(self, ids: list[str]) -> int:
        with self._lock.write():
            rids = self._docs.delete(ids)
            self._index.remove(rids)
            if rids:
                self._maintain()
        return len(rids)

    def _fetch(self, ids: list[str]) -> dict[str, Document]:
        with self._lock.read():
            rows = self._docs.rows_by_ids(ids)
        return {i: Document(r.id, r.text, r.metadata) for i, r in rows.items()}

    def get_vectors(self, ids: Sequence[str]) -> np.ndarray:
        """The vectors as added (not normalised), shape (len(ids), dim), in the order asked."""
        if isinstance(ids, str):
            ids = [ids]
        with self._lock.read():
            found = self._docs.vectors("id", list(ids))
        out = np.empty((len(ids), self._dim), dtype=np.float32)
        for n, doc_id in enumerate(ids):
            if doc_id not in found:
                raise KeyError(doc_id)
            out[n] = found[doc_id]
        return out

    def _ids_where(self, conditions: list[Condition]) -> list[str]:
        with self._lock.read():
            return self._docs.filter_ids(conditions)

    def _corpus(self) -> tuple[list[str], list[str]]:
        with self._lock.read():
            return self._docs.corpus()

    def _vector_search(
        self,
        vector: np.ndarray,
        k: int,
        conditions: list[Condition],
        ef_search: int | None = None,
        nprobe: int | None = None,
        rerank: int | None = None,
        exact_below: int = 2048,
        **_: Any,
    ) -> list[tuple[Document, float]]:
        """Filtered search pre-filters in SQLite; tiny candidate sets are scored exactly.

        `ef_search` (HNSW), `nprobe` and `rerank` (IVF-PQ) trade speed for recall per call.
        A trained IVF-PQ index proposes `k * rerank` candidates by their compressed codes;
        their exact scores come from the raw vectors in the docstore (on disk), so the
        index in RAM stays small and the scores returned are exact.
        """
        query = prepare(vector, self.metric == "cosine")
        rerank = self.spec.rerank if rerank is None else rerank
        if rerank < 1:
            raise InputError(f"rerank must be >= 1, got {rerank}")
        with self._lock.read():
            if self._index.ntotal == 0:
                return []
            allowed = self._docs.filter_rids(conditions) if conditions else None
            if allowed is not None and len(allowed) <= exact_below:
                return self._exact(query[0], allowed, k)
            refine = self._index.trained and rerank > 1
            fetch = k * rerank if refine else k
            scores, rids = self._index.search(query, fetch, allowed, ef_search, nprobe)
            if refine:
                return self._exact(query[0], rids[0][rids[0] >= 0], k)
            pairs = [(int(r), float(s)) for r, s in zip(rids[0], scores[0], strict=True) if r >= 0]
            rows = self._docs.rows_by_rids([r for r, _ in pairs])
        hits = [
            (Document(rows[r].id, rows[r].text, rows[r].metadata), s) for r, s in pairs if r in rows
        ]
        return hits[:k]

    def _exact(self, query: np.ndarray, rids: np.ndarray, k: int) -> list[tuple[Document, float]]:
        if not len(rids):
            return []
        found = self._docs.vectors("rid", rids.tolist())
        keys = list(found)
        mat = prepare(np.stack([found[r] for r in keys]), self.metric == "cosine")
        scores = mat @ query
        top = np.argsort(-scores, kind="stable")[:k]
        rows = self._docs.rows_by_rids([keys[i] for i in top])
        return [
            (
                Document(rows[keys[i]].id, rows[keys[i]].text, rows[keys[i]].metadata),
                float(scores[i]),
            )
            for i in top
        ]

    # -- introspection ----------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        with self._lock.read():
            n_docs = self._docs.count()
            return {
                "documents": n_docs,
                "index_vectors": self._index.ntotal,
                "index_type": self.spec.kind,
                "index_active": self._active_kind(),
                "index_bytes": self._index.nbytes(),
                "metric": self.metric,
                "dim": self._dim,
                "embedding_model": self.embedder.model_id,
            }

    def _active_kind(self) -> str:
        if self.spec.kind == "ivfpq" and not self._index.trained:
            return f"flat (ivfpq staging: trains at {self.spec.train_min} vectors)"
        return self.spec.kind

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: str | Path | None = None) -> Path:
        """Write index, docstore and manifest to `path` (default: where it was loaded from).

        Atomic: a crash at any point leaves the previous save loadable.
        """
        target = Path(path) if path is not None else self.path
        if target is None:
            raise StoreError("this store has no folder yet: pass save(path)")
        target.mkdir(parents=True, exist_ok=True)
        with folder_lock(target):
            previous = read_manifest(target) if (target / MANIFEST).exists() else None
            number, tmp = new_generation(target, previous)
            with self._lock.read():  # a consistent snapshot; searches go on
                self._index.write(str(tmp / INDEX_FILE))
                self._docs.save_to(str(tmp / DOCSTORE_FILE))
                manifest = self._manifest_body(previous)
            manifest = commit_generation(
                target, tmp, number, manifest, {"index": INDEX_FILE, "docstore": DOCSTORE_FILE}
            )
            remove_old_generations(target, keep=number)
        self.path, self._manifest = target, manifest
        return target

    def _manifest_body(self, previous: dict[str, Any] | None) -> dict[str, Any]:
        from ctxzip import __version__

        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return {
            "backend": self.backend,
            "embedding_model": self.embedder.model_id,
            "dim": self._dim,
            "metric": self.metric,
            "index": self.spec.to_dict(),
            "index_state": self._index.state(),
            "counts": {"documents": self._docs.count(), "index_vectors": self._index.ntotal},
            "faiss_version": faiss.__version__,
            "ctxzip_version": __version__,
            "created_at": (previous or {}).get("created_at", now),
            "saved_at": now,
        }

    @classmethod
    def load(
        cls,
        path: str | Path,
        model: str | Embedder | None = None,
        device: str = "auto",
        batch_size: int = 64,
    ) -> FaissStore:
        """Open a saved store. Refuses another embedding model or dimension than it was built with.

        `model` defaults to the manifest's model id; pass an `Embedder` to use your own
        object (its `model_id` and `dim` must match the manifest).
        """
        folder = Path(path)
        manifest = read_manifest(folder)
        if manifest.get("backend", "faiss") != cls.backend:
            raise StoreMismatchError(
                f"{folder} holds a {manifest.get('backend')!r} store; open it with open_store()"
            )
        dim = manifest.get("dim")
        if not isinstance(dim, int) or dim < 1:
            raise StoreCorruptError(f"manifest dim {dim!r} is invalid")
        stored_model = manifest.get("embedding_model")
        embedder = _embedder(model if model is not None else stored_model, device, batch_size)
        if embedder.model_id != stored_model:
            raise StoreMismatchError(
                f"{folder} was built with {stored_model!r}; refusing to search it with "
                f"{embedder.model_id!r} (vectors from different models are not comparable)"
            )
        if not isinstance(model, (str, type(None))) and embedder.dim != dim:
            raise StoreMismatchError(
                f"{folder} holds {dim}-d vectors; the embedder gives {embedder.dim}-d"
            )
        spec = IndexSpec.from_dict(manifest.get("index", {}))
        self = cls.__new__(cls)
        BaseStore.__init__(self)
        self.embedder = embedder
        self._setup(dim, spec)
        self._docs = DocStore.load(str(verified_file(folder, manifest, "docstore")), dim)
        self._index = FaissIndex.read(
            str(verified_file(folder, manifest, "index")),
            dim,
            spec,
            manifest.get("index_state", {}),
            self._docs.all_rids(),
        )
        counts = manifest.get("counts", {})
        if (len(self), self._index.ntotal) != (
            counts.get("documents"),
            counts.get("index_vectors"),
        ):
            raise StoreCorruptError(
                f"{folder}: counts differ from the manifest ({len(self)} documents and "
                f"{self._index.ntotal} vectors on disk, manifest says {counts})"
            )
        self.path, self._manifest = folder, manifest
        return self

    def close(self) -> None:
        self._docs.close()


Store = FaissStore

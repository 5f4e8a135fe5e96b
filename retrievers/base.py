"""What every store backend shares: documents, hits, validation, MMR and hybrid search.

A backend implements a handful of primitives (`_insert`, `_remove`, `_fetch`,
`_vector_search`, `get_vectors`, `_ids_where`, `_corpus`, `__len__`); everything a user
calls (add, upsert, delete, get, search, MMR, hybrid, ingest) lives here once, so the
FAISS store and the Qdrant backend behave the same.
"""

from __future__ import annotations

import math
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ctxzip.errors import InputError
from ctxzip.retrievers.bm25 import BM25Index, rrf
from ctxzip.retrievers.embeddings import Embedder
from ctxzip.retrievers.errors import StoreError, StoreMismatchError
from ctxzip.retrievers.filters import Condition, parse_filter
from ctxzip.retrievers.ingest import IngestReport, ingest
from ctxzip.validate import check_text

RRF_K = 60


@dataclass(frozen=True)
class Document:
    """A stored text with its id and JSON-serialisable metadata."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Hit:
    """One search result. `score` is a similarity (higher is closer) or, for hybrid, the RRF score."""

    document: Document
    score: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.document.id

    @property
    def text(self) -> str:
        return self.document.text

    @property
    def metadata(self) -> dict[str, Any]:
        return self.document.metadata


def _check_metadata(value: object, what: str) -> dict[str, Any]:
    import json

    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InputError(f"{what} must be a dict, got {type(value).__name__}")
    try:
        return dict(json.loads(json.dumps(dict(value), allow_nan=False)))
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} must be JSON-serialisable: {exc}") from None


class BaseStore(ABC):
    """The store interface. Thread-safe: readers run together, writers one at a time."""

    embedder: Embedder
    metric: str
    backend: str = ""

    def __init__(self) -> None:
        self._bm25: BM25Index | None = None
        self._bm25_version = -1
        self._version = 0  # bumped by every change; invalidates derived data (BM25)
        self._bm25_lock = threading.Lock()

    # -- primitives (backends) ------------------------------------------------------------
    @property
    @abstractmethod
    def dim(self) -> int: ...

    @abstractmethod
    def _insert(self, docs: list[Document], vectors: np.ndarray, replace: bool) -> None: ...

    @abstractmethod
    def _remove(self, ids: list[str]) -> int: ...

    @abstractmethod
    def _fetch(self, ids: list[str]) -> dict[str, Document]: ...

    @abstractmethod
    def _vector_search(
        self, vector: np.ndarray, k: int, conditions: list[Condition], **options: Any
    ) -> list[tuple[Document, float]]: ...

    @abstractmethod
    def get_vectors(self, ids: Sequence[str]) -> np.ndarray:
        """The stored vectors, shape (len(ids), dim), float32, in the order asked.

        These are the vectors the embedder produced (the embedding-as-token method reuses
        them as inputs). Raises `KeyError` naming the first unknown id.
        """

    @abstractmethod
    def _ids_where(self, conditions: list[Condition]) -> list[str]: ...

    @abstractmethod
    def _corpus(self) -> tuple[list[str], list[str]]: ...

    @abstractmethod
    def __len__(self) -> int: ...

    def save(self, path: str | Path | None = None) -> Path | None:
        """Persist; returns where the store (or its manifest) now lives, if anywhere.

        Backends that keep data elsewhere and have no path have nothing to do.
        """
        return None

    def close(self) -> None:  # noqa: B027 - optional
        """Release resources."""

    def __enter__(self) -> BaseStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writes -------------------------------------------------------------------------
    def add_texts(
        self,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        ids: Sequence[str] | None = None,
        vectors: np.ndarray | None = None,
        progress: bool | None = None,
    ) -> list[str]:
        """Add new documents; an id that already exists is an error (see `upsert_texts`).

        Ids default to random UUIDs. `vectors` skips embedding (they must come from the
        store's model). Embedding runs outside the write lock, so searches go on meanwhile.
        """
        return self._write(texts, metadatas, ids, vectors, progress, replace=False)

    def upsert_texts(
        self,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        ids: Sequence[str] | None = None,
        vectors: np.ndarray | None = None,
        progress: bool | None = None,
    ) -> list[str]:
        """Add documents, replacing any with the same id."""
        return self._write(texts, metadatas, ids, vectors, progress, replace=True)

    def add_documents(
        self, documents: Iterable[Document], upsert: bool = False, progress: bool | None = None
    ) -> list[str]:
        docs = list(documents)
        write = self.upsert_texts if upsert else self.add_texts
        return write(
            [d.text for d in docs],
            [d.metadata for d in docs],
            [d.id for d in docs],
            progress=progress,
        )

    def _write(
        self,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any] | None] | None,
        ids: Sequence[str] | None,
        vectors: np.ndarray | None,
        progress: bool | None,
        replace: bool,
    ) -> list[str]:
        docs = self._validate(texts, metadatas, ids)
        if not docs:
            return []
        if vectors is None:
            vecs = self.embedder.embed([d.text for d in docs], progress=progress)
        else:
            vecs = np.asarray(vectors, dtype=np.float32)
        if vecs.ndim != 2 or vecs.shape[0] != len(docs):
            raise InputError(f"vectors must have shape ({len(docs)}, {self.dim}), got {vecs.shape}")
        if vecs.shape[1] != self.dim:
            raise StoreMismatchError(
                f"vectors have dimension {vecs.shape[1]}, the store holds {self.dim}-d vectors"
            )
        if not np.isfinite(vecs).all():
            raise InputError("vectors hold NaN or infinite values")
        self._insert(docs, vecs, replace)
        self._changed()
        return [d.id for d in docs]

    def _validate(
        self,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any] | None] | None,
        ids: Sequence[str] | None,
    ) -> list[Document]:
        if isinstance(texts, (str, bytes)):
            raise InputError("texts must be a list of strings, not a single string")
        texts = list(texts)
        if metadatas is not None and len(metadatas) != len(texts):
            raise InputError(f"got {len(metadatas)} metadatas for {len(texts)} texts")
        if ids is not None and len(ids) != len(texts):
            raise InputError(f"got {len(ids)} ids for {len(texts)} texts")
        docs = []
        for n, text in enumerate(texts):
            text = check_text(text, f"text {n}")
            if not text.strip():
                raise InputError(f"text {n} is empty")
            doc_id = uuid.uuid4().hex if ids is None else ids[n]
            if not isinstance(doc_id, str) or not doc_id:
                raise InputError(f"id {n} must be a non-empty string, got {doc_id!r}")
            check_text(doc_id, f"id {n}")
            meta = _check_metadata(metadatas[n] if metadatas is not None else None, f"metadata {n}")
            docs.append(Document(doc_id, text, meta))
        seen: set[str] = set()
        for d in docs:
            if d.id in seen:
                raise InputError(f"id {d.id!r} appears twice in one call")
            seen.add(d.id)
        return docs

    def delete(self, ids: Sequence[str]) -> int:
        """Delete documents by id; returns how many existed (unknown ids are ignored)."""
        if isinstance(ids, str):
            ids = [ids]
        removed = self._remove(list(ids))
        if removed:
            self._changed()
        return removed

    def delete_where(self, filter: Mapping[str, Any]) -> int:
        """Delete every document whose metadata matches `filter` (an empty filter is refused)."""
        conditions = parse_filter(filter)
        if not conditions:
            raise InputError("delete_where needs a non-empty filter")
        return self.delete(self._ids_where(conditions))

    # -- reads --------------------------------------------------------------------------
    def get(self, ids: Sequence[str]) -> list[Document | None]:
        """Documents in the order asked; None for an unknown id."""
        if isinstance(ids, str):
            ids = [ids]
        found = self._fetch(list(ids))
        return [found.get(i) for i in ids]

    def ids_where(self, filter: Mapping[str, Any] | None = None) -> list[str]:
        """Ids of the documents that match `filter` (all of them without one)."""
        return self._ids_where(parse_filter(filter))

    def embed_query(self, query: str) -> np.ndarray:
        query = check_text(query, "query")
        if not query.strip():
            raise InputError("query is empty")
        vec = self.embedder.embed([query], progress=False)[0]
        if vec.shape[0] != self.dim:
            raise StoreMismatchError(
                f"{self.embedder.model_id} gives {vec.shape[0]}-d vectors, the store holds {self.dim}-d"
            )
        return vec

    def search(
        self,
        query: str,
        k: int = 4,
        filter: Mapping[str, Any] | None = None,
        score_threshold: float | None = None,
        **options: Any,
    ) -> list[Hit]:
        """The `k` nearest documents to `query` (cosine or inner product; higher is closer)."""
        return self.search_by_vector(self.embed_query(query), k, filter, score_threshold, **options)

    def search_by_vector(
        self,
        vector: np.ndarray | Sequence[float],
        k: int = 4,
        filter: Mapping[str, Any] | None = None,
        score_threshold: float | None = None,
        **options: Any,
    ) -> list[Hit]:
        _check_k(k)
        vec = self._query_vector(vector)
        hits = self._vector_search(vec, k, parse_filter(filter), **options)
        return [
            Hit(doc, score)
            for doc, score in hits
            if score_threshold is None or score >= score_threshold
        ]

    def _query_vector(self, vector: np.ndarray | Sequence[float]) -> np.ndarray:
        vec = np.asarray(vector, dtype=np.float32).reshape(-1)
        if vec.shape[0] != self.dim:
            raise StoreMismatchError(
                f"query vector has dimension {vec.shape[0]}, store has {self.dim}"
            )
        if not np.isfinite(vec).all():
            raise InputError("query vector holds NaN or infinite values")
        return vec

    def mmr_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Mapping[str, Any] | None = None,
    ) -> list[Hit]:
        """Maximal marginal relevance: relevant to the query, different from each other."""
        return self.mmr_search_by_vector(self.embed_query(query), k, fetch_k, lambda_mult, filter)

    def mmr_search_by_vector(
        self,
        vector: np.ndarray | Sequence[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Mapping[str, Any] | None = None,
    ) -> list[Hit]:
        _check_k(k)
        if not 0.0 <= lambda_mult <= 1.0:
            raise InputError(f"lambda_mult must be in [0, 1], got {lambda_mult}")
        vec = self._query_vector(vector)
        candidates = self._vector_search(vec, max(k, fetch_k), parse_filter(filter))
        if not candidates:
            return []
        try:
            cand_vecs = self.get_vectors([d.id for d, _ in candidates])
        except KeyError:  # deleted meanwhile: drop what vanished
            present = self._fetch([d.id for d, _ in candidates])
            candidates = [c for c in candidates if c[0].id in present]
            cand_vecs = self.get_vectors([d.id for d, _ in candidates])
        chosen = mmr_select(vec, cand_vecs, k, lambda_mult, cosine=self.metric == "cosine")
        return [
            Hit(candidates[i][0], candidates[i][1], {"mmr_rank": r + 1})
            for r, i in enumerate(chosen)
        ]

    def bm25_search(
        self, query: str, k: int = 4, filter: Mapping[str, Any] | None = None
    ) -> list[Hit]:
        """Keyword search (BM25 over the stored texts)."""
        _check_k(k)
        query = check_text(query, "query")
        conditions = parse_filter(filter)
        allowed = set(self._ids_where(conditions)) if conditions else None
        ranked = self._bm25_index().search(query, k, allowed)
        docs = self._fetch([i for i, _ in ranked])
        return [Hit(docs[i], s, {"bm25_score": s}) for i, s in ranked if i in docs]

    def hybrid_search(
        self,
        query: str,
        k: int = 4,
        filter: Mapping[str, Any] | None = None,
        vector_weight: float = 1.0,
        bm25_weight: float = 1.0,
        rrf_k: int = RRF_K,
        fetch_k: int | None = None,
        score_threshold: float | None = None,
        **options: Any,
    ) -> list[Hit]:
        """Vector and BM25 results fused by weighted reciprocal rank fusion (k = 60).

        Each side contributes its top `fetch_k` (default max(4k, 20)); a document's score
        is sum(weight / (rrf_k + rank)). `score_threshold` applies to the fused score;
        `options` (e.g. `ef_search`, `nprobe`) go to the vector search.
        """
        _check_k(k)
        if vector_weight < 0 or bm25_weight < 0 or vector_weight + bm25_weight <= 0:
            raise InputError("weights must be >= 0 and not both 0")
        if rrf_k <= 0:
            raise InputError(f"rrf_k must be > 0, got {rrf_k}")
        fetch = fetch_k or max(4 * k, 20)
        vec_hits = self.search(query, fetch, filter, **options) if vector_weight > 0 else []
        kw_hits = self.bm25_search(query, fetch, filter) if bm25_weight > 0 else []
        fused = rrf(
            [[h.id for h in vec_hits], [h.id for h in kw_hits]], [vector_weight, bm25_weight], rrf_k
        )
        by_id = {h.id: h for h in [*kw_hits, *vec_hits]}
        vec_rank = {h.id: (r, h.score) for r, h in enumerate(vec_hits, 1)}
        kw_rank = {h.id: (r, h.score) for r, h in enumerate(kw_hits, 1)}
        out = []
        for doc_id, score in fused[:k]:
            if score_threshold is not None and score < score_threshold:
                continue
            extra: dict[str, Any] = {}
            if doc_id in vec_rank:
                extra["vector_rank"], extra["vector_score"] = vec_rank[doc_id]
            if doc_id in kw_rank:
                extra["bm25_rank"], extra["bm25_score"] = kw_rank[doc_id]
            out.append(Hit(by_id[doc_id].document, score, extra))
        return out

    def _changed(self) -> None:
        with self._bm25_lock:
            self._version += 1

    def _bm25_index(self) -> BM25Index:
        with self._bm25_lock:
            version = self._version
            if self._bm25 is None or self._bm25_version != version:
                ids, texts = self._corpus()
                self._bm25 = BM25Index(ids, texts)
                self._bm25_version = version
            return self._bm25

    # -- ingest ---------------------------------------------------------------------------
    def ingest(self, paths: Sequence[str | Path], **options: Any) -> IngestReport:
        """Chunk and add files, folders and JSONL (see `ctxzip.retrievers.ingest.ingest`)."""
        return ingest(self, paths, **options)


def _check_k(k: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")


def mmr_select(
    query: np.ndarray, vectors: np.ndarray, k: int, lambda_mult: float, cosine: bool = True
) -> list[int]:
    """Greedy MMR over candidate vectors; returns their indices in pick order."""
    vecs = np.asarray(vectors, dtype=np.float32)
    q = np.asarray(query, dtype=np.float32)
    if cosine:
        vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        q = q / max(float(np.linalg.norm(q)), 1e-12)
    relevance = vecs @ q
    pairwise = vecs @ vecs.T
    chosen: list[int] = []
    best_sim = np.full(len(vecs), -math.inf, dtype=np.float32)
    for _ in range(min(k, len(vecs))):
        if chosen:
            score = lambda_mult * relevance - (1 - lambda_mult) * best_sim
        else:
            score = relevance.copy()
        score[chosen] = -math.inf
        pick = int(np.argmax(score))
        chosen.append(pick)
        best_sim = np.maximum(best_sim, pairwise[pick])
    return chosen


__all__ = ["RRF_K", "BaseStore", "Document", "Hit", "StoreError", "mmr_select"]

"""FAISS index types behind one small interface: Flat (exact), HNSW and IVF-PQ.

Ids are the docstore's int64 row ids. Flat wraps `IndexIDMap` (removal works); IVF-PQ
stores ids in its inverted lists (removal works) and, until it has `train_min` vectors
to learn its centroids from, runs as an exact Flat index ("staging"); HNSW cannot
remove vectors, so deleted ids stay in the graph as tombstones that an ID selector
excludes inside the search (results stay full, cost stays flat) and a rebuild drops.
Cosine is inner product over L2-normalised vectors (the caller normalises).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any

import faiss
import numpy as np

from ctxzip.errors import InputError

KINDS = ("flat", "hnsw", "ivfpq")
METRICS = ("cosine", "ip")


@dataclass(frozen=True)
class IndexSpec:
    """Which index to build and how to search it (saved in the manifest)."""

    kind: str = "flat"
    metric: str = "cosine"
    hnsw_m: int = 32  # graph degree
    ef_construction: int = 80
    ef_search: int = 64
    nlist: int | None = None  # IVF cells; default about 4*sqrt(n) at training time
    nprobe: int | None = None  # cells visited per query; default nlist/16, at least 8
    pq_m: int | None = None  # PQ sub-quantisers; default dim/4 (a quarter of a byte per dim)
    pq_bits: int = 8
    train_min: int = 10_000  # vectors needed before IVF-PQ trains (staging Flat before)
    rerank: int = 8  # IVF-PQ: re-score k*rerank PQ candidates exactly (docstore vectors); 1 = off

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"index type must be one of {KINDS}, got {self.kind!r}")
        if self.metric not in METRICS:
            raise InputError(f"metric must be one of {METRICS}, got {self.metric!r}")
        if self.rerank < 1:
            raise InputError(f"rerank must be >= 1, got {self.rerank}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexSpec:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class FaissIndex:
    """Not thread-safe on its own: the store holds a read/write lock around it."""

    def __init__(self, dim: int, spec: IndexSpec) -> None:
        self.dim = dim
        self.spec = spec
        self.trained = False  # IVF-PQ only: False while staging on Flat
        self.nlist = 0
        self._set_tombstones(set())
        self.index = self._empty_staging() if spec.kind == "ivfpq" else self._empty()

    # -- construction -------------------------------------------------------------------
    @property
    def _faiss_metric(self) -> int:
        return faiss.METRIC_INNER_PRODUCT

    def _empty_staging(self) -> Any:
        return faiss.IndexIDMap(faiss.IndexFlatIP(self.dim))

    def _empty(self) -> Any:
        if self.spec.kind == "flat":
            return faiss.IndexIDMap(faiss.IndexFlatIP(self.dim))
        if self.spec.kind == "hnsw":
            hnsw = faiss.IndexHNSWFlat(self.dim, self.spec.hnsw_m, self._faiss_metric)
            hnsw.hnsw.efConstruction = self.spec.ef_construction
            hnsw.hnsw.efSearch = self.spec.ef_search
            return faiss.IndexIDMap(hnsw)
        return self._empty_staging()

    def pq_m(self) -> int:
        m = self.spec.pq_m or max(1, self.dim // 4)
        if self.dim % m:
            raise InputError(f"pq_m={m} must divide the dimension {self.dim}")
        return m

    def _train_ivfpq(self, sample: np.ndarray) -> Any:
        n = len(sample)
        nlist = self.spec.nlist or int(min(max(16, 4 * math.sqrt(n)), max(16, n // 39)))
        quantizer = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIVFPQ(
            quantizer, self.dim, nlist, self.pq_m(), self.spec.pq_bits, self._faiss_metric
        )
        index.train(sample)
        index.nprobe = self._nprobe(nlist)
        self.nlist = nlist
        return index

    def _nprobe(self, nlist: int) -> int:
        return self.spec.nprobe or min(nlist, max(8, nlist // 16))

    def wants_training(self, n_vectors: int) -> bool:
        return self.spec.kind == "ivfpq" and not self.trained and n_vectors >= self.spec.train_min

    def rebuild(self, batches: Iterable[tuple[np.ndarray, np.ndarray]], normalize: bool) -> None:
        """A fresh index from all (rids, vectors) batches; trains IVF-PQ when it can."""
        rids_parts, vec_parts = [], []
        for rids, vecs in batches:
            rids_parts.append(rids)
            vec_parts.append(prepare(vecs, normalize))
        rids = np.concatenate(rids_parts) if rids_parts else np.empty(0, np.int64)
        vecs = np.concatenate(vec_parts) if vec_parts else np.empty((0, self.dim), np.float32)
        self._set_tombstones(set())
        if self.spec.kind == "ivfpq" and len(vecs) >= self.spec.train_min:
            rng = np.random.default_rng(0)
            cap = 256 * 256  # enough for the centroids and the PQ codebooks
            sample = vecs if len(vecs) <= cap else vecs[rng.choice(len(vecs), cap, replace=False)]
            self.index = self._train_ivfpq(np.ascontiguousarray(sample))
            self.trained = True
        else:
            self.index = self._empty()
            self.trained = False
        if len(vecs):
            self.index.add_with_ids(vecs, rids)

    # -- updates ------------------------------------------------------------------------
    def add(self, rids: np.ndarray, vecs: np.ndarray) -> None:
        self.index.add_with_ids(np.ascontiguousarray(vecs, dtype=np.float32), rids)

    def remove(self, rids: Iterable[int]) -> None:
        arr = np.fromiter(rids, dtype=np.int64)
        if not len(arr):
            return
        if self.spec.kind == "hnsw":
            self._set_tombstones(self._tombstones | {int(r) for r in arr})
        else:
            self.index.remove_ids(faiss.IDSelectorBatch(arr))

    def _set_tombstones(self, rids: set[int]) -> None:
        """HNSW: ids deleted but still in the graph, and the selector that hides them."""
        self._tombstones = rids
        self._hide: Any = None
        if rids:
            self._hide_ids = faiss.IDSelectorBatch(np.fromiter(rids, np.int64, len(rids)))
            self._hide = faiss.IDSelectorNot(self._hide_ids)

    @property
    def stale(self) -> int:
        return len(self._tombstones)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def should_compact(self) -> bool:
        return self.stale > max(1000, self.ntotal // 4)

    # -- search -------------------------------------------------------------------------
    def search(
        self,
        queries: np.ndarray,
        k: int,
        allowed: np.ndarray | None = None,
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rids) of shape (n, k'); rid -1 pads missing results."""
        k = max(1, min(k, self.ntotal))
        # `allowed` comes from the docstore, so it never names a deleted id.
        sel = faiss.IDSelectorBatch(allowed) if allowed is not None else self._hide
        params: Any
        if self.spec.kind == "hnsw":
            params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # not in the stubs
            params.efSearch = max(ef_search or self.spec.ef_search, k)
        elif self.trained:
            params = faiss.SearchParametersIVF()
            params.nprobe = nprobe or self._nprobe(self.nlist)
        else:
            params = faiss.SearchParameters()
        if sel is not None:
            params.sel = sel
        scores, rids = self.index.search(
            np.ascontiguousarray(queries, dtype=np.float32), k, params=params
        )
        return scores, rids

    # -- persistence --------------------------------------------------------------------
    def write(self, path: str) -> None:
        faiss.write_index(self.index, path)

    def state(self) -> dict[str, Any]:
        return {
            "trained": self.trained,
            "nlist": self.nlist,
            "stale": self.stale,
            "ntotal": self.ntotal,
        }

    @classmethod
    def read(
        cls, path: str, dim: int, spec: IndexSpec, state: dict[str, Any], live: Iterable[int]
    ) -> FaissIndex:
        """Read an index file; `live` (the docstore's rids) tells HNSW which ids are tombstones."""
        from ctxzip.retrievers.errors import StoreCorruptError

        self = cls.__new__(cls)
        self.dim, self.spec = dim, spec
        self.index = faiss.read_index(path)
        self.trained = bool(state.get("trained", False))
        self.nlist = int(state.get("nlist", 0))
        if self.index.d != dim:
            raise StoreCorruptError(f"index file has dimension {self.index.d}, manifest says {dim}")
        tombstones: set[int] = set()
        if spec.kind == "hnsw" and int(state.get("stale", 0)):
            stored = faiss.vector_to_array(self.index.id_map)
            tombstones = {int(r) for r in stored} - set(live)
        self._set_tombstones(tombstones)
        if self.stale != int(state.get("stale", 0)):
            raise StoreCorruptError(
                f"index and docstore disagree ({self.stale} deleted ids in the index, "
                f"manifest says {state.get('stale')})"
            )
        return self

    def nbytes(self) -> int:
        """Serialized size: what the index costs in memory, give or take small headers."""
        return int(faiss.serialize_index(self.index).nbytes)


def prepare(vectors: np.ndarray, normalize: bool) -> np.ndarray:
    """float32, C-contiguous, L2-normalised when the metric is cosine (zero rows stay zero)."""
    vecs = np.array(vectors, dtype=np.float32, copy=True, ndmin=2)
    if normalize:
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        np.divide(vecs, norms, out=vecs, where=norms > 0)
    return np.ascontiguousarray(vecs)

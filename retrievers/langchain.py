"""LangChain adapters: the store as a `VectorStore` (and so a retriever), embeddings both ways.

    from ctxzip.retrievers.langchain import CtxzipVectorStore
    vs = CtxzipVectorStore(store)                       # any ctxzip store backend
    retriever = vs.as_retriever(search_kwargs={"k": 8, "filter": {"lang": "en"}})  # hybrid
    retriever = vs.as_retriever(search_kwargs={"k": 8, "dense_only": True})   # vectors only
    retriever = vs.as_retriever(search_type="mmr")

Unlike `langchain_community.vectorstores.FAISS`, saving never pickles (`vs.save(dir)`,
`CtxzipVectorStore.load(dir)`), so loading needs no `allow_dangerous_deserialization`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.documents import Document as LCDocument
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from ctxzip.retrievers.base import BaseStore, Document, Hit
from ctxzip.retrievers.embeddings import Embedder


class LangChainEmbedder:
    """A LangChain `Embeddings` as a ctxzip `Embedder` (name it: the manifest records the id)."""

    def __init__(self, embeddings: Embeddings, model_id: str | None = None) -> None:
        self.embeddings = embeddings
        self.model_id = model_id or str(
            getattr(embeddings, "model_name", None)
            or getattr(embeddings, "model", None)
            or type(embeddings).__name__
        )
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = len(self.embeddings.embed_query("dimension probe"))
        return self._dim

    def embed(self, texts: Sequence[str], progress: bool | None = None) -> np.ndarray:
        if len(texts) == 1:  # queries go through embed_query (some models prompt them)
            return np.asarray([self.embeddings.embed_query(texts[0])], dtype=np.float32)
        return np.asarray(self.embeddings.embed_documents(list(texts)), dtype=np.float32)


class EmbedderEmbeddings(Embeddings):
    """A ctxzip `Embedder` as LangChain `Embeddings`."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [list(map(float, row)) for row in self.embedder.embed(texts)]

    def embed_query(self, text: str) -> list[float]:
        return list(map(float, self.embedder.embed([text], progress=False)[0]))


HYBRID_ONLY = ("bm25_weight", "vector_weight", "rrf_k", "fetch_k")


def use_hybrid(kwargs: dict[str, Any]) -> bool:
    """Whether search kwargs ask for hybrid search (the default); pops the switches.

    `dense_only=True` or `hybrid=False` opt out; a `score_threshold` without `hybrid=True`
    is a similarity threshold, so it means dense search too.
    """
    hybrid = kwargs.pop("hybrid", None)
    dense_only = bool(kwargs.pop("dense_only", False))
    if hybrid is not None:
        return bool(hybrid) and not dense_only
    return not dense_only and kwargs.get("score_threshold") is None


def _to_lc(doc: Document, extra: dict[str, Any] | None = None) -> LCDocument:
    return LCDocument(page_content=doc.text, metadata={**doc.metadata, **(extra or {})}, id=doc.id)


class CtxzipVectorStore(VectorStore):
    """A ctxzip store behind LangChain's `VectorStore` interface.

    `add_texts` upserts (LangChain's convention for known ids). Searches are hybrid by
    default (vectors + BM25 fused by reciprocal rank; scores are fused ranks); pass
    `dense_only=True` (or `hybrid=False`) for vectors alone. A `score_threshold` is a
    similarity, so it means a dense search unless `hybrid=True` is given. Other search
    kwargs: `filter` (ctxzip filter dict), `bm25_weight`, `vector_weight`, and backend
    options such as `ef_search` / `nprobe`.
    """

    def __init__(self, store: BaseStore) -> None:
        self.store = store

    @property
    def embeddings(self) -> Embeddings:
        return EmbedderEmbeddings(self.store.embedder)

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[Any, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        return self.store.upsert_texts(list(texts), metadatas, ids)

    def add_documents(self, documents: list[LCDocument], **kwargs: Any) -> list[str]:
        ids = kwargs.pop("ids", None) or (
            [d.id for d in documents] if all(d.id for d in documents) else None
        )
        return self.add_texts(
            [d.page_content for d in documents], [d.metadata for d in documents], ids=ids
        )

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        if ids is None:
            raise ValueError("delete needs ids")
        return self.store.delete(ids) > 0

    def get_by_ids(self, ids: Sequence[str], /) -> list[LCDocument]:
        return [_to_lc(d) for d in self.store.get(list(ids)) if d is not None]

    def _search(self, query: str, k: int, **kwargs: Any) -> list[Hit]:
        if use_hybrid(kwargs):
            return self.store.hybrid_search(query, k, **kwargs)
        for key in HYBRID_ONLY:
            kwargs.pop(key, None)
        return self.store.search(query, k, **kwargs)

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[LCDocument]:
        return [_to_lc(h.document) for h in self._search(query, k, **kwargs)]

    def similarity_search_with_score(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[LCDocument, float]]:
        return [(_to_lc(h.document), h.score) for h in self._search(query, k, **kwargs)]

    def similarity_search_by_vector(
        self, embedding: list[float], k: int = 4, **kwargs: Any
    ) -> list[LCDocument]:
        return [_to_lc(h.document) for h in self.store.search_by_vector(embedding, k, **kwargs)]

    def max_marginal_relevance_search(
        self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5, **kwargs: Any
    ) -> list[LCDocument]:
        hits = self.store.mmr_search(query, k, fetch_k, lambda_mult, kwargs.get("filter"))
        return [_to_lc(h.document) for h in hits]

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        **kwargs: Any,
    ) -> list[LCDocument]:
        hits = self.store.mmr_search_by_vector(
            embedding, k, fetch_k, lambda_mult, kwargs.get("filter")
        )
        return [_to_lc(h.document) for h in hits]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        if self.store.metric == "cosine":
            return lambda score: (score + 1.0) / 2.0  # cosine [-1, 1] -> [0, 1]
        return self._max_inner_product_relevance_score_fn

    def _similarity_search_with_relevance_scores(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[LCDocument, float]]:
        if kwargs.get("hybrid"):  # RRF scores are ranks, not similarities
            raise ValueError("relevance scores are not defined for hybrid search")
        kwargs.pop("score_threshold", None)  # LangChain applies it to the relevance score
        kwargs["dense_only"] = True
        fn = self._select_relevance_score_fn()
        return [(doc, fn(s)) for doc, s in self.similarity_search_with_score(query, k, **kwargs)]

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[Any, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> CtxzipVectorStore:
        """A new FAISS-backed store embedding with `embedding` (`model_id=` names it);
        other kwargs go to `FaissStore` (index, metric, ...)."""
        from ctxzip.retrievers.store import FaissStore

        embedder = LangChainEmbedder(embedding, kwargs.pop("model_id", None))
        vs = cls(FaissStore(model=embedder, **kwargs))
        vs.add_texts(texts, metadatas, ids=ids)
        return vs

    def save(self, path: str | Path) -> Path | None:
        return self.store.save(path)

    @classmethod
    def load(
        cls,
        path: str | Path,
        embedding: Embeddings | None = None,
        model_id: str | None = None,
        **kwargs: Any,
    ) -> CtxzipVectorStore:
        """Open a saved store (no pickle involved); pass the `embedding` it was built with."""
        from ctxzip.retrievers.backends import open_store

        if embedding is not None:
            kwargs["model"] = LangChainEmbedder(embedding, model_id)
        return cls(open_store(path, **kwargs))

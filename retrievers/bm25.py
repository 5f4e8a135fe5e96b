"""BM25 (bm25s) over the store's texts, and reciprocal rank fusion with the vector results.

The BM25 index is derived data: it is rebuilt from the docstore's texts the first time
a hybrid search runs after a change (bm25s indexes about 100k short texts a second),
so nothing extra is saved and nothing can drift out of sync.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence

import numpy as np

_TOKEN = re.compile(r"(?u)\b\w\w+\b")


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


class BM25Index:
    def __init__(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        import bm25s

        self.ids = list(ids)
        self._pos = {doc_id: i for i, doc_id in enumerate(self.ids)}
        self._retriever = bm25s.BM25()
        self._vocab: dict[str, int] = {}
        if self.ids:
            corpus = bm25s.tokenize(list(texts), stopwords="en", show_progress=False)
            if corpus.vocab:  # texts of one-letter words only have no terms at all
                self._retriever.index(corpus, show_progress=False)
                self._vocab = corpus.vocab
        self._empty = not self._vocab

    def search(
        self, query: str, k: int, allowed: Collection[str] | None = None
    ) -> list[tuple[str, float]]:
        """Top `k` (id, score) with score > 0, optionally only among `allowed` ids."""
        if self._empty or k <= 0:
            return []
        terms = [t for t in _tokens(query) if t in self._vocab]
        if not terms:
            return []
        scores = np.asarray(self._retriever.get_scores(terms), dtype=np.float32)
        if allowed is not None:
            mask = np.zeros(len(scores), dtype=bool)
            positions = [self._pos[i] for i in allowed if i in self._pos]
            mask[positions] = True
            scores = np.where(mask, scores, 0.0)
        candidates = np.flatnonzero(scores > 0)
        if not len(candidates):
            return []
        top = candidates[np.argsort(-scores[candidates], kind="stable")[:k]]
        return [(self.ids[i], float(scores[i])) for i in top]


def rrf(
    rankings: Sequence[Sequence[str]], weights: Sequence[float], k: int = 60
) -> list[tuple[str, float]]:
    """Weighted reciprocal rank fusion: score(d) = sum_i w_i / (k + rank_i(d)), ranks from 1."""
    fused: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, doc_id in enumerate(ranking, start=1):
            fused[doc_id] = fused.get(doc_id, 0.0) + weight / (k + rank)
    return sorted(fused.items(), key=lambda item: -item[1])

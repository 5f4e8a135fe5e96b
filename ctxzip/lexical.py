"""Lexical scoring with no model: Okapi BM25 of a query against a handful of texts.

Used where the texts are a single request's own (the coarse pass of `extractive` ranks
its contexts; the static first stage adds a sentence-level score to the static cosine),
so the IDF is over those texts only: a query term found in few of them counts most.
The retrieval store's index over a whole corpus is `ctxzip.retrievers.bm25` (bm25s).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import regex

_TERM = regex.compile(r"[\p{L}\p{N}_]+")


def terms(text: str) -> list[str]:
    """Lower-cased word tokens (letters, digits, underscores)."""
    return [t.lower() for t in _TERM.findall(text)]


def bm25_scores(
    query: str, documents: Sequence[str], k1: float = 1.5, b: float = 0.75
) -> np.ndarray:
    """Okapi BM25 of `query` against each document (IDF over these documents only)."""
    docs = [Counter(terms(d)) for d in documents]
    lengths = np.array([sum(c.values()) for c in docs], dtype=np.float64)
    avg = float(lengths.mean()) if len(docs) and lengths.mean() > 0 else 1.0
    n = len(docs)
    scores = np.zeros(n)
    for term in set(terms(query)):
        tf = np.array([c.get(term, 0) for c in docs], dtype=np.float64)
        df = int((tf > 0).sum())
        if df == 0:
            continue
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        scores += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * lengths / avg))
    return scores

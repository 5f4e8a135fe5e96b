"""An example ctxzip plugin: drop English stop words, last ones first, until the budget fits.

It shows the whole contract of a third-party compressor: subclass `BaseCompressor`,
return the character spans to keep per context, and register the class under the
`ctxzip.compressors` entry-point group (see this folder's pyproject.toml).
"""

from __future__ import annotations

from ctxzip import BaseCompressor, Compressed, CompressionRequest, split_words
from ctxzip.spans import join_spans

STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "with",
        "from",
        "and",
        "or",
        "but",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "as",
        "so",
        "than",
        "then",
        "there",
        "here",
        "which",
        "who",
        "whom",
        "what",
        "when",
        "where",
        "why",
        "how",
    ]
)


class StopwordCompressor(BaseCompressor):
    name = "drop-stopwords"

    def _compress_requests(self, requests: list[CompressionRequest]) -> list[Compressed]:
        return [self._one(r) for r in requests]

    def _one(self, request: CompressionRequest) -> Compressed:
        words = [split_words(c) for c in request.contexts]
        total = self.count(request.contexts)
        budget = request.budget.tokens_for(total)
        candidates = [
            (i, j)
            for i, ws in enumerate(words)
            for j, w in enumerate(ws)
            if w.text.lower() in STOPWORDS
        ]
        dropped: set[tuple[int, int]] = set()
        while candidates and total > budget:
            # drop by estimate (a word costs about its own tokens), then re-count exactly
            while candidates and total > budget:
                i, j = candidates.pop()
                dropped.add((i, j))
                total -= self.tokenizer.count(" " + words[i][j].text)
            kept = _kept(words, dropped)
            total = self.count(
                [join_spans(c, k) for c, k in zip(request.contexts, kept, strict=True)]
            )
        return Compressed(kept=_kept(words, dropped))


def _kept(words: list, dropped: set[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    return [
        [w.span for j, w in enumerate(ws) if (i, j) not in dropped] for i, ws in enumerate(words)
    ]

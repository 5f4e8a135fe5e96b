"""An example ctxzip plugin: drop English stop words, last words first, until the budget fits.

It shows the whole contract of a third-party compressor: subclass `BaseCompressor`,
return the spans to keep per context, and register under `ctxzip.compressors`.
"""

from __future__ import annotations

from ctxzip import BaseCompressor, Compressed, CompressionRequest, split_words

STOPWORDS = frozenset(
    """a an the of to in on at by for with from and or but is are was were be been being it its
    this that these those as so than then there here which who whom what when where why how""".split()
)


class StopwordCompressor(BaseCompressor):
    name = "drop-stopwords"

    def _compress_requests(self, requests: list[CompressionRequest]) -> list[Compressed]:
        return [self._one(r) for r in requests]

    def _one(self, request: CompressionRequest) -> Compressed:
        words = [split_words(c) for c in request.contexts]
        budget = request.budget.tokens_for(self.count(request.contexts))
        dropped: set[tuple[int, int]] = set()
        candidates = [
            (i, j)
            for i, ws in enumerate(words)
            for j, w in enumerate(ws)
            if w.text.lower() in STOPWORDS
        ]
        kept = self._kept(words, dropped)
        # Drop from the end backwards: early text usually matters most.
        while candidates and self._size(request.contexts, kept) > budget:
            dropped.add(candidates.pop())
            kept = self._kept(words, dropped)
        return Compressed(kept=kept)

    @staticmethod
    def _kept(words: list, dropped: set[tuple[int, int]]) -> list[list[tuple[int, int]]]:
        return [
            [w.span for j, w in enumerate(ws) if (i, j) not in dropped] for i, ws in enumerate(words)
        ]

    def _size(self, contexts: tuple[str, ...], kept: list[list[tuple[int, int]]]) -> int:
        from ctxzip.spans import join_spans

        return self.count([join_spans(c, k) for c, k in zip(contexts, kept, strict=True)])

"""`coarse-to-fine`: sentences first, then words (LongLLMLingua's shape).

Stage 1 (`extractive`) keeps the sentences that best answer the query, across all
contexts, up to `expand` (2.0) x the budget; stage 2 (`token-classification`) drops
whole words of what is left down to the budget. Each stage is one batched model pass
over every request of a `compress_batch` call, and stage 2 reads only what stage 1
kept. The kept spans are reported in the original contexts' offsets, so every kept word
is a byte-for-byte copy of an input word.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from typing import Any

from ctxzip.budget import Budget
from ctxzip.compressor import BaseCompressor, Compressed
from ctxzip.compressors.extractive import ExtractiveCompressor
from ctxzip.compressors.token_classification.compressor import TokenClassificationCompressor
from ctxzip.errors import InputError
from ctxzip.result import CompressionRequest, CompressionResult, Span
from ctxzip.spans import joined_with_offsets, merge_spans
from ctxzip.tokens import DEFAULT_TOKENIZER


def joined_pieces(text: str, spans: list[Span]) -> list[tuple[int, int, int]]:
    """Where each kept span of `text` lands in ``join_spans(text, spans)``:
    (position in the joined text, original start, original end)."""
    merged = merge_spans(spans)
    _, at = joined_with_offsets(text, merged)
    return [(a, s, e) for a, (s, e) in zip(at, merged, strict=True)]


def map_back(pieces: list[tuple[int, int, int]], spans: list[Span]) -> list[Span]:
    """Spans of the joined text, as spans of the original text (cut at piece edges)."""
    starts = [p[0] for p in pieces]
    out: list[Span] = []
    for a, b in spans:
        i = max(bisect_right(starts, a) - 1, 0)
        while i < len(pieces) and pieces[i][0] < b:
            at, start, end = pieces[i]
            lo, hi = max(a, at), min(b, at + end - start)
            if hi > lo:
                out.append((start + lo - at, start + hi - at))
            i += 1
    return merge_spans(out)


def whole_words(text: str, spans: list[Span]) -> list[Span]:
    """`spans` shrunk to whole whitespace words: stage 1's sentence splitter may cut inside
    one (``"1"..."9"``), and a piece of a word is never kept on its own."""
    out: list[Span] = []
    for a, b in spans:
        while a < b and a > 0 and not text[a - 1].isspace():
            a += 1
        while b > a and b < len(text) and not text[b].isspace():
            b -= 1
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if b > a:
            out.append((a, b))
    return out


class CoarseToFineCompressor(BaseCompressor):
    """Extractive sentence selection to `expand` x the budget, then word dropping to it.

    Options: `expand` (how much stage 1 keeps, as a multiple of the budget),
    `sentence_weight` (how much stage 1's sentence score adds to each word's), `extractive`
    and `token_classification` (keyword options for each stage's compressor);
    `question_aware` (default on) lets stage 2 favour words of query-relevant sentences.
    """

    name = "coarse-to-fine"

    def __init__(
        self,
        *,
        tokenizer: str = DEFAULT_TOKENIZER,
        expand: float = 2.0,
        question_aware: bool = True,
        sentence_weight: float = 2.0,
        whole: float = 0.5,
        extractive: dict[str, Any] | None = None,
        token_classification: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(tokenizer=tokenizer)
        if expand < 1.0:
            raise InputError("expand must be >= 1")
        self.expand = float(expand)
        if not 0.0 <= whole <= 1.0:
            raise InputError("whole must be in [0, 1]")
        self.sentence_weight = float(sentence_weight)
        self.whole = float(whole)
        self.coarse = ExtractiveCompressor(tokenizer=tokenizer, **(extractive or {}))
        fine = {"question_aware": question_aware, **(token_classification or {})}
        self.fine = TokenClassificationCompressor(tokenizer=tokenizer, **fine)

    def _compress_requests(self, requests: list[CompressionRequest]) -> list[Compressed]:
        budgets = [r.budget.tokens_for(self.count(r.contexts)) for r in requests]
        wide = [
            CompressionRequest(
                r.contexts, r.query, Budget(target_tokens=math.ceil(b * self.expand))
            )
            for r, b in zip(requests, budgets, strict=True)
        ]
        first = self.coarse.compress_batch(wide)
        second = self.fine.compress_with_priors(
            [
                CompressionRequest(tuple(f.texts), r.query, Budget(target_tokens=max(b, 1)))
                for r, f, b in zip(requests, first, budgets, strict=True)
            ],
            [self._priors(r, f, b) for r, f, b in zip(requests, first, budgets, strict=True)],
        )
        out = []
        for request, f, s in zip(requests, first, second, strict=True):
            kept = []
            for text, coarse, fine in zip(request.contexts, f.kept, s.kept, strict=True):
                spans = map_back(joined_pieces(text, list(coarse)), list(fine))
                kept.append(whole_words(text, spans))
            extra = {
                "coarse_tokens": f.tokens_out,
                "coarse_rate": round(f.rate, 4),
                "coarse_reason": f.reason,
            }
            out.append(Compressed(kept=kept, reason=f.reason or s.reason, extra=extra))
        return out

    def _priors(
        self, request: CompressionRequest, first: CompressionResult, budget: int
    ) -> list[list[tuple[int, int, float]]]:
        """Per stage-1 text, each kept sentence's span there with its bonus.

        Stage 1's best sentences, taken in rank order while they fit `whole` x the budget,
        get an infinite bonus: the word stage keeps them whole (function words and all) and
        spends the rest of the budget on the others. Those get `sentence_weight` x their
        relevance (stage 1's score, scaled to 0..1 over the request), so words of better
        sentences go last (LongLLMLingua's dynamic compression ratio)."""
        scores = first.extra.get("span_scores") or [[] for _ in first.kept]
        out: list[list[tuple[int, int, float]]] = [[] for _ in first.kept]
        flat = [v for per in scores for v in per]
        if not flat:
            return out
        lo, hi = min(flat), max(flat)
        sentences = []  # (score, text index, start and end in stage 1's text, sentence)
        for c, (text, spans, values) in enumerate(
            zip(request.contexts, first.kept, scores, strict=True)
        ):
            pieces = joined_pieces(text, list(spans))
            starts = [s for _, s, _ in pieces]
            for (a, b), v in zip(spans, values, strict=True):
                at, s, _ = pieces[bisect_right(starts, a) - 1]
                sentences.append((v, c, at + a - s, at + b - s, text[a:b]))
        room = self.whole * budget
        for v, c, a, b, text in sorted(sentences, key=lambda x: -x[0]):
            room -= self.tokenizer.count(text) + 1  # + a separator
            if room >= 0:
                out[c].append((a, b, math.inf))
            elif self.sentence_weight:
                scaled = (v - lo) / (hi - lo) if hi > lo else 1.0
                out[c].append((a, b, self.sentence_weight * scaled))
        return [sorted(per) for per in out]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(expand={self.expand}, tokenizer={self.tokenizer_name!r})"

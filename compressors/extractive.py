"""`extractive`: keep the sentences that best answer the query (RECOMP-style).

Contexts are cut into sentences (`ctxzip.units`), each scored against the query by
a bi-encoder (optionally re-scored by a cross-encoder), and the best sentences are
taken across *all* contexts until the reader's token budget is full; kept sentences
stay in their original order. With no query, sentences closest to their own
document's centroid win. When even the best sentence is a poor match, the result
holds no context at all and says why (selective augmentation).

Speed comes from doing less model work for the same answer: an optional coarse
pass (BM25, no model) drops whole low-ranked contexts first, one length-sorted
encoder pass covers every sentence of every request in a `compress_batch`, an LRU
cache skips sentences already seen, and on CPU the encoder can run int8.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ctxzip.compressor import BaseCompressor, Compressed
from ctxzip.encoder import DEFAULT_ENCODER, get_encoder
from ctxzip.lexical import bm25_scores
from ctxzip.models import load_cross_encoder
from ctxzip.protect import NO_PROTECT, Protect
from ctxzip.result import CompressionRequest, Span
from ctxzip.spans import join_spans
from ctxzip.static_encoder import FirstStage, centrality
from ctxzip.tokens import DEFAULT_TOKENIZER
from ctxzip.units import Unit, split_sentences, split_words

DEFAULT_MODEL = DEFAULT_ENCODER
DEFAULT_THRESHOLD = 0.35
"""Best-sentence cosine below which no context is sent (all-MiniLM-L6-v2).

Calibrated with `benchmarks/bench_extractive.py --calibrate --limit 24 --docs 4`
(docs/extractive.md): over Python-reference questions the best sentence scored
0.63-0.93 with the answer document present and 0.37-0.79 without it; over 40
unrelated questions against the same documents, 0.06-0.28. 0.35 skips every unrelated
query there and keeps every related one, with margin on both sides. Other encoders
need their own value: `bench_extractive.py --calibrate --model ID` measures it.
"""

# --------------------------------------------------------------------------- compressor


@dataclass
class _Piece:
    """A scorable unit of one context: a sentence, or a window of a long one."""

    ctx: int
    start: int
    end: int
    text: str
    cost: int  # reader tokens
    protected: bool
    score: float = 0.0


class ExtractiveCompressor(BaseCompressor):
    """Query-aware sentence selection under a global token budget.

    Options: `model` (any sentence-transformers id), `cross_encoder` (any CrossEncoder
    id; re-scores the best `rerank_top` sentences), `threshold` (selective
    augmentation: best bi-encoder cosine below it sends no context; None disables),
    `mmr` (0 disables; weight of the redundancy penalty, near-duplicates above
    `duplicate_similarity` are dropped), `coarse` (keep only the best-ranked contexts
    holding `coarse` x the budget before the sentence pass; None disables),
    `quantize` ("none", "int8" on CPU, "auto"), `cache_size` (LRU entries),
    `max_unit_tokens` (longer sentences are cut into windows), `protect`.
    `first_stage="static"`: static embeddings distilled from MiniLM, fused with a token
    match and BM25 (`ctxzip.static_encoder.Fusion`), score every sentence first; only
    the best, `survivors` x the budget in tokens, go on to the encoder, and only while
    that fits `second_stage_s` seconds per batch (measured); the rest are selected on
    the static scores alone.
    """

    name = "extractive"

    def __init__(
        self,
        *,
        model: str = DEFAULT_MODEL,
        cross_encoder: str | None = None,
        rerank_top: int = 32,
        threshold: float | None = DEFAULT_THRESHOLD,
        mmr: float = 0.0,
        duplicate_similarity: float = 0.95,
        coarse: float | None = None,
        device: str = "auto",
        quantize: str = "none",
        batch_size: int = 64,
        cache_size: int = 100_000,
        max_unit_tokens: int = 128,
        protect: Protect | None = None,
        progress: bool | None = None,
        tokenizer: str = DEFAULT_TOKENIZER,
        first_stage: str | None = None,
        survivors: float = 2.0,
        second_stage_s: float | None = 0.3,
    ) -> None:
        super().__init__(tokenizer=tokenizer)
        if not 0.0 <= mmr <= 1.0:
            raise ValueError(f"mmr must be in [0, 1], got {mmr}")
        if coarse is not None and coarse < 1.0:
            raise ValueError(f"coarse must be >= 1 (a multiple of the budget), got {coarse}")
        if max_unit_tokens < 8:
            raise ValueError(f"max_unit_tokens must be >= 8, got {max_unit_tokens}")
        self.model_id = model
        self.cross_encoder_id = cross_encoder
        self.rerank_top = rerank_top
        self.threshold = threshold
        self.mmr = mmr
        self.duplicate_similarity = duplicate_similarity
        self.coarse = coarse
        self.device = device
        self.max_unit_tokens = max_unit_tokens
        self.protect = protect or NO_PROTECT
        self.progress = progress
        self.encoder = get_encoder(
            model, device=device, quantize=quantize, batch_size=batch_size, cache_size=cache_size
        )
        self.stage = FirstStage.make(first_stage, survivors, second_stage_s)

    # -- the pipeline -------------------------------------------------------

    def _compress_requests(self, requests: list[CompressionRequest]) -> list[Compressed]:
        plans = [self._plan(r) for r in requests]
        if self.stage is not None:
            return self._staged(requests, plans)
        # one encoder pass over every query and piece of every request
        texts: list[str] = []
        for r, (pieces, _, _) in zip(requests, plans, strict=True):
            if r.query is not None:
                texts.append(r.query)
            texts += [p.text for p in pieces]
        progress = self.progress if self.progress is not None else len(texts) > 5000
        vectors, cached = self.encoder.encode_counted(texts, progress=progress)
        out: list[Compressed] = []
        row = 0
        for r, (pieces, dropped, budget) in zip(requests, plans, strict=True):
            q = None
            if r.query is not None:
                q = vectors[row]
                row += 1
            emb = vectors[row : row + len(pieces)]
            row += len(pieces)
            result = self._select(r, pieces, emb, q, dropped, budget)
            result.extra["cache_hits_in_batch"] = cached
            out.append(result)
        return out

    def _staged(self, requests: list[CompressionRequest],
                plans: list[tuple[list[_Piece], list[int], int]]) -> list[Compressed]:  # fmt: skip
        """The static first stage, then the encoder on survivors where time allows."""
        assert self.stage is not None
        out: list[Compressed] = []
        narrowed = self.stage.narrow(requests, plans, self.encoder)
        for r, (pieces, dropped, budget), (kept, emb, q, static, full) in zip(
            requests, plans, narrowed, strict=True
        ):
            live = [pieces[i] for i in kept]
            # static scores are not calibrated for selective augmentation
            result = self._select(r, live, emb, q, dropped, budget, calibrated=full,
                                  scores=None if full else static)  # fmt: skip
            result.extra["first_stage"] = {"units": len(pieces), "survivors": len(live),
                                           "encoder": full}  # fmt: skip
            out.append(result)
        return out

    def _plan(self, request: CompressionRequest) -> tuple[list[_Piece], list[int], int]:
        """Pieces to score, contexts the coarse pass dropped, and the token budget."""
        tok = self.tokenizer
        sizes = [tok.count(c) if c else 0 for c in request.contexts]  # as the base counts
        budget = request.budget.tokens_for(sum(sizes))
        keep = set(range(len(request.contexts)))
        dropped: list[int] = []
        live = [i for i, c in enumerate(request.contexts) if c.strip()]
        scores = np.zeros(0)
        coarse = self.coarse
        if coarse is not None and request.query and len(live) > 1:
            scores = bm25_scores(request.query, [request.contexts[i] for i in live])
        # scores stay empty without a coarse pass; all zero means no shared term to rank by
        if coarse is not None and scores.size and scores.max() > 0:
            allowance = coarse * budget
            held = 0
            keep = set()
            for rank, j in enumerate(np.argsort(-scores, kind="stable")):
                i = live[int(j)]
                if rank > 0 and held >= allowance:
                    dropped.append(i)
                    continue
                keep.add(i)
                held += sizes[i]
            dropped.sort()
        pieces: list[_Piece] = []
        for i, context in enumerate(request.contexts):
            if i in keep and request.contexts[i].strip():
                pieces += self._pieces(i, context)
        return pieces, dropped, budget

    def _pieces(self, ctx: int, text: str) -> list[_Piece]:
        tok = self.tokenizer
        out: list[_Piece] = []
        for unit in split_sentences(text, self.protect):
            cost = tok.count(unit.text)
            if cost <= self.max_unit_tokens or unit.protected or unit.kind != "text":
                out.append(_Piece(ctx, unit.start, unit.end, unit.text, cost, unit.protected))
                continue
            for start, end in _windows(text, unit, self.max_unit_tokens, tok.count):
                piece = text[start:end]
                out.append(_Piece(ctx, start, end, piece, tok.count(piece), False))
        return out

    def _select(
        self,
        request: CompressionRequest,
        pieces: list[_Piece],
        emb: np.ndarray,
        query: np.ndarray | None,
        dropped: list[int],
        budget: int,
        calibrated: bool = True,
        scores: np.ndarray | None = None,
    ) -> Compressed:
        """Choose pieces to the budget; `scores` (one per piece) replace the query cosine
        as the ranking (the static first stage's fused scores)."""
        n_ctx = len(request.contexts)
        extra: dict[str, Any] = {"units": len(pieces), "coarse_dropped": dropped}
        if not pieces:
            return Compressed(kept=[[] for _ in range(n_ctx)], extra=extra)
        if query is not None:
            sims = emb @ query
            best = float(sims.max())
            extra["best_score"] = round(best, 4)
            if self.threshold is not None and calibrated and best < self.threshold:
                skip_reason = (
                    f"selective augmentation: best sentence similarity {best:.3f} is below "
                    f"threshold {self.threshold:g}; no context sent"
                )
                extra["skipped"] = True
                return Compressed(kept=[[] for _ in range(n_ctx)], reason=skip_reason, extra=extra)
            scores = sims.astype(np.float64) if scores is None else scores
            if self.cross_encoder_id and request.query:
                scores = self._rerank(request.query, pieces, scores, extra)
        else:
            scores = _centrality(pieces, emb)
        for p, s in zip(pieces, scores, strict=True):
            p.score = float(s)
        chosen, excluded = self._fill(pieces, emb, budget)
        kept, texts = self._fit(request, pieces, chosen, excluded, budget)
        extra["selected"] = sum(len(k) for k in kept)
        score_of = {(p.ctx, p.start, p.end): p.score for p in pieces}
        extra["span_scores"] = [  # per context, each kept span's score (a later stage's prior)
            [score_of.get((c, s, e), 0.0) for s, e in spans] for c, spans in enumerate(kept)
        ]
        reason: str | None = None
        if budget == 0:
            reason = "budget too small for any sentence"
        elif not any(kept):
            reason = "no sentence fits the budget"
        return Compressed(kept=kept, texts=texts, reason=reason, extra=extra)

    def _rerank(
        self, query: str, pieces: list[_Piece], scores: np.ndarray, extra: dict[str, Any]
    ) -> np.ndarray:
        """Cross-encoder scores for the best candidates; they rank above the rest."""
        assert self.cross_encoder_id is not None
        top = np.argsort(-scores, kind="stable")[: self.rerank_top]
        ce = load_cross_encoder(self.cross_encoder_id, self.device)
        ce_scores = np.asarray(
            ce.predict([(query, pieces[int(i)].text) for i in top], show_progress_bar=False),
            dtype=np.float64,
        ).reshape(len(top), -1)[:, -1]
        out = scores - scores.max() - 1.0  # everything not re-ranked sorts below
        # squash logits to (0, 1) then lift above the bi-encoder-only candidates
        out[top] = 1.0 + 1.0 / (1.0 + np.exp(-ce_scores))
        extra["reranked"] = len(top)
        return out

    def _fill(
        self, pieces: list[_Piece], emb: np.ndarray, budget: int
    ) -> tuple[list[int], set[int]]:
        """Greedy global fill: protected pieces first, then by score (MMR-adjusted).

        Returns the chosen pieces and the near-duplicates MMR excluded for good.
        """
        chosen: list[int] = []
        used: set[int] = set()  # contexts with a piece already (a separator is due)
        spent = 0

        def cost(i: int) -> int:
            return pieces[i].cost + (1 if pieces[i].ctx in used else 0)

        def take(i: int) -> None:
            nonlocal spent
            spent += cost(i)
            used.add(pieces[i].ctx)
            chosen.append(i)

        for i, p in enumerate(pieces):
            if p.protected and spent + cost(i) <= budget:
                take(i)
        rest = [i for i, p in enumerate(pieces) if not p.protected]
        excluded: set[int] = set()
        if not self.mmr:
            for i in sorted(rest, key=lambda i: -pieces[i].score):
                if spent + cost(i) <= budget:
                    take(i)
            return chosen, excluded
        # MMR: relevance minus a penalty for similarity to what is already chosen
        relevance = np.array([pieces[i].score for i in rest])
        vecs = emb[rest]
        redundancy = np.zeros(len(rest))
        for i in chosen:
            redundancy = np.maximum(redundancy, vecs @ emb[i])
        alive = np.ones(len(rest), dtype=bool)
        while alive.any():
            adjusted = np.where(alive, relevance - self.mmr * redundancy, -np.inf)
            j = int(np.argmax(adjusted))
            alive[j] = False
            i = rest[j]
            if redundancy[j] >= self.duplicate_similarity:
                excluded.add(i)
            elif spent + cost(i) <= budget:
                take(i)
                redundancy = np.maximum(redundancy, vecs @ vecs[j])
        return chosen, excluded

    def _fit(
        self,
        request: CompressionRequest,
        pieces: list[_Piece],
        chosen: list[int],
        excluded: set[int],
        budget: int,
    ) -> tuple[list[list[Span]], list[str]]:
        """Spans per context in original order, exact to the budget.

        Token estimates are per piece; the joined text is counted exactly, trimmed
        (weakest piece first) if it overshoots, and topped up with any piece that
        still fits exactly, so no fitting sentence is left out while budget remains.
        """
        contexts = request.contexts
        selected: list[set[int]] = [set() for _ in contexts]
        for i in chosen:
            selected[pieces[i].ctx].add(i)

        def render(c: int) -> tuple[list[Span], str]:
            spans = [(pieces[i].start, pieces[i].end) for i in sorted(selected[c])]
            spans.sort()
            return spans, join_spans(contexts[c], spans)

        tok = self.tokenizer
        rendered = [render(c) for c in range(len(contexts))]
        counts = [tok.count(t) if t else 0 for _, t in rendered]
        while sum(counts) > budget and any(selected):
            weakest = min(
                (i for s in selected for i in s),
                key=lambda i: (pieces[i].protected, pieces[i].score),  # protected last
            )
            c = pieces[weakest].ctx
            selected[c].discard(weakest)
            rendered[c] = render(c)
            counts[c] = tok.count(rendered[c][1]) if rendered[c][1] else 0
        taken = {i for s in selected for i in s}
        left = budget - sum(counts)
        for i in sorted(range(len(pieces)), key=lambda i: -pieces[i].score):
            if left <= 0:
                break
            if i in taken or i in excluded or pieces[i].cost > left:
                continue
            c = pieces[i].ctx
            selected[c].add(i)
            trial = render(c)
            n = tok.count(trial[1])
            if n - counts[c] <= left:
                left -= n - counts[c]
                rendered[c], counts[c] = trial, n
                taken.add(i)
            else:
                selected[c].discard(i)
        return [r[0] for r in rendered], [r[1] for r in rendered]

    def __repr__(self) -> str:
        return (
            f"ExtractiveCompressor(model={self.model_id!r}, "
            f"cross_encoder={self.cross_encoder_id!r}, "
            f"threshold={self.threshold}, mmr={self.mmr}, coarse={self.coarse}, "
            f"quantize={self.encoder.quantize!r}, tokenizer={self.tokenizer_name!r})"
        )


def _centrality(pieces: list[_Piece], emb: np.ndarray) -> np.ndarray:
    """Task-agnostic score: cosine of each piece to its own context's centroid."""
    return centrality([p.ctx for p in pieces], emb)


def _windows(text: str, unit: Unit, limit: int, count: Any) -> list[Span]:
    """Cut an over-long sentence into word-aligned windows of at most `limit` tokens."""
    words = split_words(text[unit.start : unit.end])
    spans: list[Span] = []
    start: int | None = None
    end = 0
    size = 0
    for w in words:
        c = count(w.text) + 1
        if start is not None and size + c > limit:
            spans.append((unit.start + start, unit.start + end))
            start, size = None, 0
        if start is None:
            start = w.start
        end = w.end
        size += c
    if start is not None:
        spans.append((unit.start + start, unit.start + end))
    # a window's exact count can exceed the estimate only slightly; that is fine for
    # scoring, and the budget is checked on the exact joined text anyway
    return spans

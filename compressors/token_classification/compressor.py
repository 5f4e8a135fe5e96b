"""`token-classification`: LLMLingua-2-style keep/drop per word, with one global budget.

Any Hugging Face token-classification checkpoint whose label 1 means "keep" works
(LLMLingua-2's convention), e.g. ``microsoft/llmlingua-2-xlm-roberta-large-meetingbank``.
The default is the project's own small model: the packaged all-MiniLM-L6-v2 encoder
with a keep/drop head trained here (see `ctxzip.compressors.token_classification.train`),
loaded by `ctxzip.compressors.token_classification.model`.

How a call runs:

1. Every context of every request is tokenised once (offsets kept, special-token text
   in user content treated as text) and split into whitespace-delimited words, each
   kept or dropped whole (`ctxzip.compressors.token_classification.words`); each
   word's cost is counted in the reader's tokenizer (`...token_classification.costs`).
2. Contexts are cut at sentence boundaries into chunks of the model's window; all
   chunks of all requests go through the model in padded, length-sorted batches.
3. A word's score is the mean P(keep) of the sub-tokens inside it. Forced words (force strings,
   digits, protected spans) always stay; repeated separators are dropped; query words
   can get a bonus; optionally whole low-value contexts are dropped first.
4. One threshold per request, over all its chunks and contexts, is chosen so the kept
   text meets the budget counted in the reader's tokenizer (checked on the real joined
   text, so the achieved rate is within about 1% below the target). `per_chunk=True`
   reproduces LLMLingua-2's per-chunk percentile rule instead, for comparison.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ctxzip.compressor import BaseCompressor, Compressed
from ctxzip.compressors.token_classification.costs import piece_costs, word_costs
from ctxzip.compressors.token_classification.model import (
    BACKENDS,
    DEFAULT_MODEL,
    LoadedModel,
    load_token_classifier,
)
from ctxzip.compressors.token_classification.words import (
    STOPWORDS,
    Words,
    codepoints,
    repeated_separators,
    space_mask,
    vocab_pieces,
    whitespace_words,
    word_rule,
    word_scores,
)
from ctxzip.errors import InputError
from ctxzip.protect import Protect
from ctxzip.result import CompressionRequest, CompressionResult, Span
from ctxzip.spans import join_spans, merge_spans, overlapping
from ctxzip.tokens import DEFAULT_TOKENIZER
from ctxzip.units import split_sentences

# ------------------------------------------------------------------ per context


@dataclass
class _Context:
    text: str
    request: int
    index: int
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    words: Words | None = None
    cost: np.ndarray | None = None
    protected: list[Span] = field(default_factory=list)
    forced: np.ndarray | None = None  # bool per word
    banned: np.ndarray | None = None  # bool per word
    probs: np.ndarray | None = None  # P(keep) per token
    pooled: np.ndarray | None = None  # mean hidden state (context-level pass)
    chunks: list[tuple[int, int]] = field(default_factory=list)
    droppable: bool = True
    prior: list[tuple[int, int, float]] = field(default_factory=list)  # (start, end, bonus)


class TokenClassificationCompressor(BaseCompressor):
    """Keeps the words a token classifier scores highest, to fit the budget globally.

    Options: `model` (any HF token classifier, label 1 = keep), `device`, `dtype`,
    `fast` (int8 on CPU), `backend` ("auto": ONNX Runtime on CPU when installed, "onnx",
    "torch"), `batch_size`, `max_length`, `token_to_word` ("mean"|"first"),
    `per_chunk` (LLMLingua-2's local percentile rule), `force` (strings always kept),
    `keep_digits`, `protect` (a `Protect`; structure such as code, JSON and URLs is kept
    by default), `drop_consecutive` (repeated separators), `question_aware` (on by
    default: with a query, words of the sentences that repeat its words score higher;
    no effect without one) and `query_weight`, `context_level` and `context_expand`
    (coarse-to-fine).
    """

    name = "token-classification"

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        tokenizer: str = DEFAULT_TOKENIZER,
        device: str = "auto",
        dtype: str = "auto",
        fast: bool = False,
        backend: str = "auto",
        batch_size: int = 32,
        max_length: int | None = None,
        token_to_word: str = "mean",
        per_chunk: bool = False,
        force: Sequence[str] = (),
        keep_digits: bool = False,
        protect: Protect | None = None,
        drop_consecutive: bool = False,
        question_aware: bool = True,
        query_weight: float = 0.5,
        context_level: bool = False,
        context_expand: float = 2.0,
    ) -> None:
        super().__init__(tokenizer=tokenizer)
        if token_to_word not in ("mean", "max", "first"):
            raise InputError("token_to_word must be 'mean', 'max' or 'first'")
        if batch_size < 1:
            raise InputError("batch_size must be >= 1")
        if backend not in BACKENDS:
            raise InputError(f"backend must be one of {', '.join(BACKENDS)}")
        if max_length is not None and max_length < 8:
            raise InputError("max_length must be >= 8")
        if context_expand < 1.0:
            raise InputError("context_expand must be >= 1")
        self.model_id = model
        self.device = device
        self.dtype = dtype
        self.fast = fast
        self.backend = backend
        self.batch_size = batch_size
        self.max_length = max_length
        self.token_to_word = token_to_word
        self.per_chunk = per_chunk
        self.force = tuple(f for f in force if f)
        self.keep_digits = keep_digits
        self.protect = protect if protect is not None else Protect(structure=True)
        self.drop_consecutive = drop_consecutive
        self.question_aware = question_aware
        self.query_weight = float(query_weight)
        self.context_level = context_level
        self.context_expand = float(context_expand)
        self._force_protect = Protect(force=self.force) if self.force else None

    @property
    def loaded(self) -> LoadedModel:
        return load_token_classifier(
            self.model_id, self.device, self.dtype, self.fast, self.backend
        )

    # -------------------------------------------------------------- main path

    def compress_with_priors(
        self,
        requests: Sequence[CompressionRequest],
        priors: Sequence[Sequence[Sequence[tuple[int, int, float]]]],
    ) -> list[CompressionResult]:
        """`compress_batch`, with each word's score raised by the bonus of the span it lies
        in (``priors[request][context]`` = (start, end, bonus) character spans): how a
        second stage (`coarse-to-fine`) uses what the first stage knew about each sentence."""
        requests = list(requests)
        if not requests:
            return []
        started = time.perf_counter()
        outcomes = self._compress_requests(requests, priors)
        seconds = (time.perf_counter() - started) / len(requests)
        return [self._account(r, o, seconds) for r, o in zip(requests, outcomes, strict=True)]

    def _compress_requests(
        self,
        requests: list[CompressionRequest],
        priors: Sequence[Sequence[Sequence[tuple[int, int, float]]]] | None = None,
    ) -> list[Compressed]:
        lm = self.loaded
        reader = self.tokenizer
        contexts: list[list[_Context]] = []
        budgets: list[int] = []
        for r, request in enumerate(requests):
            ctxs = [_Context(text, r, i) for i, text in enumerate(request.contexts)]
            if priors is not None:
                for ctx, prior in zip(ctxs, priors[r], strict=True):
                    ctx.prior = list(prior)
            contexts.append(ctxs)
            self._prepare(ctxs, lm, reader)
            total = sum(int(c.cost.sum()) for c in ctxs if c.cost is not None)
            budgets.append(request.budget.tokens_for(total))
        work = [
            c
            for ctxs, b in zip(contexts, budgets, strict=True)
            if b < sum(int(x.cost.sum()) for x in ctxs if x.cost is not None)
            for c in ctxs
            if c.ids.size
        ]
        need_pooled = self.context_level
        queries = {
            r: q
            for r, q in enumerate(x.query for x in requests)
            if q and need_pooled  # the query's own forward is needed only for pooling
        }
        query_pooled = self._run_model(work, lm, need_pooled, queries)
        out: list[Compressed] = []
        for r, request in enumerate(requests):
            out.append(self._select(request, contexts[r], budgets[r], lm, query_pooled.get(r)))
        return out

    def _prepare(self, ctxs: list[_Context], lm: LoadedModel, reader: Any) -> None:
        rule = word_rule(lm.tokenizer)
        texts = [c.text for c in ctxs]
        encodings = lm.backend.encode_batch(texts, add_special_tokens=False) if texts else []
        for ctx, enc in zip(ctxs, encodings, strict=True):
            cps = codepoints(ctx.text)
            space = space_mask(cps)
            ctx.ids = np.asarray(enc.ids, dtype=np.int64)
            offsets = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
            keep_tok = ~rule.special[ctx.ids] if ctx.ids.size else np.zeros(0, dtype=bool)
            ctx.ids, offsets = ctx.ids[keep_tok], offsets[keep_tok]
            ctx.words = whitespace_words(offsets, space)
            words = ctx.words
            ctx.cost = word_costs(reader, ctx.text, cps, words)
            ctx.protected = self.protect.spans(ctx.text) if self.protect else []
            ctx.droppable = not (self.protect.patterns or self.protect.tags) or not ctx.protected
            force_spans = list(ctx.protected)
            if self._force_protect is not None:
                force_spans = merge_spans(force_spans + self._force_protect.spans(ctx.text))
            ctx.protected = force_spans
            ctx.forced = overlapping(words.start, words.end, force_spans)
            if self.keep_digits and len(words):
                digit = np.concatenate(([0], np.cumsum((cps >= 48) & (cps <= 57))))
                ctx.forced |= digit[words.end] - digit[words.start] > 0
            ctx.banned = np.zeros(len(words), dtype=bool)
            if self.drop_consecutive and len(words) > 1:
                ctx.banned = repeated_separators(ctx.text, words) & ~ctx.forced
            ctx.chunks = self._chunk(ctx, lm, space)

    def _chunk(self, ctx: _Context, lm: LoadedModel, space: np.ndarray) -> list[tuple[int, int]]:
        """Token ranges of at most the model window, cut at sentence ends, else word starts."""
        n = int(ctx.ids.size)
        if n == 0 or ctx.words is None:
            return []
        limit = (self.max_length or lm.max_length) - len(lm.prefix) - len(lm.suffix)
        if n <= limit:
            return [(0, n)]
        if self.per_chunk:
            return _llmlingua_chunks(ctx.ids, vocab_pieces(lm.tokenizer).chunk_end, limit)
        first_tokens = ctx.words.first_token
        ends = np.asarray([u.end for u in split_sentences(ctx.text)], dtype=np.int64)
        boundary = np.unique(
            first_tokens[np.minimum(np.searchsorted(ctx.words.start, ends), len(ctx.words) - 1)]
        )
        chunks: list[tuple[int, int]] = []
        a = 0
        while a < n:
            if n - a <= limit:
                chunks.append((a, n))
                break
            hi = a + limit
            j = np.searchsorted(boundary, hi, side="right") - 1
            b = int(boundary[j]) if j >= 0 and boundary[j] > a else 0
            if b <= a:
                k = np.searchsorted(first_tokens, hi, side="right") - 1
                b = int(first_tokens[k]) if k >= 0 and first_tokens[k] > a else hi
            chunks.append((a, b))
            a = b
        return chunks

    def _run_model(
        self, work: list[_Context], lm: LoadedModel, pooled: bool, queries: dict[int, str]
    ) -> dict[int, np.ndarray]:
        """P(keep) for every token of `work`; mean hidden states when asked."""
        import torch

        items: list[tuple[Any, int, int, np.ndarray]] = []  # (owner, a, b, ids)
        for ctx in work:
            ctx.probs = np.zeros(ctx.ids.size, dtype=np.float32)
            if pooled:
                ctx.pooled = None
            for a, b in ctx.chunks:
                items.append((ctx, a, b, ctx.ids[a:b]))
        limit = (self.max_length or lm.max_length) - len(lm.prefix) - len(lm.suffix)
        for r, q in queries.items():
            qids = np.asarray(
                lm.backend.encode(q, add_special_tokens=False).ids[:limit], dtype=np.int64
            )
            if qids.size:
                items.append((("query", r), 0, int(qids.size), qids))
        if not items:
            return {}
        order = sorted(range(len(items)), key=lambda i: -items[i][3].size)
        sums: dict[Any, Any] = {}
        prefix = np.asarray(lm.prefix, dtype=np.int64)
        suffix = np.asarray(lm.suffix, dtype=np.int64)
        with torch.inference_mode():
            for s in range(0, len(order), self.batch_size):
                batch = [items[i] for i in order[s : s + self.batch_size]]
                width = max(it[3].size for it in batch) + prefix.size + suffix.size
                input_ids = np.full((len(batch), width), lm.pad_id, dtype=np.int64)
                mask = np.zeros((len(batch), width), dtype=np.int64)
                for row, (_, _, _, ids) in enumerate(batch):
                    seq = np.concatenate((prefix, ids, suffix))
                    input_ids[row, : seq.size] = seq
                    mask[row, : seq.size] = 1
                outputs = lm.model(
                    input_ids=torch.from_numpy(input_ids).to(lm.device),
                    attention_mask=torch.from_numpy(mask).to(lm.device),
                    output_hidden_states=pooled,
                )
                probs = torch.softmax(outputs.logits.float(), dim=-1)[..., 1].cpu().numpy()
                hidden = outputs.hidden_states[-1].float().cpu().numpy() if pooled else None
                for row, (owner, a, b, ids) in enumerate(batch):
                    lo = prefix.size
                    if isinstance(owner, _Context) and owner.probs is not None:
                        owner.probs[a:b] = probs[row, lo : lo + ids.size]
                    if hidden is not None:
                        vec = hidden[row, lo : lo + ids.size].sum(axis=0)
                        key = id(owner) if isinstance(owner, _Context) else owner
                        prev = sums.get(key)
                        sums[key] = (
                            (vec, ids.size) if prev is None else (prev[0] + vec, prev[1] + ids.size)
                        )
        for ctx in work:
            if id(ctx) in sums:
                vec, count = sums[id(ctx)]
                ctx.pooled = vec / count
        return {
            r: v / c
            for (tag, r), (v, c) in ((k, v) for k, v in sums.items() if isinstance(k, tuple))
        }

    # -------------------------------------------------------------- selection

    def _select(
        self,
        request: CompressionRequest,
        ctxs: list[_Context],
        budget: int,
        lm: LoadedModel,
        query_vec: np.ndarray | None,
    ) -> Compressed:
        total = sum(int(c.cost.sum()) for c in ctxs if c.cost is not None)
        full = [[(0, len(c.text))] if c.text else [] for c in ctxs]
        if budget >= total or total == 0:
            return Compressed(kept=full, extra={"threshold": None, "words": 0})
        scores = []
        for ctx in ctxs:
            s = (
                word_scores(ctx.probs, ctx.words, self.token_to_word)
                if ctx.probs is not None and ctx.words is not None
                else np.zeros(0)
            )
            if self.question_aware and request.query and s.size:
                s = s + self.query_weight * self._query_match(ctx, lm, request.query)
            if ctx.prior and s.size and ctx.words is not None:
                s = s + _span_values(ctx.words, ctx.prior)
            scores.append(s)
        active = list(range(len(ctxs)))
        dropped: list[int] = []
        if self.context_level and len(ctxs) > 1:
            active, dropped = self._context_pass(ctxs, scores, budget, query_vec)
        extra: dict[str, Any] = {
            "words": int(sum(len(ctxs[i].words or ()) for i in active)),
            "chunks": int(sum(len(ctxs[i].chunks) for i in active)),
            "mode": "per-chunk" if self.per_chunk else "global",
            "contexts_dropped": dropped,
        }
        if self.per_chunk:
            masks = {i: self._per_chunk_mask(ctxs[i], scores[i], request, total) for i in active}
            kept = [self._spans(ctxs[i], masks[i]) if i in masks else [] for i in range(len(ctxs))]
            return Compressed(kept=kept, extra=extra)
        return self._global(ctxs, scores, active, budget, extra)

    def _query_match(self, ctx: _Context, lm: LoadedModel, query: str) -> np.ndarray:
        """Per word: the share of the query's content sub-tokens its sentence holds, plus
        half a point when the word itself holds one (vectorised). Answers sit next to
        the question's words, in the sentences that repeat them."""
        rule = word_rule(lm.tokenizer)
        enc = lm.backend.encode(query, add_special_tokens=False)
        qids = sorted(
            {
                i
                for i, t in zip(enc.ids, enc.tokens, strict=True)
                if not rule.punct[i]
                and len(t.strip("#▁Ġ")) >= 3
                and t.strip("#▁Ġ").lower() not in STOPWORDS
            }
        )
        words = ctx.words
        if not qids or words is None or not len(words):
            return np.zeros(len(words or ()), dtype=np.float64)
        q = np.asarray(qids, dtype=np.int64)
        hit = np.isin(ctx.ids, q)
        word_hit = np.maximum.reduceat(hit.astype(np.float64), words.first_token)
        ends = np.asarray([u.end for u in split_sentences(ctx.text)], dtype=np.int64)
        sentence = np.minimum(np.searchsorted(ends, words.start, side="right"), max(len(ends), 1))
        tok_sentence = sentence[words.token_word[hit]]
        pairs = np.unique(tok_sentence * q.size + np.searchsorted(q, ctx.ids[hit]))
        covered = np.bincount(pairs // q.size, minlength=int(sentence.max()) + 1) / q.size
        return covered[sentence] + 0.5 * word_hit

    def _context_pass(
        self,
        ctxs: list[_Context],
        scores: list[np.ndarray],
        budget: int,
        query_vec: np.ndarray | None,
    ) -> tuple[list[int], list[int]]:
        """Coarse step: keep the best contexts up to `context_expand` x the budget."""
        value = np.full(len(ctxs), -np.inf)
        for i, ctx in enumerate(ctxs):
            if not scores[i].size:
                continue
            if query_vec is not None and ctx.pooled is not None:
                denom = np.linalg.norm(ctx.pooled) * np.linalg.norm(query_vec) or 1.0
                value[i] = float(ctx.pooled @ query_vec) / denom
            else:
                value[i] = float(scores[i].mean())
        costs = np.asarray([int(c.cost.sum()) if c.cost is not None else 0 for c in ctxs])
        allowance = math.ceil(budget * self.context_expand)
        active: list[int] = []
        used = 0
        for i in np.argsort(-value, kind="stable"):
            if costs[i] == 0:
                continue
            if not active or used + costs[i] <= allowance or not ctxs[i].droppable:
                active.append(int(i))
                used += int(costs[i])
        active.sort()
        dropped = [i for i in range(len(ctxs)) if i not in active and costs[i] > 0]
        return active, dropped

    def _per_chunk_mask(
        self, ctx: _Context, score: np.ndarray, request: CompressionRequest, total: int
    ) -> np.ndarray:
        """LLMLingua-2's rule: a percentile threshold inside each chunk, token-weighted.

        As llmlingua does it: chunks end after the last "." or newline token of the
        window; a word weighs the reader tokens of its tokenizer text (the sub-token
        pieces joined, so lower-cased for an uncased model); the percentile is
        ``int(100 * (1 - rate) + 1)`` of those weights; a word stays if its score is
        above it."""
        words = ctx.words
        assert words is not None and ctx.forced is not None and ctx.banned is not None
        asked = request.budget.rate
        rate = float(asked) if asked is not None else request.budget.requested_rate(total)
        keep = np.zeros(len(words), dtype=bool)
        alone = piece_costs(self.tokenizer, ctx.text, ctx.ids, words, self.loaded.tokenizer)
        word_chunk_start = np.searchsorted(words.first_token, [a for a, _ in ctx.chunks])
        bounds = [*word_chunk_start.tolist(), len(words)]
        for lo, hi in itertools.pairwise(bounds):
            s, c = score[lo:hi], alone[lo:hi]
            if not s.size:
                continue
            weighted = np.repeat(s, c) if c.sum() else s
            threshold = np.percentile(weighted, int(100 * (1 - rate) + 1))
            keep[lo:hi] = (s > threshold) | ((threshold == 1.0) & (s == threshold))
        keep |= ctx.forced
        keep &= ~ctx.banned
        return keep

    def _global(
        self,
        ctxs: list[_Context],
        scores: list[np.ndarray],
        active: list[int],
        budget: int,
        extra: dict[str, Any],
    ) -> Compressed:
        """One threshold for the whole request, checked against the real joined text."""
        none = [np.zeros(0, dtype=np.int64)]
        owners = np.concatenate([np.full(scores[i].size, i) for i in active] or none)
        index = np.concatenate([np.arange(scores[i].size) for i in active] or none)
        score = np.concatenate([scores[i] for i in active] or [np.zeros(0)])
        forced = np.concatenate([ctxs[i].forced for i in active] or [np.zeros(0, bool)])
        banned = np.concatenate([ctxs[i].banned for i in active] or [np.zeros(0, bool)])
        cost = np.concatenate([ctxs[i].cost for i in active] or [np.zeros(0, np.int64)])
        key = np.where(forced, np.inf, np.where(banned, -np.inf, score))
        order = np.argsort(-key, kind="stable")
        n_forced = int(forced.sum())
        n_allowed = int((~banned | forced).sum())
        cum = np.cumsum(cost[order])

        def attempt(chosen: np.ndarray) -> tuple[list[list[Span]], int]:
            kept: list[list[Span]] = [[] for _ in ctxs]
            masks: dict[int, np.ndarray] = {i: np.zeros(scores[i].size, bool) for i in active}
            sel_owner, sel_index = owners[chosen].astype(int), index[chosen].astype(int)
            for i in active:
                masks[i][sel_index[sel_owner == i]] = True
                kept[i] = self._spans(ctxs[i], masks[i])
            texts = [join_spans(c.text, k) for c, k in zip(ctxs, kept, strict=True)]
            return kept, self.count(texts)

        # 1. the longest prefix of the ranking that fits: secant steps on the word-cost
        #    estimate, bisection when a step leaves the bracket, each checked exactly
        target = float(budget)
        best: tuple[np.ndarray, list[list[Span]], int] | None = None
        lo, hi = n_forced - 1, n_allowed + 1  # largest k known to fit, smallest known not to
        for _ in range(24):
            if hi - lo <= 1:
                break
            k = max(int(np.searchsorted(cum, target, side="right")), n_forced)
            if not lo < k < hi:
                k = (lo + hi + 1) // 2
            kept, count = attempt(order[:k])
            if count <= budget:
                lo = k
                if best is None or count > best[2]:
                    best = (order[:k], kept, count)
                if count >= 0.995 * budget:
                    break
            else:
                hi = k
            target += budget - count
        reason = None
        if best is None:
            kept, count = attempt(order[:n_forced])
            best = (order[:n_forced], kept, count)
            if count > budget:
                reason = "protected and forced content alone exceeds the budget"
        # 2. top up: the next-best words that still fit, skipping any that would not
        #    (a few exact checks, only for words whose estimated cost fits the slack)
        chosen, kept, count = best
        lowest = float(key[chosen[-1]]) if chosen.size and np.isfinite(key[chosen[-1]]) else None
        rest = order[chosen.size : n_allowed]
        for j in rest[cost[rest] <= budget - count][:8].tolist():
            if count >= 0.995 * budget or cost[j] > budget - count:
                continue
            trial = np.append(chosen, j)
            t_kept, t_count = attempt(trial)
            if t_count <= budget:
                chosen, kept, count = trial, t_kept, t_count
        best = (chosen, kept, count)
        extra["threshold"] = lowest
        return Compressed(kept=best[1], reason=reason, extra=extra)

    def _spans(self, ctx: _Context, mask: np.ndarray) -> list[Span]:
        """Runs of consecutive kept words, plus protected spans, as character spans."""
        words = ctx.words
        if words is None or not len(words):
            return list(ctx.protected)
        m = mask.astype(bool)
        prev = np.concatenate(([False], m[:-1]))
        nxt = np.concatenate((m[1:], [False]))
        starts = words.start[m & ~prev]
        ends = words.end[m & ~nxt]
        spans = list(zip(starts.tolist(), ends.tolist(), strict=True))
        if ctx.protected:
            spans = merge_spans(spans + ctx.protected)
        return spans


def _span_values(words: Words, spans: list[tuple[int, int, float]]) -> np.ndarray:
    """Per word, the value of the (sorted, disjoint) span its first character lies in, else 0."""
    ordered = sorted(spans)
    starts = np.asarray([a for a, _, _ in ordered], dtype=np.int64)
    ends = np.asarray([b for _, b, _ in ordered], dtype=np.int64)
    values = np.asarray([v for _, _, v in ordered], dtype=np.float64)
    i = np.searchsorted(starts, words.start, side="right") - 1
    inside = (i >= 0) & (words.start < ends[np.maximum(i, 0)])
    return np.where(inside, values[np.maximum(i, 0)], 0.0)


def _llmlingua_chunks(ids: np.ndarray, ends: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """LLMLingua-2's chunks: each ends after the last "."/newline token that fits the window
    (a window without one is cut at its limit)."""
    n = int(ids.size)
    cuts = np.flatnonzero(ends[ids]) + 1  # a chunk may end right after these tokens
    chunks: list[tuple[int, int]] = []
    a = 0
    while a < n:
        if n - a <= limit:
            chunks.append((a, n))
            break
        # llmlingua looks one token past the window; that token cannot fit, so it opens
        # the next chunk instead
        j = int(np.searchsorted(cuts, a + limit + 1, side="right")) - 1
        b = int(cuts[j]) if j >= 0 and cuts[j] > a + 1 else a + limit
        b = min(b, a + limit)
        chunks.append((a, b))
        a = b
    return chunks

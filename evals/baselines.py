"""Baselines that every sweep runs next to the methods under test.

- ``no-context``: the reader sees only the question (what it knows by heart).
- ``full``: the reader sees every context untouched (the quality ceiling).
- ``truncate``: the head of each context up to the budget (the registered compressor).
- ``random``: whole sentences dropped at random until the budget fits (seeded).
"""

from __future__ import annotations

import hashlib
import random

from ctxzip.compressor import BaseCompressor, Compressed
from ctxzip.result import CompressionRequest, Span
from ctxzip.tokens import DEFAULT_TOKENIZER
from ctxzip.units import split_sentences

NO_CONTEXT = "no-context"
FULL = "full"
RANDOM = "random"
TRUNCATE = "truncate"
BASELINES = (NO_CONTEXT, FULL, TRUNCATE, RANDOM)
FIXED = (NO_CONTEXT, FULL)
"""Baselines with no budget: run once, not once per rate."""


class RandomSentenceDrop(BaseCompressor):
    """Keeps a random subset of sentences (across all contexts) that fits the budget.

    The draw is seeded by `seed` and the request's text, so the same input always
    keeps the same sentences, and reruns of a sweep agree.
    """

    name = RANDOM

    def __init__(self, *, tokenizer: str = DEFAULT_TOKENIZER, seed: int = 0) -> None:
        super().__init__(tokenizer=tokenizer)
        self.seed = seed

    def _compress_requests(self, requests: list[CompressionRequest]) -> list[Compressed]:
        return [self._one(r) for r in requests]

    def _one(self, request: CompressionRequest) -> Compressed:
        tok = self.tokenizer
        units = [(ci, u) for ci, c in enumerate(request.contexts) for u in split_sentences(c)]
        total = sum(tok.count(c) for c in request.contexts if c)
        budget = request.budget.tokens_for(total)
        digest = hashlib.sha256("\x00".join([str(self.seed), *request.contexts]).encode()).digest()
        order = list(range(len(units)))
        random.Random(digest).shuffle(order)
        kept: list[list[Span]] = [[] for _ in request.contexts]
        used = 0
        for i in order:
            ci, unit = units[i]
            cost = tok.count(unit.text) + 1  # + a separator token, so joins stay in budget
            if used + cost <= budget:
                kept[ci].append(unit.span)
                used += cost
        return Compressed(kept=[sorted(k) for k in kept])

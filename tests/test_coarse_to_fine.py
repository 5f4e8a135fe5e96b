"""`coarse-to-fine`: stage 1's best sentences, up to `whole` x the budget, survive whole."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest

from ctxzip import Budget, get_compressor
from ctxzip.compressors.coarse_to_fine import CoarseToFineCompressor
from ctxzip.compressors.token_classification.train import bundled_qa, read_qa
from ctxzip.errors import InputError
from ctxzip.result import CompressionRequest

pytestmark = pytest.mark.slow

ITEMS = read_qa(bundled_qa())[:6]


def _requests(rate: float) -> list[CompressionRequest]:
    return [
        CompressionRequest(tuple(r["contexts"]), r["question"], Budget(rate=rate)) for r in ITEMS
    ]


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _stage1(comp: CoarseToFineCompressor, request: CompressionRequest) -> tuple[int, Any]:
    budget = request.budget.tokens_for(comp.count(request.contexts))
    wide = Budget(target_tokens=math.ceil(comp.expand * budget))
    first = comp.coarse.compress_batch([CompressionRequest(request.contexts, request.query, wide)])
    return budget, first[0]


def test_top_sentences_survive_whole() -> None:
    comp = CoarseToFineCompressor(whole=0.6, extractive={"threshold": None})
    requests = _requests(0.2)
    whole = 0
    for request, result in zip(requests, comp.compress_batch(requests), strict=True):
        budget, first = _stage1(comp, request)
        assert result.tokens_out <= budget
        out = _norm("\n".join(result.texts))
        priors = comp._priors(request, first, budget)
        core = [
            _norm(text[a:b])
            for text, per in zip(first.texts, priors, strict=True)
            for a, b, bonus in per
            if bonus == math.inf
        ]
        assert sum(comp.count([c]) for c in core) <= 0.6 * budget
        for sentence in core:
            assert sentence in out
        whole += len(core)
    assert whole, "no sentence was kept whole: the test would prove nothing"


def test_best_sentence_comes_first() -> None:
    comp = CoarseToFineCompressor(whole=0.6, extractive={"threshold": None})
    request = _requests(0.33)[0]
    budget, first = _stage1(comp, request)
    best = max(v for per in first.extra["span_scores"] for v in per)
    priors = comp._priors(request, first, budget)
    for per, values in zip(priors, first.extra["span_scores"], strict=True):
        for (_, _, bonus), v in zip(per, values, strict=True):
            if v == best:
                assert bonus == math.inf
    none = CoarseToFineCompressor(whole=0.0, extractive={"threshold": None})
    assert all(b < math.inf for per in none._priors(request, first, budget) for _, _, b in per)


def test_options_are_checked() -> None:
    with pytest.raises(InputError):
        get_compressor("coarse-to-fine", whole=1.5)
    with pytest.raises(InputError):
        get_compressor("coarse-to-fine", expand=0.5)

"""`coarse-to-fine`: stage 1 holds `extractive`'s own smaller selection, kept whole."""

from __future__ import annotations

import math
import re

import pytest

from ctxzip import Budget, get_compressor
from ctxzip.compressors.coarse_to_fine import CoarseToFineCompressor
from ctxzip.compressors.extractive import ExtractiveCompressor
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


def test_nested_selection_holds_the_smaller_one() -> None:
    plain = ExtractiveCompressor(threshold=None)
    nested = ExtractiveCompressor(threshold=None, nested=0.5)
    for request in _requests(0.4):
        budget = request.budget.tokens_for(plain.count(request.contexts))
        small = plain.compress_batch(
            [CompressionRequest(request.contexts, request.query, Budget(target_tokens=budget // 2))]
        )[0]
        big = nested.compress_batch([request])[0]
        assert big.tokens_out <= budget
        for spans, inner, marks in zip(big.kept, small.kept, big.extra["nested"], strict=True):
            assert set(inner) <= set(spans)
            assert {s for s, m in zip(spans, marks, strict=True) if m} == set(inner)


def test_best_sentences_survive_whole() -> None:
    comp = CoarseToFineCompressor(whole=0.6, extractive={"threshold": None})
    ext = ExtractiveCompressor(threshold=None)
    for request, result in zip(_requests(0.2), comp.compress_batch(_requests(0.2)), strict=True):
        budget = request.budget.tokens_for(comp.count(request.contexts))
        assert result.tokens_out <= budget
        core = ext.compress_batch(
            [
                CompressionRequest(
                    request.contexts,
                    request.query,
                    Budget(target_tokens=int(comp.whole / comp.expand * math.ceil(2 * budget))),
                )
            ]
        )[0]
        out = _norm("\n".join(result.texts))
        for text, spans in zip(request.contexts, core.kept, strict=True):
            for a, b in spans:
                assert _norm(text[a:b]) in out


def test_options_are_checked() -> None:
    with pytest.raises(InputError):
        get_compressor("coarse-to-fine", whole=1.5)
    with pytest.raises(InputError):
        get_compressor("coarse-to-fine", expand=0.5)

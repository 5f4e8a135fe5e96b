"""The static first stage of extractive (model2vec distilled from the packaged MiniLM)."""

from __future__ import annotations

import numpy as np
import pytest

from ctxzip import Budget
from ctxzip.compressors.extractive import ExtractiveCompressor
from ctxzip.static_encoder import FirstStage, Fusion, get_static_encoder, survivors

DOC = (
    " ".join(
        f"Record {i}: the {kind} in room {i} was painted {colour} in {1900 + i}."
        for i, (kind, colour) in enumerate(
            [("door", "red"), ("window", "blue"), ("stairs", "green"), ("ceiling", "white")] * 8
        )
    )
    + " The lighthouse keeper fed the seagulls sardines every morning at dawn."
)


def test_static_encoder_is_unit_normalised_and_semantic():
    enc = get_static_encoder()
    v = enc.encode(["a dog barks loudly", "the puppy is barking", "tax law of 1932"])
    assert v.shape == (3, 256)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2]


def test_survivors_keep_protected_and_fill_the_allowance():
    scores = np.array([0.1, 0.9, 0.5, 0.8, 0.2])
    kept = survivors(scores, [10] * 5, [True, False, False, False, False], budget=10, factor=2.0)
    assert kept == [0, 1, 3]


@pytest.mark.parametrize("second_stage_s", [0.0, None])
def test_first_stage_finds_the_answer_with_and_without_minilm(second_stage_s):
    comp = ExtractiveCompressor(first_stage="static", second_stage_s=second_stage_s, device="cpu")
    r = comp.compress([DOC], query="What did the lighthouse keeper feed the seagulls?",
                      budget=Budget(rate=0.2))  # fmt: skip
    assert "sardines" in r.text
    assert r.tokens_out <= 0.2 * r.tokens_in + 1
    (stage,) = [x.extra["first_stage"] for x in [r] if "first_stage" in x.extra] or [
        r.extra.get("first_stage")
    ]
    assert stage is None or stage["encoder"] is (second_stage_s is None)


def test_first_stage_option_is_checked():
    with pytest.raises(ValueError):
        FirstStage.make("bogus")
    assert FirstStage.make(None) is None


def test_store_can_pick_static_embeddings(tmp_path):
    pytest.importorskip("faiss")
    from ctxzip.retrievers.store import FaissStore

    store = FaissStore(model="static:")
    store.add_texts(["the cat sat on the mat", "stock prices fell sharply", "a kitten naps"])
    hits = store.search("sleepy cat", k=2)
    assert store.embedder.model_id == "static:sentence-transformers/all-MiniLM-L6-v2"
    assert len(hits) == 2
    store.save(tmp_path / "s")
    again = FaissStore.load(tmp_path / "s")
    assert again.embedder.model_id == store.embedder.model_id


# A fixed held-out slice for the fast path's guard: the first 40 bundled `pyref` questions of
# the `test` half of benchmarks/bench_static_stage.py (its `split_of`), which no setting of the
# static stage was tuned on. Short reference passages, the gold one among 3 distractors.
GUARD_NUMBERS = [3, 4, 7, 8, 9, 14, 15, 16, 23, 25, 28, 29, 30, 35, 38, 39, 42, 43, 44, 45,
                 47, 48, 49, 50, 51, 54, 55, 56, 57, 62, 64, 65, 68, 69, 70, 71, 74, 90, 95, 99]  # fmt: skip
GUARD_RATES = (0.33, 0.2)
GUARD_MARGIN = 6.0
"""Points of retention (both rates together) static-only may lose against MiniLM here: a
regression bound. Measured: the default fusion -5.0, the cosine alone (before it) -7.5."""
TARGET_MARGIN = 3.0
"""Issue 18's target, not met on this slice yet (-5.0); met over all 276 questions of the
benchmark (-1.4 at 0.33, -2.2 at 0.2; docs/proxy.md)."""


@pytest.fixture(scope="module")
def guard_slice():
    from ctxzip.evals.datasets import load_dataset

    wanted = {f"pyref-{i:03d}" for i in GUARD_NUMBERS}
    items = [it for it in load_dataset("pyref") if it.id in wanted]
    assert len(items) == len(wanted)
    minilm = ExtractiveCompressor(threshold=None, device="cpu")
    return items, _retained(minilm, items)


def _retained(comp, items) -> int:
    """Questions x rates whose gold answer survives `comp`."""
    from ctxzip.evals.metrics import answer_retained

    kept = 0
    for it in items:
        for rate in GUARD_RATES:
            text = comp.compress(it.contexts, it.question, Budget(rate=rate)).text
            kept += bool(answer_retained(text, it.answers))
    return kept


def _xfail(reason: str):
    return pytest.mark.xfail(strict=True, reason=reason)


@pytest.mark.parametrize(
    ("fusion", "margin"),
    [
        (Fusion(), GUARD_MARGIN),
        # the cosine alone falls outside the bound: the guard can fail, and if the cosine
        # ever stops failing it (XPASS), this slice no longer tells them apart
        pytest.param(Fusion(0, 0, 0), GUARD_MARGIN, marks=_xfail("cosine only")),
        # when this starts passing (XPASS), make TARGET_MARGIN the guard
        pytest.param(Fusion(), TARGET_MARGIN, marks=_xfail("issue 18 target not met here")),
    ],
    ids=["default", "cosine-only", "target"],
)
def test_static_only_keeps_answers_within_margin_of_minilm(guard_slice, fusion, margin):
    """The proxy under load selects on static scores alone: on held-out questions it
    must keep the gold answer about as often as MiniLM."""
    items, minilm = guard_slice
    comp = ExtractiveCompressor(threshold=None, device="cpu", first_stage="static",
                                second_stage_s=0.0)  # fmt: skip
    comp.stage.fusion = fusion
    static = _retained(comp, items)
    lost_points = 100 * (minilm - static) / (len(items) * len(GUARD_RATES))
    assert lost_points <= margin, (minilm, static)

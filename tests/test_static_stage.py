"""The static first stage of extractive (model2vec distilled from the packaged MiniLM)."""

from __future__ import annotations

import numpy as np
import pytest

from ctxzip import Budget
from ctxzip.compressors.extractive import ExtractiveCompressor
from ctxzip.static_encoder import FirstStage, get_static_encoder, survivors

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

"""The `extractive` compressor on real text (CPython's reference topics) with the real model."""

from __future__ import annotations

import itertools
import json
import random
import re
from pathlib import Path
from pydoc_data.topics import topics

import numpy as np
import pytest

from ctxzip import Budget
from ctxzip.compressors.extractive import ExtractiveCompressor, bm25_scores, get_encoder
from ctxzip.models import MINILM, resolve_model
from ctxzip.protect import Protect
from ctxzip.registry import get_compressor
from ctxzip.result import CompressionRequest
from ctxzip.spans import join_spans
from ctxzip.tokens import count_tokens

pytestmark = pytest.mark.slow

CASES = [
    json.loads(line)
    for line in (Path(__file__).parent / "data" / "pyref_extractive_qa.jsonl")
    .read_text()
    .splitlines()
]
UNRELATED = [
    "How long should I bake sourdough bread at home?",
    "Who won the football world cup in 1998?",
    "What is the capital city of Australia?",
    "How do I repot an orchid without damaging its roots?",
]


def norm(text: str) -> str:
    return re.sub(r"\s+", " ", text)


@pytest.fixture(scope="module")
def comp() -> ExtractiveCompressor:
    return ExtractiveCompressor()


def test_registered_by_name() -> None:
    c = get_compressor("extractive", threshold=None)
    assert c.name == "extractive"
    assert isinstance(c, ExtractiveCompressor)


FILLER = ["while", "for", "if", "try", "with", "import", "assignment", "calls"]


def passage(case: dict[str, str], min_tokens: int = 400) -> str:
    """The answer's paragraph grown by neighbours (then other topics) to `min_tokens`.

    At rate 0.2 that leaves >= 80 tokens, more than any answer sentence here costs,
    so a miss is a ranking miss and not a sentence too big for its budget.
    """
    paras = re.split(r"\n\s*\n", topics[case["topic"]])
    at = next(i for i, p in enumerate(paras) if norm(case["answer"]) in norm(p))
    lo = hi = at
    while count_tokens("\n\n".join(paras[lo : hi + 1])) < min_tokens:
        if lo == 0 and hi == len(paras) - 1:
            break
        lo, hi = max(0, lo - 1), min(len(paras) - 1, hi + 1)
    text = "\n\n".join(paras[lo : hi + 1])
    for name in FILLER:
        if count_tokens(text) >= min_tokens:
            break
        if name != case["topic"]:
            text += "\n\n" + topics[name]
    return text


def test_answer_sentence_survives_at_rate_02(comp: ExtractiveCompressor) -> None:
    budget = Budget(rate=0.2)
    requests = [CompressionRequest.of([passage(c)], c["question"], budget) for c in CASES]
    missed = []
    for case, result in zip(CASES, comp.compress_batch(requests), strict=True):
        assert result.tokens_out <= budget.tokens_for(result.tokens_in)
        if norm(case["answer"]) not in norm(result.text):
            missed.append(case["id"])
    # 43 of 45 survive with all-MiniLM-L6-v2 (x04, x10 lose to look-alike sentences in
    # the filler); one more miss is allowed so a tokenizer update is not a cliff
    assert len(missed) <= 3, missed


def _random_contexts(rng: random.Random) -> list[str]:
    names = ["del", "global", "break", "lambda", "yield", "return", "pass", "power"]
    contexts = []
    for _ in range(rng.randint(1, 4)):
        text = topics[rng.choice(names)]
        start = rng.randrange(0, max(1, len(text) - 400))
        contexts.append(text[start : start + rng.randint(0, 1500)])
    return contexts


def test_budget_never_exceeded_order_kept_and_no_fitting_sentence_left_out(
    comp: ExtractiveCompressor,
) -> None:
    rng = random.Random(7)
    for trial in range(20):
        contexts = _random_contexts(rng)
        budget = (
            Budget(rate=rng.choice([0.05, 0.1, 0.2, 0.33, 0.5, 0.9]))
            if trial % 2
            else Budget(target_tokens=rng.randint(1, 400))
        )
        query = rng.choice([None, CASES[trial]["question"]])
        c = ExtractiveCompressor(threshold=None, mmr=0.3 if trial % 3 == 0 else 0.0)
        r = c.compress(contexts, query=query, budget=budget)
        limit = budget.tokens_for(r.tokens_in)
        assert r.tokens_out <= limit
        assert r.tokens_out == c.count(r.texts)
        for context, kept, text in zip(contexts, r.kept, r.texts, strict=True):
            assert kept == sorted(kept)  # original order
            assert all(a[1] <= b[0] for a, b in itertools.pairwise(kept))
            assert join_spans(context, kept) == text
        if c.mmr:
            continue  # MMR may leave a near-duplicate out on purpose
        left = limit - r.tokens_out
        kept_spans = {(i, s) for i, spans in enumerate(r.kept) for s in spans}
        for i, context in enumerate(contexts):
            for piece in c._pieces(i, context) if context.strip() else []:
                if (i, (piece.start, piece.end)) not in kept_spans:
                    assert piece.cost + 1 > left, (trial, piece.text, left)


def test_selective_augmentation(comp: ExtractiveCompressor) -> None:
    contexts = [topics["del"], topics["global"], topics["break"]]
    for query in UNRELATED:
        r = comp.compress(contexts, query=query, budget=Budget(rate=0.3))
        assert r.texts == ["", "", ""] and r.tokens_out == 0
        assert r.reason and "selective augmentation" in r.reason
        assert r.extra["best_score"] < comp.threshold  # type: ignore[operator]
    r = comp.compress(contexts, query=CASES[5]["question"], budget=Budget(rate=0.3))
    assert r.reason is None and r.tokens_out > 0
    assert "NameError" in r.text


def test_no_query_ranks_by_centrality(comp: ExtractiveCompressor) -> None:
    text = topics["lambda"] + "\n\nBuy cheap watches now, limited offer, click here today!\n"
    r = comp.compress(text, budget=Budget(rate=0.5))
    assert 0 < r.tokens_out <= Budget(rate=0.5).tokens_for(r.tokens_in)
    assert "watches" not in r.text  # the off-topic line is least central


def test_empty_whitespace_and_all_empty(comp: ExtractiveCompressor) -> None:
    r = comp.compress(["", "  \n\t ", topics["pass"]], query="What does pass do?")
    assert r.texts[0] == "" and r.texts[1] == "" and r.texts[2]
    assert r.kept[0] == [] and r.kept[1] == []
    r = comp.compress(["", " "], query="anything")
    assert r.texts == ["", ""] and r.tokens_out == 0 and r.kept == [[], []]
    assert comp.compress_batch([]) == []


def test_context_longer_than_encoder_window(comp: ExtractiveCompressor) -> None:
    words = norm(topics["typesmapping"]).replace(".", " ").split()
    needle = "the secret launch code is AZURE-FALCON-17"
    run_on = " ".join([*words[:3000], needle, *words[3000:6000]])  # one 6,000-word "sentence"
    # the needle is diluted by ~120 tokens of noise in its window (cosine ~0.21, under
    # the default threshold): this test is about windows, so augmentation is off
    c = ExtractiveCompressor(threshold=None)
    r = c.compress(run_on, query="What is the secret launch code?", budget=Budget(rate=0.05))
    assert 0 < r.tokens_out <= Budget(rate=0.05).tokens_for(r.tokens_in)
    assert "AZURE-FALCON-17" in r.text
    assert r.extra["units"] > 10  # cut into windows the encoder can see whole


def test_non_english_text(comp: ExtractiveCompressor) -> None:
    german = (
        "Der Rhein ist ein Fluss in Mitteleuropa. Er entspringt in den Alpen der Schweiz. "
        "Die Mündung des Rheins liegt in den Niederlanden an der Nordsee. "
        "Köln und Düsseldorf liegen am Rhein. Der Fluss ist etwa 1.230 Kilometer lang."
    )
    chinese = "长江是中国最长的河流。它全长约六千三百公里。长江流经上海。黄河是第二长的河流。"
    japanese = "富士山は日本で一番高い山です。高さは三千七百七十六メートルです。東京から見えます。"
    r = comp.compress(
        [german, chinese, japanese], query="Wie lang ist der Rhein?", budget=Budget(rate=0.4)
    )
    assert r.tokens_out <= Budget(rate=0.4).tokens_for(r.tokens_in)
    assert r.tokens_out > 0
    for context, text, kept in zip([german, chinese, japanese], r.texts, r.kept, strict=True):
        assert join_spans(context, kept) == text
    # the CJK texts split into sentences too, so selection is finer than whole texts
    assert all(len(comp._pieces(i, t)) >= 3 for i, t in enumerate([chinese, japanese]))


def test_batch_is_one_pass_and_cache_skips_seen_sentences() -> None:
    c = ExtractiveCompressor(cache_size=10_000)
    c.encoder.clear_cache()
    requests = [
        CompressionRequest.of(
            [topics["del"], topics["return"]], CASES[5]["question"], Budget(rate=0.3)
        ),
        CompressionRequest.of(
            [topics["return"], topics["yield"]], CASES[12]["question"], Budget(rate=0.3)
        ),
    ]
    calls = []
    forward = c.encoder._forward
    c.encoder._forward = lambda texts, progress: (
        calls.append(len(texts)) or forward(texts, progress)
    )  # type: ignore[method-assign]
    try:
        first = c.compress_batch(requests)
        assert len(calls) == 1  # one encoder pass for both requests
        assert calls[0] == len(
            {p.text for r in requests for i, t in enumerate(r.contexts) for p in c._pieces(i, t)}
            | {r.query for r in requests}
        )
        again = c.compress_batch(requests)
        assert len(calls) == 1  # everything cached: no model work at all
        assert [r.texts for r in again] == [r.texts for r in first]
        assert again[0].extra["cache_hits_in_batch"] > 0
    finally:
        c.encoder._forward = forward  # type: ignore[method-assign]
    single = c.compress(requests[1].contexts, requests[1].query, requests[1].budget)
    assert single.texts == first[1].texts


def test_lru_cache_is_bounded() -> None:
    enc = get_encoder(cache_size=5)
    enc.clear_cache()
    enc.encode([f"sentence number {i}" for i in range(12)])
    assert enc.cache_info()["size"] == 5
    vec = enc.encode(["sentence number 11"])  # most recent: still cached
    assert enc.cache_info()["hits"] >= 1 and vec.shape == (1, enc.dimension)


def test_mmr_drops_duplicates_across_contexts() -> None:
    shared = topics["break"]
    contexts = [shared, shared.replace('"break"', '"break"'), topics["lambda"]]
    plain = ExtractiveCompressor(threshold=None).compress(
        contexts, query=CASES[2]["question"], budget=Budget(rate=0.4)
    )
    diverse = ExtractiveCompressor(threshold=None, mmr=0.5).compress(
        contexts, query=CASES[2]["question"], budget=Budget(rate=0.4)
    )
    target = "keeps its current value"
    assert norm(plain.text).count(target) == 2
    assert norm(diverse.text).count(target) == 1
    assert diverse.tokens_out <= Budget(rate=0.4).tokens_for(diverse.tokens_in)


def test_coarse_pass_drops_low_ranked_contexts() -> None:
    case = CASES[5]  # del / NameError
    contexts = [topics[k] for k in ("lambda", "del", "floating", "imaginary", "shifting", "pass")]
    c = ExtractiveCompressor(coarse=1.5)
    r = c.compress(contexts, query=case["question"], budget=Budget(rate=0.2))
    assert r.extra["coarse_dropped"] and 1 not in r.extra["coarse_dropped"]
    assert all(r.texts[i] == "" for i in r.extra["coarse_dropped"])
    assert case["answer"] in r.text
    scores = bm25_scores(case["question"], contexts)
    assert int(np.argmax(scores)) == 1


def test_protected_spans_are_kept() -> None:
    text = topics["while"] + "\nThe ticket id is TICKET-9931 for this issue."
    c = ExtractiveCompressor(threshold=None, protect=Protect(force=("TICKET-9931",)))
    r = c.compress(text, query="How does a while loop end?", budget=Budget(rate=0.3))
    assert "TICKET-9931" in r.text
    assert r.tokens_out <= Budget(rate=0.3).tokens_for(r.tokens_in)


def test_cross_encoder_reranks_any_crossencoder_id() -> None:
    # No cross-encoder weights exist offline: a CrossEncoder built from the MiniLM folder
    # (fresh, untrained head) exercises the whole path; its scores are not meaningful.
    folder = resolve_model(MINILM)
    c = ExtractiveCompressor(cross_encoder=folder, rerank_top=8)
    r = c.compress(
        [topics["del"], topics["return"]], query=CASES[5]["question"], budget=Budget(rate=0.2)
    )
    assert r.extra["reranked"] == 8
    assert 0 < r.tokens_out <= Budget(rate=0.2).tokens_for(r.tokens_in)


def test_int8_encoder_matches_full_precision() -> None:
    sentences = [u for u in norm(topics["exceptions"]).split(". ") if u][:20]
    fp32 = get_encoder(quantize="none").encode(sentences)
    int8 = get_encoder(quantize="int8").encode(sentences)
    assert float(np.min(np.sum(fp32 * int8, axis=1))) > 0.8
    assert float(np.mean(np.sum(fp32 * int8, axis=1))) > 0.95


def test_bad_options_fail_clearly() -> None:
    with pytest.raises(ValueError, match="mmr"):
        ExtractiveCompressor(mmr=2.0)
    with pytest.raises(ValueError, match="coarse"):
        ExtractiveCompressor(coarse=0.5)
    with pytest.raises(ValueError, match="quantize"):
        ExtractiveCompressor(quantize="int4")
